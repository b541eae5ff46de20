"""The clip-level video reducers (VidCom2, FastVID) as specifications on small hand-built clips, plus what
every clip reducer must give: valid, unique kept (frame, index), the configured count, ratio 1 bit-exact."""
import math

import pytest
import torch

from aim.merging import MERGERS, ClipReduced, reduce_clip


def merge_flops(merger, x, **signals):
    from aim.efficiency.fvcore_count import _Call, count_flops

    names = sorted(signals)
    return count_flops(_Call(lambda f, *sig: merger(f, **dict(zip(names, sig))).features, torch.nn.Module()),
                       (x, *[signals[n] for n in names]))


def near(base: torch.Tensor, count: int, scale: float = 0.01, seed: int = 0) -> torch.Tensor:
    """`count` tokens close to the vector `base`."""
    g = torch.Generator().manual_seed(seed)
    return base + scale * torch.randn(count, base.shape[-1], generator=g, dtype=base.dtype)


# ---- VidCom2 ----

def test_vidcom2_gives_the_frame_most_unlike_the_video_the_largest_budget():
    """Frames 0, 1, 3 show the same scene, frame 2 another: at tau = 0.01 the softmax of uniqueness is about
    one-hot, so frame 2's share is r (2 - 1/F) T = 0.25 * 1.75 * 16 = 7 and each other r (1 - 1/F) T = 3."""
    g = torch.Generator().manual_seed(0)
    scene, other = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    clip = torch.stack([scene + 0.01 * torch.randn(16, 8, generator=g) for _ in range(4)])
    clip[2] = other
    out = MERGERS.build("vidcom2", ratio=0.25)(clip)
    assert out.counts(4) == [3, 3, 7, 3]


def test_vidcom2_keeps_in_each_frame_the_tokens_least_like_the_video_and_the_frame():
    """Two like frames of 8 tokens, 6 about one vector and 2 odd ones (positions 1 and 5): equal uniqueness
    gives each frame 2 of the 4 kept tokens, and they are the odd ones."""
    g = torch.Generator().manual_seed(1)
    common = torch.randn(8, generator=g)
    frame = near(common, 8)
    frame[1], frame[5] = torch.randn(8, generator=g), torch.randn(8, generator=g)
    out = MERGERS.build("vidcom2", ratio=0.25)(torch.stack([frame, frame]))
    assert torch.equal(out.frame, torch.tensor([0, 0, 1, 1]))
    assert torch.equal(out.token_index, torch.tensor([1, 5, 1, 5]))
    assert torch.equal(out.features, frame[[1, 5, 1, 5]])


def test_vidcom2s_products_with_the_two_centers_are_counted_as_merge_flops():
    x = torch.randn(3, 16, 8)
    assert merge_flops(MERGERS.build("vidcom2", ratio=0.25), x) == 2 * 2 * 3 * 16 * 4  # 2 centers, F T D/2


# ---- FastVID ----

def scene_clip(first: int, second: int, tokens: int = 16, dim: int = 8) -> torch.Tensor:
    """`first` frames of one scene, then `second` of another (each frame the scene plus a little noise)."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(tokens, dim, generator=g), torch.randn(tokens, dim, generator=g)
    return torch.stack([(a if i < first else b) + 0.01 * torch.randn(tokens, dim, generator=g) for i in range(first + second)])


def test_fastvid_starts_a_new_segment_at_a_scene_cut():
    from aim.merging.fastvid import segments

    clip = scene_clip(5, 3)
    assert segments(clip, cuts=1, threshold=0.9) == [(0, 5), (5, 8)]  # the cut falls below tau
    assert segments(clip, cuts=2, threshold=-1.0) == [(0, 5), (5, 8)]  # the least similar adjacent pair
    assert segments(clip, cuts=1, threshold=-1.0) == [(0, 8)]  # no cut asked for
    assert segments(clip, cuts=8, threshold=-1.0) == [(i, i + 1) for i in range(8)]  # c - 1 = 7 cuts


def test_fastvid_collapses_a_static_region_over_a_segment_into_its_anchor_frame():
    """8 identical frames of 9 orthogonal tokens, one segment, one anchor frame (p = 8: the last). Each frame
    keeps K = floor(2/9 * 9) = 2: its most attended token (position 0) and K_c = 1 contextual; the segment's
    8 contextual tokens all go to anchor frame 7, whose 8 non-salient tokens they are: each is the merge of
    its 8 identical copies, so unchanged, standing at frame 7."""
    frame = torch.diag(torch.arange(1.0, 10.0))
    clip, attention = frame.expand(8, 9, 9).clone(), torch.linspace(1, 0, 9).expand(8, 9)
    reducer = MERGERS.build("fastvid", ratio=2 / 9, contextual=0.5, cuts=1, anchor_step=8)
    out = reducer(clip, attention=attention)
    assert out.counts(8) == [1] * 7 + [9]
    assert torch.equal(out.token_index, torch.tensor([0] * 7 + list(range(9))))
    assert torch.equal(out.features, torch.cat([frame[[0] * 7], frame]))


def test_fastvid_merges_every_token_of_a_segment_into_each_of_its_anchor_frames():
    """The static clip of 9 orthogonal tokens with p = 4: anchor frames 3 and 7 (every 4th back from the last)
    each hold 4 of the segment's 8 contextual tokens. Each token joins its most similar anchor token of every
    anchor frame, so the two identical anchor frames hold the same anchor positions and the same merged tokens."""
    frame = torch.diag(torch.arange(1.0, 10.0))
    clip, attention = frame.expand(8, 9, 9).clone(), torch.linspace(1, 0, 9).expand(8, 9)
    out = MERGERS.build("fastvid", ratio=2 / 9, contextual=0.5, cuts=1, anchor_step=4)(clip, attention=attention)
    assert out.counts(8) == [1, 1, 1, 5, 1, 1, 1, 5]
    third, seventh = out.per_frame(8)[3], out.per_frame(8)[7]
    assert torch.equal(third.token_index, seventh.token_index)
    assert torch.equal(third.features, seventh.features)


def test_fastvid_anchors_a_frame_at_its_density_peaks():
    """One frame: a salient token (most attended) and two tight clusters of 5 tokens around centers at
    positions 3 and 8. The 2 contextual tokens are the clusters' density peaks (highest rho * delta), each the
    merge of its cluster: w = max(1/6, 0.6) of the center and 0.4 of the cluster's mean."""
    g = torch.Generator().manual_seed(5)
    ca, cb = torch.randn(8, generator=g), torch.randn(8, generator=g)
    offsets = 0.05 * torch.tensor([[1.0] + [0] * 7, [-1.0] + [0] * 7, [0, 1.0] + [0] * 6, [0, -1.0] + [0] * 6])
    x = torch.empty(11, 8)
    x[0] = 10 * torch.randn(8, generator=g)
    x[[1, 2, 4, 5]], x[3] = ca + offsets, ca
    x[[6, 7, 9, 10]], x[8] = cb + offsets, cb
    attention = torch.zeros(1, 11)
    attention[0, 0] = 1
    out = MERGERS.build("fastvid", ratio=3 / 11, contextual=2 / 3)(x[None], attention=attention)
    assert torch.equal(out.token_index, torch.tensor([0, 3, 8]))
    torch.testing.assert_close(out.features[1:], torch.stack([0.6 * ca + 0.4 * x[1:6].mean(0), 0.6 * cb + 0.4 * x[6:].mean(0)]))


def test_fastvids_distances_and_assignment_cosines_are_counted_as_merge_flops():
    """2 frames, one segment, T = 16, K = 4: K_s = 3, K_c = 1; one anchor frame with 2 anchor tokens:
    its distances 13 x 13 x 8, the segment's 26 tokens' cosines with the 2 anchors, 26 x 2 x 8, and the sums of
    the tokens assigned to each anchor, 2 x 26 x 8."""
    x, attention = torch.randn(2, 16, 8), torch.rand(2, 16)
    reducer = MERGERS.build("fastvid", ratio=0.25, cuts=1, threshold=-1.0)
    assert merge_flops(reducer, x, attention=attention) == 2 * (13 * 13 * 8 + 26 * 2 * 8 + 2 * 26 * 8)


# ---- PruneVid ----

def test_prunevid_makes_frame_clusters_contiguous_as_the_official_refinement():
    from aim.merging.prunevid import contiguous

    # cluster 1's only run is one frame: it joins the longer neighbour (equal: the left one)
    assert contiguous([0, 0, 1, 0, 0, 2, 2, 2]) == [0, 0, 0, 0, 0, 2, 2, 2]
    # the shorter runs of clusters 0 and 1 (frames 3, 4) join the longer neighbouring run, cluster 0's
    assert contiguous([0, 0, 0, 1, 0, 1, 1]) == [0, 0, 0, 0, 0, 1, 1]


def test_prunevid_segments_a_clip_at_its_scene_cut():
    from aim.merging.prunevid import segments

    assert segments(scene_clip(4, 4), share=0.25, k=7) == [(0, 4), (4, 8)]  # 2 clusters of frames


def static_clip() -> torch.Tensor:
    """8 frames of 16 tokens: positions 0..7 the same in every frame, 8..15 new in every frame."""
    g = torch.Generator().manual_seed(6)
    clip = torch.randn(8, 16, 8, generator=g)
    clip[:, :8] = torch.randn(8, 8, generator=g)
    return clip


def test_prunevid_merges_a_static_region_over_its_segment_into_one_token_per_position():
    """One segment (one frame cluster); positions 0..7 are static, merged over the 8 frames into one token each
    (their mean: the token itself) at the segment's first frame; a budget of 72 = 8 + 8 x 8 keeps them all."""
    clip = static_clip()
    out = MERGERS.build("prunevid", ratio=72 / 128, segment_share=0.125)(clip)
    assert out.counts(8) == [16] + [8] * 7
    first = out.per_frame(8)[0]
    assert torch.equal(first.token_index[0], torch.arange(16))
    torch.testing.assert_close(first.features[0, :8], clip[0, :8])  # a mean of 8 equal tokens (float rounding)
    assert torch.equal(first.features[0, 8:], clip[0, 8:])
    assert torch.equal(out.per_frame(8)[5].features[0], clip[5, 8:])


def test_prunevid_clusters_static_and_dynamic_groups_in_proportion_to_the_budget():
    """At 36 of 128 tokens every group keeps half its tokens: 4 static cluster means at frame 0, 4 dynamic
    per frame, each a cluster's mean standing at its center."""
    clip = static_clip()
    out = MERGERS.build("prunevid", ratio=36 / 128, segment_share=0.125)(clip)
    assert out.counts(8) == [8] + [4] * 7
    third = out.per_frame(8)[3]
    assert bool((third.token_index >= 8).all())  # frame 3 keeps only dynamic tokens


def test_prunevids_cosines_distances_and_cluster_sums_are_counted_as_merge_flops():
    """The static clip at 36 of 128: the positions' cosines over the segment 16 x 8 x 8 x 8, and 9 groups of 8
    tokens (1 static, 8 dynamic), each 8 x 8 x 8 distances and 4 x 8 x 8 cluster sums. (The frame clustering,
    8 x 8 x 8, decides the segments through Python ints, which fvcore's trace does not see.)"""
    reducer = MERGERS.build("prunevid", ratio=36 / 128, segment_share=0.125)
    assert merge_flops(reducer, static_clip()) == 2 * (16 * 8 * 8 * 8 + 9 * (8 * 8 * 8 + 4 * 8 * 8))


# ---- every clip reducer ----

REDUCERS = [("vidcom2", {}), ("fastvid", {}), ("prunevid", {}), ("holitom", {})]


def signals(f: int, t: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"attention": torch.rand(f, t, generator=g), "metric": torch.randn(f, t, 8, generator=g)}


@pytest.mark.parametrize("name,fields", REDUCERS)
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.9])
def test_a_clip_reducer_keeps_valid_unique_positions_and_the_configured_count(name, fields, ratio):
    f, t = 8, 36
    x = torch.randn(f, t, 16, generator=torch.Generator().manual_seed(3))
    reducer = MERGERS.build(name, ratio=ratio, **fields)
    needs = getattr(reducer, "needs", ())
    out = reduce_clip(reducer, x, **{k: v for k, v in signals(f, t).items() if k in needs})
    assert isinstance(out, ClipReduced) and out.features.shape == (len(out.frame), 16)
    # prunevid keeps floor(r F T) where its static merge leaves more: nothing is static in a random clip
    assert len(out.frame) == reducer.kept_total(f, t)
    assert bool((out.frame >= 0).all() and (out.frame < f).all() and (out.token_index >= 0).all()
                and (out.token_index < t).all())
    assert len({(a, b) for a, b in zip(out.frame.tolist(), out.token_index.tolist())}) == len(out.frame)
    assert bool((out.frame.diff() >= 0).all())  # frame by frame


@pytest.mark.parametrize("name,fields", REDUCERS)
def test_a_clip_reducer_at_ratio_1_keeps_every_token_bit_exact(name, fields):
    f, t = 6, 25
    x = torch.randn(f, t, 16, generator=torch.Generator().manual_seed(4))
    reducer = MERGERS.build(name, ratio=1.0, **fields)
    needs = getattr(reducer, "needs", ())
    out = reduce_clip(reducer, x, **{k: v for k, v in signals(f, t).items() if k in needs})
    assert torch.equal(out.features, x.reshape(f * t, 16))
    assert torch.equal(out.frame, torch.arange(f).repeat_interleave(t))
    assert torch.equal(out.token_index, torch.arange(t).repeat(f))


@pytest.fixture(scope="module", params=["llava_onevision_tiny", "qwen2_vl_tiny", "internvl3_tiny"])
def video_adapter(request):
    """A tiny model of each family (read only here), 8 frames and their unreduced inputs."""
    from aim.merging import NoMerge
    from tests.tiny_models import OPTIONS, QUESTION, build, frames

    ad, clip = build(request.param), frames(8)
    return ad, clip, ad.prepare(clip, QUESTION, OPTIONS, NoMerge())


@pytest.mark.parametrize("name,fields", [("vidcom2", {"ratio": 0.25}), ("fastvid", {"ratio": 0.25}), ("prunevid", {"ratio": 0.25}),
                                         ("holitom", {"ratio": 0.25}), ("dycoke", {"prune": 0.7}), ("downsample", {"ratio": 0.25})])
def test_every_clip_reducer_runs_through_a_real_adapter_keeping_what_aim_flops_counts(video_adapter, name, fields):
    """A clip reducer on a tiny model's real tower output (8 frames): it gets the signals it asks for from the
    adapter, frames keep different counts, and the visual tokens reaching the LLM are the kept total that
    `aim.flops` and budget mode count (`kept_total`)."""
    from tests.tiny_models import OPTIONS, QUESTION

    ad, clip, full = video_adapter
    groups = len(full.visual_per_group)
    reducer = MERGERS.build(name, **fields)
    reduced = ad.prepare(clip, QUESTION, OPTIONS, reducer)
    assert len(reduced.visual_per_group) == groups and sum(reduced.visual_per_group) == reduced.visual_tokens
    assert 0 < reduced.visual_tokens < full.visual_tokens
    assert reduced.visual_tokens == reducer.kept_total(groups, full.visual_tokens // groups)
