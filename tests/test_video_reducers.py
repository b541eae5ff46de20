"""The clip-level video reducers (VidCom2, FastVID) as specifications on small hand-built clips, plus what
every clip reducer must give: valid, unique kept (frame, index), the configured count, ratio 1 bit-exact."""
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


# ---- every clip reducer ----

REDUCERS = [("vidcom2", {})]


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
    assert len(out.frame) == reducer.kept(f, t)
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
