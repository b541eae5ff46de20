"""The paper's video benchmarks, each read in the on-disk layout of its public release as lmms-eval's task
definitions use it: the Hugging Face dataset's question files (parquet or json) and the unpacked video
archives, all under one `dataset.root` (lmms-eval's `$HF_HOME/<cache_dir>`).

| config                 | release (Hugging Face dataset)        | questions under root                      | videos under root                    |
|------------------------|---------------------------------------|-------------------------------------------|--------------------------------------|
| videomme               | lmms-lab/Video-MME                    | videomme/test-*.parquet                   | data/<videoID>.mp4                   |
| videomme_w_subtitle    | lmms-lab/Video-MME                    | videomme/test-*.parquet                   | data/..., subtitle/<videoID>.srt     |
| mlvu_dev               | sy1998/MLVU_dev                       | mlvu/test-*.parquet                       | <video_name> (video_part_*.zip)      |
| egoschema_subset       | lmms-lab/egoschema, config Subset     | Subset/test-*.parquet                     | videos/<video_idx>.mp4               |
| nextqa_mc_test         | lmms-lab/NExTQA, config MC            | MC/test-*.parquet                         | NExTVideo/<video>.mp4                |
| perceptiontest_val_mc  | lmms-lab/PerceptionTest_Val           | mc_question_val/validation-*.parquet      | videos/<video_name>.mp4              |
| mvbench                | OpenGVLab/MVBench, revision `video`   | json/<task>.json (20 tasks)               | <task's folder>/<video>              |

Prompts and answer reading are lmms-eval's, per task (its yaml's `lmms_eval_specific_kwargs` defaults and
the layout of its utils.py `doc_to_text`; the facts were read at EvolvingLMMs-Lab/lmms-eval
75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3): each benchmark's `layout` (aim.prompts.TaskPrompt) with the config's
`pre_prompt` / `post_prompt`, lmms-eval's model-specific overrides in the layout's `models`, and the task's
rule for reading a generated letter in `letter_reader` (aim.eval.choices).

Where an archive unpacks into nested folders, a video not at the expected path is looked up by its file
name anywhere under root; a video that is nowhere is recorded as skipped (`Sample.load`). Options are
given to the model without the release's "A." prefixes (the adapter writes its own letters), answers
become option letters. Headline metrics follow each benchmark's authors: accuracy, except MLVU (m-avg)
(`mean_over_types`) and MVBench (the average over its tasks, each over the questions answered as lmms-eval
counts them: `mvbench_accuracy`); per-category breakdowns go
into every record (`Sample.categories`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from aim.data import DATASETS, LETTERS, Sample, SampleList, VideoMCQConfig, load_json
from aim.prompts import MC_INSTRUCTION, TaskPrompt

VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv", ".webm", ".avi")
_LETTER_PREFIX = re.compile(r"^\s*\(?([A-J])[.):]\s*")
_EMBEDDED_OPTION = re.compile(r"^\s*\(([A-J])\)\s*(.*)$")


# --- reading a release ------------------------------------------------------------------------------
def read_rows(root: Path, pattern: str) -> list[dict]:
    """Every row of the question files matching `pattern` under root, files in sorted order; each row
    gets `_file`, the stem of the file it came from (MVBench names its tasks by file), and `_row`, its
    index in that file."""
    rows: list[dict] = []
    for path in sorted(root.glob(pattern)):
        if path.suffix == ".parquet":
            import pandas as pd

            table = pd.read_parquet(path).to_dict("records")
        else:
            table = load_json(path, "questions_file", lines=path.suffix == ".jsonl")
        rows += [{**row, "_file": path.stem, "_row": i} for i, row in enumerate(table)]
    return rows


def first(row: dict, *keys, default=None):
    """The first of these fields that the row has and that is not empty (parquet gives None or NaN)."""
    for key in keys:
        value = row.get(key)
        if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value):
            continue
        return value
    return default


def as_list(value) -> list[str]:
    """A list column as plain strings (parquet gives numpy arrays)."""
    return [str(v) for v in list(value)]


def strip_letters(options: list[str]) -> list[str]:
    """Options without their "A. " / "(B) " prefixes, when every option carries its own letter in order."""
    found = [_LETTER_PREFIX.match(o) for o in options]
    if options and all(m is not None and m.group(1) == LETTERS[i] for i, m in enumerate(found)):
        return [o[m.end():].strip() for o, m in zip(options, found)]
    return [o.strip() for o in options]


def split_embedded_options(question: str) -> tuple[str, list[str]]:
    """A question that lists its options as lines "(A) ...", "(B) ...": (question text, options)."""
    kept, options = [], []
    for line in question.splitlines():
        m = _EMBEDDED_OPTION.match(line)
        if m and m.group(1) == LETTERS[len(options)]:
            options.append(m.group(2).strip())
        elif line.strip():
            kept.append(line.strip())
    return " ".join(kept), options


def answer_letter(answer, options: list[str], given_as: str) -> str:
    """The option letter of an answer given as an option `index`, a `letter` or the option's `text`
    (`letter_or_text`: the option's text when it is one, else a letter)."""
    a = str(answer).strip()
    if given_as == "index" and a.lstrip("-").isdigit() and 0 <= int(a) < len(options):
        return LETTERS[int(a)]
    if given_as in ("text", "letter_or_text") and a in options:
        return LETTERS[options.index(a)]
    if given_as in ("letter", "letter_or_text"):
        m = _LETTER_PREFIX.match(a)
        letter = a if len(a) == 1 else (m.group(1) if m else None)  # "B", "(B)", "B. the option"
        if letter is not None and letter in LETTERS[: len(options)]:
            return letter
    raise ValueError(f"answer {answer!r} is not an option {given_as} of {options}")


class VideoFinder:
    """A release's video name -> its file. First the places lmms-eval looks (each given folder, with the
    name's own suffix or another video suffix), then any video under root with that file name or stem:
    releases whose archives unpack into nested folders (NExTVideo/<group>/<id>.mp4) are found too.
    A video that is nowhere maps to its first expected path; loading it records the sample as skipped.
    `suffixes`: what counts as one of its files (SubtitleFinder: .srt)."""

    suffixes: tuple[str, ...] = VIDEO_SUFFIXES

    def __init__(self, root: Path):
        self.root = root
        self._index: dict[str, Path] | None = None

    def find(self, name: str, folders: tuple[str, ...]) -> Path:
        candidates = []
        for folder in folders:
            path = self.root / folder / name
            if path.suffix in self.suffixes:  # the name's own suffix first, then the others
                stem = path.with_suffix("")
                candidates += [path] + [stem.with_name(stem.name + s) for s in self.suffixes if s != path.suffix]
            else:  # a bare id (Video-MME's videoID, EgoSchema's video_idx, ...): .mp4 first
                candidates += [path.with_name(path.name + s) for s in self.suffixes] + [path]
        for path in candidates:
            if path.is_file():
                return path
        index = self._build_index()
        base = Path(name).name
        stem = Path(base).stem if Path(base).suffix in self.suffixes else base
        return index.get(base) or index.get(stem) or candidates[0]

    def any_file(self) -> bool:
        """Whether root holds any file of these suffixes, anywhere."""
        return bool(self._build_index())

    def _build_index(self) -> dict[str, Path]:
        if self._index is None:
            self._index = {}
            for folder, _, files in sorted(os.walk(self.root)):
                for f in sorted(files):
                    if f.endswith(self.suffixes):
                        path = Path(folder) / f
                        self._index.setdefault(f, path)
                        self._index.setdefault(path.stem, path)
        return self._index


class SubtitleFinder(VideoFinder):
    """A video's subtitle file (<id>.srt) found as its video is: in the expected folder, else anywhere
    under root (an archive unpacked one level deeper, or beside the videos)."""

    suffixes = (".srt", ".SRT")


# --- the common shape of a benchmark ------------------------------------------------------------------
@dataclass
class BenchmarkConfig(VideoMCQConfig):
    """A benchmark in its release layout: `questions_file` is a glob under root, `video_dir` the folder
    its videos unpack into. A root without them fails validation, before any model loads, saying what to
    download and where to put it."""

    num_frames: int = 32  # the paper's setting (192 for its long-video runs)
    download: ClassVar[str] = ""  # how to get the release, with {root} for the expected location

    def __post_init__(self):
        super().__post_init__()
        check_release(self.name, Path(self.root), self.questions_file, self._required_dirs(), self.download)

    def _required_dirs(self) -> tuple[str, ...]:
        return (self.video_dir,)


def check_release(name: str, root: Path, questions_file: str, dirs: tuple[str, ...], download: str) -> None:
    howto = download.format(root=root)
    if not root.is_dir():
        raise ValueError(f"root: {name} is not at {root} (no such folder). {howto}")
    if not any(root.glob(questions_file)):
        raise ValueError(f"root: no {questions_file} under {root}: the {name} question files are missing. {howto}")
    for d in dirs:
        if not (root / d).is_dir():
            raise ValueError(f"root: no {d}/ under {root}: the {name} videos are not unpacked there. {howto}")


def unreadable_row(row: dict, exc: Exception) -> dict:
    """The id and skip reason of a release row (read by `read_rows` / `question_rows`, which add `_file` and `_row`)
    that a loader's make_sample could not read: `<file>_row<i>`, and the file, the row and why (a missing field,
    or the error's type and message). The video and the image benchmarks record such a row as skipped."""
    what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
    return {"id": f"{row['_file']}_row{row['_row']}",
            "skip_reason": f"row {row['_row']} of {row['_file']} cannot be read ({what})"}


class Benchmark(SampleList):
    """Samples of one release; subclasses turn a question-file row into a Sample (`make_sample`) and name the
    `layout` of lmms-eval's prompt for the task and its `letter_reader`."""

    config: ClassVar[type[BenchmarkConfig]]
    layout: ClassVar[TaskPrompt] = TaskPrompt()
    letter_reader: ClassVar[str] = "mcq"

    def __init__(self, **cfg):
        self.cfg = self.config(**cfg)  # validates, and checks the release is under root, as config validation does
        self.prompt = replace(self.layout, pre_prompt=self.cfg.pre_prompt, post_prompt=self.cfg.post_prompt)
        self.root = Path(self.cfg.root)
        self.videos = VideoFinder(self.root)
        rows = read_rows(self.root, self.cfg.questions_file)
        rows = rows if self.cfg.limit is None else rows[: self.cfg.limit]
        self.samples = [self.sample_or_skip(row) for row in rows]
        ids = [s.id for s in self.samples]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"{self.cfg.name}: sample id {dup!r} occurs twice under {self.root}")

    def make_sample(self, row: dict) -> Sample:
        raise NotImplementedError

    def sample_or_skip(self, row: dict) -> Sample:
        """`make_sample`, or for a row that lacks a field or holds one it cannot read (an answer that is not an
        option, null options) a sample recorded as skipped naming the file, the row and why: one bad row of a
        release costs its own question, not the run."""
        try:
            return self.make_sample(row)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return Sample(**unreadable_row(row, exc), question="", options=[], answer=None,
                          video=self.root / "unreadable", num_frames=self.cfg.num_frames)

    def sample(self, *, id, question, options, answer, video: Path, question_type="", categories=None, subtitles=None) -> Sample:
        if not isinstance(question, str):  # parquet's None / NaN: "None" / "nan" would be asked
            raise ValueError(f"question: {question!r} is not a text")
        return Sample(id=str(id), question=str(question).strip(), options=options, answer=answer, video=video,
                      num_frames=self.cfg.num_frames, question_type=str(question_type or ""),
                      categories={k: str(v) for k, v in (categories or {}).items()}, subtitles=subtitles,
                      prompt=self.prompt, letter_reader=self.letter_reader)


def _hf(repo: str, then: str) -> str:
    return (f"Download the Hugging Face dataset {repo} (`hf download {repo} --repo-type dataset "
            f"--local-dir {{root}}`), {then}; or point dataset.root (or $AIM_DATA_DIR) at an existing copy.")


# --- Video-MME ------------------------------------------------------------------------------------------
# lmms_eval/tasks/videomme/utils.py (videomme_doc_to_text, videomme_doc_to_text_subtitle): the instruction
# (which names the subtitles with or without them), the question, the options as released ("A. ..."), the
# post-prompt after a newline; with subtitles, their block first and "The best answer is:" as post-prompt.
# Qwen3-VL (the yamls' `qwen3_vl` entry, format qwen3_vl): "Question: <q>\nOptions:\n<options>\nAnswer with
# the option letter only.", after the subtitles.
VIDEOMME_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video and the "
                        "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
VIDEOMME_PROMPT = TaskPrompt(
    layout="{context}{pre_prompt}" + VIDEOMME_INSTRUCTION + "\n{question}\n{options}\n{post_prompt}",
    models={"qwen3_vl": {"layout": "{context}{pre_prompt}{question}\nOptions:\n{options}\n{post_prompt}",
                         "pre_prompt": "Question: ", "post_prompt": "Answer with the option letter only."}})
VIDEOMME_SUBTITLE_POST_PROMPT = "The best answer is:"


@dataclass
class VideoMMEConfig(BenchmarkConfig):
    name: str = "videomme"
    root: str = "data/videomme"
    questions_file: str = "videomme/test-*.parquet"
    video_dir: str = "data"
    subtitles: bool = False  # the subtitle lines at the sampled frames' times go before the question
    subtitle_dir: str = "subtitle"
    post_prompt: str = "\n" + MC_INSTRUCTION  # lmms-eval's videomme.yaml
    download: ClassVar[str] = _hf(
        "lmms-lab/Video-MME",
        "then unzip videos_chunked_*.zip in {root} (-> {root}/data/<videoID>.mp4) and, for subtitles, "
        "subtitle.zip (-> {root}/subtitle/<videoID>.srt)")

    def __post_init__(self):
        super().__post_init__()
        root = Path(self.root)
        if self.subtitles and not (root / self.subtitle_dir).is_dir() and not SubtitleFinder(root).any_file():
            raise ValueError(f"root: no {self.subtitle_dir}/ under {root} and no .srt file anywhere under it: the "
                             f"{self.name} subtitles are not unpacked there. {self.download.format(root=root)}")


@dataclass
class VideoMMESubtitleConfig(VideoMMEConfig):
    name: str = "videomme_w_subtitle"
    subtitles: bool = True
    post_prompt: str = VIDEOMME_SUBTITLE_POST_PROMPT  # written into videomme_doc_to_text_subtitle


@DATASETS.register("videomme", config=VideoMMEConfig)
class VideoMME(Benchmark):
    """Video-MME (Fu et al., CVPR 2025): 2,700 four-option questions on 900 videos, short (< 2 min),
    medium (4-15 min) and long (30-60 min). Layout and prompt as lmms-eval's `videomme` and
    `videomme_w_subtitle` tasks (lmms_eval/tasks/videomme/utils.py): rows of videomme/test-*.parquet
    {video_id, duration, domain, sub_category, videoID, question_id, task_type, question, options
    ["A. ...", ...], answer "A"}, video data/<videoID>.mp4 (.MP4, .mkv), subtitles subtitle/<videoID>.srt
    (each found anywhere under root when not there).
    Metric: accuracy, reported per duration, domain, sub-category and task type.

    With subtitles, the prompt carries the subtitle lines on screen at the sampled frames' times (the
    frames the model sees, `dataset.num_frames` of them), not the whole file: lmms-eval does the same
    at 32 frames spread over the video. A video without a subtitle file gets "No subtitles available".
    Of each cue only the text inside Video-MME's first <font color="white" size=".72c"> tag is kept and a
    cue without it is dropped, as lmms-eval does (aim.data.subtitles).
    Prompt: VIDEOMME_PROMPT; answers read by lmms-eval's shared extractor (`mcq`)."""

    config = VideoMMEConfig
    layout = VIDEOMME_PROMPT

    def __init__(self, **cfg):
        self.subtitle_files = SubtitleFinder(Path(cfg.get("root", self.config.root)))
        super().__init__(**cfg)

    def make_sample(self, row):
        return self.sample(
            id=row["question_id"], question=row["question"], options=strip_letters(as_list(row["options"])),
            answer=answer_letter(row["answer"], as_list(row["options"]), "letter"),
            video=self.videos.find(str(row["videoID"]), (self.cfg.video_dir,)),
            question_type=first(row, "task_type", default=""),
            categories={k: row[k] for k in ("duration", "domain", "sub_category", "task_type") if k in row},
            subtitles=self.subtitle_files.find(f"{row['videoID']}.srt", (self.cfg.subtitle_dir,))
            if self.cfg.subtitles else None,
        )


@DATASETS.register("videomme_w_subtitle", config=VideoMMESubtitleConfig)
class VideoMMEWithSubtitles(VideoMME):
    """Video-MME with subtitles in the prompt (lmms-eval's `videomme_w_subtitle`); see VideoMME."""

    config = VideoMMESubtitleConfig


# --- MLVU -------------------------------------------------------------------------------------------------
# lmms_eval/tasks/mlvu/mlvu_dev.yaml + utils.py (mlvu_doc_to_text): the released question, which lists its
# options as "(A) ..." lines after it (and ends in a newline), then "\nOnly give the best option.\nBest option: (".
MLVU_PROMPT = TaskPrompt(layout="{context}{pre_prompt}{question}\n{options}\n{post_prompt}",
                         option_format="({letter}) {option}")
MLVU_POST_PROMPT = "\nOnly give the best option.\nBest option: ("


@dataclass
class MLVUConfig(BenchmarkConfig):
    name: str = "mlvu_dev"
    root: str = "data/mlvu"
    questions_file: str = "mlvu/test-*.parquet"
    video_dir: str = "."
    metric: str = "mean_over_types"
    post_prompt: str = MLVU_POST_PROMPT
    download: ClassVar[str] = _hf(
        "sy1998/MLVU_dev", "then unzip every video_part_*.zip and action_count.zip in {root} (one folder)")


@DATASETS.register("mlvu_dev", config=MLVUConfig)
class MLVU(Benchmark):
    """MLVU dev, multiple choice (Zhou et al., 2024): the seven multiple-choice tasks of the dev set
    (plotQA, needle, ego, count, order, anomaly_reco, topic_reasoning). Layout as lmms-eval's `mlvu_dev`
    task (lmms_eval/tasks/mlvu/utils.py): rows of mlvu/test-*.parquet {video_name, duration, question,
    candidates, answer, task_type, question_id}, video <video_name> under root (or video/<video_name>, or
    anywhere below root). A question that lists its options as "(A) ..." lines without `candidates` is
    split; the answer may be a letter or the option's text; the original release's `video` and
    `question_type` keys are read as well.
    Metric: m-avg, the mean of the per-task accuracies (`mean_over_types`), as MLVU reports it.
    Prompt: MLVU_PROMPT (the question and its "(A) ..." lines rebuilt as released, then "Best option: ("); the
    letter after that "(" is what letter scoring reads; generated answers are read by `mcq`."""

    config = MLVUConfig
    layout = MLVU_PROMPT

    def make_sample(self, row):
        question, embedded = split_embedded_options(row["question"])  # a null one fails: skipped
        candidates = first(row, "candidates")
        options = as_list(candidates) if candidates is not None and len(candidates) else embedded
        task = str(first(row, "task_type", "question_type", default=""))
        name = str(first(row, "video_name", "video"))
        return self.sample(
            id=first(row, "question_id", default=f"{task}_{row['_row']}"), question=question, options=options,
            answer=answer_letter(row["answer"], options, "letter_or_text"),
            video=self.videos.find(name, (self.cfg.video_dir, "video")), question_type=task,
        )


# --- EgoSchema ----------------------------------------------------------------------------------------
@dataclass
class EgoSchemaConfig(BenchmarkConfig):
    name: str = "egoschema_subset"
    root: str = "data/egoschema"
    questions_file: str = "Subset/test-*.parquet"
    video_dir: str = "videos"
    # egoschema_subset.yaml's default; utils.egoschema_doc_to_text writes it after the options whatever is set
    post_prompt: str = "\n" + MC_INSTRUCTION
    download: ClassVar[str] = _hf("lmms-lab/egoschema", "then unzip videos_chunked_*.zip in {root} (-> {root}/videos/<video_idx>.mp4)")


@DATASETS.register("egoschema_subset", config=EgoSchemaConfig)
class EgoSchema(Benchmark):
    """EgoSchema (Mangalam et al., NeurIPS 2023), the 500-question subset whose answers are public.
    Layout as lmms-eval's `egoschema_subset` task (lmms_eval/tasks/egoschema/utils.py): rows of
    Subset/test-*.parquet {question_idx, question, video_idx, option ["A. ...", ...5], answer "0".."4"},
    video videos/<video_idx>.mp4. Metric: accuracy.
    Prompt (lmms_eval/tasks/egoschema/utils.py, egoschema_doc_to_text): the question, the five options as
    released ("A. ..."), "\nAnswer with the option's letter from the given choices directly."; generated
    answers are read by its MMMU-style parser (`egoschema`)."""

    config = EgoSchemaConfig
    letter_reader = "egoschema"

    def make_sample(self, row):
        options = strip_letters(as_list(row["option"]))
        return self.sample(
            id=first(row, "question_idx", "video_idx"), question=row["question"], options=options,
            answer=answer_letter(row["answer"], options, "index"),
            video=self.videos.find(str(row["video_idx"]), (self.cfg.video_dir,)),
        )


# --- NExT-QA ------------------------------------------------------------------------------------------
NEXTQA_GROUPS = {"C": "causal", "T": "temporal", "D": "descriptive"}


@dataclass
class NExTQAConfig(BenchmarkConfig):
    name: str = "nextqa_mc_test"
    root: str = "data/nextqa"
    questions_file: str = "MC/test-*.parquet"
    video_dir: str = "NExTVideo"
    # nextqa_mc_test.yaml (and the _default_template_yaml it includes) sets no lmms_eval_specific_kwargs, so
    # lmms-eval asks the question and its options with no instruction
    post_prompt: str = ""
    download: ClassVar[str] = _hf("lmms-lab/NExTQA", "then unzip videos.zip in {root} (-> {root}/NExTVideo/<video>.mp4)")


@DATASETS.register("nextqa_mc_test", config=NExTQAConfig)
class NExTQA(Benchmark):
    """NExT-QA multiple choice, test split (Xiao et al., CVPR 2021): 8,564 five-option questions.
    Layout as lmms-eval's `nextqa_mc_test` task (lmms_eval/tasks/nextqa/utils.py): rows of
    MC/test-*.parquet {video, frame_count, width, height, question, answer (option index), qid, type,
    a0..a4}, video NExTVideo/<video>.mp4 (also found in the original NExTVideo/<group>/<video>.mp4).
    Metric: accuracy, reported per question type (CW, CH, TN, TC, DC, DL, DO) and per group (causal,
    temporal, descriptive: the NExT-QA paper's Acc@C, Acc@T, Acc@D). A record's id is <video>_<qid>:
    qid numbers the questions of one video.
    Prompt (lmms_eval/tasks/nextqa/utils.py, nextqa_doc_to_text_mc): the question, then "A. <a0>" ... "E. <a4>"
    on their own lines, nothing after them (its yaml sets no post-prompt); generated answers are read by its
    MMMU-style parser (`nextqa`)."""

    config = NExTQAConfig
    letter_reader = "nextqa"

    def make_sample(self, row):
        options = [str(row[f"a{i}"]).strip() for i in range(5) if f"a{i}" in row]
        qtype = str(row.get("type", ""))
        return self.sample(
            id=f"{row['video']}_{row['qid']}", question=row["question"], options=options,
            answer=answer_letter(row["answer"], options, "index"),
            video=self.videos.find(str(row["video"]), (self.cfg.video_dir,)), question_type=qtype,
            categories={"group": NEXTQA_GROUPS.get(qtype[:1], qtype)} if qtype else {},
        )


# --- Perception Test ------------------------------------------------------------------------------------
@dataclass
class PerceptionTestConfig(BenchmarkConfig):
    name: str = "perceptiontest_val_mc"
    root: str = "data/perceptiontest_val"
    questions_file: str = "mc_question_val/validation-*.parquet"
    video_dir: str = "videos"
    # utils.perceptiontest_val_doc_to_text writes it after the options (the yaml's default post-prompt is "")
    post_prompt: str = "\n" + MC_INSTRUCTION
    download: ClassVar[str] = _hf(
        "lmms-lab/PerceptionTest_Val", "then unzip its video archives in {root} (-> {root}/videos/<video_name>.mp4)")


@DATASETS.register("perceptiontest_val_mc", config=PerceptionTestConfig)
class PerceptionTest(Benchmark):
    """Perception Test multiple-choice video QA, validation split (Patraucean et al., NeurIPS 2023):
    19,140 three-option questions. Layout as lmms-eval's `perceptiontest_val_mc` task
    (lmms_eval/tasks/perceptiontest/val/utils.py): rows of mc_question_val/validation-*.parquet
    {video_name, question, question_id, options [3], answer_id "0".."2", area, reasoning, tag}, video
    videos/<video_name>.mp4. Metric: accuracy (top-1), reported per area (the question type) and per
    reasoning skill. A record's id is <video_name>_<question_id>.
    Prompt (lmms_eval/tasks/perceptiontest/val/utils.py): the question, "A. ...", "B. ...", "C. ...", then
    "\nAnswer with the option's letter from the given choices directly."; generated answers are read as its
    process_results does (`perceptiontest`: the first standalone A-D)."""

    config = PerceptionTestConfig
    letter_reader = "perceptiontest"

    def make_sample(self, row):
        options = as_list(row["options"])
        return self.sample(
            id=f"{row['video_name']}_{row['question_id']}", question=row["question"], options=options,
            answer=answer_letter(row["answer_id"], options, "index"),
            video=self.videos.find(str(row["video_name"]), (self.cfg.video_dir,)), question_type=first(row, "area", default=""),
            categories={k: row[k] for k in ("area", "reasoning") if row.get(k)},
        )


# --- MVBench ------------------------------------------------------------------------------------------
# Each task's video folder in the `video` revision of OpenGVLab/MVBench, where every clip is an MP4 cut to
# the question's segment (so no start/end bounds apply), as lmms-eval's mvbench tasks read it.
MVBENCH_VIDEO_FOLDERS = {
    "action_sequence": "star/Charades_segment",
    "action_prediction": "star/Charades_segment",
    "action_antonym": "ssv2_video_mp4",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test",
    "object_existence": "clevrer/video_validation",
    "object_interaction": "star/Charades_segment",
    "object_shuffle": "perception/videos",
    "moving_direction": "clevrer/video_validation",
    "action_localization": "sta/sta_video_segment",
    "scene_transition": "scene_qa/video",
    "action_count": "perception/videos",
    "moving_count": "clevrer/video_validation",
    "moving_attribute": "clevrer/video_validation",
    "state_change": "perception/videos",
    "fine_grained_pose": "nturgbd_convert",
    "character_order": "perception/videos",
    "egocentric_navigation": "vlnqa",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment",
    "counterfactual_inference": "clevrer/video_validation",
}


# lmms_eval/tasks/mvbench/utils.py (mvbench_doc_to_text) and its 20 task yamls (post_prompt "Only give the best
# option.\n"): "Question:" glued to the question, "\nOption:\n", each option "(A) ..." on its own line.
MVBENCH_PROMPT = TaskPrompt(layout="{context}{pre_prompt}Question:{question}\nOption:\n{options}\n{post_prompt}",
                            option_format="({letter}) {option}",
                            likelihood_layout="{context}{pre_prompt}Question:{question}")


@dataclass
class MVBenchConfig(BenchmarkConfig):
    name: str = "mvbench"
    root: str = "data/mvbench"
    questions_file: str = "json/*.json"
    video_dir: str = "."
    metric: str = "mvbench_accuracy"  # lmms-eval's aggregation: empty responses excluded, mean over tasks
    post_prompt: str = "Only give the best option.\n"
    download: ClassVar[str] = (
        "Download the `video` revision of the Hugging Face dataset OpenGVLab/MVBench (`hf download "
        "OpenGVLab/MVBench --repo-type dataset --revision video --local-dir {root}`), then unzip its video "
        "archives in {root} so that each task's folder (star/Charades_segment, clevrer/video_validation, ...) "
        "is directly under it; or point dataset.root (or $AIM_DATA_DIR) at an existing copy.")


@DATASETS.register("mvbench", config=MVBenchConfig)
class MVBench(Benchmark):
    """MVBench (Li et al., CVPR 2024): 20 temporal tasks of 200 questions each, 2-5 options. Layout as
    lmms-eval's mvbench tasks (lmms_eval/tasks/mvbench/utils.py, dataset revision `video`): one
    json/<task>.json per task, a list of {video, question, candidates, answer (the option's text)}, and
    the video under the task's folder (MVBENCH_VIDEO_FOLDERS; also tried under data0613/ and video/).
    Metric: the mean of the 20 per-task accuracies, as MVBench's "Avg", each task's accuracy over the questions
    answered as lmms-eval's mvbench_aggregate_results counts them: a generated response that is empty leaves the
    denominator (`mvbench_accuracy`; `mean_over_types` counts it as wrong).
    Prompt: MVBENCH_PROMPT; generated answers are read as its mcq_acc does (`mvbench`)."""

    config = MVBenchConfig
    layout = MVBENCH_PROMPT
    letter_reader = "mvbench"

    def make_sample(self, row):
        task = row["_file"]
        options = as_list(row["candidates"])
        folder = MVBENCH_VIDEO_FOLDERS.get(task, task)
        return self.sample(
            id=f"{task}_{row['_row']}", question=row["question"], options=options,
            answer=answer_letter(row["answer"], options, "text"),
            video=self.videos.find(str(row["video"]), (folder, f"data0613/{folder}", f"video/{folder}")),
            question_type=task,
        )
