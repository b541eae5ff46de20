"""LLaVA-OneVision on single images (anyres): unreduced, the adapter is the Hugging Face model (same crops,
same packing of the crop grid, same logits); merged, each anyres crop (and the base image) is merged on
its own, kept tokens keep their positions and the row newlines stay (the evaluation loop on images:
tests/test_images_end_to_end.py). Tiny random models from the `llava_onevision_tiny` preset (SigLIP at 112 px,
patch 8: 14x14 tokens per crop; grids up to 4x4 crops)."""
import pytest
import torch
from hydra import compose, initialize_config_dir

from aim.config import validate
from aim.merging import MERGERS, NoMerge
from aim.models import QUESTION_TEXT, VISUAL
from aim.paths import CONF_DIR
from tests.tiny_models import OPTIONS, QUESTION, adapter_fixtures, noise

adapter, sdpa_adapter = adapter_fixtures("llava_onevision_tiny")


def hf_logits(ad, image, inputs):
    """LlavaOnevisionForConditionalGeneration with the image token repeated for every image position."""
    before, after = ad.prompt_ids(QUESTION, OPTIONS, modality="image")
    n = len(inputs.token_roles) - len(before) - len(after)
    ids = before + [ad.model.config.image_token_id] * n + after
    with torch.no_grad():
        return ad.model(input_ids=torch.tensor([ids]), pixel_values=ad.pixel_values(image, "image")[None],
                        image_sizes=torch.tensor([image.shape[1:3]])).logits[0, -1]


# (image size, crops + base, rows x cols of the packed grid): 1x2 crops unpadded to 14x22; 2x1 to 22x14;
# one crop; 4x4 crops = 56x56 cells > 9 crops' worth, shrunk to 42x42; a wide strip
LAYOUTS = [((100, 150), 3, (14, 22)), ((150, 100), 3, (22, 14)), ((112, 112), 2, (14, 14)),
           ((440, 440), 17, (42, 42)), ((60, 400), 5, (8, 56))]


@pytest.mark.parametrize("size,patches,grid", LAYOUTS)
def test_unreduced_image_inputs_equal_the_hf_forward(adapter, size, patches, grid):
    image = noise(*size)
    inputs = adapter.prepare(image, QUESTION, OPTIONS, NoMerge(), modality="image")
    assert adapter.pixel_values(image, "image").shape == (patches, 3, 112, 112)
    rows, cols = grid
    assert inputs.visual_tokens == 196 + rows * cols
    assert torch.equal(inputs.position_ids[0], torch.arange(len(inputs.token_roles)))
    torch.testing.assert_close(adapter.prefill_logits(inputs), hf_logits(adapter, image, inputs), atol=1e-4, rtol=1e-4)


def test_the_layout_base_image_then_rows_each_ending_in_a_newline(sdpa_adapter):
    inputs = sdpa_adapter.prepare(noise(100, 150), QUESTION, OPTIONS, NoMerge(), modality="image")
    roles = inputs.token_roles.tolist()
    p = roles.index(VISUAL)
    assert roles[p:p + 196] == [VISUAL] * 196  # the base image, no newline
    rows = [roles[p + 196 + r * 23: p + 196 + (r + 1) * 23] for r in range(14)]
    assert all(row == [VISUAL] * 22 + [QUESTION_TEXT] for row in rows)  # 22 cells and the newline
    newline = sdpa_adapter.model.model.image_newline
    assert torch.equal(inputs.inputs_embeds[0, p + 196 + 22], newline)


def test_each_crop_is_merged_on_its_own(sdpa_adapter):
    """100x150 px: base image (14x14) and two crops, each 14x11 cells after unpadding. At ratio 0.25 the base
    keeps 49 and each crop floor(154 / 4) = 38, every kept token inside its own crop's cells, newlines kept."""
    ad = sdpa_adapter
    full = ad.prepare(noise(100, 150), QUESTION, OPTIONS, NoMerge(), modality="image")
    merged = ad.prepare(noise(100, 150), QUESTION, OPTIONS, MERGERS.build("aim", ratio=0.25), modality="image")
    assert merged.visual_tokens == 49 + 38 + 38
    p = int((full.token_roles == VISUAL).nonzero()[0])
    pos = merged.position_ids[0, merged.token_roles == VISUAL] - p
    base, grid = pos[pos < 196], pos[pos >= 196] - 196
    row, col = grid // 23, grid % 23
    assert len(base) == 49 and (col < 22).all()
    assert (col < 11).sum() == 38 and (col >= 11).sum() == 38  # the left crop's columns, then the right's
    assert (pos.diff() > 0).all()
    newlines = lambda x: x.position_ids[0, x.token_roles == QUESTION_TEXT]  # noqa: E731
    assert torch.equal(newlines(merged), newlines(full))  # every newline and the question stay in place


def test_tower_signals_follow_the_crops_for_prumerge(sdpa_adapter):
    ad = sdpa_adapter
    for name in ("prumerge", "prumerge_plus"):
        inputs = ad.prepare(noise(440, 440), QUESTION, OPTIONS, MERGERS.build(name, ratio=0.25), modality="image")
        assert 17 <= inputs.visual_tokens  # at least one token from the base image and each of the 16 crops
        assert (inputs.position_ids[0].diff() > 0).all()
    by_keys = ad.prepare(noise(440, 440), QUESTION, OPTIONS, MERGERS.build("aim", ratio=0.5, metric="keys"), modality="image")
    # base 98 of 196; the 42x42 grid shrunk from 4x4 crops: every crop's cells halved (rounded down)
    owner_counts = torch.bincount(ad.anyres_grid(torch.arange(16).repeat_interleave(196)[:, None], (440, 440))[0].flatten())
    assert by_keys.visual_tokens == 98 + int((owner_counts // 2).sum())


def test_pool_pools_each_crop_on_its_own_grid(sdpa_adapter):
    from aim.models.llava_onevision import anyres_owner

    pool = MERGERS.build("pool", ratio=0.25)
    ok = sdpa_adapter.prepare(noise(112, 112), QUESTION, OPTIONS, pool, modality="image")
    assert ok.visual_tokens == 2 * 49  # base and the one crop, each 14x14 pooled to 7x7
    # an unpadded crop of a wide image is a non-square rectangle of cells: pooled to the nearest grid of its own
    owner = anyres_owner(sdpa_adapter.model.config, (100, 150))
    crops = [((owner == c).any(1).sum().item(), (owner == c).any(0).sum().item()) for c in owner.unique().tolist()]
    assert any(r != c for r, c in crops)
    wide = sdpa_adapter.prepare(noise(100, 150), QUESTION, OPTIONS, pool, modality="image")
    assert wide.visual_tokens == 49 + sum(h * w for h, w in (pool.output_grid(r, c) for r, c in crops))


def test_anyres_grids_must_be_multiples_of_the_tower_resolution(tiny_adapter):
    """The bundled toy model keeps the default 384 px grids with a 112 px tower: a clear error, not a wrong packing."""
    with pytest.raises(ValueError, match="image_grid_pinpoints: anyres grids must be multiples of the tower's 112 px"):
        tiny_adapter.prepare(noise(100, 150), QUESTION, OPTIONS, NoMerge(), modality="image")


@pytest.mark.parametrize("size,patches,grid", LAYOUTS)
@pytest.mark.parametrize("merger", ["none", "aim"])
def test_aim_flops_counts_the_tokens_the_adapter_builds_for_an_image(sdpa_adapter, size, patches, grid, merger):
    """`aim.flops flops.image_size=[H,W]` (config only, no weights) counts what `prepare` builds: the visual
    tokens after merging each crop apart, plus one newline per row of the packed grid as non-visual tokens."""
    from aim.efficiency.cost import flops

    merger_overrides = ["merger=none"] if merger == "none" else ["merger=aim", "merger.ratio=0.25"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=["model=llava_onevision_tiny", f"flops.image_size=[{size[0]},{size[1]}]",
                                                      "pruner=none", *merger_overrides]))
    counted = flops(valid)
    built = sdpa_adapter.prepare(noise(*size), QUESTION, OPTIONS,
                                 NoMerge() if merger == "none" else MERGERS.build("aim", ratio=0.25), modality="image")
    before, after = sdpa_adapter.prompt_ids(QUESTION, OPTIONS, modality="image")
    assert counted["visual_tokens"] == built.visual_tokens
    assert counted["image"]["token_grid"] == list(grid) and len(counted["image"]["crop_cells"]) <= patches - 1
    assert built.text_tokens == len(before) + len(after) + counted["image"]["newline_tokens"]
