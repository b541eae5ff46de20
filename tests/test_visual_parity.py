"""The visual input as lmms-eval's model classes prepare it (issue #22): which frames a model sees
(`model.frame_sampling`) and how InternVL3 tiles video frames and images (`model.tiling`).

Expected values are lmms-eval's, at commit 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3 of
EvolvingLMMs-Lab/lmms-eval: lmms_eval/models/simple/llava_onevision.py (`load_video`:
np.linspace(0, n - 1, k, dtype=int)), lmms_eval/models/simple/internvl3.py (`get_index`, `dynamic_preprocess`,
`dynamic_max_num = max(1, min(max_num=12, total_max_num=64 // num_frame))`), lmms_eval/models/simple/qwen2_5_vl.py
and qwen3_vl.py over qwen-vl-utils 0.0.14 (`smart_nframes`, its torch.linspace read; then lmms-eval's
np.unique(np.linspace(0, m - 1, 32, dtype=int)) for Qwen2.5-VL, `nframes=32` for Qwen3-VL); the lists below
were printed by running those functions."""
from dataclasses import asdict

import numpy as np
import pytest
import torch

from aim.checks import ConfigError
from aim.data.video import decode_frames_with_times, frame_indices, internvl_frame_indices, linspace_frame_indices
from aim.merging import NoMerge
from aim.models import MODELS, VISUAL
from aim.models.internvl import InternVLAdapter, lmms_eval_tile_grid
from tests.tiny_models import preset

# (frames in the video, frames asked) -> lmms-eval's indices
LLAVA_ONEVISION = {
    (300, 32): [0, 9, 19, 28, 38, 48, 57, 67, 77, 86, 96, 106, 115, 125, 135, 144, 154, 163, 173, 183, 192, 202,
                212, 221, 231, 241, 250, 260, 270, 279, 289, 299],
    (16, 8): [0, 2, 4, 6, 8, 10, 12, 15],
    (5, 8): [0, 0, 1, 1, 2, 2, 3, 4],
    (100, 7): [0, 16, 33, 49, 66, 82, 99],
}
INTERNVL3 = {
    (300, 32): [4, 13, 23, 32, 41, 51, 60, 69, 79, 88, 97, 107, 116, 125, 135, 144, 154, 163, 172, 182, 191, 200,
                210, 219, 228, 238, 247, 256, 266, 275, 284, 294],
    (16, 8): [0, 2, 4, 6, 8, 9, 11, 13],
    (5, 8): [0, 0, 1, 2, 2, 2, 3, 4],
    (100, 7): [7, 21, 35, 49, 64, 78, 92],
}


# (frames in the video, its frame rate) -> lmms-eval's Qwen2-VL / Qwen2.5-VL frames at 32 asked
QWEN2_5_VL = {
    (300, 30.0): [0, 16, 31, 47, 63, 79, 94, 110, 126, 142, 157, 173, 189, 205, 220, 236, 252, 268, 283, 299],
    (9000, 30.0): [0, 285, 571, 856, 1157, 1442, 1728, 2028, 2314, 2599, 2900, 3185, 3470, 3771, 4056, 4342, 4642,
                   4928, 5213, 5514, 5799, 6084, 6385, 6670, 6956, 7256, 7542, 7827, 8128, 8413, 8699, 8999],
    (60, 8.0): [0, 5, 9, 14, 18, 23, 27, 32, 36, 41, 45, 50, 54, 59],
    (16, 8.0): [0, 5, 10, 15],
}
# frames in the video -> lmms-eval's Qwen3-VL frames at 32 asked
QWEN3_VL = {
    300: [0, 10, 19, 29, 39, 48, 58, 68, 77, 87, 96, 106, 116, 125, 135, 145, 154, 164, 174, 183, 193, 203, 212,
          222, 231, 241, 251, 260, 270, 280, 289, 299],
    33: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
         31, 32],
}


@pytest.mark.parametrize("video", sorted(QWEN2_5_VL))
def test_qwen2_vl_frames_are_lmms_eval_s_two_per_second_then_32_of_those(video):
    """A 10 s clip at 30 fps: qwen-vl-utils reads 20 frames (2 a second) and lmms-eval keeps all 20 of them."""
    assert frame_indices(video[0], 32, "qwen_fps", video[1]) == QWEN2_5_VL[video]


@pytest.mark.parametrize("total", sorted(QWEN3_VL))
def test_qwen3_vl_frames_are_lmms_eval_s_rounded_linspace(total):
    assert frame_indices(total, 32, "rounded_linspace") == QWEN3_VL[total]


@pytest.mark.parametrize("video", sorted(LLAVA_ONEVISION))
def test_frame_indices_are_lmms_eval_s_for_llava_onevision_and_internvl3(video):
    assert linspace_frame_indices(*video) == LLAVA_ONEVISION[video] == frame_indices(*video, "linspace")
    assert internvl_frame_indices(*video) == INTERNVL3[video] == frame_indices(*video, "internvl")
    # aim's own rule stays the segment middles, each frame once
    assert frame_indices(16, 8) == [1, 3, 5, 7, 9, 11, 13, 15] and frame_indices(5, 8) == [0, 1, 2, 3, 4]


def coloured_video(tmp_path, count=16):
    from aim.data.synthetic import write_video

    path = tmp_path / "ramp.mp4"
    frames = np.zeros((count, 32, 32, 3), dtype=np.uint8)
    frames[..., 0] = (np.arange(count) * 15)[:, None, None]  # frame k: red 15k
    write_video(path, frames, fps=8)
    return path


@pytest.mark.parametrize("rule,asked,expected", [("linspace", 8, LLAVA_ONEVISION[16, 8]), ("internvl", 8, INTERNVL3[16, 8]),
                                                 ("segment_middle", 8, [1, 3, 5, 7, 9, 11, 13, 15]),
                                                 ("qwen_fps", 32, QWEN2_5_VL[16, 8.0])])
def test_decoding_returns_the_frames_the_rule_picks(tmp_path, rule, asked, expected):
    """16 frames at 8 fps; qwen_fps reads the video's own rate from the file (2 s: 4 frames)."""
    frames, times = decode_frames_with_times(coloured_video(tmp_path), asked, rule)
    assert np.abs(frames[:, 0, 0, 0].astype(int) - np.array(expected) * 15).max() <= 2
    assert times.seconds == pytest.approx([k / 8 for k in expected])


def test_a_short_video_repeats_frames_as_lmms_eval_does(tmp_path):
    """lmms-eval reads k frames whatever the video's length (decord's get_batch repeats an index)."""
    frames, _ = decode_frames_with_times(coloured_video(tmp_path, 5), 8, "linspace")
    assert np.abs(frames[:, 0, 0, 0].astype(int) - np.array(LLAVA_ONEVISION[5, 8]) * 15).max() <= 2


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from aim.config import validate
    from aim.paths import CONF_DIR

    if not any(o.startswith(("pruner=", "+method=")) for o in overrides):
        overrides += ("pruner=none",)  # these read the visual input; the default toy schedule is refused on real presets
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(hydra_compose("config", overrides=list(overrides)))


def test_qwen_presets_take_lmms_eval_s_pixel_bounds_per_frame():
    """lmms-eval's qwen2_vl min_pixels 3136, qwen2_5_vl 256 * 28 * 28; both capped at 768 * 28 * 28 per frame by
    qwen-vl-utils."""
    assert (compose("model=qwen2_vl_7b").model.min_pixels, compose("model=qwen2_vl_7b").model.max_pixels) == (3136, 602112)
    for name in ("qwen2_5_vl_7b", "qwen2_5_vl_3b"):
        model = compose(f"model={name}").model
        assert (model.min_pixels, model.max_pixels) == (256 * 28 * 28, 768 * 28 * 28)


def test_real_presets_sample_frames_as_their_lmms_eval_class_and_the_toys_keep_aim_s_rule():
    rules = {name: compose(f"model={name}", "pruner=none").model.frame_sampling
             for name in ("internvl3_8b", "llava_onevision_7b", "llava_onevision_0.5b", "llava_video_7b",
                          "qwen2_vl_7b", "qwen2_5_vl_7b", "qwen3_vl_8b",
                          "internvl3_tiny", "llava_onevision_tiny", "qwen2_vl_tiny", "qwen3_vl_tiny")}
    assert rules == {"internvl3_8b": "internvl", "llava_onevision_7b": "linspace", "llava_onevision_0.5b": "linspace",
                     "llava_video_7b": "linspace", "qwen2_vl_7b": "qwen_fps", "qwen2_5_vl_7b": "qwen_fps",
                     "qwen3_vl_8b": "rounded_linspace", "internvl3_tiny": "segment_middle",
                     "llava_onevision_tiny": "segment_middle", "qwen2_vl_tiny": "segment_middle",
                     "qwen3_vl_tiny": "segment_middle"}
    with pytest.raises(ConfigError, match=r"model.frame_sampling: 'middle' is not allowed; choose one of: "
                                          r"segment_middle, linspace, internvl, rounded_linspace, qwen_fps"):
        compose("model=llava_onevision_tiny", "+model.frame_sampling=middle")
    with pytest.raises(ConfigError, match=r"model.tiling: 'lmms' is not allowed; choose one of: lmms_eval, hf"):
        compose("model=internvl3_tiny", "model.tiling=lmms")
    with pytest.raises(ConfigError, match=r"model.total_patches: must be in \[1, inf\)"):
        compose("model=internvl3_tiny", "model.total_patches=0")


def test_the_evaluation_loads_each_sample_with_the_model_s_rule(small_benchmark):
    from aim.data import VideoMCQDataset
    from aim.eval.loop import evaluate
    from aim.pruning import NoPrune

    class Seen(Exception):
        pass

    class Adapter:  # stops at the first prepare, after the loop has loaded the sample
        cfg = type("Cfg", (), {"frame_sampling": "internvl"})
        decoder_layers = [None]

        def prepare(self, *a, **k):
            raise Seen

    ds = VideoMCQDataset(root=str(small_benchmark), num_frames=4, limit=1)
    with pytest.raises(Seen):
        evaluate(Adapter(), ds, NoMerge(), NoPrune(), records=set(), progress=False)
    assert ds.samples[0].frame_sampling == "internvl"


# --- InternVL3's tiles ---------------------------------------------------------------------------------
# (width, height, most tiles) -> lmms-eval's dynamic_preprocess grid (columns, rows)
LMMS_EVAL_GRIDS = {
    (640, 360, 2): (2, 1), (360, 640, 2): (1, 2), (640, 480, 2): (1, 1), (480, 480, 8): (1, 1),
    (640, 480, 8): (3, 2), (176, 144, 8): (2, 2), (40, 40, 8): (2, 2), (77, 40, 8): (4, 2), (640, 360, 1): (1, 1),
}


@pytest.mark.parametrize("case", sorted(LMMS_EVAL_GRIDS))
def test_tile_grids_are_lmms_eval_s(case):
    width, height, most = case
    cols, rows = LMMS_EVAL_GRIDS[case]
    assert lmms_eval_tile_grid((height, width), 448, 1, most) == (rows, cols)


def test_small_images_tile_as_lmms_eval_where_the_hf_processor_ties_the_other_way():
    """A 40 x 40 image within 8 tiles: lmms-eval's set order meets 2 x 2 first and keeps it (the image is too
    small for the tie to pass on); the -hf processor keeps 1 x 1. `tiling` says whose."""
    hf_config = compose("model=internvl3_8b").model
    from aim.efficiency.cost import model_configs

    valid = compose("model=internvl3_8b", "model.max_patches=8")
    config, adapter = model_configs(valid.model)
    assert adapter.image_tiles(config, valid.model, (40, 40)) == 4 + 1
    hf = compose("model=internvl3_8b", "model.max_patches=8", "model.tiling=hf").model
    assert adapter.image_tiles(config, hf, (40, 40)) == 1
    assert hf_config.tiling == "lmms_eval"


@pytest.mark.parametrize("frames,size,tiles", [(32, (360, 640), 3), (32, (480, 640), 1), (16, (720, 1280), 3),
                                               (8, (480, 640), 7), (64, (1080, 1920), 1), (33, (360, 640), 1)])
def test_internvl3_8b_tiles_each_frame_as_lmms_eval(frames, size, tiles):
    """Per frame at most max(1, min(12, 64 // frames)) tiles, the grid nearest the frame's aspect and a
    thumbnail when it has more than one: 2 tiles at 32 frames (a 16:9 frame 2 x 1 + 1), 7 at 8 frames for 4:3
    (3 x 2 + 1), 1 from 33 frames. aim.flops counts them: frames x tiles x 256 tokens."""
    valid = compose("model=internvl3_8b", f"dataset.num_frames={frames}", f"model.frame_size=[{size[0]},{size[1]}]")
    from aim.efficiency.cost import flops, model_configs

    config, adapter = model_configs(valid.model)
    assert adapter.frame_tiles(config, valid.model, frames) == tiles
    result = flops(valid)
    assert result["visual_tokens_unmerged"] == frames * tiles * 256
    assert result["tokens_per_frame"] == tiles * 256 and result["token_grid"] == [16 * tiles, 16]
    hf = compose("model=internvl3_8b", f"dataset.num_frames={frames}", "model.tiling=hf")
    assert flops(hf)["visual_tokens_unmerged"] == frames * 256  # the -hf processor: one tile per frame


def test_an_image_s_tiles_are_counted_one_grid_each_whatever_the_video_tiling():
    """aim.flops on a 480x640 image: lmms-eval's grid within 12 tiles is 4 x 3, plus the thumbnail: 13 tiles
    of 16 x 16 tokens, each tile its own merger group."""
    from aim.efficiency.cost import flops

    image = flops(compose("model=internvl3_8b", "flops.image_size=[480,640]", "merger=aim", "merger.ratio=0.25"))
    assert (image["frame_groups"], image["tokens_per_frame"], image["token_grid"]) == (13, 256, [16, 16])
    assert image["visual_tokens"] == 13 * 64


# --- the tiny InternVL with lmms-eval's tiling ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiled():
    torch.manual_seed(0)
    return MODELS.get("internvl").from_config(**asdict(preset("internvl3_tiny", ["model.tiling=lmms_eval", "model.total_patches=8"])))


def wide_frames(count=4, height=60, width=120):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def lmms_eval_pixels(frame, rows, cols, side, mean, std):
    """lmms-eval's dynamic_preprocess + build_transform for one frame, restated: PIL bicubic resize to the
    canvas, row-major crops, the bicubic thumbnail, ToTensor, Normalize."""
    from PIL import Image

    img = Image.fromarray(frame)
    canvas = img.resize((cols * side, rows * side), Image.BICUBIC)
    tiles = [canvas.crop((c * side, r * side, (c + 1) * side, (r + 1) * side)) for r in range(rows) for c in range(cols)]
    tiles += [img.resize((side, side), Image.BICUBIC)] if len(tiles) > 1 else []
    out = torch.stack([torch.from_numpy(np.asarray(t).copy()).permute(2, 0, 1).float() / 255 for t in tiles])
    return (out - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_video_frames_are_tiled_as_lmms_eval_and_each_frame_is_one_group(tiled):
    video = wide_frames(4)  # 2:1 frames, 4 frames: up to min(12, 8 // 4) = 2 tiles -> a 2 x 1 grid + thumbnail
    pixels = tiled.pixel_values(video)
    assert pixels.shape == (4, 3, 3, 112, 112)
    expected = lmms_eval_pixels(video[1], 1, 2, 112, tiled.cfg.image_mean, tiled.cfg.image_std)
    torch.testing.assert_close(pixels[1], expected, atol=1e-6, rtol=0)
    enc = tiled.encode_frames(pixels, needs=("grid", "metric", "attention"))
    assert enc["features"].shape[:2] == (4, 3 * 64) and enc["grid"] == (3 * 8, 8)
    assert enc["metric"].shape[:2] == (4, 3 * 64) and enc["attention"].shape == (4, 3 * 64)
    # a frame's group is its tiles' tokens in order: tile t of frame f is rows t*8..t*8+7 of its grid
    per_tile = tiled.project(tiled.tower_features(pixels.flatten(0, 1)))
    torch.testing.assert_close(enc["features"][2, 64:128], per_tile[2 * 3 + 1])


def test_unreduced_tiled_video_is_the_hf_forward_over_all_tiles(tiled):
    """The frames' lines carry 64 context tokens per tile; the Hugging Face model, given every tile's pixels
    in order, fills them as the adapter does."""
    video = wide_frames(2)
    inputs = tiled.prepare(video, "what is shown ?", ["a", "b"], NoMerge())
    assert inputs.visual_tokens == 2 * 3 * 64 and inputs.visual_per_group == [192, 192]
    ids = tiled.input_ids("what is shown ?", ["a", "b"], 2, tiles=3)
    with torch.no_grad():
        ref = tiled.model(input_ids=torch.tensor([ids]), pixel_values=tiled.pixel_values(video).flatten(0, 1)).logits[0, -1]
    torch.testing.assert_close(tiled.prefill_logits(inputs), ref, atol=1e-4, rtol=1e-4)


def test_a_per_frame_merger_sees_a_frame_s_tiles_together(tiled):
    from aim.merging import MERGERS

    video = wide_frames(2)
    merged = tiled.prepare(video, "what is shown ?", ["a", "b"], MERGERS.build("aim", ratio=0.25))
    assert merged.visual_per_group == [48, 48]  # a quarter of each frame's 192 tokens, wherever its tiles keep them
    pooled = tiled.prepare(video, "what is shown ?", ["a", "b"], MERGERS.build("pool", ratio=0.25))
    assert pooled.visual_tokens == 2 * 48 and (pooled.token_roles == VISUAL).sum() == 96


def test_aim_flops_counts_the_tiles_the_adapter_builds(tiled):
    valid = compose("model=internvl3_tiny", "model.tiling=lmms_eval", "model.total_patches=8",
                    "model.frame_size=[60,120]", "dataset.num_frames=2")
    from aim.efficiency.cost import flops

    result = flops(valid)
    inputs = tiled.prepare(wide_frames(2), "what is shown ?", ["a", "b"], NoMerge())
    assert result["visual_tokens_unmerged"] == inputs.visual_tokens == 2 * 3 * 64
    assert InternVLAdapter.video_text_tokens(None, None, 2) == 13  # the frames' labels do not grow with tiles


def test_fvcore_counts_every_tile_of_a_tiled_video(tiled):
    """The tower and projector run on all 2 x 3 tiles; the LLM prefill on all their tokens (within 1% of the
    analytic count, unpruned and pruned)."""
    from aim.efficiency.fvcore_count import count_visual
    from aim.merging import MERGERS
    from tests.flops_reference import assert_fvcore_matches_analytic

    video = wide_frames(2)
    assert_fvcore_matches_analytic(tiled, tiled.prepare(video, "what is shown ?", ["a", "b"], MERGERS.build("aim", ratio=0.5)))
    counted = count_visual(tiled, video, MERGERS.build("aim", ratio=0.5))
    # the projector (2 FLOPs a multiply-add): LayerNorm over 128 (fvcore: 5 per element), Linear(128, 64),
    # Linear(64, 64), for each of the 6 tiles' 64 tokens
    assert counted["projector_flops"] == 2 * 6 * 64 * (128 * 5 + 128 * 64 + 64 * 64)
