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


# --- CDPruner -----------------------------------------------------------------------------------------

from aim.merging.diversity import conditional_kernel, dpp_greedy_map, prompt_relevance  # noqa: E402


def test_the_dpp_picks_orthogonal_tokens_never_a_duplicate():
    """Tokens e1, a copy of e1, e2, (e1 + e2)/sqrt 2 with relevance 1, .9, .9, .9: token 0 has the largest
    gain (1); then the copy's gain is 0, the diagonal's .81 / 2 and e2's .81: e2 comes next."""
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    x = torch.stack([e1, e1, e2, (e1 + e2) / 2**0.5])[None]
    order = dpp_greedy_map(conditional_kernel(x, torch.tensor([[1.0, 0.9, 0.9, 0.9]])), 2)
    assert order.tolist() == [[0, 2]]


def test_with_a_constant_relevance_cdpruner_equals_plain_dpp_diversity():
    """Every token: a unit vector in 15 dimensions plus 1 in the 16th; the prompt: the 16th axis, so every
    token's relevance is the same (1 / sqrt 2) and the kernel is the plain cosine similarity."""
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(2, 49, 15), dim=-1)
    x = torch.cat([u, torch.ones(2, 49, 1)], -1)
    text = torch.zeros(3, 16)
    text[:, 15] = 1.0
    assert torch.equal(prompt_relevance(x, text), torch.ones(2, 49))
    unit = torch.nn.functional.normalize(x, dim=-1)
    plain = dpp_greedy_map(unit @ unit.transpose(1, 2), 12)
    out = MERGERS.build("cdpruner", ratio=12 / 49)(x, text=text)
    assert torch.equal(out.token_index, plain.sort(dim=1).values)


def test_the_most_prompt_relevant_of_equally_diverse_tokens_is_kept_first():
    x = torch.eye(4)[None]  # four orthogonal tokens: the similarity alone cannot choose
    text = torch.tensor([[0.0, 0.0, 1.0, 0.2]])  # the prompt points at token 2, a little at 3
    order = dpp_greedy_map(conditional_kernel(x, prompt_relevance(x, text)), 2)
    assert order.tolist() == [[2, 3]]


@pytest.mark.parametrize("tokens,ratio", [(576, 64 / 576), (196, 0.25), (49, 1.0)])
def test_cdpruner_keeps_the_configured_count_at_original_positions_per_frame(tokens, ratio):
    x, text = torch.randn(3, tokens, 32), torch.randn(5, 32)
    out = MERGERS.build("cdpruner", ratio=ratio)(x, text=text)
    k = kept_tokens(tokens, ratio)
    assert out.features.shape == (3, k, 32) and (out.token_index.diff(dim=1) > 0).all()
    torch.testing.assert_close(out.features, x.gather(1, out.token_index.unsqueeze(-1).expand(-1, -1, 32)))
    second = MERGERS.build("cdpruner", ratio=ratio)(x[1:], text=text)
    assert torch.equal(out.token_index[1:], second.token_index)  # each frame on its own


def test_cdpruner_without_the_prompt_is_a_clear_error():
    with pytest.raises(ValueError, match="cdpruner needs the prompt's text embeddings"):
        MERGERS.build("cdpruner")(torch.randn(1, 49, 8))


def test_cdpruners_similarity_relevance_and_greedy_updates_are_counted_as_merge_flops():
    x, text = torch.randn(1, 49, 8), torch.randn(5, 8)
    counted = merge_flops(MERGERS.build("cdpruner", ratio=0.25), x, text=text)
    assert counted >= 2 * (49 * 49 * 8 + 49 * 5 * 8)
