"""The clip-level reducer seam: any merger gives a ClipReduced through `reduce_clip`, per-frame mergers
flattened frame by frame, clip reducers with their own (ragged) counts."""
import torch

from aim.merging import MERGERS, ClipReduced, Merged, reduce_clip


class KeepFirstFrames:
    """A clip reducer for the spec: frame f keeps its first f tokens (frame 0 none)."""

    scope = "clip"
    needs = ()

    def __call__(self, features, carry=None):
        f, t, _ = features.shape
        frame = torch.cat([torch.full((i,), i) for i in range(f)])
        index = torch.cat([torch.arange(i) for i in range(f)])
        return ClipReduced(features[frame, index], frame, index, None if carry is None else carry[frame, index])


def test_a_per_frame_merger_is_a_clip_reducer_keeping_the_same_count_in_every_frame():
    features = torch.randn(3, 16, 4)
    merged = MERGERS.build("aim", ratio=0.25)(features)
    clip = reduce_clip(MERGERS.build("aim", ratio=0.25), features)
    assert clip.counts(3) == [4, 4, 4]
    assert torch.equal(clip.frame, torch.tensor([0] * 4 + [1] * 4 + [2] * 4))
    assert torch.equal(clip.features, merged.features.reshape(12, 4))
    assert torch.equal(clip.token_index, merged.token_index.reshape(12))
    for f, part in enumerate(clip.per_frame(3)):
        assert torch.equal(part.features, merged.features[f:f + 1]) and torch.equal(part.token_index, merged.token_index[f:f + 1])


def test_a_clip_reducer_keeps_ragged_counts_and_per_frame_splits_them():
    features, carry = torch.randn(4, 6, 2), torch.randn(4, 6, 3)
    clip = reduce_clip(KeepFirstFrames(), features, carry=carry)
    assert clip.counts(4) == [0, 1, 2, 3] and clip.counts(5) == [0, 1, 2, 3, 0]
    parts = clip.per_frame(4)
    assert [p.features.shape[1] for p in parts] == [0, 1, 2, 3]
    assert isinstance(parts[3], Merged) and torch.equal(parts[3].features[0], features[3, :3])
    assert torch.equal(parts[2].carry[0], carry[2, :2]) and torch.equal(parts[2].token_index[0], torch.arange(2))
