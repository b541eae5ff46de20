"""Datasets yield `Sample`s; decoding (PyAV) and frame sampling live here, not in the models.

The generic loader (`video_mcq`) reads one common layout: `<root>/<questions_file>` (a JSON list of
{id, video, question, options[, answer, question_type]}) and `<root>/<video_dir>/<video>`; without an
answer (or with null) a sample is unlabeled: it gets no accuracy, only fidelity to the unreduced model
(`aim.eval.fidelity`), so a setting can be judged on one's own videos. The paper's benchmarks are read
in their own release layouts (`aim.data.benchmarks`).
A video that is missing or cannot be decoded fails only its own sample (`VideoDecodeError`), never the run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from aim.config import check_choice, check_range
from aim.data.video import VideoDecodeError, decode_frames, decode_frames_with_times
from aim.registry import Registry

DATASETS = Registry("dataset")

__all__ = ["DATASETS", "METRICS", "Sample", "VideoDecodeError", "VideoMCQDataset", "SyntheticVideoDataset"]

# The headline metric a dataset declares (`dataset.metric`); `aim.tracking.results` computes it.
METRICS = {
    "accuracy": "fraction of the questions answered correctly",
    "mean_over_types": "mean of the per-question-type accuracies (MLVU's m-avg, MVBench's average over its tasks)",
    # the image benchmarks' own metrics (aim.eval.scoring), from what each record carries
    "vqa_accuracy": "mean per-sample VQA soft accuracy (VQA-v2, TextVQA)",
    "mme_score": "MME: perception + cognition, each subtask's acc*100 + acc+*100 summed",
    "pope_f1": "POPE: F1 with 'yes' as positive, averaged over its splits",
    "circular_accuracy": "MMBench CircularEval: a question counts only if all its circular shifts are right",
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

    def load_frames(self) -> np.ndarray:
        """uint8 RGB [num_frames, H, W, 3], uniformly sampled; raises VideoDecodeError."""
        return self.load()[0]

    def load(self) -> tuple[np.ndarray, str]:
        """The sampled frames and the question text to prompt with; raises VideoDecodeError."""
        if not self.video.is_file():
            raise VideoDecodeError(f"missing video {self.video}")
        if self.subtitles is None:
            return decode_frames(self.video, self.num_frames), self.question
        from aim.data.subtitles import with_subtitles

        frames, times = decode_frames_with_times(self.video, self.num_frames)
        return frames, with_subtitles(self.question, self.subtitles, times)


def read_questions(root: Path, questions_file: str, limit: int | None) -> list[dict]:
    """The first `limit` rows (all when None) of a questions file: a JSON list under root."""
    path = Path(root) / questions_file
    if not path.exists():
        raise FileNotFoundError(f"dataset.root: no {questions_file} under {root}")
    rows = json.loads(path.read_text())
    return rows if limit is None else rows[:limit]


class SampleList:
    """What every dataset is to the evaluation loop: the list `self.samples`, built once, sized and iterable."""

    samples: list

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator:
        return iter(self.samples)


@dataclass
class VideoMCQConfig:
    name: str = "video_mcq"
    root: str = "???"
    questions_file: str = "questions.json"
    video_dir: str = "videos"
    num_frames: int = 8
    limit: int | None = None  # evaluate only the first `limit` samples
    metric: str = "accuracy"  # the headline metric of the summary: one of METRICS

    def __post_init__(self):
        check_range("num_frames", self.num_frames, 1)
        if self.limit is not None:
            check_range("limit", self.limit, 0)
        check_choice("metric", self.metric, METRICS)


@DATASETS.register("video_mcq", config=VideoMCQConfig)
class VideoMCQDataset(SampleList):
    """Multiple-choice questions over videos, in the layout described in this module's docstring."""

    def __init__(self, root, questions_file="questions.json", video_dir="videos", num_frames=8, limit=None,
                 name="video_mcq", metric="accuracy"):
        self.root = Path(root)
        rows = read_questions(self.root, questions_file, limit)
        self.samples = [
            Sample(
                id=str(r["id"]), question=r["question"], options=list(r["options"]), answer=r.get("answer"),
                video=self.root / video_dir / r["video"], num_frames=num_frames,
                question_type=r.get("question_type", ""),
            )
            for r in rows
        ]


@dataclass
class SyntheticVideoConfig(VideoMCQConfig):
    name: str = "synthetic_video"
    num_samples: int = 500
    seed: int = 2025
    generate: bool = True  # write the benchmark under root if it is not there yet

    def __post_init__(self):
        super().__post_init__()
        check_range("num_samples", self.num_samples, 1)


@DATASETS.register("synthetic_video", config=SyntheticVideoConfig)
class SyntheticVideoDataset(VideoMCQDataset):
    """The bundled benchmark (`aim.data.synthetic`): generated from its seed on first use, then read
    from disk like any other video benchmark."""

    def __init__(self, root, num_samples=500, seed=2025, generate=True, name="synthetic_video", **kwargs):
        from aim.data.synthetic import generate_benchmark

        if generate:
            generate_benchmark(Path(root), num_samples=num_samples, seed=seed)
        super().__init__(root, **kwargs)


from aim.data import benchmarks as _benchmarks  # noqa: E402,F401  (registers the paper's benchmarks)
from aim.data import image_benchmarks as _image_benchmarks  # noqa: E402,F401  (and its image benchmarks)
from aim.data import images as _images  # noqa: E402,F401  (the generic image_mcq layout)
