"""InternVL3 on single images (dynamic tiling, as the -hf processor): unreduced, the adapter is the Hugging Face
model given the Hugging Face processor's own inputs (same tiles, same input ids, same logits); merged, every
tile is one merger group and kept tokens keep their own 1-D positions; `aim.flops flops.image_size` counts the
tiles and tokens the adapter builds (the evaluation loop on images: tests/test_images_end_to_end.py). Tiny
random models from the `internvl3_tiny` preset (112 px tiles, 64 tokens each, 1..12 tiles and a thumbnail)."""
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from aim.config import validate
from aim.merging import MERGERS, NoMerge
from aim.models import PREFIX_TEXT, QUESTION_TEXT, VISUAL
from aim.models.internvl import InternVLAdapter
from aim.paths import CONF_DIR
from aim.pruning import PRUNERS
from tests.test_internvl import TOKENS, hf_processor, processor_tokenizer
from tests.tiny_models import OPTIONS, QUESTION, KeepEven, build, noise


@pytest.fixture(scope="module")
def adapter():
    """The tiny model with the processor's tokenizer: <img> and </img> are tokens (ids 48, 49), <image> the
    context token (id 4)."""
    ad = build("internvl3_tiny", ["model.architecture.text_config.vocab_size=50"])
    return InternVLAdapter(ad.model, processor_tokenizer(), ad.cfg)


def image_processor(cfg, size=112):
    """The -hf checkpoints' image processor (GotOcr2, PIL backend) at the preset's tile size, tiling bounds and
    normalization; the InternVL processor turns on its `crop_to_patches`."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    return GotOcr2ImageProcessorPil(size={"height": size, "width": size}, min_patches=cfg.min_patches,
                                    max_patches=cfg.max_patches, image_mean=list(cfg.image_mean),
                                    image_std=list(cfg.image_std))


# (image size (H, W), tile grid (rows, cols)): one tile for a square image; a wide and a tall one (3:2); a strip
# (7 tiles in a row: 8 in a row ties on aspect and the image is too small for it); 1:2 at 224 x 448, where the
# tie between 1x2 and 2x4 goes to the larger grid (the image covers more than half of it); a tiny image, tiled by
# its aspect alone (4 x 3 tiles for 10 x 12 px)
SIZES = [((112, 112), (1, 1)), ((100, 150), (2, 3)), ((150, 100), (3, 2)), ((40, 300), (1, 7)),
         ((224, 448), (2, 4)), ((10, 12), (3, 4))]


@pytest.mark.parametrize("size,tiles", SIZES)
def test_unreduced_image_inputs_equal_the_hf_processor_and_forward(adapter, size, tiles):
    """The processor's tiles (the grid's row by row, then a thumbnail where there is more than one), its input
    ids (`<img>`, 64 context tokens per tile, `</img>` in place of the prompt's context token) and the logits
    of the plain Hugging Face forward on the processor's output."""
    image = noise(*size)
    rows, cols = tiles
    count = rows * cols + (rows * cols > 1)
    hf = hf_processor(adapter.tokenizer, TOKENS, image_processor(adapter.cfg))(
        text=adapter.prompt_string(QUESTION, OPTIONS, modality="image"), images=[image[0]], return_tensors="pt")
    pixels = adapter.pixel_values(image, "image")
    assert pixels.shape == (count, 3, 112, 112) and torch.equal(pixels, hf["pixel_values"])
    assert InternVLAdapter.tile_grid(adapter.model.config, adapter.cfg, size) == tiles
    ids = adapter.input_ids(QUESTION, OPTIONS, count, modality="image")
    assert ids == hf["input_ids"][0].tolist()
    assert ids.count(48) == ids.count(49) == 1 and ids.count(4) == count * TOKENS
    inputs = adapter.prepare(image, QUESTION, OPTIONS, NoMerge(), modality="image")
    assert inputs.visual_tokens == count * TOKENS
    assert torch.equal(inputs.token_roles == VISUAL, torch.tensor(ids) == 4)
    assert torch.equal(inputs.position_ids[0], torch.arange(len(ids)))
    with torch.no_grad():
        ref = adapter.model(input_ids=hf["input_ids"], pixel_values=hf["pixel_values"]).logits[0, -1]
    torch.testing.assert_close(adapter.prefill_logits(inputs), ref, atol=1e-4, rtol=1e-4)


def test_the_tiles_are_the_resized_image_cut_row_by_row_and_the_thumbnail_is_the_whole_image(adapter):
    """A 224 x 336 image (2 x 3 tiles of 112 px) needs no resize: tile i is the crop at row i // 3, column i % 3;
    the seventh is the whole image resized to one tile (PIL bicubic), all normalized with ImageNet's mean and std."""
    from PIL import Image

    image = noise(224, 336)
    pixels = adapter.pixel_values(image, "image")
    assert pixels.shape[0] == 7
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (adapter.cfg.image_mean, adapter.cfg.image_std))
    normalized = lambda x: (torch.from_numpy(np.asarray(x)).permute(2, 0, 1) / 255.0 - mean) / std  # noqa: E731
    for i in range(6):
        r, c = divmod(i, 3)
        crop = image[0, 112 * r:112 * (r + 1), 112 * c:112 * (c + 1)]
        torch.testing.assert_close(pixels[i], normalized(crop), atol=1e-5, rtol=0)
    thumbnail = Image.fromarray(image[0]).resize((112, 112), Image.BICUBIC)
    torch.testing.assert_close(pixels[6], normalized(thumbnail), atol=1e-5, rtol=0)


def test_the_chat_prompt_is_the_checkpoint_template_s_with_the_tiles_in_place_of_the_image(adapter):
    """The real preset's prompt fields in the -hf checkpoints' chat template, whose image part is `<IMG_CONTEXT>\n`
    (here the context token, as in the checkpoints' tokenizer): the processor expands that token into the tiles'
    text, and its ids for the rendered prompt are the adapter's."""
    from dataclasses import replace

    from tests.test_internvl import INTERNVL_CHAT
    from tests.test_model_presets import MC_TEXT, real_prompt

    tok = processor_tokenizer()
    tok.add_tokens(["<|im_start|>", "<|im_end|>", "<IMG_CONTEXT>"], special_tokens=True)  # ids 50, 51, 52
    tok.context_image_token, tok.context_image_token_id = "<IMG_CONTEXT>", 52
    tok.chat_template = INTERNVL_CHAT
    ad = build("internvl3_tiny", ["model.architecture.text_config.vocab_size=53",
                                  "model.architecture.image_token_id=52"])
    ad = InternVLAdapter(ad.model, tok, replace(ad.cfg, chat_template=True, **real_prompt()))
    prompt = ad.prompt_string(QUESTION, OPTIONS, modality="image")
    assert prompt == "<|im_start|>user\n<IMG_CONTEXT>\n" + MC_TEXT + "<|im_end|>\n<|im_start|>assistant\n"
    image = noise(100, 150)
    ref = hf_processor(tok, TOKENS, image_processor(ad.cfg))(text=prompt, images=[image[0]], return_tensors="pt")
    ids = ad.input_ids(QUESTION, OPTIONS, 7, modality="image")
    assert ids == ref["input_ids"][0].tolist() and ids.count(52) == 7 * TOKENS
    inputs = ad.prepare(image, QUESTION, OPTIONS, NoMerge(), modality="image")
    assert inputs.visual_tokens == 7 * TOKENS and len(inputs.token_roles) == len(ids)
    with torch.no_grad():
        logits = ad.model(input_ids=ref["input_ids"], pixel_values=ref["pixel_values"]).logits[0, -1]
    torch.testing.assert_close(ad.prefill_logits(inputs), logits, atol=1e-4, rtol=1e-4)


def test_the_image_layout(adapter):
    """[text before][<img>][64 tokens per tile][</img>][text after]: the markers are text."""
    inputs = adapter.prepare(noise(100, 150), QUESTION, OPTIONS, NoMerge(), modality="image")
    roles = inputs.token_roles.tolist()
    first = roles.index(VISUAL)
    assert roles[:first] == [PREFIX_TEXT] * first  # <s> user <img>
    assert roles[first:first + 7 * TOKENS] == [VISUAL] * (7 * TOKENS)
    assert set(roles[first + 7 * TOKENS:]) == {QUESTION_TEXT}  # </img> and the question


def test_merging_an_image_merges_each_tile_apart_and_keeps_kept_tokens_positions(adapter):
    image = noise(100, 150)  # 2 x 3 tiles and the thumbnail
    full = adapter.prepare(image, QUESTION, OPTIONS, NoMerge(), modality="image")
    full_visual = full.position_ids[0, full.token_roles == VISUAL].view(7, TOKENS)
    text = lambda x: x.position_ids[0, x.token_roles != VISUAL]  # noqa: E731
    for merger in (KeepEven(), MERGERS.build("aim", ratio=0.25), MERGERS.build("pool", ratio=0.25)):
        merged = adapter.prepare(image, QUESTION, OPTIONS, merger, modality="image")
        enc = adapter.encode_frames(adapter.pixel_values(image, "image"), needs=getattr(merger, "needs", ()),
                                    modality="image")
        index = merger(enc.pop("features"), **enc).token_index  # [tiles, kept]: each kept token's representative
        assert index.shape[0] == 7 and merged.visual_tokens == index.numel() < 7 * TOKENS
        expected = torch.stack([full_visual[t, index[t]] for t in range(7)]).flatten().sort().values
        assert torch.equal(merged.position_ids[0, merged.token_roles == VISUAL], expected)
        assert torch.equal(text(merged), text(full))


def test_tiling_bounds_are_validated_and_name_the_field():
    from aim.checks import ConfigError

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for bad, message in (("model.max_patches=0", r"model.max_patches: must be in \[1, inf\)"),
                             ("model.min_patches=0", r"model.min_patches: must be in \[1, inf\)")):
            with pytest.raises(ConfigError, match=message):
                validate(compose("config", overrides=["model=internvl3_tiny", bad]))


def test_max_patches_bounds_the_tiles(adapter):
    from dataclasses import replace

    small = InternVLAdapter(adapter.model, adapter.tokenizer, replace(adapter.cfg, max_patches=4))
    # 3:2 is out of reach: 1:1, 2:1 and 2:2 are as close (0.5 off); the 100 x 150 image covers more than half of
    # 2 tiles but not of 4, so 1 row of 2 tiles and the thumbnail
    assert InternVLAdapter.tile_grid(adapter.model.config, small.cfg, (100, 150)) == (1, 2)
    assert small.pixel_values(noise(100, 150), "image").shape[0] == 2 + 1
    single = InternVLAdapter(adapter.model, adapter.tokenizer, replace(adapter.cfg, max_patches=1))
    assert single.pixel_values(noise(100, 150), "image").shape[0] == 1  # the whole image as one tile
    assert InternVLAdapter.image_tiles(adapter.model.config, single.cfg, (100, 150)) == 1


@pytest.mark.parametrize("size,tiles", SIZES[:2] + SIZES[4:5])
@pytest.mark.parametrize("merger", ["none", "aim", "pool"])
def test_aim_flops_counts_the_tiles_and_tokens_the_adapter_builds_for_an_image(adapter, size, tiles, merger):
    from aim.efficiency.cost import flops

    overrides = ["merger=none"] if merger == "none" else [f"merger={merger}", "merger.ratio=0.25"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=["model=internvl3_tiny", f"flops.image_size=[{size[0]},{size[1]}]",
                                                      "pruner=none", *overrides]))
    counted = flops(valid)
    built_merger = MERGERS.build(merger, **({} if merger == "none" else {"ratio": 0.25}))
    built = adapter.prepare(noise(*size), QUESTION, OPTIONS, built_merger, modality="image")
    count = tiles[0] * tiles[1] + (tiles[0] * tiles[1] > 1)
    assert counted["input"] == "image" and counted["image"]["tiles"] == counted["frame_groups"] == count
    assert counted["token_grid"] == [8, 8] and counted["tokens_per_frame"] == TOKENS
    assert counted["visual_tokens_unmerged"] == count * TOKENS
    assert counted["visual_tokens"] == built.visual_tokens == count * counted["kept_per_frame"]


def test_an_image_dataset_needs_flops_image_size_on_internvl(tmp_path):
    """InternVL's image tokens follow the image's size (its tiles): aim.flops on an image dataset asks for it."""
    from aim.checks import ConfigError
    from aim.efficiency.cost import flops

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=["model=internvl3_tiny", "dataset=image_mcq",
                                                      f"dataset.root={tmp_path}"]))
    with pytest.raises(ConfigError, match=r"flops.image_size: dataset image_mcq holds images, .* \(dynamic tiling"):
        flops(valid)


def test_pruning_an_image_s_tokens_equals_the_masked_reference(adapter):
    from aim.pruning.hooks import TokenPruner
    from tests.pruning_reference import masked_logits

    inputs = adapter.prepare(noise(100, 150), QUESTION, OPTIONS, MERGERS.build("aim", ratio=0.5), modality="image")
    with TokenPruner(adapter.decoder_layers, PRUNERS.build("aim", l1=2, l2=4)).attached(inputs.token_roles) as trace:
        pruned = adapter.prefill_logits(inputs)
    assert trace.visual_tokens_per_layer == [7 * 32, 7 * 32, 7 * 16, 0]  # 7 tiles, half of each kept by the merger
    reference = masked_logits(adapter, inputs.inputs_embeds, inputs.position_ids, trace.kept_indices, len(inputs.token_roles))
    torch.testing.assert_close(pruned, reference, atol=1e-4, rtol=1e-4)
