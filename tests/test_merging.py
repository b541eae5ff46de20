"""Mergers as specifications: shapes, identity at ratio 1, per-frame independence, what merges first."""
import pytest
import torch

from aim.merging import MERGERS, Merged, kept_tokens
from aim.merging.bipartite import BipartiteMerger, bipartite_merge_step

RATIOS = [1.0, 0.5, 0.25, 0.125]


@pytest.mark.parametrize("name", ["aim", "pool", "random"])
@pytest.mark.parametrize("tokens", [196, 576])
@pytest.mark.parametrize("ratio", RATIOS)
def test_output_shapes_for_every_ratio(name, tokens, ratio):
    x = torch.randn(3, tokens, 8)
    out = MERGERS.build(name, ratio=ratio)(x)
    kept = out.features.shape[1]
    assert out.features.shape == (3, kept, 8) and out.token_index.shape == (3, kept)
    if name == "pool":  # the nearest grid: within a row of the target
        assert abs(kept - kept_tokens(tokens, ratio)) <= int(tokens**0.5)
    else:
        assert kept == kept_tokens(tokens, ratio)
    assert ((out.token_index >= 0) & (out.token_index < tokens)).all()
    assert (out.token_index.diff(dim=1) > 0).all()  # distinct, in original spatial order


def test_kept_counts_of_the_paper():
    assert kept_tokens(196, 0.5) == 98 and kept_tokens(196, 0.25) == 49 and kept_tokens(196, 0.125) == 24


@pytest.mark.parametrize("name", ["aim", "pool", "random", "none"])
def test_ratio_one_is_the_identity(name):
    x = torch.randn(2, 49, 8)
    out = MERGERS.build(name, **({} if name == "none" else {"ratio": 1.0}))(x)
    assert torch.equal(out.features, x)
    assert torch.equal(out.token_index, torch.arange(49).expand(2, -1))


def test_identical_tokens_merge_first():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 32)
    x[0, 6] = x[0, 9]  # token 6 (set A) is a copy of token 9 (set B)
    out = BipartiteMerger(ratio=15 / 16)(x)
    assert 6 not in out.token_index[0].tolist() and 9 in out.token_index[0].tolist()
    torch.testing.assert_close(out.features[0][out.token_index[0] == 9][0], x[0, 9])


def test_merging_is_permutation_consistent_within_a_frame():
    """A merge step depends on the tokens, not on where they sit inside set A or set B: shuffling each
    set gives the same merged tokens, at the same original positions."""
    torch.manual_seed(1)
    x = torch.randn(1, 64, 16)
    perm = torch.stack([torch.randperm(32) * 2, torch.randperm(32) * 2 + 1], 1).reshape(-1)  # A stays A
    plain = BipartiteMerger(ratio=0.5)(x)  # 64 -> 32 is a single step
    shuffled = BipartiteMerger(ratio=0.5)(x[:, perm])
    by_position = dict(zip(perm[shuffled.token_index[0]].tolist(), shuffled.features[0]))
    assert sorted(by_position) == plain.token_index[0].tolist()
    for idx, vec in zip(plain.token_index[0].tolist(), plain.features[0]):
        torch.testing.assert_close(by_position[idx], vec)


@pytest.mark.parametrize("name", ["aim", "pool"])
def test_frames_are_merged_independently(name):
    """Permuting the frames permutes the output the same way; a frame merged alone merges the same."""
    torch.manual_seed(5)
    x = torch.randn(4, 49, 8)
    merger = MERGERS.build(name, ratio=0.25)
    out, flipped, alone = merger(x), merger(x.flip(0)), merger(x[2:3])
    torch.testing.assert_close(flipped.features, out.features.flip(0))
    torch.testing.assert_close(alone.features[0], out.features[2])
    assert torch.equal(alone.token_index[0], out.token_index[2])


def test_size_weighted_mean_of_a_group_equals_the_mean_of_its_members():
    """Over several steps, each output token is the plain mean of all the original tokens merged into
    it. Membership is traced by carrying one-hot columns in the features while the similarity is
    computed on the tokens alone (the separate-metric path)."""
    torch.manual_seed(2)
    n = 64
    x = torch.randn(1, n, 8)
    traced = torch.cat([x, torch.eye(n)[None]], -1)
    out = BipartiteMerger(ratio=0.125, metric="keys")(traced, metric=x)  # 64 -> 8 in three steps
    for vec, survivor in zip(out.features[0], out.token_index[0]):
        members = vec[8:].nonzero().flatten()
        assert survivor in members  # a merged token stands where one of its members stood
        torch.testing.assert_close(vec[8:][members], torch.full((len(members),), 1 / len(members)))
        torch.testing.assert_close(vec[:8], x[0, members].mean(0), atol=1e-5, rtol=1e-5)
    assert sum(len(v[8:].nonzero()) for v in out.features[0]) == n  # every token in exactly one group


def test_plain_averaging_differs_from_size_weighted_after_several_steps():
    torch.manual_seed(3)
    x = torch.randn(1, 64, 8)
    a = BipartiteMerger(ratio=0.125, averaging="size_weighted")(x).features
    b = BipartiteMerger(ratio=0.125, averaging="plain")(x).features
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_no_token_moves_across_frames():
    """Frames live in far-apart regions of feature space: every output stays in its frame's region."""
    torch.manual_seed(4)
    frames = torch.stack([torch.randn(49, 16) * 0.1 + 10 * torch.eye(16)[f] for f in range(3)])
    for name in ["aim", "pool", "random"]:
        out = MERGERS.build(name, ratio=0.25)(frames)
        for f in range(3):
            assert (out.features[f].argmax(-1) == f).all(), name


def test_one_step_merges_at_most_half_and_counts_sizes():
    x = torch.randn(2, 10, 4)
    size = torch.ones(2, 10, dtype=torch.long)
    index = torch.arange(10).expand(2, -1)
    nx, nm, ns, ni = bipartite_merge_step(x, x, size, index, r=5)
    assert nx.shape == (2, 5, 4) and (ns.sum(1) == 10).all()


def test_random_keeping_is_seeded():
    x = torch.randn(2, 49, 4)
    a = MERGERS.build("random", ratio=0.25, seed=3)(x).token_index
    b = MERGERS.build("random", ratio=0.25, seed=3)(x).token_index
    c = MERGERS.build("random", ratio=0.25, seed=4)(x).token_index
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_keys_metric_without_keys_is_a_clear_error():
    with pytest.raises(ValueError, match="merger.metric: 'keys'"):
        BipartiteMerger(metric="keys")(torch.randn(1, 4, 2))


# --- LLaVA-PruMerge ---------------------------------------------------------------------------------

def spiky_attention(frames=2, tokens=49, spikes=((3, 30), (10, 20, 40))):
    attn = torch.full((frames, tokens), 1.0 / tokens) + 1e-4 * torch.rand(frames, tokens)
    for f, idx in enumerate(spikes):
        attn[f, list(idx)] = 0.2
    return attn


def test_prumerge_keeps_the_attention_outliers_and_tops_up_to_equal_counts():
    x, keys = torch.randn(2, 49, 8), torch.randn(2, 49, 4)
    out = MERGERS.build("prumerge", neighbors=0)(x, metric=keys, attention=spiky_attention())
    assert out.token_index.shape == (2, 3)  # the larger outlier count of the two frames
    assert out.token_index[1].tolist() == [10, 20, 40]
    assert {3, 30} <= set(out.token_index[0].tolist())
    # with no neighbours a kept token is just itself
    torch.testing.assert_close(out.features, x.gather(1, out.token_index.unsqueeze(-1).expand(-1, -1, 8)))


def test_prumerge_folds_key_similar_tokens_in_by_attention_weight():
    x = torch.randn(1, 16, 4)
    keys = torch.eye(16)[None].clone()
    keys[0, 5] = keys[0, 2]  # token 5 has the same key as the kept token 2
    attn = torch.linspace(0.01, 0.02, 16)[None].clone()  # IQR outlier threshold about 0.025
    attn[0, 2], attn[0, 5] = 0.5, 0.024
    out = MERGERS.build("prumerge", neighbors=1)(x, metric=keys, attention=attn)
    assert out.token_index.tolist() == [[2]]
    torch.testing.assert_close(out.features[0, 0], (0.5 * x[0, 2] + 0.024 * x[0, 5]) / 0.524)


def test_prumerge_plus_adds_uniform_tokens_up_to_the_ratio():
    x, keys = torch.randn(2, 196, 8), torch.randn(2, 196, 4)
    out = MERGERS.build("prumerge_plus", ratio=0.25)(x, metric=keys, attention=spiky_attention(tokens=196))
    assert abs(out.token_index.shape[1] - 49) <= 14
    rows = out.token_index[0] // 14
    assert len(rows.unique()) >= 6  # spread over the frame, not just the outliers


def test_prumerge_without_tower_signals_is_a_clear_error():
    with pytest.raises(ValueError, match="prumerge needs the vision tower's keys and attention"):
        MERGERS.build("prumerge")(torch.randn(1, 49, 8))


# --- non-square token grids (Qwen2-VL: rows x cols from the frame's aspect ratio) ------------------

def coordinate_features(frames, rows, cols):
    """[F, rows * cols, 2] features holding each token's (row, col) in raster order."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([r, c], -1).reshape(1, rows * cols, 2).float().expand(frames, -1, -1)


@pytest.mark.parametrize("grid, ratio, pooled", [((13, 23), 0.25, (6, 12)), ((7, 5), 0.25, (4, 2)),
                                                  ((5, 7), 0.25, (2, 4)), ((13, 23), 0.5, (9, 17))])
def test_pool_on_a_non_square_grid_keeps_the_nearest_grid_of_the_ratio(grid, ratio, pooled):
    rows, cols = grid
    out = MERGERS.build("pool", ratio=ratio)(coordinate_features(2, rows, cols), grid=grid)
    h, w = pooled  # round(rows * sqrt(ratio)) x round(floor(ratio * rows * cols) / h), as the docstring says
    assert out.features.shape == (2, h * w, 2) and out.token_index.shape == (2, h * w)
    # each pooled token is the mean (row, col) of its cell and stands at the token at the cell's centre
    # (rounded down), in raster order of the pooled grid
    assert torch.equal(out.token_index // cols, out.features[..., 0].floor().long())
    assert torch.equal(out.token_index % cols, out.features[..., 1].floor().long())
    assert (out.token_index.diff(dim=1) > 0).all()
    assert len((out.token_index[0] // cols).unique()) == h and len((out.token_index[0] % cols).unique()) == w


def test_pool_token_positions_on_a_7_by_5_grid():
    out = MERGERS.build("pool", ratio=0.25)(torch.randn(1, 35, 4), grid=(7, 5))
    # rows 0..6 in 4 cells [0,2) [1,4) [3,6) [5,7) -> 0, 2, 4, 5; columns 0..4 in 2 cells [0,3) [2,5) -> 1, 3
    assert out.token_index[0].tolist() == [r * 5 + c for r in (0, 2, 4, 5) for c in (1, 3)]


def test_pool_and_prumerge_plus_ask_the_adapter_for_the_grid():
    assert "grid" in MERGERS.build("pool").needs and "grid" in MERGERS.build("prumerge_plus").needs
    assert "grid" not in MERGERS.build("prumerge").needs


def test_pool_without_a_grid_needs_a_square_frame():
    with pytest.raises(ValueError, match="299 tokens per frame form no square grid"):
        MERGERS.build("pool")(torch.randn(1, 299, 4))
    with pytest.raises(ValueError, match="a 13 x 22 token grid does not hold 299 tokens"):
        MERGERS.build("pool")(torch.randn(1, 299, 4), grid=(13, 22))


def test_prumerge_plus_spreads_its_uniform_tokens_over_a_non_square_grid():
    x, keys = torch.randn(2, 299, 8), torch.randn(2, 299, 4)
    flat = torch.full((2, 299), 1 / 299)  # no outliers: only the uniform tokens are kept
    out = MERGERS.build("prumerge_plus", ratio=0.25, neighbors=0)(x, metric=keys, attention=flat, grid=(13, 23))
    # 74 wanted: s = sqrt(74 / 299), round(13 s) = 6 rows x round(23 s) = 11 columns, from edge to edge
    rows = torch.linspace(0, 12, 6).round().long().tolist()
    cols = torch.linspace(0, 22, 11).round().long().tolist()
    assert out.token_index.tolist() == [[r * 23 + c for r in rows for c in cols]] * 2
