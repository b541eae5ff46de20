"""Tiny copies of the paper's image benchmarks in their Hugging Face release layouts, as lmms-eval's tasks
read them: parquet question files (pyarrow, the schema Hugging Face `datasets` writes) with each image in
the row as the `Image` struct {bytes, path}, PNG or JPEG encoded by PIL.

Images are 24x24 and flat: image k has red channel 40 * k, so a test can tell which image a sample
loaded. Grey ("L"), RGBA and palette PNGs appear too (decoded to RGB). Every benchmark has one question
whose image is broken (bytes that are no image) and most one whose image is missing (null, or a GQA imageId
with no image row): the loop must skip and count them.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

SIZE = 24
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # Hugging Face's Image feature in parquet
BROKEN = {"bytes": b"\x89PNG\r\n\x1a\n not really an image", "path": "broken.png"}


def encoded(k: int, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    rgb = Image.fromarray(np.full((SIZE, SIZE + 8, 3), (40 * k, 100, 200 - 20 * k), dtype=np.uint8))
    img = rgb.convert(mode) if mode != "RGB" else rgb
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def image(k: int, fmt: str = "PNG", mode: str = "RGB") -> dict:
    return {"bytes": encoded(k, fmt, mode), "path": f"img_{k}.{fmt.lower()}"}


def write(path: Path, rows: list[dict], schema: pa.Schema, row_group_size: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)


def answers(*texts: str) -> list[dict]:
    return [{"answer": t, "answer_confidence": "yes", "answer_id": i + 1} for i, t in enumerate(texts)]


VQA_SCHEMA = pa.schema([
    ("question_type", pa.string()), ("multiple_choice_answer", pa.string()),
    ("answers", pa.list_(pa.struct([("answer", pa.string()), ("answer_confidence", pa.string()),
                                    ("answer_id", pa.int64())]))),
    ("image_id", pa.int64()), ("answer_type", pa.string()), ("question_id", pa.int64()), ("question", pa.string()),
    ("image", IMAGE),
])


def vqav2(root: Path) -> Path:
    """lmms-lab/VQAv2: data/validation-00000-of-00001.parquet (row groups of 2 rows, so images are found
    across row groups) and data/testdev-00000-of-00001.parquet (no answers)."""
    rows = [
        {"question_type": "how many", "multiple_choice_answer": "2", "image_id": 1, "answer_type": "number",
         "question_id": 1001, "question": "How many dogs are there?", "image": image(1),
         "answers": answers("2", "2", "2", "2", "two", "2", "3", "2", "2", "2")},
        {"question_type": "is the", "multiple_choice_answer": "yes", "image_id": 2, "answer_type": "yes/no",
         "question_id": 1002, "question": "Is the sky blue?", "image": image(2, "JPEG"),
         "answers": answers(*(["yes"] * 7 + ["no"] * 3))},
        {"question_type": "what color is the", "multiple_choice_answer": "red", "image_id": 3, "answer_type": "other",
         "question_id": 1003, "question": "What color is the car?", "image": image(3, "PNG", "L"),
         "answers": answers("red", "red", "dark red", "red", "maroon", "red", "red", "red", "red", "red")},
        {"question_type": "what", "multiple_choice_answer": "cat", "image_id": 4, "answer_type": "other",
         "question_id": 1004, "question": "What animal is this?", "image": BROKEN, "answers": answers(*["cat"] * 10)},
        {"question_type": "what", "multiple_choice_answer": "cat", "image_id": 5, "answer_type": "other",
         "question_id": 1005, "question": "What animal is that?", "image": None, "answers": answers(*["cat"] * 10)},
    ]
    write(root / "data" / "validation-00000-of-00001.parquet", rows, VQA_SCHEMA, row_group_size=2)
    testdev = [{**r, "answers": None, "multiple_choice_answer": None, "answer_type": None, "question_type": None,
                "question_id": r["question_id"] + 1000} for r in rows[:2]]
    write(root / "data" / "testdev-00000-of-00001.parquet", testdev, VQA_SCHEMA)
    return root


def gqa(root: Path) -> Path:
    """lmms-lab/GQA: testdev_balanced_instructions/testdev-00000-of-00001.parquet (questions) and
    testdev_balanced_images/testdev-00000-of-00001.parquet ({id, image}, joined on imageId)."""
    types = pa.struct([("structural", pa.string()), ("semantic", pa.string()), ("detailed", pa.string())])
    schema = pa.schema([("id", pa.string()), ("imageId", pa.string()), ("question", pa.string()),
                        ("answer", pa.string()), ("fullAnswer", pa.string()), ("isBalanced", pa.bool_()),
                        ("types", types)])
    rows = [
        {"id": "201307251", "imageId": "n161313", "question": "Is it overcast?", "answer": "no",
         "fullAnswer": "No, it is clear.", "isBalanced": True,
         "types": {"structural": "verify", "semantic": "global", "detailed": "weatherVerify"}},
        {"id": "201640614", "imageId": "n235859", "question": "Who is wearing a shirt?", "answer": "girl",
         "fullAnswer": "The girl is wearing a shirt.", "isBalanced": True,
         "types": {"structural": "query", "semantic": "rel", "detailed": "relS"}},
        {"id": "202225914", "imageId": "n161313", "question": "What is on the table?", "answer": "laptop",
         "fullAnswer": "The laptop is on the table.", "isBalanced": True,
         "types": {"structural": "query", "semantic": "rel", "detailed": "relS"}},
        {"id": "20968379", "imageId": "n999999", "question": "Is the man standing?", "answer": "yes",
         "fullAnswer": "Yes, the man is standing.", "isBalanced": True,
         "types": {"structural": "verify", "semantic": "attr", "detailed": "verifyAttr"}},
        {"id": "201735451", "imageId": "n0broken", "question": "What color is the bag?", "answer": "black",
         "fullAnswer": "The bag is black.", "isBalanced": True,
         "types": {"structural": "query", "semantic": "attr", "detailed": "color"}},
    ]
    write(root / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet", rows, schema)
    images = [{"id": "n161313", "image": image(1, "JPEG")}, {"id": "n235859", "image": image(2, "PNG", "RGBA")},
              {"id": "n0broken", "image": BROKEN}]
    write(root / "testdev_balanced_images" / "testdev-00000-of-00001.parquet", images,
          pa.schema([("id", pa.string()), ("image", IMAGE)]))
    return root


def mme(root: Path) -> Path:
    """lmms-lab/MME: data/test-00000-of-00001.parquet, two questions per image (question_id = image file)."""
    schema = pa.schema([("question_id", pa.string()), ("image", IMAGE), ("question", pa.string()),
                        ("answer", pa.string()), ("category", pa.string())])
    q = " Please answer yes or no."
    rows = [
        {"question_id": "000000006040.jpg", "image": image(1, "JPEG"), "question": f"Is there a train in this image?{q}",
         "answer": "Yes", "category": "existence"},
        {"question_id": "000000006040.jpg", "image": image(1, "JPEG"), "question": f"Is there a bed in this image?{q}",
         "answer": "No", "category": "existence"},
        {"question_id": "000000018150.jpg", "image": image(2), "question": f"Is there a bus in this image?{q}",
         "answer": "Yes", "category": "existence"},
        {"question_id": "000000018150.jpg", "image": image(2), "question": f"Is there a cow in this image?{q}",
         "answer": "No", "category": "existence"},
        {"question_id": "0020.png", "image": image(3, "PNG", "P"), "question": f"Is a c program shown?{q}",
         "answer": "Yes", "category": "code_reasoning"},
        {"question_id": "0020.png", "image": image(3, "PNG", "P"), "question": f"Is a python program shown?{q}",
         "answer": "No", "category": "code_reasoning"},
        {"question_id": "0099.png", "image": BROKEN, "question": f"Is the output 5?{q}", "answer": "Yes",
         "category": "code_reasoning"},
        {"question_id": "0099.png", "image": BROKEN, "question": f"Is the output 7?{q}", "answer": "No",
         "category": "code_reasoning"},
    ]
    write(root / "data" / "test-00000-of-00001.parquet", rows, schema)
    return root


def textvqa(root: Path) -> Path:
    """lmms-lab/textvqa: data/validation-00000-of-00001.parquet."""
    schema = pa.schema([
        ("image_id", pa.string()), ("question_id", pa.int32()), ("question", pa.string()),
        ("question_tokens", pa.list_(pa.string())), ("image", IMAGE), ("image_width", pa.int32()),
        ("image_height", pa.int32()), ("flickr_original_url", pa.string()), ("flickr_300k_url", pa.string()),
        ("answers", pa.list_(pa.string())), ("image_classes", pa.list_(pa.string())), ("set_name", pa.string()),
        ("ocr_tokens", pa.list_(pa.string())),
    ])
    common = {"image_width": SIZE + 8, "image_height": SIZE, "flickr_original_url": "", "flickr_300k_url": "",
              "image_classes": ["Sign"], "set_name": "val"}
    rows = [
        {**common, "image_id": "003a8ae2ef43b901", "question_id": 34602, "question": "what is the brand of this camera?",
         "question_tokens": ["what", "is", "the", "brand", "of", "this", "camera"], "image": image(1, "JPEG"),
         "answers": ["nous les gosses", "dakota", "clos culombu", "dakota digital", "dakota", "dakota",
                     "dakota digital", "dakota digital", "dakota", "dakota"], "ocr_tokens": ["DAKOTA", "DIGITAL"]},
        {**common, "image_id": "00c359f294f7dcd9", "question_id": 34603, "question": "what does the small white text say?",
         "question_tokens": ["what", "does", "the", "small", "white", "text", "say"], "image": image(2),
         "answers": ["copenhagen", "copenhagen", "copenhagen", "copenhagen", "copenhagen", "thursday", "copenhagen",
                     "copenhagen", "copenhagen", "Copenhagen."], "ocr_tokens": ["Copenhagen", "Thursday"]},
        {**common, "image_id": "0broken", "question_id": 34604, "question": "what time is it?",
         "question_tokens": ["what", "time", "is", "it"], "image": BROKEN, "answers": ["5:00"] * 10, "ocr_tokens": []},
    ]
    write(root / "data" / "validation-00000-of-00001.parquet", rows, schema)
    return root


def scienceqa(root: Path) -> Path:
    """lmms-lab/ScienceQA config ScienceQA-IMG: ScienceQA-IMG/test-00000-of-00001.parquet."""
    schema = pa.schema([("image", IMAGE), ("question", pa.string()), ("choices", pa.list_(pa.string())),
                        ("answer", pa.int8()), ("hint", pa.string()), ("task", pa.string()), ("grade", pa.string()),
                        ("subject", pa.string()), ("topic", pa.string()), ("category", pa.string()),
                        ("skill", pa.string()), ("lecture", pa.string()), ("solution", pa.string())])
    common = {"task": "closed choice", "topic": "geography", "category": "Geography", "skill": "Read a map",
              "lecture": "", "solution": ""}
    rows = [
        {**common, "image": image(1), "question": "Which of these states is farthest north?",
         "choices": ["West Virginia", "Louisiana", "Arizona", "Oklahoma"], "answer": 0, "hint": "",
         "grade": "grade2", "subject": "social science"},
        {**common, "image": image(2, "JPEG"), "question": "Which animal's feet are also adapted for sticking to smooth surfaces?",
         "choices": ["Madagascar day gecko", "bilby"], "answer": 0,
         "hint": "Tree frogs live in rain forests.", "grade": "grade4", "subject": "natural science"},
        {**common, "image": None, "question": "Which tense does the sentence use?", "choices": ["past", "present", "future"],
         "answer": 2, "hint": "", "grade": "grade8", "subject": "language science"},
        {**common, "image": BROKEN, "question": "What is the capital of Utah?",
         "choices": ["Salt Lake City", "Denver", "Boise"], "answer": 0, "hint": "", "grade": "grade9",
         "subject": "social science"},
    ]
    write(root / "ScienceQA-IMG" / "test-00000-of-00001.parquet", rows, schema)
    return root


MMBENCH_SCHEMA = pa.schema([
    ("index", pa.string()), ("question", pa.string()), ("hint", pa.string()), ("answer", pa.string()),
    ("A", pa.string()), ("B", pa.string()), ("C", pa.string()), ("D", pa.string()), ("category", pa.string()),
    ("image", IMAGE), ("source", pa.string()), ("L2-category", pa.string()), ("comment", pa.string()),
    ("split", pa.string()),
])


def mmbench_rows(with_shifts: bool = True) -> list[dict]:
    """Three questions (4, 2 and 2 options) with their circular shifts as the release stores them (index +
    k * 1e6, options rotated, answer moved); the third one's image is broken."""
    common = {"source": "MMBench", "comment": None, "split": "dev"}
    q0 = {**common, "question": "What is the color of the ball?", "hint": None, "category": "attribute_recognition",
          "L2-category": "finegrained_perception (instance-level)", "image": image(1)}
    q1 = {**common, "question": "Is the boy happy?", "hint": "The boy got a present.", "category": "emotion",
          "L2-category": "coarse_perception", "image": image(2, "JPEG")}
    four = ["red", "green", "blue", "white"]
    rows = []
    for k in range(4 if with_shifts else 1):
        opts = four[k:] + four[:k]
        rows.append({**q0, "index": str(k * 1_000_000 + 0), "A": opts[0], "B": opts[1], "C": opts[2], "D": opts[3],
                     "answer": "ABCD"[opts.index("blue")]})
    for k in range(2 if with_shifts else 1):
        opts = ["yes", "no"][k:] + ["yes", "no"][:k]
        rows.append({**q1, "index": str(k * 1_000_000 + 1), "A": opts[0], "B": opts[1], "C": None, "D": None,
                     "answer": "ABCD"[opts.index("yes")]})
    for k in range(2 if with_shifts else 1):
        opts = ["round", "square"][k:] + ["round", "square"][:k]
        rows.append({**q0, "index": str(k * 1_000_000 + 2), "question": "What is the shape?", "A": opts[0],
                     "B": opts[1], "C": None, "D": None, "answer": "ABCD"[opts.index("round")], "image": BROKEN,
                     "category": "object_localization"})
    return rows


def mmbench(root: Path) -> Path:
    """lmms-lab/MMBench config en: en/dev-00000-of-00001.parquet (`index` is a string in this config)."""
    write(root / "en" / "dev-00000-of-00001.parquet", mmbench_rows(), MMBENCH_SCHEMA)
    return root


def pope(root: Path) -> Path:
    """lmms-lab/POPE: data/test-00000-of-00001.parquet, the three splits in `category`; question ids restart
    in each split, as in POPE's per-split files."""
    schema = pa.schema([("id", pa.string()), ("question_id", pa.string()), ("question", pa.string()),
                        ("answer", pa.string()), ("image_source", pa.string()), ("image", IMAGE),
                        ("category", pa.string())])
    rows = []
    for split, k0 in (("adversarial", 1), ("popular", 3), ("random", 5)):
        rows += [
            {"question_id": "1", "question": "Is there a snowboard in the image?", "answer": "yes",
             "image_source": "COCO_val2014_000000310196", "image": image(k0), "category": split},
            {"question_id": "2", "question": "Is there a dog in the image?", "answer": "no",
             "image_source": "COCO_val2014_000000310196", "image": image(k0, "JPEG"), "category": split},
        ]
    rows.append({"question_id": "3", "question": "Is there a car in the image?", "answer": "no",
                 "image_source": "COCO_val2014_000000000001", "image": BROKEN, "category": "random"})
    rows = [{"id": str(i), **r} for i, r in enumerate(rows)]
    write(root / "data" / "test-00000-of-00001.parquet", rows, schema)
    return root


WRITERS = {
    "vqav2": vqav2,
    "gqa": gqa,
    "mme": mme,
    "textvqa_val": textvqa,
    "scienceqa_img": scienceqa,
    "mmbench_en_dev": mmbench,
    "pope": pope,
}


def write_all(base: Path) -> dict[str, Path]:
    return {name: writer(base / writer.__name__) for name, writer in WRITERS.items()}
