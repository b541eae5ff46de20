"""Datasets yield `Sample`s; decoding (PyAV) and frame sampling live here, not in the models.

The generic loader (`video_mcq`) reads one common layout: `<root>/<questions_file>` (a JSON list of
{id, video, question, options[, answer, question_type]}) and `<root>/<video_dir>/<video>`; without an
answer (or with null) a sample is unlabeled: it gets no accuracy, only fidelity to the unreduced model
(`aim.eval.fidelity`), so a setting can be judged on one's own videos. The paper's benchmarks are read
in their own release layouts (`aim.data.benchmarks`).
A video that is missing or cannot be decoded fails only its own sample (`VideoDecodeError`), never the run;
so does a question that cannot be asked (no options, an answer that is not one of its option letters, no
video): its sample carries a `skip_reason` and is recorded as skipped. A questions file that cannot be read
(malformed JSON, not a list, empty, an entry without an id, two entries with one id) is a config error,
raised by `build_dataset` before any model loads, as is a selection that holds no samples.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from aim.checks import ConfigError, check_choice, check_range
from aim.data.video import FrameTimes, VideoDecodeError, decode_frames, decode_frames_with_times
from aim.prompts import GENERIC_MC, MC_INSTRUCTION, TaskPrompt
from aim.registry import Registry

DATASETS = Registry("dataset")

__all__ = ["DATASETS", "METRICS", "Sample", "VideoDecodeError", "VideoMCQDataset", "SyntheticVideoDataset",
           "build_dataset"]

LETTERS = "ABCDEFGHIJ"  # the option letters, in order: a question has at most ten options

# The headline metric a dataset declares (`dataset.metric`); `aim.tracking.results` computes it.
METRICS = {
    "accuracy": "fraction of the questions answered correctly",
    "mean_over_types": "mean of the per-question-type accuracies (MLVU's m-avg, MVBench's average over its tasks)",
    # the image benchmarks' own metrics (aim.eval.scoring), from what each record carries
    "vqa_accuracy": "mean per-sample VQA soft accuracy (VQA-v2, TextVQA)",
    "mme_score": "MME: perception + cognition, each subtask's acc*100 + acc+*100 summed",
    "pope_f1": "POPE: F1 with 'yes' as positive, averaged over its splits",
    "circular_accuracy": "MMBench CircularEval: a question counts only if all its circular shifts are right",
    "mvbench_accuracy": "MVBench as lmms-eval aggregates it: per task over the questions answered (an empty generated "
                        "response leaves the denominator), then the mean over the tasks",
}


@dataclass
class Sample:
    id: str
    question: str
    options: list[str]
    answer: str | None  # option letter (free-form answer formats: the reference answer); None: unlabeled
    video: Path
    num_frames: int
    question_type: str = ""
    # breakdowns reported beside the per-type accuracy, e.g. {"duration": "short", "domain": "Knowledge"}
    categories: dict[str, str] = field(default_factory=dict)
    # an .srt whose lines at the sampled frames' times go into the prompt before the question (a path to
    # a missing file means the video has no subtitles); None: no subtitles in the prompt
    subtitles: Path | None = None
    # the question's text as its benchmark's lmms-eval task lays it out (aim.prompts); the adapter wraps it in
    # the model's chat template
    prompt: TaskPrompt = field(default_factory=lambda: GENERIC_MC)
    # how a generated answer to a multiple-choice question is read (aim.eval.choices.LETTER_READERS): the
    # benchmark's own rule in lmms-eval; "first_letter" for the generic datasets
    letter_reader: str = "first_letter"
    # How a generated response is scored (aim.eval.scoring.ANSWER_FORMATS): "letter" compares an option
    # letter with `answer`; free-form formats ("vqa", "exact", "mme_yes_no", ...) score the text against
    # `answer` and `answers` (every reference answer: VQA's ten human answers) and need eval.mode=generate.
    answer_format: str = "letter"
    answers: list[str] = field(default_factory=list)
    # samples a metric scores together (MME: the two questions of an image; MMBench: a question's circular
    # shifts); empty for none
    group: str = ""
    # what `load` returns and the model adapter takes: "video" (frames [T, H, W, 3]) or "image" (the one
    # image as [1, H, W, 3]; `aim.data.image_source.ImageSample`)
    modality: str = "video"
    # why the sample cannot be asked (`unaskable`); the evaluation loop records it as skipped with this
    # reason, as it does a video that cannot be decoded. Empty: it can be asked
    skip_reason: str = ""
    # when the sampled frames were shown (`aim.data.video.FrameTimes`): set by `load` from the decoded video,
    # passed to the model adapter's `prepare` (Qwen2.5-VL's temporal positions); None until loaded, and for
    # images
    frame_times: FrameTimes | None = None
    # which frames `load` decodes (aim.data.video.FRAME_SAMPLING): the model's rule (its preset's
    # `frame_sampling`, lmms-eval's model class's), which the evaluation sets before loading
    frame_sampling: str = "segment_middle"

    def load_frames(self) -> np.ndarray:
        """uint8 RGB [num_frames, H, W, 3], sampled by `frame_sampling`; raises VideoDecodeError."""
        return self.load()[0]

    def load(self) -> tuple[np.ndarray, str]:
        """The sampled frames and the question; keeps their times in `frame_times` and puts the subtitles shown
        at those times into the prompt's `context` (before the task's instruction, as lmms-eval does).
        Raises VideoDecodeError."""
        if not self.video.is_file():
            raise VideoDecodeError(f"missing video {self.video}")
        frames, self.frame_times = decode_frames_with_times(self.video, self.num_frames, self.frame_sampling)
        if self.subtitles is not None:
            from dataclasses import replace

            from aim.data.subtitles import subtitle_block

            self.prompt = replace(self.prompt, context=subtitle_block(self.subtitles, self.frame_times.seconds))
        return frames, self.question


def load_json(path: Path, field: str = "questions_file", lines: bool = False):
    """The content of a JSON file (`lines`: a JSON-lines file, as the list of its rows); one that is not valid
    JSON raises ValueError naming the config `field` it came from, the file, line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ValueError(f"{field}: {path} is not valid JSON: {reason}") from None
    numbered = enumerate(text.splitlines(), 1) if lines else [(1, text)]
    rows = []
    for first_line, chunk in numbered:
        if lines and not chunk.strip():
            continue
        try:
            rows.append(json.loads(chunk))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{field}: {path} is not valid JSON: {exc.msg} at line {first_line + exc.lineno - 1} "
                             f"column {exc.colno}") from None
    return rows if lines else rows[0]


def read_questions(root: Path, questions_file: str, limit: int | None) -> list[dict]:
    """The first `limit` entries (all when None) of a questions file: a JSON list of objects under root, each
    with its own `id`. A file that cannot be used raises ValueError naming the field (`root`,
    `questions_file`), the file and the entries at fault (`file[index]`); whether an entry can be asked is
    `unaskable`'s question."""
    root = Path(root)
    path = root / questions_file
    if not path.is_file():
        where = "no such folder" if not root.is_dir() else f"no {questions_file} there"
        raise ValueError(f"root: no questions file at {path} ({where}); the layout is <root>/{questions_file}")
    rows = load_json(path, "questions_file")
    if not isinstance(rows, list):
        raise ValueError(f"questions_file: {path} must hold a JSON list of questions, not a {type(rows).__name__}")
    if not rows:
        raise ValueError(f"questions_file: {path} holds no questions (an empty list)")
    first_with: dict[str, int] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or row.get("id") in (None, ""):
            what = "has no id" if isinstance(row, dict) else f"is a {type(row).__name__}, not an object"
            raise ValueError(f"questions_file: {path}[{i}] {what}; every question needs an `id`")
        key = str(row["id"])
        if key in first_with:
            raise ValueError(f"questions_file: {path}[{first_with[key]}] and {path}[{i}] have the same id {key!r}; "
                             "ids must be unique")
        first_with[key] = i
    return rows if limit is None else rows[:limit]


def unaskable(row: dict, media_key: str) -> str:
    """Why a questions-file entry cannot be asked, "" when it can: it needs its media file (`media_key`), a
    question, 1 to 10 options and, when labelled, an answer that is one of its option letters (no answer, or
    null: unlabeled)."""
    if not isinstance(row.get(media_key), str) or not row[media_key]:
        return f"no {media_key!r}: the entry names no {media_key} file"
    if not isinstance(row.get("question"), str):
        return "no 'question' text"
    options = row.get("options")
    if not isinstance(options, list) or not 1 <= len(options) <= len(LETTERS):
        return f"'options' must be a list of 1 to {len(LETTERS)} option texts, got {options!r}"
    letters = list(LETTERS[: len(options)])
    answer = row.get("answer")
    if answer not in (None, "") and answer not in letters:  # none: unlabeled (`aim.eval.loop.labelled`)
        return f"'answer' {answer!r} is not one of its option letters {', '.join(letters)} (or null: unlabeled)"
    return ""


def question_fields(row: dict, media_key: str) -> dict:
    """The Sample fields of a questions-file entry (id, question, options, answer, question_type,
    skip_reason); one that cannot be asked (`unaskable`) gets its reason and no question."""
    reason = unaskable(row, media_key)
    asked = {"question": "", "options": [], "answer": None} if reason else {
        "question": row["question"], "options": [str(o) for o in row["options"]], "answer": row.get("answer")}
    return {"id": str(row["id"]), **asked, "question_type": str(row.get("question_type") or ""), "skip_reason": reason}


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit: must be >= 1 (the first `limit` samples) or null (every sample), got {limit!r}")


class SampleList:
    """What every dataset is to the evaluation loop: the list `self.samples`, built once, sized and iterable."""

    samples: list

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator:
        return iter(self.samples)


NOT_SELECTION = ("name", "root", "metric", "num_frames", "pre_prompt", "post_prompt")  # fields that choose no samples


def build_dataset(cfg) -> SampleList:
    """The dataset of a validated `dataset` config, read before any model loads: a questions file or release
    that cannot be read, or a selection that holds no samples, raises ConfigError naming the field."""
    try:
        dataset = DATASETS.build(cfg.name, **asdict(cfg))
    except ValueError as exc:  # the messages start with the field at fault, as config checks' do
        raise ConfigError(f"dataset.{exc}") from None
    except OSError as exc:
        raise ConfigError(f"dataset.root: cannot read {cfg.name} under {cfg.root}: {exc}") from None
    if not len(dataset):
        selection = ", ".join(f"{k}={v!r}" for k, v in asdict(cfg).items() if k not in NOT_SELECTION)
        raise ConfigError(f"dataset: {cfg.name} under {cfg.root} selects no samples ({selection})")
    return dataset


@dataclass
class VideoMCQConfig:
    name: str = "video_mcq"
    root: str = "???"
    questions_file: str = "questions.json"
    video_dir: str = "videos"
    num_frames: int = 8
    limit: int | None = None  # evaluate only the first `limit` samples
    metric: str = "accuracy"  # the headline metric of the summary: one of METRICS
    # the prompt around the question and its lettered options (aim.prompts.GENERIC_MC): lmms-eval's generic
    # multiple-choice text, "<question>\nA. <option>\n...\nAnswer with the option's letter from the given
    # choices directly."
    pre_prompt: str = ""
    post_prompt: str = "\n" + MC_INSTRUCTION

    def __post_init__(self):
        check_range("num_frames", self.num_frames, 1)
        check_limit(self.limit)
        check_choice("metric", self.metric, METRICS)


@DATASETS.register("video_mcq", config=VideoMCQConfig)
class VideoMCQDataset(SampleList):
    """Multiple-choice questions over videos, in the layout described in this module's docstring."""

    layout: TaskPrompt = GENERIC_MC  # the text around the question; the config's pre/post prompts go into it

    def __init__(self, root, questions_file="questions.json", video_dir="videos", num_frames=8, limit=None,
                 name="video_mcq", metric="accuracy", pre_prompt="", post_prompt="\n" + MC_INSTRUCTION):
        from dataclasses import replace

        self.root = Path(root)
        prompt = replace(self.layout, pre_prompt=pre_prompt, post_prompt=post_prompt)
        self.samples = [
            Sample(**question_fields(r, "video"), video=self.root / video_dir / str(r.get("video") or ""),
                   num_frames=num_frames, prompt=prompt)
            for r in read_questions(self.root, questions_file, limit)
        ]


def default_synthetic_root(seed: int, num_samples: int) -> Path:
    """Where the bundled benchmark lives unless dataset.root says otherwise: conf/dataset/synthetic_video.yaml's
    `root`, $AIM_DATA_DIR (default `data`)/synthetic_video_s<seed>_n<num_samples>."""
    return Path(os.environ.get("AIM_DATA_DIR", "data")) / f"synthetic_video_s{seed}_n{num_samples}"


def generates_synthetic(root, seed: int, num_samples: int, generate: bool) -> bool:
    """Whether the bundled benchmark is (re)generated under root: at its default root, or anywhere when asked
    (`generate`); any other root must hold it already, so a mistyped root is an error, not a new benchmark."""
    return generate or Path(root).resolve() == default_synthetic_root(seed, num_samples).resolve()


# The bundled model's own prompt, which it was trained on (aim.toy.train): "<question> A <option> B <option> ...",
# no instruction; its preset's template adds "<s> user <video> " before and " answer :" after.
TOY_PROMPT = TaskPrompt(layout="{context}{pre_prompt}{question} {options}{post_prompt}", post_prompt="",
                        option_format="{letter} {option}", option_separator=" ")


@dataclass
class SyntheticVideoConfig(VideoMCQConfig):
    name: str = "synthetic_video"
    num_samples: int = 500
    seed: int = 2025
    generate: bool = False  # also generate it at a root other than the default one (it always is at that one)
    post_prompt: str = ""  # the bundled model's prompt (TOY_PROMPT) has no instruction

    def __post_init__(self):
        super().__post_init__()
        check_range("num_samples", self.num_samples, 1)
        root = Path(self.root)
        there = (root / self.questions_file).is_file()
        if not there and not generates_synthetic(root, self.seed, self.num_samples, self.generate):
            raise ValueError(
                f"root: no {self.questions_file} under {root}: the bundled benchmark is generated only at its default "
                f"root {default_synthetic_root(self.seed, self.num_samples)}, or at another root with "
                "dataset.generate=true; or point dataset.root at an existing copy")


@DATASETS.register("synthetic_video", config=SyntheticVideoConfig)
class SyntheticVideoDataset(VideoMCQDataset):
    """The bundled benchmark (`aim.data.synthetic`): generated from its seed on first use at its default root
    (or where `generate` asks), then read from disk like any other video benchmark. Its prompt is the one the
    bundled model was trained on (TOY_PROMPT): "<question> A <option> B <option> C <option> D <option>"."""

    layout = TOY_PROMPT

    def __init__(self, root, num_samples=500, seed=2025, generate=False, name="synthetic_video", post_prompt="",
                 **kwargs):
        from aim.data.synthetic import generate_benchmark

        if generates_synthetic(root, seed, num_samples, generate):
            generate_benchmark(Path(root), num_samples=num_samples, seed=seed)
        super().__init__(root, post_prompt=post_prompt, **kwargs)


from aim.data import benchmarks as _benchmarks  # noqa: E402,F401  (registers the paper's benchmarks)
from aim.data import image_benchmarks as _image_benchmarks  # noqa: E402,F401  (and its image benchmarks)
from aim.data import images as _images  # noqa: E402,F401  (the generic image_mcq layout)
