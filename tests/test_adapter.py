"""The LLaVA-OneVision adapter builds exactly the sequence the Hugging Face model builds, and keeps
merged-away tokens' positions as gaps."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aim.data import synthetic as syn
from aim.merging import Merged, NoMerge
from aim.models import PREFIX_TEXT, QUESTION_TEXT, VISUAL

QUESTION, OPTIONS = "what colour is the circle ?", ["red", "blue", "green", "yellow"]


def frames(num=4):
    return syn.render(syn.sample_item(0, 0)[0])[:num]


class KeepEven:
    """A stand-in merger: keeps the even-indexed tokens of every frame."""

    def __call__(self, features, metric=None):
        idx = torch.arange(0, features.shape[1], 2)
        return Merged(features[:, idx], idx.expand(features.shape[0], -1))


@pytest.fixture(scope="module")
def adapter64(tiny_adapter):
    """The tiny model in float64: its random weights are small, so a wrong position or token moves its
    outputs little (5e-5 for every text position shifted by one), but far above float64 rounding."""
    from aim.models.llava_onevision import LlavaOnevisionAdapter

    ad = LlavaOnevisionAdapter(copy.deepcopy(tiny_adapter.model), tiny_adapter.tokenizer, tiny_adapter.cfg)
    ad.model.double()
    ad.dtype = torch.float64  # not a preset dtype: set here, after the adapter cast the model to float32
    return ad


def test_unmerged_inputs_match_the_hf_video_forward(adapter64):
    """Every layer's hidden states at every position, and the logits, equal those of
    LlavaOnevisionForConditionalGeneration given input_ids with video placeholders, to float64 rounding."""
    ad = adapter64
    inputs = ad.prepare(frames(), QUESTION, OPTIONS, NoMerge())
    before, after = ad.prompt_text(QUESTION, OPTIONS)
    video_id = ad.model.config.video_token_id
    ids = ad.token_ids(before) + [video_id] * (inputs.visual_tokens + 1) + ad.token_ids(after)
    pixels = ad.pixel_values(frames())[None]
    assert inputs.inputs_embeds.dtype == pixels.dtype == torch.float64
    with torch.no_grad():
        ref = ad.model(input_ids=torch.tensor([ids]), pixel_values_videos=pixels, output_hidden_states=True)
        ours = ad.language_model(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids,
                                 output_hidden_states=True)
    assert len(ours.hidden_states) == len(ref.hidden_states) == len(ad.decoder_layers) + 1
    for layer, (h, r) in enumerate(zip(ours.hidden_states, ref.hidden_states)):
        torch.testing.assert_close(h, r, atol=1e-10, rtol=0, msg=lambda m: f"layer {layer}: {m}")
    # the adapter returns float32 logits (rounded from the float64 model's)
    torch.testing.assert_close(ad.prefill_logits(inputs), ref.logits[0, -1].float(), atol=1e-6, rtol=0)


def hf_video_processor_pixels(frames: np.ndarray, size: int) -> torch.Tensor:
    """The llava-hf LLaVA-OneVision checkpoints' video preprocessing, written out: their
    video_preprocessor_config gives LlavaOnevisionVideoProcessor size {384, 384} (here the tower's size),
    resample 3 (bicubic) and SigLIP's mean = std = [0.5, 0.5, 0.5]. That processor (a torchvision backend)
    resizes the uint8 [T, 3, H, W] frames with torchvision's resize(BICUBIC, antialias=True), which on CPU
    interpolates uint8 natively (torchvision.transforms.v2.functional.resize_image) and returns uint8;
    then it rescales by 1/255 and normalizes."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=[size, size], mode="bicubic", align_corners=False, antialias=True)
    mean, std = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


@pytest.mark.parametrize("shape", [(112, 112), (64, 80), (240, 180)])
def test_video_preprocessing_equals_the_hf_video_processor(tiny_adapter, shape):
    """Frames at the tower's size, smaller (upsampled) and larger (downsampled, where antialiasing
    matters): the same pixel values as the checkpoints' video processor. Where torchvision is installed,
    the written-out processor is checked against the Hugging Face one itself."""
    rng = np.random.default_rng(0)
    h, w = shape
    smooth = np.stack(np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h)), -1).sum(-1) / 2
    video = np.clip(smooth[None, :, :, None] + rng.normal(0, 40, (3, h, w, 3)), 0, 255).astype(np.uint8)
    expected = hf_video_processor_pixels(video, tiny_adapter.image_size)
    torch.testing.assert_close(tiny_adapter.pixel_values(video), expected, atol=1e-6, rtol=0)
    try:
        import torchvision  # noqa: F401
    except Exception:  # not a dependency of the project
        return
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    processor = LlavaOnevisionVideoProcessor(size={"height": tiny_adapter.image_size, "width": tiny_adapter.image_size},
                                             resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    hf = processor(videos=[video], return_tensors="pt")["pixel_values_videos"][0]
    torch.testing.assert_close(hf, expected, atol=1e-6, rtol=0)


def test_roles_and_positions_of_the_unmerged_sequence(tiny_adapter):
    inputs = tiny_adapter.prepare(frames(), QUESTION, OPTIONS, NoMerge())
    n = inputs.inputs_embeds.shape[1]
    assert torch.equal(inputs.position_ids[0], torch.arange(n))
    roles = inputs.token_roles.tolist()
    assert roles[:2] == [PREFIX_TEXT] * 2  # "<s> user"
    assert inputs.visual_tokens == 4 * 49  # 112 px, patch 8, 2x2 pooling -> 7x7 per frame
    assert roles[2 : 2 + 196] == [VISUAL] * 196 and set(roles[198:]) == {QUESTION_TEXT}


def test_kept_tokens_keep_their_original_positions(tiny_adapter):
    full = tiny_adapter.prepare(frames(), QUESTION, OPTIONS, NoMerge())
    merged = tiny_adapter.prepare(frames(), QUESTION, OPTIONS, KeepEven())
    assert merged.visual_tokens == 4 * 25
    vis = merged.position_ids[0][merged.token_roles == VISUAL]
    expected = torch.cat([2 + f * 49 + torch.arange(0, 49, 2) for f in range(4)])
    assert torch.equal(vis, expected)
    # the text after the video sits where it sat without merging
    assert torch.equal(merged.position_ids[0, -10:], full.position_ids[0, -10:])


def test_frames_of_another_size_are_resized_for_the_tower(tiny_adapter):
    small = np.zeros((2, 64, 80, 3), dtype=np.uint8)
    assert tiny_adapter.pixel_values(small).shape == (2, 3, 112, 112)
    assert tiny_adapter.visual_features(tiny_adapter.pixel_values(small)).shape == (2, 49, 128)


def test_cached_greedy_decoding_equals_recomputing_the_sequence(tiny_adapter):
    ad = tiny_adapter
    inputs = ad.prepare(frames(2), QUESTION, OPTIONS, KeepEven())  # gaps in positions too
    ids = ad.generate_ids(inputs, max_new_tokens=4)
    embeds, positions = inputs.inputs_embeds, inputs.position_ids
    expected = []
    with torch.no_grad():
        for _ in range(len(ids)):
            out = ad.run_llm(embeds, positions)
            nxt = int(ad.model.lm_head(out.last_hidden_state[0, -1]).argmax())
            expected.append(nxt)
            embeds = torch.cat([embeds, ad.embed_tokens([nxt])[None]], 1)
            positions = torch.cat([positions, positions[:, -1:] + 1], 1)
    assert ids == expected


def test_position_gaps_do_not_split_the_sequence_into_packed_segments(tiny_adapter):
    """transformers 5 treats jumps in position_ids as packed-sequence boundaries when it gets no mask;
    the adapter's explicit mask keeps one causal sequence: the result equals an explicit 4D causal mask."""
    ad = tiny_adapter
    inputs = ad.prepare(frames(2), QUESTION, OPTIONS, KeepEven())
    n = inputs.inputs_embeds.shape[1]
    causal = torch.full((1, 1, n, n), float("-inf")).triu(1)
    with torch.no_grad():
        ref = ad.language_model(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids,
                                attention_mask=causal, use_cache=False).last_hidden_state
        ours = ad.run_llm(inputs.inputs_embeds, inputs.position_ids).last_hidden_state
        packed = ad.language_model(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids,
                                   use_cache=False).last_hidden_state
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert (packed[0, -1] - ref[0, -1]).abs().max() > 1e-3  # the pitfall this guards against is real


def test_merging_on_the_towers_keys_uses_the_keys_of_the_feature_layer(tiny_adapter):
    from aim.merging import MERGERS

    ad = tiny_adapter
    enc = ad.encode_frames(ad.pixel_values(frames(2)), needs=("metric", "attention"))
    assert enc["features"].shape == (2, 49, 128) and enc["metric"].shape == (2, 49, 64)  # tower width 64
    torch.testing.assert_close(enc["features"], ad.visual_features(ad.pixel_values(frames(2))))
    assert enc["attention"].shape == (2, 49) and (enc["attention"] > 0).all()
    # mean received attention over 196 patches, pooled 2x2: averages 1/196 per patch
    torch.testing.assert_close(enc["attention"].mean(1), torch.full((2,), 1 / 196), atol=2e-4, rtol=0)
    by_keys = ad.prepare(frames(2), QUESTION, OPTIONS, MERGERS.build("aim", ratio=0.25, metric="keys"))
    by_feats = ad.prepare(frames(2), QUESTION, OPTIONS, MERGERS.build("aim", ratio=0.25))
    assert by_keys.visual_tokens == by_feats.visual_tokens == 2 * 12


def test_prumerge_runs_through_the_adapter_with_the_siglip_fallback(tiny_adapter):
    from aim.merging import MERGERS

    inputs = tiny_adapter.prepare(frames(2), QUESTION, OPTIONS, MERGERS.build("prumerge_plus", ratio=0.25))
    assert 2 <= inputs.visual_tokens <= 2 * 49
