"""Qwen2-VL and Qwen2.5-VL on single images: unreduced, the adapter is the Hugging Face model given the Hugging
Face processor's own inputs (same input ids, same M-RoPE positions, same logits); merged, the image is one
merger group and kept tokens keep their representative's (t, h, w); `aim.flops flops.image_size` counts what
the adapter builds (the evaluation loop on images: tests/test_images_end_to_end.py). Tiny random models from
the `qwen2_vl_tiny` / `qwen2_5_vl_tiny` presets (8 px patches, 2x2 merger: one token per 16 x 16 px, images
within 112 x 112 px)."""
import pytest
import torch
from hydra import compose, initialize_config_dir

from aim.config import validate
from aim.merging import MERGERS, NoMerge
from aim.models import QUESTION_TEXT, VISUAL
from aim.paths import CONF_DIR
from tests.tiny_models import OPTIONS, QUESTION, KeepEven, build, noise

PRESETS = {"qwen2_vl_tiny": "qwen2_vl", "qwen2_5_vl_tiny": "qwen2_5_vl"}


@pytest.fixture(scope="module", params=list(PRESETS))
def adapter(request):
    return build(request.param)


def hf_processor(ad, monkeypatch):
    """The Hugging Face Qwen2-VL processor (image processor + tokenizer) with the preset's image settings. The
    toy tokenizer's image token is `<image>` (the processor reads `tokenizer.image_token`); the processor's
    class check of its absent video processor (which needs torchvision) is skipped."""
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.processing_utils import ProcessorMixin

    monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: None)
    monkeypatch.setattr(ad.tokenizer, "image_token", ad.visual_token("image"), raising=False)
    cfg = ad.cfg
    images = Qwen2VLImageProcessorPil(min_pixels=cfg.image_min_pixels, max_pixels=cfg.image_max_pixels,
                                      patch_size=ad.patch_size, temporal_patch_size=ad.temporal_patch,
                                      merge_size=ad.merge, image_mean=list(cfg.image_mean),
                                      image_std=list(cfg.image_std))
    return Qwen2VLProcessor(image_processor=images, tokenizer=ad.tokenizer)


# (image size, token grid): resized within 112 x 112 px, sides multiples of 16: wide, tall, square, a strip,
# a small image enlarged to the 256 px minimum
SIZES = [((100, 150), (5, 8)), ((150, 100), (8, 5)), ((112, 112), (7, 7)), ((40, 300), (2, 19)), ((10, 12), (1, 1))]


@pytest.mark.parametrize("size,grid", SIZES)
def test_unreduced_image_inputs_equal_the_hf_processor_and_forward(adapter, monkeypatch, size, grid):
    """The processor's input ids (one `<image>` per token), its pixels and grid, the model's get_rope_index
    positions and the logits of the plain Hugging Face forward on the processor's output."""
    image = noise(*size)
    inputs = adapter.prepare(image, QUESTION, OPTIONS, NoMerge(), modality="image")
    hf = hf_processor(adapter, monkeypatch)(text=[adapter.prompt_string(QUESTION, OPTIONS, modality="image")],
                                            images=[image[0]], return_tensors="pt")
    rows, cols = grid
    assert hf["image_grid_thw"].tolist() == [[1, 2 * rows, 2 * cols]]
    assert inputs.visual_tokens == rows * cols
    before, after = adapter.prompt_ids(QUESTION, OPTIONS, modality="image")
    ids = before + [adapter.model.config.image_token_id] * inputs.visual_tokens + after
    assert hf["input_ids"][0].tolist() == ids
    flat, thw = adapter.hf_video_inputs(adapter.pixel_values(image, "image"))
    assert torch.equal(flat, hf["pixel_values"]) and thw.tolist() == hf["image_grid_thw"].tolist()
    positions, _ = adapter.model.model.get_rope_index(hf["input_ids"], hf["mm_token_type_ids"],
                                                      image_grid_thw=hf["image_grid_thw"])
    assert torch.equal(inputs.position_ids, positions)
    with torch.no_grad():
        ref = adapter.model(**hf).logits[0, -1]
    torch.testing.assert_close(adapter.prefill_logits(inputs), ref, atol=1e-4, rtol=1e-4)


def test_an_image_is_one_temporal_patch_of_itself_twice(adapter):
    pixels = adapter.pixel_values(noise(100, 150), "image")
    assert pixels.shape == (1, 10, 16, 3 * 2 * 8 * 8)
    both = pixels.view(1, 10, 16, 3, 2, 64)
    assert torch.equal(both[..., 0, :], both[..., 1, :])


def test_the_image_layout_and_its_m_rope_positions(adapter):
    """[text][rows x cols image tokens at time s, (s + r, s + c)][text from s + max(rows, cols)]."""
    inputs = adapter.prepare(noise(100, 150), QUESTION, OPTIONS, NoMerge(), modality="image")
    roles, pos = inputs.token_roles, inputs.position_ids[:, 0]
    assert roles[:2].tolist() == [0, 0] and (roles[2:42] == VISUAL).all() and (roles[42:] == QUESTION_TEXT).all()
    assert (pos[0, 2:42] == 2).all()
    assert pos[:, 2 + 3 * 8 + 4].tolist() == [2, 2 + 3, 2 + 4]  # row 3, column 4 of the 5 x 8 grid
    assert pos[:, 42].tolist() == [2 + 8] * 3


def test_merging_an_image_keeps_each_kept_token_s_position(adapter):
    image = noise(100, 150)
    full = adapter.prepare(image, QUESTION, OPTIONS, NoMerge(), modality="image")
    full_visual = full.position_ids[:, 0, full.token_roles == VISUAL]
    for merger in (KeepEven(), MERGERS.build("aim", ratio=0.25), MERGERS.build("pool", ratio=0.25)):
        merged = adapter.prepare(image, QUESTION, OPTIONS, merger, modality="image")
        enc = adapter.encode_frames(adapter.pixel_values(image, "image"), needs=getattr(merger, "needs", ()),
                                    modality="image")
        index = merger(enc.pop("features"), **enc).token_index  # [1, kept]: each kept token's representative
        assert merged.visual_tokens == index.shape[1] < 40
        assert torch.equal(merged.position_ids[:, 0, merged.token_roles == VISUAL], full_visual[:, index[0]])
        after = lambda x: x.position_ids[:, 0, x.token_roles == QUESTION_TEXT]  # noqa: E731
        assert torch.equal(after(merged), after(full))


@pytest.mark.parametrize("size,grid", SIZES[:2])
@pytest.mark.parametrize("merger", ["none", "aim", "pool"])
def test_aim_flops_counts_the_tokens_the_adapter_builds_for_an_image(adapter, size, grid, merger):
    from aim.efficiency.cost import flops

    name = next(k for k, v in PRESETS.items() if v == adapter.cfg.name)
    overrides = ["merger=none"] if merger == "none" else [f"merger={merger}", "merger.ratio=0.25"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=[f"model={name}", f"flops.image_size=[{size[0]},{size[1]}]",
                                                      "pruner=none", *overrides]))
    counted = flops(valid)
    built_merger = MERGERS.build(merger, **({} if merger == "none" else {"ratio": 0.25}))
    built = adapter.prepare(noise(*size), QUESTION, OPTIONS, built_merger, modality="image")
    assert counted["input"] == "image" and counted["image"]["token_grid"] == list(grid)
    assert counted["visual_tokens_unmerged"] == grid[0] * grid[1]
    assert counted["visual_tokens"] == built.visual_tokens
    assert counted["image"]["newline_tokens"] == 0


def test_an_image_dataset_needs_flops_image_size_on_qwen(tmp_path):
    """Qwen's image tokens follow the image's size: aim.flops on an image dataset asks for it."""
    from aim.checks import ConfigError
    from aim.efficiency.cost import flops

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=["model=qwen2_vl_tiny", "dataset=image_mcq",
                                                      f"dataset.root={tmp_path}"]))
    with pytest.raises(ConfigError, match=r"flops.image_size: dataset image_mcq holds images, and .* depend on the "
                                          r"image size"):
        flops(valid)

