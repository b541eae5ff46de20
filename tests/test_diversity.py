"""DivPrune and CDPruner as specifications: the paper's greedy rules decided by hand on small inputs, counts
as configured, positions kept, frames independent."""
import pytest
import torch

from aim.merging import MERGERS, kept_tokens
from aim.merging.diversity import cosine_distance, max_min_diverse


def directions(*angles_deg):
    """Unit 2D vectors at the given angles: cosine distance 1 - cos(angle between them)."""
    a = torch.tensor(angles_deg, dtype=torch.float64).deg2rad()
    return torch.stack([a.cos(), a.sin()], -1)[None]  # [1, T, 2]


# --- DivPrune -----------------------------------------------------------------------------------------

def test_divprune_starts_from_the_token_whose_nearest_neighbour_is_farthest():
    # three tokens near 0 degrees, one alone at 90: the lone one's nearest neighbour is farthest away
    x = directions(0, 5, 10, 90)
    assert max_min_diverse(cosine_distance(x), 1).tolist() == [[3]]


def test_divprune_then_adds_the_token_farthest_from_everything_selected():
    # first 175 (its nearest, 90, is 85 degrees away); then 0, farthest from 175; then 90, which is 85 degrees
    # from the set {175, 0} while 5 and 10 are within 10 degrees of 0
    x = directions(0, 5, 10, 90, 175)
    assert max_min_diverse(cosine_distance(x), 3).tolist() == [[4, 0, 3]]


def test_divprune_keeps_the_farthest_apart_tokens_and_drops_duplicates():
    torch.manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)  # four distinct directions
    x = torch.cat([base, base + 1e-4 * torch.randn(4, 16), base * 3.0])[None]  # each direction three times
    out = MERGERS.build("divprune", ratio=4 / 12)(x)
    kept = x[0, out.token_index[0]]
    # one token of each direction: every pair of kept tokens points a different way
    sim = torch.nn.functional.cosine_similarity(kept[:, None], kept[None], dim=-1)
    assert (sim - torch.eye(4)).max() < 0.99


@pytest.mark.parametrize("tokens,ratio", [(576, 0.098), (196, 0.25), (49, 0.5), (49, 1.0)])
def test_divprune_keeps_the_configured_count_at_original_positions_per_frame(tokens, ratio):
    x = torch.randn(3, tokens, 8)
    out = MERGERS.build("divprune", ratio=ratio)(x)
    k = kept_tokens(tokens, ratio)
    assert out.features.shape == (3, k, 8) and out.token_index.shape == (3, k)
    assert (out.token_index.diff(dim=1) > 0).all()  # distinct, in original order
    torch.testing.assert_close(out.features, x.gather(1, out.token_index.unsqueeze(-1).expand(-1, -1, 8)))


def test_divprune_selects_each_frame_on_its_own():
    x = torch.randn(2, 49, 8)
    both = MERGERS.build("divprune", ratio=0.25)(x)
    second = MERGERS.build("divprune", ratio=0.25)(x[1:])
    assert torch.equal(both.token_index[1:], second.token_index)


def merge_flops(merger, x, **signals):
    from aim.efficiency.fvcore_count import _Call, count_flops

    names = sorted(signals)
    return count_flops(_Call(lambda f, *sig: merger(f, **dict(zip(names, sig))).features, torch.nn.Module()),
                       (x, *[signals[n] for n in names]))


def test_divprunes_distance_matrix_is_counted_as_merge_flops():
    x = torch.randn(2, 49, 8)
    assert merge_flops(MERGERS.build("divprune", ratio=0.25), x) == 2 * 2 * 49 * 49 * 8  # [F, T, D] @ [F, D, T]
