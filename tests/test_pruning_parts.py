"""Schedules and importance scores as specifications (the hook that applies them is tested apart)."""
import pytest
import torch

from aim.pruning import PRUNERS, AimPrunerConfig
from aim.pruning.importance import causal_softmax, heads_per_block, pagerank, pagerank_from_qk, query_attention
from aim.pruning.schedule import (aim_schedule, explicit_schedule, fastv_schedule, kept_counts, kept_per_layer,
                                  pdrop_schedule, vtw_schedule)

from tests.pruning_reference import reference_pagerank


def test_aim_schedule_of_the_paper_tables():
    r = aim_schedule(28, 14, 22)
    assert r[:14] == [1.0] * 14
    assert r[14] == 0.875 and r[20] == 0.125 and r[21:] == [0.0] * 7
    assert kept_per_layer(1568, r)[13:22] == [1568, 1372, 1176, 980, 784, 588, 392, 196, 0]


def test_aim_schedule_edges():
    assert aim_schedule(28, 28, 30) == [1.0] * 28  # l1 >= L: no pruning
    assert min(aim_schedule(28, 20, 40)) > 0  # l2 > L: never reaches zero
    with pytest.raises(ValueError, match="l1 < l2"):
        aim_schedule(28, 10, 10)


def test_baseline_schedules():
    assert fastv_schedule(6, k=2, keep=0.5) == [1, 1, 0.5, 0.5, 0.5, 0.5]
    assert pdrop_schedule(28) == [1.0] * 7 + [0.5] * 7 + [0.25] * 7 + [0.125] * 7
    assert pdrop_schedule(32)[8] == 0.5 and pdrop_schedule(32)[24] == 0.125
    assert vtw_schedule(5, 3) == [1, 1, 1, 0, 0]
    assert explicit_schedule(4, [1.0, 0.5]) == [1.0, 0.5, 0.5, 0.5]


def test_kept_counts_round_down_and_never_grow():
    assert kept_per_layer(10, [1.0, 0.55, 0.6, 0.0]) == [10, 5, 5, 0]


def test_kept_counts_of_a_grid_are_each_rows_own_counts():
    """The budget planner counts a grid of settings at once with the same rule as one input: each row of
    `kept_counts` is that row's visual tokens under that row's schedule, written out independently here
    (floor(original * retention), never above the layer before; 0.3 * 10 is 2.9999999999999996 in floats)."""
    visual = [1568, 10, 10, 0, 7]
    retention = [aim_schedule(6, 2, 5), [1.0, 0.3, 0.3, 0.7, 0.2, 0.0], fastv_schedule(6, 1, 0.55),
                 [1.0] * 6, pdrop_schedule(6, [2, 4], 0.5)]

    def written_out(v, r):
        counts = []
        for x in r:
            counts.append(min(counts[-1] if counts else v, int(v * x + 1e-9)))
        return counts

    grid = kept_counts(visual, retention)
    assert grid.shape == (5, 6)
    assert grid.tolist() == [written_out(v, r) for v, r in zip(visual, retention)]
    assert grid[1].tolist() == [10, 3, 3, 3, 2, 0]


def test_pagerank_equals_the_papers_definition_at_tau_0_1():
    """Against the paper's PageRank written out independently (tests/pruning_reference.py), at the
    paper's temperature: logits / 0.1 and logits * 0.1 give different chains, so the temperature is
    applied the right way round, by the function on logits and by the hook's query/key path alike."""
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4)
    logits = q @ k.transpose(-1, -2) / 2.0
    expected = reference_pagerank(logits, tau=0.1).float()
    torch.testing.assert_close(pagerank(logits, tau=0.1), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pagerank_from_qk(q, k, tau=0.1), expected, atol=1e-6, rtol=1e-5)
    assert pagerank(logits).shape == (2, 7)
    # the temperature matters on these inputs (else the check above could not see it applied wrongly)
    assert not torch.allclose(reference_pagerank(logits, tau=10.0).float(), expected, atol=1e-3)


def sink_qk(n=8, sink=2, heads=2, d=4):
    """Queries and keys where every query from `sink` on attends to token `sink` (the earlier ones cannot
    see it): all queries along one axis, the sink's key along it too, the other keys orthogonal."""
    q = torch.zeros(1, heads, n, d)
    q[..., 0] = 1.0
    k = 0.1 * torch.randn(1, heads, n, d, generator=torch.Generator().manual_seed(0))
    k[..., 0] = 0.0
    k[:, :, sink, 0] = 2.0
    return q, k


def test_the_token_every_query_attends_to_ranks_first_in_aim_importance():
    """What the hook keeps first: the AIM pruner's importance (at its default, the paper's tau = 0.1)
    ranks the token that every later query attends to above all others, and equals the reference."""
    q, k = sink_qk(sink=2)
    aim = PRUNERS.build("aim", **{f: v for f, v in vars(AimPrunerConfig()).items() if f != "name"})
    assert aim.tau == 0.1
    scores = aim.importance(q, k, None)
    assert scores.argmax() == 2
    assert scores[0, 2] > 2 * scores[0, [0, 1, 3, 4, 5, 6, 7]].max()
    torch.testing.assert_close(scores, reference_pagerank(q @ k.transpose(-1, -2) / 2.0, tau=0.1).float(),
                               atol=1e-6, rtol=1e-5)


def test_scores_in_blocks_of_heads_equal_the_full_computation():
    torch.manual_seed(1)
    q, k = torch.randn(1, 6, 300, 8), torch.randn(1, 6, 300, 8)
    logits = q @ k.transpose(-1, -2) / 8**0.5
    assert heads_per_block(1, 300, 6, block_mib=1) == 2  # 1 MiB holds two heads' 300 x 300 fp32 attention
    assert heads_per_block(1, 300, 6, block_mib=1024) == 6
    assert heads_per_block(1, 3000, 6, block_mib=1) == 1  # one head at least, even over the budget
    for block_mib in (1, 1024):
        torch.testing.assert_close(pagerank_from_qk(q, k, block_mib=block_mib), pagerank(logits), atol=1e-6, rtol=1e-5)


def test_query_attention_is_the_row_of_one_query():
    torch.manual_seed(2)
    q, k = torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 4)
    probs = causal_softmax(q @ k.transpose(-1, -2) / 2.0)
    torch.testing.assert_close(query_attention(q, k, -1), probs[:, :, -1].mean(1))
    row3 = query_attention(q, k, 3)
    torch.testing.assert_close(row3, probs[:, :, 3].mean(1))
    assert (row3[:, 4:] == 0).all()


def test_pad_tokens_leave_the_scores_as_they_are_without_padding():
    """Left padding (pads first, masked by `valid`) ranks the real tokens as the unpadded sequence does:
    the scores differ only by one factor per row (the uniform start spreads over more tokens)."""
    torch.manual_seed(3)
    q, k = torch.randn(1, 4, 12, 8), torch.randn(1, 4, 12, 8)
    pads = 5
    qp = torch.cat([5 * torch.randn(1, 4, pads, 8), q], 2)  # loud pads: they would draw attention
    kp = torch.cat([5 * torch.randn(1, 4, pads, 8), k], 2)
    valid = torch.arange(12 + pads)[None] >= pads
    alone = pagerank_from_qk(q, k)
    padded = pagerank_from_qk(qp, kp, valid=valid)[:, pads:]
    torch.testing.assert_close(padded / padded.sum(), alone / alone.sum(), atol=1e-6, rtol=1e-5)
    unmasked = pagerank_from_qk(qp, kp)[:, pads:]
    assert not torch.allclose(unmasked / unmasked.sum(), alone / alone.sum(), atol=1e-3)
    torch.testing.assert_close(query_attention(qp, kp, -1, valid=valid)[:, pads:], query_attention(q, k, -1))
