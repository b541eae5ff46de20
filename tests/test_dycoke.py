"""merger=dycoke: DyCoke's temporal token merging (TTM) across frames, decided by hand on small clips."""
import pytest
import torch

from aim.checks import ConfigError, to_schema
from aim.merging import MERGERS, ClipReduced, reduce_clip
from aim.merging.dycoke import compared_frames, kept_per_frame_dycoke


def static_clip(frames=8, tokens=10, dim=6, seed=0):
    """Every frame the same tokens (a static scene)."""
    base = torch.randn(tokens, dim, generator=torch.Generator().manual_seed(seed))
    return base.expand(frames, tokens, dim).clone()


def test_frames_are_compared_in_windows_of_four_adjacent_pairs_then_the_pairs_first_frames():
    assert compared_frames(8) == [(1, 0), (2, 0), (3, 2), (5, 4), (6, 4), (7, 6)]
    assert compared_frames(7) == [(1, 0), (2, 0), (3, 2), (5, 4), (6, 4)]
    assert compared_frames(6) == [(1, 0), (2, 0), (3, 2), (5, 4)]
    assert compared_frames(1) == []


def test_each_compared_frame_keeps_the_tokens_least_similar_to_the_earlier_frames_at_the_same_position():
    """Frame 1 changes tokens 2, 5 and 7 of frame 0 (more for 7 than 5 than 2); at K = 0.7 of 10 tokens it
    keeps 3: exactly those. Frame 3 changes tokens 0, 1, 9 of frame 2; frame 2 (same as frame 0) keeps the 3
    least similar of equal tokens, whichever they are, but no frame other than 1 and 3 keeps more."""
    features = static_clip(4)
    g = torch.Generator().manual_seed(1)
    for frame, tokens in ((1, (2, 5, 7)), (3, (0, 1, 9))):
        for strength, i in enumerate(tokens, 1):
            features[frame, i] = features[frame, i] + strength * torch.randn(6, generator=g)
    out = MERGERS.build("dycoke", prune=0.7)(features)
    assert isinstance(out, ClipReduced) and out.counts(4) == [10, 3, 3, 3]
    parts = out.per_frame(4)
    assert parts[1].token_index[0].tolist() == [2, 5, 7] and parts[3].token_index[0].tolist() == [0, 1, 9]
    assert torch.equal(parts[1].features[0], features[1, [2, 5, 7]])
    assert torch.equal(parts[0].features[0], features[0]) and parts[0].token_index[0].tolist() == list(range(10))


def test_a_token_identical_to_its_match_in_the_earlier_frame_is_merged_away_before_any_changed_one():
    """A static region over 8 frames: only the first frame of each window keeps it; a changed token of a
    compared frame survives while its identical neighbours are merged away."""
    features = static_clip(8)
    features[6, 4] = -features[6, 4]  # frame 6 is compared with frame 4: its token 4 changed
    out = MERGERS.build("dycoke", prune=0.9)(features)  # keeps 1 of 10
    assert out.counts(8) == [10, 1, 1, 1, 10, 1, 1, 1]
    assert out.per_frame(8)[6].token_index[0].tolist() == [4]


def test_counts_follow_the_pruning_rate_and_the_last_window_may_be_short():
    assert kept_per_frame_dycoke(16, 196, 0.7) == [196, 58, 58, 58] * 4  # 1480 of 3136
    assert kept_per_frame_dycoke(6, 196, 0.5) == [196, 98, 98, 98, 196, 98]
    out = MERGERS.build("dycoke", prune=0.5)(torch.randn(6, 196, 4))
    assert out.counts(6) == kept_per_frame_dycoke(6, 196, 0.5)


def test_kept_positions_are_valid_and_unique_and_the_carry_is_kept_alike():
    features, carry = torch.randn(7, 49, 8), torch.randn(7, 49, 3)
    out = MERGERS.build("dycoke")(features, carry=carry)
    assert ((out.token_index >= 0) & (out.token_index < 49)).all() and (out.frame.diff() >= 0).all()
    assert len(set(zip(out.frame.tolist(), out.token_index.tolist()))) == len(out.frame)
    assert torch.equal(out.features, features[out.frame, out.token_index]) and torch.equal(out.carry, carry[out.frame, out.token_index])


def test_no_pruning_keeps_every_token_bit_exact():
    features = torch.randn(8, 49, 8, dtype=torch.bfloat16)
    out = reduce_clip(MERGERS.build("dycoke", prune=0.0), features)
    assert torch.equal(out.features, features.reshape(-1, 8))
    assert torch.equal(out.frame, torch.arange(8).repeat_interleave(49)) and torch.equal(out.token_index, torch.arange(49).repeat(8))


def test_a_pruning_rate_of_one_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"merger.prune: must be in \[0, 1\)"):
        to_schema(MERGERS.config_schema("dycoke"), {"name": "dycoke", "prune": 1.0}, "merger")


@pytest.mark.parametrize("frames,prune", [(16, 0.7), (7, 0.5), (1, 0.9), (6, 0.0)])
def test_the_kept_total_from_the_config_alone_is_what_the_reducer_keeps(frames, prune):
    reducer = MERGERS.build("dycoke", prune=prune)
    assert reducer.kept_total(frames, 49) == len(reducer(torch.randn(frames, 49, 4)).frame)


def test_the_similarity_scoring_is_counted_as_merge_flops():
    """One T-long dot product of D channels per compared frame: 6 compared frames of 8, 49 tokens, 16 dims."""
    from aim.efficiency.fvcore_count import _Call, count_flops

    reducer = MERGERS.build("dycoke")
    counted = count_flops(_Call(lambda f: reducer(f).features, torch.nn.Module()), (torch.randn(8, 49, 16),))
    assert counted == 2 * 6 * 49 * 16
