"""The Qwen2-VL adapter: unreduced, it is the Hugging Face model (same logits, same M-RoPE positions); its
resize rule, patch layout and frame options are the processor's; merged, kept tokens keep their own (t, h, w)
positions, on non-square frames too; the tower gives mergers its signals. Tiny random models from the
`qwen2_vl_tiny` preset. (Merging, pruning, decoding, FLOP counting, the evaluation loop and aim.bench on it,
as on every adapter: tests/test_adapter_contract.py.)"""
from dataclasses import replace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from aim.config import validate
from aim.merging import MERGERS, NoMerge
from aim.models import PREFIX_TEXT, QUESTION_TEXT, VISUAL
from aim.models.qwen2_vl import Qwen2VLAdapter, mrope_positions, smart_resize
from aim.paths import CONF_DIR
from tests.hf_reference import qwen_hf_forward
from tests.tiny_models import OPTIONS, QUESTION, adapter_fixtures, frames

adapter, sdpa_adapter = adapter_fixtures("qwen2_vl_tiny")


def hf_reference(ad, video, question=QUESTION, options=OPTIONS):
    """Logits at the last position and M-RoPE positions of Qwen2VLForConditionalGeneration given input_ids
    with video placeholders and the processor-layout pixels."""
    inputs = ad.prepare(video, question, options, NoMerge())
    before, after = ad.prompt_text(question, options)
    ids = ad.token_ids(before) + [ad.model.config.video_token_id] * inputs.visual_tokens + ad.token_ids(after)
    return (inputs, *qwen_hf_forward(ad, ids, video))


@pytest.mark.parametrize("num_frames", [2, 4, 5])  # 5: an odd count repeats the last frame
def test_unreduced_logits_and_positions_equal_the_hf_forward(adapter, num_frames):
    inputs, ref_logits, ref_positions = hf_reference(adapter, frames(num_frames))
    assert inputs.visual_tokens == -(-num_frames // 2) * 49  # 112 px, patch 8, 2x2 merger: 7x7 per frame pair
    assert torch.equal(inputs.position_ids, ref_positions)
    torch.testing.assert_close(adapter.prefill_logits(inputs), ref_logits, atol=1e-4, rtol=1e-4)


def test_the_layout_of_the_unmerged_sequence(sdpa_adapter):
    inputs = sdpa_adapter.prepare(frames(4), QUESTION, OPTIONS, NoMerge())
    roles = inputs.token_roles.tolist()
    assert roles[:2] == [PREFIX_TEXT] * 2 and roles[2:100] == [VISUAL] * 98 and set(roles[100:]) == {QUESTION_TEXT}
    pos = inputs.position_ids[:, 0]
    assert pos.shape == (3, len(roles))
    assert torch.equal(pos[:, :2], torch.tensor([[0, 1]] * 3))
    # group 1, row 3, column 5 of the 7x7 grid: (t, h, w) = 2 + (1, 3, 5)
    assert pos[:, 2 + 49 + 3 * 7 + 5].tolist() == [3, 5, 7]
    # text after the video: one past the largest video position (2 + 6), on all three axes
    assert torch.equal(pos[:, 100], torch.tensor([9, 9, 9]))


def test_text_after_a_long_video_starts_past_its_largest_temporal_position(sdpa_adapter):
    """More temporal patches than rows and columns: the text starts one past the last temporal position
    (Qwen2-VL's rule). transformers 5.24's get_rope_index restarts text at max(rows, cols) there, so the
    adapter departs from it in this case only, on purpose (see aim.models.qwen2_vl)."""
    ad = sdpa_adapter
    small = replace(ad.cfg, max_pixels=32 * 32, min_pixels=16 * 16)  # 32x32 px -> 2x2 tokens per pair
    long = Qwen2VLAdapter(ad.model, ad.tokenizer, small)
    video = frames(8)  # 4 temporal patches > 2 rows, 2 columns
    inputs = long.prepare(video, QUESTION, OPTIONS, NoMerge())
    pos = inputs.position_ids[:, 0]
    visual = pos[:, inputs.token_roles == VISUAL]
    assert visual.shape == (3, 16) and visual[0].max() == 2 + 3
    first_after = int((inputs.token_roles == VISUAL).nonzero().max()) + 1
    assert pos[:, first_after].tolist() == [2 + 4] * 3  # largest video position + 1
    _, _, hf_positions = hf_reference(long, video)
    assert hf_positions[0, 0, first_after] == 2 + 2  # transformers 5.24: would overlap the video's times


def test_mrope_positions_rule():
    index = torch.tensor([[0, 4], [1, 5]])  # kept cells of a 2x3 grid (row * 3 + col)
    pos = mrope_positions(3, index, (2, 2, 3), num_after=2)
    assert pos.tolist() == [[0, 1, 2, 3, 3, 4, 4, 6, 7],
                            [0, 1, 2, 3, 4, 3, 4, 6, 7],
                            [0, 1, 2, 3, 4, 4, 5, 6, 7]]


@pytest.mark.parametrize("size", [(360, 640), (112, 112), (480, 854), (1080, 1920), (20, 300), (10, 50)])
def test_resize_rule_is_the_hf_processors(size):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    assert smart_resize(*size, 28, 128 * 28 * 28, 768 * 28 * 28) == hf_smart_resize(*size, 28, 128 * 28 * 28, 768 * 28 * 28)


def test_patch_layout_and_normalization_equal_the_hf_processor():
    """Two identical 56x84 frames (no resize) give exactly the processor's pixel values for that image
    (an image is one temporal patch of itself twice), in the same patch order, and the same grid."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from aim.models.qwen2_vl import Qwen2VLAdapterConfig

    hf_cfg = Qwen2VLConfig(vision_config=dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2),
                           text_config=dict(hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, vocab_size=16))
    ad = Qwen2VLAdapter(Qwen2VLForConditionalGeneration(hf_cfg), None,
                        Qwen2VLAdapterConfig(pretrained="", random_init=True, architecture={"x": 1}, min_pixels=56 * 56))
    image = (np.random.default_rng(0).random((56, 84, 3)) * 255).astype(np.uint8)
    ours, grid = ad.hf_video_inputs(ad.pixel_values(np.stack([image, image])))
    ref = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)(images=[image], return_tensors="pt")
    assert grid.tolist() == ref["image_grid_thw"].tolist() == [[1, 4, 6]]
    torch.testing.assert_close(ours, ref["pixel_values"], atol=1e-5, rtol=1e-5)


def test_frame_count_options(sdpa_adapter):
    ad = sdpa_adapter
    video = np.stack([np.full((112, 112, 3), 20 * i, dtype=np.uint8) for i in range(5)])
    pixels = ad.pixel_values(video)
    assert pixels.shape[:3] == (3, 14, 14)  # 5 frames -> 3 temporal patches, the last frame repeated
    last = pixels[2].view(14, 14, 3, 2, 64)
    assert torch.equal(last[..., 0, :], last[..., 1, :])
    capped = Qwen2VLAdapter(ad.model, ad.tokenizer, replace(ad.cfg, max_frames=2))
    assert capped.pixel_values(video).shape[0] == 1  # frames 0 and 4 only
    budget = Qwen2VLAdapter(ad.model, ad.tokenizer, replace(ad.cfg, total_pixels=64 * 64 * 2))
    # the whole video may hold 64*64*2 pixels, each of 4 frames total * 2 / 4 = 64x64 px: 8x8 patches
    assert budget.pixel_values(video[:4]).shape[1:3] == (8, 8)
    assert budget.grid(4) == (2, 4, 4) and budget.grid(8) == (4, 2, 2)  # twice the frames, a quarter the area


def test_tower_signals_for_mergers_that_ask(sdpa_adapter):
    ad = sdpa_adapter
    pixels = ad.pixel_values(frames(4))
    enc = ad.encode_frames(pixels, needs=("metric", "attention"))
    torch.testing.assert_close(enc["features"], ad.visual_features(pixels))
    assert enc["metric"].shape == (2, 49, 32)  # tower width 32
    assert enc["attention"].shape == (2, 49) and (enc["attention"] > 0).all()
    # mean attention received per patch within a group of 196 patches: 1/196 on average
    torch.testing.assert_close(enc["attention"].mean(1), torch.full((2,), 1 / 196), atol=1e-6, rtol=0)
    by_keys = ad.prepare(frames(4), QUESTION, OPTIONS, MERGERS.build("aim", ratio=0.25, metric="keys"))
    assert by_keys.visual_tokens == 2 * 12
    plus = ad.prepare(frames(4), QUESTION, OPTIONS, MERGERS.build("prumerge_plus", ratio=0.25))
    assert plus.visual_tokens % 2 == 0 and 2 <= plus.visual_tokens <= 2 * 49  # the same count per group


def test_fvcore_counts_the_qwen2_vl_tower_and_patch_merger(sdpa_adapter):
    """(The LLM's counts against the analytic model: tests/test_adapter_contract.py.)"""
    from aim.efficiency.fvcore_count import count_visual

    ad = sdpa_adapter
    visual = count_visual(ad, frames(4), MERGERS.build("aim", ratio=0.5))
    # 2 groups x 196 patches, width 32, 2 blocks: qkv + proj + MLP (width 64) linear layers at least
    assert visual["vision_tower_flops"] >= 2 * 392 * 2 * (4 * 32**2 + 2 * 32 * 64)
    # the patch merger: its LayerNorm over 392 patches x 32 (fvcore: 5 per element), then 2 x 98 windows
    # through Linear(128, 128) and Linear(128, 64)
    assert visual["projector_flops"] == 2 * (392 * 32 * 5 + 2 * 98 * (128 * 128 + 128 * 64) / 2)
    assert visual["merge_flops"] > 0


def wide_frames(num=4):
    """Frames of 112 x 208 px: resized within the tiny preset's 112 * 112 pixel budget to 80 x 144, a 5 x 9 grid."""
    return np.random.default_rng(0).integers(0, 256, (num, 112, 208, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["pool", "prumerge_plus"])
def test_grid_mergers_on_a_non_square_frame_keep_their_tokens_own_positions(sdpa_adapter, name):
    ad, merger = sdpa_adapter, MERGERS.build(name, ratio=0.25)
    full = ad.prepare(wide_frames(), QUESTION, OPTIONS, NoMerge())
    merged = ad.prepare(wide_frames(), QUESTION, OPTIONS, merger)
    enc = ad.encode_frames(ad.pixel_values(wide_frames()), needs=merger.needs)
    assert enc["grid"] == (5, 9)
    index = merger(enc.pop("features"), **enc).token_index
    if name == "pool":  # 2 x 6 of the 5 x 9 grid (floor(0.25 * 45) = 11 wanted), per temporal patch
        assert index.shape == (2, 12)
    full_visual = full.position_ids[:, 0, full.token_roles == VISUAL].view(3, 2, 45)
    expected = torch.stack([full_visual[:, g, index[g]] for g in range(2)], 1).reshape(3, -1)
    assert torch.equal(merged.position_ids[:, 0, merged.token_roles == VISUAL], expected)


def test_flops_counts_pooling_on_a_non_square_frame():
    from aim.efficiency.cost import flops

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=["model=qwen2_vl_tiny", "model.frame_size=[112,208]",
                                                      "merger=pool", "merger.ratio=0.25", "pruner=none",
                                                      "dataset.num_frames=4"]))
    result = flops(valid)
    assert (result["tokens_per_frame"], result["kept_per_frame"]) == (45, 12)
