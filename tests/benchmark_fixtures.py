"""Tiny copies of the paper's benchmarks in their release layouts (as lmms-eval reads them): the question
files in the release's format (parquet written with pandas, MVBench's json) and a few 8-frame 32x32 MP4s.
Every benchmark has one question whose video is not there (the loop must skip and count it).

Questions have six words and options one word each, so that the samples of a benchmark share one
prompt layout and the evaluation loop counts FLOPs (fvcore) once per benchmark: the tests stay fast.
Frame k of every video is a flat colour whose red channel is 30 * k, so a test can tell which frames
were sampled; videos run at 8 fps, so frame k is shown at k / 8 s.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from aim.data.synthetic import write_video

FPS = 8
FRAMES = 8


def video(path: Path, shade: int = 0) -> Path:
    frames = np.zeros((FRAMES, 32, 32, 3), dtype=np.uint8)
    for k in range(FRAMES):
        frames[k] = (30 * k, 60 + shade, 200 - shade)
    write_video(path, frames, fps=FPS)
    return path


def parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


SRT = (
    "1\r\n00:00:00,000 --> 00:00:00,500\r\n<font color=\"white\" size=\".72c\">red circle</font>\r\n\r\n"
    "2\r\n00:00:00,500 --> 00:00:00,700\r\n<font color=\"white\" size=\".72c\">never sampled</font>\r\n\r\n"
    "3\r\n00:00:00,700 --> 00:00:01,000\r\n<font color=\"white\" size=\".72c\">blue</font>\r\n"
    "<font color=\"white\" size=\".72c\">square</font>\r\n"
)


def videomme(root: Path) -> Path:
    """lmms-lab/Video-MME: videomme/test-00000-of-00001.parquet, data/<videoID>.mp4, subtitle/<videoID>.srt."""
    video(root / "data" / "vidA.mp4")
    video(root / "data" / "vidB.mp4", 20)
    (root / "subtitle").mkdir(parents=True)
    (root / "subtitle" / "vidA.srt").write_text(SRT)  # vidB has no subtitles, as some Video-MME videos
    base = {"url": "https://www.youtube.com/watch?v=x", "domain": "Knowledge", "sub_category": "Astronomy"}
    rows = [
        {**base, "video_id": "001", "duration": "short", "videoID": "vidA", "question_id": "001-1",
         "task_type": "Counting Problem", "question": "how many objects are there ?",
         "options": ["A. one", "B. two", "C. three", "D. four"], "answer": "B"},
        {**base, "video_id": "001", "duration": "short", "videoID": "vidA", "question_id": "001-2",
         "task_type": "Attribute Perception", "question": "what colour is the circle ?",
         "options": ["A. red", "B. green", "C. blue", "D. cyan"], "answer": "A"},
        {**base, "video_id": "301", "duration": "medium", "domain": "Life Record", "sub_category": "Pet & Animal",
         "videoID": "vidB", "question_id": "301-1", "task_type": "Action Recognition",
         "question": "which way does square move ?",
         "options": ["A. left", "B. right", "C. up", "D. down"], "answer": "D"},
        {**base, "video_id": "601", "duration": "long", "videoID": "vidGone", "question_id": "601-1",
         "task_type": "Counting Problem", "question": "how many objects are there ?",
         "options": ["A. one", "B. two", "C. three", "D. four"], "answer": "C"},
    ]
    parquet(root / "videomme" / "test-00000-of-00001.parquet", rows)
    return root


def mlvu(root: Path) -> Path:
    """sy1998/MLVU_dev: mlvu/test-00000-of-00001.parquet, videos unzipped under root (one of them in a
    nested folder, found by name)."""
    video(root / "movie101_66.mp4")
    video(root / "video" / "4_count" / "count_7.mp4", 40)
    rows = [
        {"video_name": "movie101_66.mp4", "duration": 246.0, "question": "what colour is the circle ?",
         "candidates": ["red", "green", "blue", "cyan"], "answer": "A", "task_type": "plotQA", "question_id": "plotQA_0"},
        {"video_name": "movie101_66.mp4", "duration": 246.0, "question": "which way does circle move ?",
         "candidates": ["up", "down", "left", "right"], "answer": "C", "task_type": "plotQA", "question_id": "plotQA_1"},
        {"video_name": "count_7.mp4", "duration": 300.0, "question": "how many objects are there ?",
         "candidates": ["one", "two", "three", "four"], "answer": "B", "task_type": "count", "question_id": "count_0"},
        {"video_name": "needle_3.mp4", "duration": 400.0, "question": "what shape appears ?",
         "candidates": ["circle", "square", "triangle", "cross"], "answer": "D", "task_type": "needle", "question_id": "needle_0"},
    ]
    parquet(root / "mlvu" / "test-00000-of-00001.parquet", rows)
    return root


def egoschema(root: Path) -> Path:
    """lmms-lab/egoschema config Subset: Subset/test-00000-of-00001.parquet, videos/<video_idx>.mp4."""
    video(root / "videos" / "0074f737-11cb-497d-8d07-77c3a8127391.mp4")
    video(root / "videos" / "00b9a0de-c59e-49cb-a127-6081e2fb8c8e.mp4", 30)
    options = ["A. red", "B. green", "C. blue", "D. yellow", "E. cyan"]
    rows = [
        {"question_idx": "0", "question": "what colour is the circle ?", "video_idx": "0074f737-11cb-497d-8d07-77c3a8127391",
         "option": options, "answer": "3"},
        {"question_idx": "1", "question": "what colour is the square ?", "video_idx": "00b9a0de-c59e-49cb-a127-6081e2fb8c8e",
         "option": options, "answer": "0"},
        {"question_idx": "2", "question": "what colour is the cross ?", "video_idx": "ffffffff-0000-0000-0000-000000000000",
         "option": options, "answer": "4"},
    ]
    parquet(root / "Subset" / "test-00000-of-00001.parquet", rows)
    return root


def nextqa(root: Path) -> Path:
    """lmms-lab/NExTQA config MC: MC/test-00000-of-00001.parquet, NExTVideo/<video>.mp4 (one video in the
    original release's NExTVideo/<group>/ folder, found by name)."""
    video(root / "NExTVideo" / "4010069381.mp4")
    video(root / "NExTVideo" / "0083" / "5572343997.mp4", 50)
    common = {"frame_count": 8, "width": 32, "height": 32}
    rows = [
        {**common, "video": 4010069381, "question": "why does the circle move ?", "answer": 2, "qid": 0, "type": "CW",
         "a0": "one", "a1": "two", "a2": "three", "a3": "four", "a4": "five"},
        {**common, "video": 4010069381, "question": "what happens after square appears ?", "answer": 0, "qid": 1,
         "type": "TN", "a0": "red", "a1": "green", "a2": "blue", "a3": "cyan", "a4": "yellow"},
        {**common, "video": 5572343997, "question": "where is the red cross ?", "answer": 4, "qid": 0, "type": "DL",
         "a0": "left", "a1": "right", "a2": "up", "a3": "down", "a4": "middle"},
        {**common, "video": 9999999999, "question": "how many objects are there ?", "answer": 1, "qid": 3, "type": "DC",
         "a0": "one", "a1": "two", "a2": "three", "a3": "four", "a4": "five"},
    ]
    parquet(root / "MC" / "test-00000-of-00001.parquet", rows)
    return root


def perceptiontest(root: Path) -> Path:
    """lmms-lab/PerceptionTest_Val config mc_question_val: mc_question_val/validation-00000-of-00001.parquet,
    videos/<video_name>.mp4."""
    video(root / "videos" / "video_10909.mp4")
    video(root / "videos" / "video_7036.mp4", 10)
    rows = [
        {"video_name": "video_10909", "question": "what colour is the circle ?", "question_id": "0",
         "options": ["red", "green", "blue"], "answer_id": "2", "area": "memory", "reasoning": "descriptive",
         "tag": ["colour", "object"]},
        {"video_name": "video_10909", "question": "how many objects are there ?", "question_id": "1",
         "options": ["one", "two", "three"], "answer_id": "0", "area": "abstraction", "reasoning": "counterfactual",
         "tag": ["counting"]},
        {"video_name": "video_7036", "question": "which way does square move ?", "question_id": "0",
         "options": ["left", "right", "up"], "answer_id": "1", "area": "physics", "reasoning": "predictive",
         "tag": ["motion"]},
        {"video_name": "video_0000", "question": "what shape is there ?", "question_id": "0",
         "options": ["circle", "square", "cross"], "answer_id": "1", "area": "semantics", "reasoning": "descriptive",
         "tag": []},
    ]
    parquet(root / "mc_question_val" / "validation-00000-of-00001.parquet", rows)
    return root


def mvbench(root: Path) -> Path:
    """OpenGVLab/MVBench revision `video`: json/<task>.json, each task's video folder (NTU clips named .avi
    in the json and converted to .mp4 on disk)."""
    video(root / "star" / "Charades_segment" / "ZS9XR_1.mp4")
    video(root / "clevrer" / "video_validation" / "video_10000.mp4", 25)
    video(root / "nturgbd_convert" / "S001C001P001R001A001_rgb.mp4", 45)
    tasks = {
        "action_sequence": [
            {"video": "ZS9XR_1.mp4", "question": "what did the person do ?",
             "candidates": ["red", "green", "blue", "cyan"], "answer": "green"},
        ],
        "moving_count": [  # answers are texts, even when they are numbers
            {"video": "video_10000.mp4", "question": "how many objects move now ?", "candidates": ["3", "2", "1", "0"], "answer": "1"},
            {"video": "video_10000.mp4", "question": "how many objects stop now ?", "candidates": ["0", "1", "2"], "answer": "0"},
            {"video": "video_19999.mp4", "question": "how many objects enter now ?", "candidates": ["1", "2", "3"], "answer": "3"},
        ],
        "fine_grained_pose": [
            {"video": "S001C001P001R001A001_rgb.avi", "question": "what is the person doing ?",
             "candidates": ["up", "down", "left", "right"], "answer": "right"},
        ],
    }
    (root / "json").mkdir(parents=True)
    for task, rows in tasks.items():
        (root / "json" / f"{task}.json").write_text(json.dumps(rows, indent=1))
    return root


WRITERS = {
    "videomme": videomme,
    "videomme_w_subtitle": videomme,
    "mlvu_dev": mlvu,
    "egoschema_subset": egoschema,
    "nextqa_mc_test": nextqa,
    "perceptiontest_val_mc": perceptiontest,
    "mvbench": mvbench,
}


def write_all(base: Path) -> dict[str, Path]:
    """Every benchmark's fixture under base; the two Video-MME configs share one root, as they do."""
    roots: dict[str, Path] = {}
    for name, writer in WRITERS.items():
        folder = base / writer.__name__
        roots[name] = folder if folder.exists() else writer(folder)
    return roots


def evaluated_once(adapter, load, tmp_path_factory, mode=lambda name: "letter", **evaluate_options):
    """`run(name) -> (dataset, records, summary)`: the fixture of benchmark `name` as `load(name)` gives it (the
    validated config and the dataset) evaluated by `adapter` with the config's merger and pruner, answers in
    `mode(name)` (and `evaluate_options`), its records summarised by the dataset's metric; each benchmark is
    run once, later calls give the first run. (The video and the image benchmarks' end-to-end tests.)"""
    from dataclasses import asdict

    from aim.eval import evaluate
    from aim.merging import MERGERS
    from aim.pruning import PRUNERS
    from aim.tracking.records import SampleRecords
    from aim.tracking.results import summarize

    runs = {}

    def run(name):
        if name not in runs:
            valid, ds = load(name)
            merger = MERGERS.build(valid.merger.name, **asdict(valid.merger))
            pruner = PRUNERS.build(valid.pruner.name, **asdict(valid.pruner))
            records = SampleRecords(tmp_path_factory.mktemp(name) / "samples.jsonl")
            evaluate(adapter, ds, merger, pruner, records, mode=mode(name), progress=False, **evaluate_options)
            records.close()
            runs[name] = ds, records.records, summarize(records.records, {}, {"dataset": asdict(valid.dataset)})
        return runs[name]

    return run
