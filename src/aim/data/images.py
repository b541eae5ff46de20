"""A generic image multiple-choice dataset (`dataset=image_mcq`), the image counterpart of `video_mcq`.

Layout: `<root>/<questions_file>`, a JSON list of {id, image, question, options, answer[, question_type]}
(`answer` an option letter, or none: unlabeled), and `<root>/<image_dir>/<image>`, any format PIL reads;
the questions file is read and checked as `video_mcq`'s is (`aim.data.read_questions`, `unaskable`). Every sample is one
image: it loads as uint8 RGB [1, H, W, 3] (PIL's convert("RGB"), `aim.data.image_source`) with
`modality="image"`, so the adapter encodes it as an image (LLaVA-1.5: 576 tokens, merged per image). A
missing or undecodable image skips its sample (`ImageDecodeError`), never the run. The paper's image
benchmarks are read in their own release layouts (`aim.data.image_benchmarks`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from aim.config import check_choice
from aim.data import DATASETS, METRICS, SampleList, check_limit, read_questions, unaskable
from aim.data.image_source import FileImage, ImageSample


@dataclass
class ImageMCQConfig:
    name: str = "image_mcq"
    root: str = "???"
    questions_file: str = "questions.json"
    image_dir: str = "images"
    num_frames: int = 1  # one image per sample, as in the image benchmarks (aim.flops reads it)
    limit: int | None = None  # evaluate only the first `limit` samples
    metric: str = "accuracy"  # the headline metric of the summary: one of aim.data.METRICS
    modality: ClassVar[str] = "image"  # what its samples hold (config-only tools read it)

    def __post_init__(self):
        if self.num_frames != 1:
            raise ValueError(f"num_frames: an image dataset gives one image per sample; must be 1, got {self.num_frames}")
        check_limit(self.limit)
        check_choice("metric", self.metric, METRICS)


@DATASETS.register("image_mcq", config=ImageMCQConfig)
class ImageMCQDataset(SampleList):
    """Multiple-choice questions over images, in the layout described in this module's docstring."""

    def __init__(self, root, questions_file="questions.json", image_dir="images", num_frames=1, limit=None,
                 name="image_mcq", metric="accuracy"):
        self.root = Path(root)
        self.samples = []
        for r in read_questions(self.root, questions_file, limit):
            reason = unaskable(r, "image")
            path = self.root / image_dir / str(r.get("image") or "")
            self.samples.append(ImageSample(
                id=str(r["id"]), question="" if reason else r["question"],
                options=[] if reason else [str(o) for o in r["options"]], answer=None if reason else r.get("answer"),
                video=path, num_frames=1, question_type=str(r.get("question_type") or ""),
                image=None if reason else FileImage(path), skip_reason=reason,
            ))
