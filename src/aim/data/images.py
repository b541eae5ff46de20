"""A generic image multiple-choice dataset (`dataset=image_mcq`), the image counterpart of `video_mcq`.

Layout: `<root>/<questions_file>`, a JSON list of {id, image, question, options, answer[, question_type]}
(`answer` an option letter, or none: unlabeled), and `<root>/<image_dir>/<image>`, any format PIL reads;
the questions file is read and checked as `video_mcq`'s is (`aim.data.read_questions`, `unaskable`). Every
sample is one image: it loads as uint8 RGB [1, H, W, 3] (PIL's convert("RGB"), `aim.data.image_source`) with
`modality="image"`, so the adapter encodes it as an image (LLaVA-1.5: 576 tokens, merged per image). A
missing or undecodable image skips its sample (`ImageDecodeError`), never the run. The paper's image
benchmarks are read in their own release layouts (`aim.data.image_benchmarks`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from aim.checks import check_choice
from aim.data import DATASETS, METRICS, SampleList, check_limit, question_fields, read_questions
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
            fields = question_fields(r, "image")
            path = self.root / image_dir / str(r.get("image") or "")
            image = None if fields["skip_reason"] else FileImage(path)
            self.samples.append(ImageSample(**fields, video=path, num_frames=1, image=image))
