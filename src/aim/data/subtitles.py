"""Subtitles (SubRip .srt) put into the prompt text, as lmms-eval's VideoMME-with-subtitles task does
(lmms_eval/tasks/videomme/utils.py, videomme_doc_to_text_subtitle): the cues on screen at the sampled
frames' times, under a header, before the task's instruction (the prompt's `context`, aim.prompts).

lmms-eval keeps of a cue only the text inside its first `<font color="white" size=".72c">...</font>`
(Video-MME's markup; the cue's lines joined with spaces first), and drops a cue without that markup, so a
cue of two wrapped lines gives its first line only; this module does the same (`videomme_text`). The cues
come in the order lmms-eval's `list(set(indices))` gives them (for the cue indices of a video, ascending
except where a large index shares a hash slot; `lmms_eval_order`)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SUBTITLE_HEADER = "This video's subtitles are listed below: "  # lmms-eval's, trailing space included
NO_SUBTITLES = "No subtitles available"  # lmms-eval's text for a video that has no subtitle file

_TIME = re.compile(r"(\d+):(\d+):(\d+)[,.](\d+)")
_TAG = re.compile(r"<[^>]+>")  # Video-MME wraps each line in <font color="white" size=".72c">...</font>
_VIDEOMME_FONT = re.compile(r'<font color="white" size="\.72c">(.*?)</font>')  # lmms-eval's pattern, exactly


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str  # without markup
    raw: str = ""  # the cue's lines as in the file, joined with spaces


def videomme_text(cue: Cue) -> str | None:
    """The text lmms-eval keeps of a Video-MME cue: inside the first white .72c <font> tag; None (dropped)
    when the cue has none."""
    m = _VIDEOMME_FONT.search(cue.raw)
    return m.group(1) if m else None


def lmms_eval_order(indices: list[int]) -> list[int]:
    """Cue indices once each, in the iteration order of a Python set built from them, as lmms-eval lists
    them (`list(set(...))`); deterministic for ints."""
    return list(set(indices))


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
        raw = " ".join(lines[timing + 1:])
        words = " ".join(_TAG.sub("", line) for line in lines[timing + 1:]).strip()
        if words:
            cues.append(Cue(_seconds(start), _seconds(end), words, raw))
    return cues


def lines_at(cues: list[Cue], times: list[float]) -> list[str]:
    """The text of every cue on screen at one of these times (start <= t < end), in subtitle order,
    each cue once."""
    return [c.text for c in cues if any(c.start <= t < c.end for t in times)]


def videomme_lines_at(cues: list[Cue], times: list[float]) -> list[str]:
    """lmms-eval's Video-MME subtitle lines at these times: the cues on screen (start <= t < end), each
    once, in lmms-eval's order, each as `videomme_text`; cues without Video-MME's markup dropped."""
    hits = [i for t in times for i, c in enumerate(cues) if c.start <= t < c.end]
    texts = (videomme_text(cues[i]) for i in lmms_eval_order(hits))
    return [t for t in texts if t is not None]


def subtitle_block(subtitle_file: Path, times: list[float]) -> str:
    """The subtitle lines shown at the given frame times under their header, ending in a newline: what
    lmms-eval's `videomme_doc_to_text_subtitle` writes before the instruction ("This video's subtitles are
    listed below: \n<line>\n<line>\n"; "No subtitles available" for a video without a subtitle file), the
    lines by lmms-eval's Video-MME rule (`videomme_lines_at`)."""
    if subtitle_file.is_file():
        text = "\n".join(videomme_lines_at(parse_srt(subtitle_file.read_text(encoding="utf-8", errors="replace")), times))
    else:
        text = NO_SUBTITLES
    return f"{SUBTITLE_HEADER}\n{text}\n"
