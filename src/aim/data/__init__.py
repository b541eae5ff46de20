"""Datasets yield `Sample`s; decoding (PyAV) and frame sampling live here, not in the models.

Every video benchmark is read from one layout: `<root>/<questions_file>` (a JSON list of
{id, video, question, options, answer[, question_type]}) and `<root>/<video_dir>/<video>`.
A video that cannot be decoded fails only its own sample (`VideoDecodeError`), never the run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from aim.config import check_range
from aim.data.video import VideoDecodeError, decode_frames
from aim.registry import Registry

DATASETS = Registry("dataset")

__all__ = ["DATASETS", "Sample", "VideoDecodeError", "VideoMCQDataset", "SyntheticVideoDataset"]


@dataclass
class Sample:
    id: str
    question: str
    options: list[str]
    answer: str  # option letter
    video: Path
    num_frames: int
    question_type: str = ""

    def load_frames(self) -> np.ndarray:
        """uint8 RGB [num_frames, H, W, 3], uniformly sampled; raises VideoDecodeError."""
        return decode_frames(self.video, self.num_frames)


@dataclass
class VideoMCQConfig:
    name: str = "video_mcq"
    root: str = "???"
    questions_file: str = "questions.json"
    video_dir: str = "videos"
    num_frames: int = 8
    limit: int | None = None  # evaluate only the first `limit` samples

    def __post_init__(self):
        check_range("num_frames", self.num_frames, 1)
        if self.limit is not None:
            check_range("limit", self.limit, 0)


@DATASETS.register("video_mcq", config=VideoMCQConfig)
class VideoMCQDataset:
    """Multiple-choice questions over videos, in the layout described in this module's docstring."""

    def __init__(self, root, questions_file="questions.json", video_dir="videos", num_frames=8, limit=None, name="video_mcq"):
        self.root = Path(root)
        path = self.root / questions_file
        if not path.exists():
            raise FileNotFoundError(f"dataset.root: no {questions_file} under {self.root}")
        rows = json.loads(path.read_text())
        rows = rows if limit is None else rows[:limit]
        self.samples = [
            Sample(
                id=str(r["id"]), question=r["question"], options=list(r["options"]), answer=r["answer"],
                video=self.root / video_dir / r["video"], num_frames=num_frames,
                question_type=r.get("question_type", ""),
            )
            for r in rows
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)


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
