"""HoliTom as specifications: its merging before the LLM (merger=holitom) on small hand-built clips, and its
inner-LLM merging (pruner=holitom) through the one pruning hook, on hand-built hidden states and on the tiny
LLaVA-OneVision model against a reference that keeps every token (masked keys, merged hidden states)."""
import pytest
import torch

from aim.merging import MERGERS, NoMerge
from aim.merging.holitom import adjacent_similarity, segments
from aim.models import VISUAL
from aim.pruning import PRUNERS
from aim.pruning.hooks import TokenPruner, merge_dropped

from tests.pruning_reference import hidden_under_masks, reference_masks
from tests.test_pruning_hook import adapter, sample_inputs  # noqa: F401  (the tiny model fixture)


def noisy(base: torch.Tensor, frames: int, scale: float = 0.01, seed: int = 0) -> torch.Tensor:
    """`frames` copies of `base` [T, D], each with a little noise."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([base + scale * torch.randn(base.shape, generator=g) for _ in range(frames)])


# ---- segmentation ----

def test_the_segmentation_maximises_the_tokens_merged_over_the_whole_clip_not_greedily():
    """4 frames, 4 positions; s > tau marks: every position across frames 0-1 and 2-3, position 0 alone
    across 1-2. One segment saves 3 * 1 = 3 tokens (only position 0 is similar throughout), [0, 1] + [2, 3]
    save 4 + 4 = 8, [0, 1, 2] + [3] saves 2 * 1 = 2: the best partition is the two pairs."""
    high, low = 0.9, 0.1
    s = torch.tensor([[high] * 4, [high, low, low, low], [high] * 4])
    assert segments(s, 0.8) == [(0, 2), (2, 4)]
    assert segments(s, 0.95) == [(0, 1), (1, 2), (2, 3), (3, 4)]  # nothing similar: single frames


def test_a_scene_cut_starts_a_new_segment():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(9, 16, generator=g), torch.randn(9, 16, generator=g)
    clip = torch.cat([noisy(a, 5), noisy(b, 3, seed=1)])
    assert segments(adjacent_similarity(clip), 0.8) == [(0, 5), (5, 8)]


# ---- merging before the LLM ----

def test_a_static_region_collapses_to_one_token_per_position_at_the_segment_s_first_frame():
    """6 frames of 9 tokens: positions 0-4 the same over the clip (small noise), 5-8 new in every frame. One
    segment; the 5 static positions merge over the 6 frames (saving 25 tokens), leaving M = 54 - 25 = 29,
    which the budget floor(29/54 * 54) keeps whole: frame 0 holds the 5 merged tokens (each its position's
    mean over the frames) and its 4 moving ones, every other frame its 4 moving ones."""
    g = torch.Generator().manual_seed(2)
    clip = torch.randn(6, 9, 16, generator=g)
    clip[:, :5] = noisy(torch.randn(5, 16, generator=g), 6)
    out = MERGERS.build("holitom", ratio=29 / 54)(clip, attention=torch.rand(6, 9, generator=g))
    assert out.counts(6) == [9, 4, 4, 4, 4, 4]
    assert out.token_index[:9].tolist() == list(range(9)) and out.frame[:9].tolist() == [0] * 9
    torch.testing.assert_close(out.features[:5], clip[:, :5].mean(0))
    moving = out.frame > 0
    assert torch.equal(out.features[moving], clip[1:, 5:].reshape(-1, 16))
    assert out.token_index[moving].tolist() == [5, 6, 7, 8] * 5


def test_a_segment_s_merged_tokens_cluster_at_density_peaks_with_beta_weights_at_its_first_frame():
    """Frames 0-2 one scene, 3-5 another, all positions static within each; the budget of 2 * 9 / 3 = 6
    tokens (ratio 1/9) gives each segment's 9 merged tokens c = 3 clusters. Scene B's 9 tokens are 3 tight
    groups of 3 (positions {0,1,2}, {3,4,5}, {6,7,8}): one center per group, standing at frame 3, merged as
    0.6 center + 0.4 mean of its two other members."""
    g = torch.Generator().manual_seed(3)
    scene_a = torch.randn(9, 16, generator=g)
    groups = torch.randn(3, 16, generator=g)
    scene_b = groups.repeat_interleave(3, 0) + 0.01 * torch.randn(9, 16, generator=g)
    clip = torch.cat([noisy(scene_a, 3, 0.001), noisy(scene_b, 3, 0.001, seed=1)])
    out = MERGERS.build("holitom", ratio=1 / 9)(clip, attention=torch.rand(6, 9, generator=g))
    assert out.counts(6) == [3, 0, 0, 3, 0, 0]
    merged = clip[3:].mean(0)  # the segment's temporally merged tokens
    centers = out.token_index[out.frame == 3].tolist()
    assert sorted(c // 3 for c in centers) == [0, 1, 2]  # one center in each tight group
    for c, feature in zip(centers, out.features[out.frame == 3]):
        others = [i for i in range(3 * (c // 3), 3 * (c // 3) + 3) if i != c]
        torch.testing.assert_close(feature, 0.6 * merged[c] + 0.4 * merged[others].mean(0))


def test_a_frame_s_moving_tokens_are_its_most_attended_ones_kept_as_they_are():
    g = torch.Generator().manual_seed(4)
    clip = torch.randn(2, 8, 16, generator=g)  # nothing static
    attention = torch.rand(2, 8, generator=g)
    out = MERGERS.build("holitom", ratio=0.25)(clip, attention=attention)
    assert out.counts(2) == [2, 2]
    for f in range(2):
        top = sorted(attention[f].topk(2).indices.tolist())
        assert out.token_index[out.frame == f].tolist() == top
        assert torch.equal(out.features[out.frame == f], clip[f, top])


def test_a_static_clip_keeps_the_configured_count_splitting_merged_positions_back():
    """8 like frames of 9 tokens: merging every position over the clip would leave 9 tokens, fewer than the
    budget floor(0.5 * 72) = 36; positions are split back until 36 can be kept, each (frame, index) once."""
    g = torch.Generator().manual_seed(5)
    clip = noisy(torch.randn(9, 16, generator=g), 8)
    reducer = MERGERS.build("holitom", ratio=0.5)
    out = reducer(clip, attention=torch.rand(8, 9, generator=g))
    assert len(out.frame) == reducer.kept_total(8, 9) == 36
    assert len(set(zip(out.frame.tolist(), out.token_index.tolist()))) == 36


def test_the_reducer_needs_the_tower_attention():
    with pytest.raises(ValueError, match="attention"):
        MERGERS.build("holitom")(torch.randn(2, 4, 8))


def test_no_reduction_is_bit_exact_with_the_unreduced_model_through_llava_onevision(adapter):  # noqa: F811
    """merger=holitom at ratio 1 and pruner=holitom keeping every token: the tiny LLaVA-OneVision's inputs and
    logits are those of the unreduced model."""
    from aim.data import synthetic as syn

    scene, q = syn.sample_item(0, 1)
    clip = syn.render(scene)[:4]
    plain = adapter.prepare(clip, q.question, q.options, NoMerge())
    reduced = adapter.prepare(clip, q.question, q.options, MERGERS.build("holitom", ratio=1.0))
    assert torch.equal(plain.inputs_embeds, reduced.inputs_embeds)
    assert torch.equal(plain.position_ids, reduced.position_ids)
    with TokenPruner(adapter.decoder_layers, PRUNERS.build("holitom", k=1, keep=1.0)).attached(reduced.token_roles):
        logits = adapter.prefill_logits(reduced)
    assert torch.equal(logits, adapter.prefill_logits(plain))


# ---- merging inside the LLM ----

def test_each_dropped_token_is_averaged_into_its_most_cosine_similar_kept_token():
    """Kept tokens 0 = (1, 0) and 3 = (0, 10). Token 1 = (3, 2) is closer in angle to token 0 (cos 0.83 vs
    0.55; its dot product is larger with token 3), token 2 = (0.1, 3) to token 3, token 4 = (1, 0.2) to
    token 0: token 0 becomes the mean of tokens 0, 1, 4, token 3 of tokens 3, 2; the rest stay."""
    h = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [0.1, 3.0], [0.0, 10.0], [1.0, 0.2], [7.0, 7.0]]])
    out = merge_dropped(h, kept=torch.tensor([[3, 0]]), dropped=torch.tensor([[1, 2, 4]]))
    expected = h.clone()
    expected[0, 0] = (h[0, 0] + h[0, 1] + h[0, 4]) / 3
    expected[0, 3] = (h[0, 3] + h[0, 2]) / 2
    torch.testing.assert_close(out, expected)


def reference_merge(hidden: torch.Tensor, kept: list[int], dropped: list[int]) -> torch.Tensor:
    """The paper's merge written out for one row [n, D]: each dropped token joins the kept token of highest
    cosine similarity; a kept token becomes the mean of itself and the tokens that joined it."""
    out, joined = hidden.clone(), {j: [j] for j in kept}
    cos = torch.nn.functional.cosine_similarity(hidden[dropped][:, None], hidden[kept][None], dim=-1)
    for i, nearest in zip(dropped, cos.argmax(dim=1).tolist()):
        joined[kept[nearest]].append(i)
    for j, members in joined.items():
        out[j] = hidden[members].mean(0)
    return out


def merged_reference_logits(adapter, embeds, positions, kept_indices, roles, k):  # noqa: F811
    """The LLM on the whole sequence, every token kept: from layer k on the dropped prefill tokens masked out as
    keys (`reference_masks`), and the hidden states entering layer k merged as the paper says."""
    prefill = len(roles)
    masks = reference_masks(embeds.shape[1], kept_indices, prefill, len(adapter.decoder_layers))
    visual = (roles == VISUAL).nonzero().flatten().tolist()
    kept = [i for i in kept_indices[k][0].tolist() if i in set(visual)]
    dropped = [i for i in visual if i not in set(kept)]
    merge = {k: lambda hidden: reference_merge(hidden, kept, dropped)}
    return adapter.model.lm_head(hidden_under_masks(adapter, embeds, positions, masks, merge)[0, -1])


def test_inner_merging_keeps_fastvs_tokens_and_equals_the_merged_reference(adapter):  # noqa: F811
    inputs = sample_inputs(adapter)
    k, keep = 2, 0.3
    roles = inputs.token_roles
    with TokenPruner(adapter.decoder_layers, PRUNERS.build("holitom", k=k, keep=keep)).attached(roles) as trace:
        merged = adapter.prefill_logits(inputs)
    with TokenPruner(adapter.decoder_layers, PRUNERS.build("fastv", k=k, keep=keep)).attached(roles) as fastv:
        dropped = adapter.prefill_logits(inputs)
    assert all(torch.equal(trace.kept_indices[i], fastv.kept_indices[i]) for i in fastv.kept_indices)
    assert trace.visual_tokens_per_layer == [inputs.visual_tokens] * k + [int(inputs.visual_tokens * keep)] * (6 - k)
    ref = merged_reference_logits(adapter, inputs.inputs_embeds, inputs.position_ids, trace.kept_indices,
                                  inputs.token_roles, k)
    torch.testing.assert_close(merged, ref, atol=1e-4, rtol=1e-4)
    assert (merged - dropped).abs().max() > 1e-3  # merging, not dropping


def test_greedy_decoding_after_an_inner_merge_equals_recomputation(adapter):  # noqa: F811
    """Decoding with the KV cache of a merged prefill: each step's logits are those of the whole sequence
    recomputed under the merged reference (layer k's cache holds the merged tokens)."""
    inputs = sample_inputs(adapter)
    k, cached = 2, []
    grab = adapter.model.lm_head.register_forward_hook(lambda _m, _i, out: cached.append(out.detach()))
    try:
        pruner = PRUNERS.build("holitom", k=k, keep=0.3)
        with TokenPruner(adapter.decoder_layers, pruner).attached(inputs.token_roles) as trace:
            ids = adapter.generate_ids(inputs, max_new_tokens=4)
    finally:
        grab.remove()
    kept = dict(trace.kept_indices)
    embeds, positions = inputs.inputs_embeds, inputs.position_ids
    for step, token in enumerate(ids):
        logits = merged_reference_logits(adapter, embeds, positions, kept, inputs.token_roles, k)
        torch.testing.assert_close(cached[step].reshape(-1), logits.reshape(-1), atol=1e-4, rtol=1e-4)
        assert int(logits.argmax()) == token, f"step {step}"
        embeds = torch.cat([embeds, adapter.embed_tokens([token])[None]], 1)
        positions = torch.cat([positions, positions[:, -1:] + 1], 1)
