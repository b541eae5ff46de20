"""LLaVA-PruMerge and PruMerge+ (Shang et al., 2024) as mergers before the LLM.

PruMerge keeps the tokens whose attention from the vision tower's [CLS] query is an outlier by the
IQR rule (above Q3 + 1.5 * IQR of the frame's attention), then folds the information of the others
into them: each kept token becomes the attention-weighted mean of itself and its `neighbors` most
key-similar tokens. PruMerge+ adds spatially uniform tokens to the outliers until `ratio` of the
frame's tokens are kept, so flat regions keep some coverage; on a non-square frame the uniform tokens
form a sub-grid of the frame's aspect ratio (`uniform_grid_indices`), the adapter giving the grid.

SigLIP towers (LLaVA-OneVision) have no [CLS] token. The adapter then supplies, as the documented
fallback, the mean attention each patch receives from all patch queries of the same layer, which also
peaks on the tokens the tower gathers global information into.

Frames of one call keep the same count (the LLM input is rectangular): the largest outlier count over
the frames, each frame topped up by its next most attended tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, Merged, kept_tokens, split_carry, with_carry
from aim.merging.baselines import token_grid


def iqr_outliers(attention: torch.Tensor) -> torch.Tensor:
    """[F, T] -> bool [F, T]: attention above Q3 + 1.5 IQR within each frame."""
    q1, q3 = torch.quantile(attention.float(), torch.tensor([0.25, 0.75], device=attention.device), dim=1)
    return attention > (q3 + 1.5 * (q3 - q1)).unsqueeze(1)


def uniform_grid_indices(rows: int, cols: int, count: int) -> torch.Tensor:
    """About `count` indices spread evenly over a rows x cols grid (row-major): a sub-grid whose sides
    shrink alike, round(rows * s) x round(cols * s) with s = sqrt(count / (rows * cols)), so a non-square
    frame (Qwen2-VL's 13 x 23) is covered with its aspect ratio; on a square grid, round(sqrt(count)) a side."""
    scale = math.sqrt(count / (rows * cols))
    per_row, per_col = (max(1, min(n, round(n * scale))) for n in (rows, cols))
    r = torch.linspace(0, rows - 1, per_row).round().long()
    c = torch.linspace(0, cols - 1, per_col).round().long()
    return (r[:, None] * cols + c[None, :]).flatten().unique()


@dataclass
class PruMergeConfig:
    name: str = "prumerge"
    neighbors: int = 32  # key-similar tokens folded into each kept token
    ratio: float = 0.25  # prumerge_plus only: kept fraction after adding uniform tokens

    def __post_init__(self):
        check_range("neighbors", self.neighbors, 0)
        check_range("ratio", self.ratio, 0, 1, low_open=True)


@MERGERS.register("prumerge", config=PruMergeConfig)
class PruMerge:
    """LLaVA-PruMerge (registered as prumerge) and, with `plus`, PruMerge+ (prumerge_plus, below)."""

    # why prumerge's kept count cannot be known from its config: aim.flops and budget mode refuse it, saying this
    # (read from the registered class; PruMerge+ tops each frame up to `ratio` and is counted)
    adaptive_count = ("attention outliers, unknown without running the vision tower; use merger=prumerge_plus "
                      "(at least merger.ratio of each frame) or another merger")

    def __init__(self, neighbors: int = 32, ratio: float = 0.25, plus: bool = False, name: str = "prumerge"):
        self.neighbors, self.ratio, self.plus = neighbors, ratio, plus
        if plus:
            self.adaptive_count = None
        # PruMerge+ spreads its extra tokens over the frame's (rows, cols) grid
        self.needs = ("metric", "attention", "grid") if plus else ("metric", "attention")

    def select(self, attention: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Kept token indices [F, K], sorted, per frame."""
        f, t = attention.shape
        keep = iqr_outliers(attention)
        if self.plus:
            extra = uniform_grid_indices(*token_grid(t, grid), max(0, kept_tokens(t, self.ratio) - int(keep.sum(1).max())))
            keep[:, extra.to(attention.device)] = True
        count = max(1, int(keep.sum(1).max()))
        # rank kept tokens first, then the rest by attention; take `count` per frame
        rank = attention.float() + keep.float() * (attention.abs().max() + 1) * 2
        return rank.topk(count, dim=1).indices.sort(dim=1).values

    def __call__(self, features: torch.Tensor, metric=None, attention=None, grid=None, carry=None) -> Merged:
        if metric is None or attention is None:
            raise ValueError("prumerge needs the vision tower's keys and attention; this model adapter "
                             "does not provide them")
        dim = features.shape[-1]
        x = with_carry(features, carry)
        f, t, d = x.shape
        kept = self.select(attention, grid)  # [F, K]
        keys = F.normalize(metric.float(), dim=-1)
        sim = keys.gather(1, kept.unsqueeze(-1).expand(-1, -1, keys.shape[-1])) @ keys.transpose(1, 2)  # [F, K, T]
        k = min(self.neighbors, t - 1)
        near = sim.topk(k + 1, dim=-1).indices  # itself (similarity 1) and its k nearest
        weights = attention.float().unsqueeze(1).expand(-1, kept.shape[1], -1).gather(2, near)  # [F, K, k+1]
        weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
        members = x.unsqueeze(1).expand(-1, kept.shape[1], -1, -1).gather(
            2, near.unsqueeze(-1).expand(-1, -1, -1, d)
        )  # [F, K, k+1, D]
        merged = (weights.unsqueeze(-1).to(x.dtype) * members).sum(2)
        return split_carry(merged, kept, dim, carry)


MERGERS.register("prumerge_plus", config=PruMergeConfig)(lambda **cfg: PruMerge(**cfg, plus=True))
