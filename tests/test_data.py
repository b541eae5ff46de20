"""The synthetic benchmark is deterministic, answerable from the frames, and read back like any benchmark."""
import json

import numpy as np
import pytest

from aim.data import SyntheticVideoDataset, VideoDecodeError, VideoMCQDataset
from aim.data import synthetic as syn
from aim.data.video import decode_frames, uniform_frame_indices


def test_items_are_a_pure_function_of_seed_and_index():
    a_scene, a_q = syn.sample_item(3, 11)
    b_scene, b_q = syn.sample_item(3, 11)
    assert a_q == b_q
    assert np.array_equal(syn.render(a_scene), syn.render(b_scene))
    assert syn.sample_item(4, 11)[1] != a_q


@pytest.mark.parametrize("index", range(40))
def test_answers_follow_from_the_scene(index):
    scene, q = syn.sample_item(0, index)
    assert len(q.options) == 4 and len(set(q.options)) == 4
    assert q.options["ABCD".index(q.answer)] == q.answer_text
    objs = scene.objects
    if q.question_type == "count":
        assert q.answer_text == syn.COUNT_WORDS[len(objs) - 1]
    if q.question_type == "order":
        first = min(objs, key=lambda o: o.appears_at)
        assert q.answer_text == first.colour
        starts = sorted(o.appears_at for o in objs)
        assert all(b - a >= 4 for a, b in zip(starts, starts[1:]))  # visible at 4+ sampled frames
    if q.question_type == "colour":
        assert q.answer_text in {o.colour for o in objs}
    if q.question_type in ("colour", "shape", "direction"):
        # the object named in the question is unique in the scene
        assert len({o.colour for o in objs}) == len(objs) and len({o.shape for o in objs}) == len(objs)


def test_objects_are_drawn_where_the_scene_says_and_backgrounds_are_flat():
    scene, _ = syn.sample_item(0, 2)
    frames, labels = syn.render(scene, with_labels=True)
    assert frames.shape == (syn.NUM_VIDEO_FRAMES, syn.FRAME_SIZE, syn.FRAME_SIZE, 3) and frames.dtype == np.uint8
    for k, obj in enumerate(scene.objects):
        cx, cy = obj.centre(0, syn.NUM_VIDEO_FRAMES)
        assert tuple(frames[0, int(cy), int(cx)]) == syn.COLOURS[obj.colour]
    assert (frames[labels < 0] == scene.background).all()
    assert (labels >= 0).mean() < 0.15  # small objects: most of the frame is redundant background


def test_uniform_sampling_takes_segment_centres():
    assert uniform_frame_indices(16, 8) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert uniform_frame_indices(16, 4) == [2, 6, 10, 14]
    assert uniform_frame_indices(5, 8) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        uniform_frame_indices(16, 0)


def test_benchmark_layout_round_trips_through_mp4(small_benchmark):
    questions = json.loads((small_benchmark / "questions.json").read_text())
    assert len(questions) == 10
    assert {"id", "video", "question", "options", "answer", "question_type"} <= set(questions[0])
    scene, q = syn.sample_item(7, 0)
    decoded = decode_frames(small_benchmark / "videos" / q.video, 16)
    rendered = syn.render(scene)
    assert decoded.shape == rendered.shape
    assert np.abs(decoded.astype(int) - rendered).max() <= 1  # lossless H.264, up to RGB<->YUV rounding


def test_generation_is_idempotent(small_benchmark):
    before = (small_benchmark / "questions.json").stat().st_mtime_ns
    syn.generate_benchmark(small_benchmark, num_samples=10, seed=7, progress=False)
    assert (small_benchmark / "questions.json").stat().st_mtime_ns == before


def test_dataset_reads_the_layout_with_limit_and_frame_count(small_benchmark):
    ds = VideoMCQDataset(small_benchmark, num_frames=4, limit=3)
    samples = list(ds)
    assert len(ds) == 3 and [s.id for s in samples] == ["q00000", "q00001", "q00002"]
    assert samples[0].load_frames().shape == (4, syn.FRAME_SIZE, syn.FRAME_SIZE, 3)
    synthetic = SyntheticVideoDataset(small_benchmark, num_samples=10, seed=7, num_frames=2)
    assert len(synthetic) == 10


def test_a_corrupt_video_raises_a_per_sample_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        decode_frames(bad, 4)
    with pytest.raises(VideoDecodeError):
        decode_frames(tmp_path / "missing.mp4", 4)
