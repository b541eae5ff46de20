"""Subtitles (SubRip .srt) put into the prompt text, as lmms-eval's VideoMME-with-subtitles task does:
the lines shown at the sampled frames' times, in subtitle order, under a header, before the task's instruction
(the prompt's `context`, aim.prompts)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SUBTITLE_HEADER = "This video's subtitles are listed below: "  # lmms-eval's, trailing space included
NO_SUBTITLES = "No subtitles available"  # lmms-eval's text for a video that has no subtitle file

_TIME = re.compile(r"(\d+):(\d+):(\d+)[,.](\d+)")
_TAG = re.compile(r"<[^>]+>")  # Video-MME wraps each line in <font color="white" size=".72c">...</font>


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str


def _seconds(stamp: str) -> float:
    m = _TIME.search(stamp)
    if m is None:
        raise ValueError(f"not an SRT time: {stamp!r}")
    h, mi, s, ms = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + int(ms) / 10 ** len(ms)


def parse_srt(text: str) -> list[Cue]:
    """The cues of an SRT file: blocks of [index line,] `start --> end`, then text lines. Markup is
    dropped; blocks without a time line or without text are ignored."""
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\ufeff", "")):
        lines = [line.strip() for line in block.strip().split("\n")]
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue
        start, end = lines[timing].split("-->")
        words = " ".join(_TAG.sub("", line) for line in lines[timing + 1:]).strip()
        if words:
            cues.append(Cue(_seconds(start), _seconds(end), words))
    return cues


def lines_at(cues: list[Cue], times: list[float]) -> list[str]:
    """The text of every cue on screen at one of these times (start <= t < end), in subtitle order,
    each cue once."""
    return [c.text for c in cues if any(c.start <= t < c.end for t in times)]


def subtitle_block(subtitle_file: Path, times: list[float]) -> str:
    """The subtitle lines shown at the given frame times under their header, ending in a newline: what
    lmms-eval's `videomme_doc_to_text_subtitle` writes before the instruction ("This video's subtitles are
    listed below: \n<line>\n<line>\n"; "No subtitles available" for a video without a subtitle file)."""
    if subtitle_file.is_file():
        text = "\n".join(lines_at(parse_srt(subtitle_file.read_text(encoding="utf-8", errors="replace")), times))
    else:
        text = NO_SUBTITLES
    return f"{SUBTITLE_HEADER}\n{text}\n"
