"""merger=downsample, the downsampling control: fewer whole frames (mode=frames) or every frame's token grid
pooled smaller (mode=resolution), at a ratio of the clip's visual tokens."""
import pytest
import torch

from aim.checks import ConfigError, to_schema
from aim.merging import MERGERS, ClipReduced, reduce_clip


def clip(frames=16, tokens=49, dim=8):
    return torch.randn(frames, tokens, dim, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("ratio,frames", [(0.25, [2, 6, 10, 14]), (0.1, [4, 12]), (0.5, [1, 3, 5, 7, 9, 11, 13, 15]),
                                          (0.01, [8])])
def test_frames_mode_keeps_the_fewest_whole_frames_reaching_the_ratio_uniformly_spaced(ratio, frames):
    features = clip()
    out = MERGERS.build("downsample", mode="frames", ratio=ratio)(features)
    assert isinstance(out, ClipReduced)
    assert out.counts(16) == [49 if f in frames else 0 for f in range(16)]
    assert torch.equal(out.frame, torch.tensor(frames).repeat_interleave(49))
    assert torch.equal(out.token_index, torch.arange(49).repeat(len(frames)))
    assert torch.equal(out.features, features[frames].reshape(-1, 8))


def test_resolution_mode_is_the_pool_merger_on_every_frame():
    features, carry = clip(4, 13 * 23), clip(4, 13 * 23, 3)
    out = MERGERS.build("downsample", mode="resolution", ratio=0.25)(features, grid=(13, 23), carry=carry)
    pooled = MERGERS.build("pool", ratio=0.25)(features, grid=(13, 23), carry=carry)
    assert out.counts(4) == [72] * 4  # 6 x 12 of 13 x 23
    assert torch.equal(out.features, pooled.features.reshape(-1, 8)) and torch.equal(out.carry, pooled.carry.reshape(-1, 3))
    assert torch.equal(out.token_index, pooled.token_index.reshape(-1))


@pytest.mark.parametrize("mode", ["frames", "resolution"])
def test_kept_positions_are_valid_and_unique(mode):
    out = MERGERS.build("downsample", mode=mode, ratio=0.3)(clip(), grid=(7, 7))
    assert ((out.token_index >= 0) & (out.token_index < 49)).all() and ((out.frame >= 0) & (out.frame < 16)).all()
    assert (out.frame.diff() >= 0).all()
    assert len(set(zip(out.frame.tolist(), out.token_index.tolist()))) == len(out.frame)


@pytest.mark.parametrize("mode", ["frames", "resolution"])
def test_ratio_one_keeps_every_token_bit_exact(mode):
    features, carry = clip(), clip(16, 49, 3)
    out = reduce_clip(MERGERS.build("downsample", mode=mode, ratio=1.0), features, grid=(7, 7), carry=carry)
    assert torch.equal(out.features, features.reshape(-1, 8)) and torch.equal(out.carry, carry.reshape(-1, 3))
    assert torch.equal(out.frame, torch.arange(16).repeat_interleave(49)) and torch.equal(out.token_index, torch.arange(49).repeat(16))


def test_only_the_resolution_mode_needs_the_grid():
    assert MERGERS.build("downsample", mode="resolution").needs == ("grid",)
    assert MERGERS.build("downsample", mode="frames").needs == ()


@pytest.mark.parametrize("field,value,message", [("mode", "time", "merger.mode: 'time' is not allowed; choose one of: frames, resolution"),
                                                 ("ratio", 0.0, r"merger.ratio: must be in \(0, 1\]")])
def test_a_bad_mode_or_ratio_is_a_config_error_naming_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        to_schema(MERGERS.config_schema("downsample"), {"name": "downsample", field: value}, "merger")


@pytest.mark.parametrize("mode,frames,grid,ratio", [("frames", 16, (7, 7), 0.1), ("frames", 5, (13, 23), 0.5),
                                                    ("resolution", 4, (13, 23), 0.25), ("resolution", 3, (7, 7), 0.1)])
def test_the_kept_total_from_the_config_alone_is_what_the_reducer_keeps(mode, frames, grid, ratio):
    reducer = MERGERS.build("downsample", mode=mode, ratio=ratio)
    out = reducer(clip(frames, grid[0] * grid[1]), grid=grid)
    assert reducer.kept_total(frames, grid[0] * grid[1], grid) == len(out.frame)
