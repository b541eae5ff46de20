"""The LLaVA-OneVision adapter builds exactly the sequence the Hugging Face model builds, and keeps
merged-away tokens' positions as gaps."""
import numpy as np
import torch

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


def test_unmerged_inputs_match_the_hf_video_forward(tiny_adapter):
    """Same logits as LlavaOnevisionForConditionalGeneration given input_ids with video placeholders."""
    ad = tiny_adapter
    inputs = ad.prepare(frames(), QUESTION, OPTIONS, NoMerge())
    before, after = ad.prompt_text(QUESTION, OPTIONS)
    video_id = ad.model.config.video_token_id
    ids = ad.token_ids(before) + [video_id] * (inputs.visual_tokens + 1) + ad.token_ids(after)
    pixels = ad.pixel_values(frames())[None]
    with torch.no_grad():
        ref = ad.model(input_ids=torch.tensor([ids]), pixel_values_videos=pixels).logits[0, -1]
    torch.testing.assert_close(ad.prefill_logits(inputs), ref, atol=1e-4, rtol=1e-4)


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
