"""Merging baselines: spatial average pooling to a smaller grid, and uniform random keeping (the control
every ablation needs)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, Merged, kept_tokens


def grid_side(num_tokens: int) -> int:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"pooling needs a square token grid per frame, got {num_tokens} tokens")
    return side


@dataclass
class PoolMergerConfig:
    name: str = "pool"
    ratio: float = 0.25  # fraction of each frame's tokens kept (as near as a grid allows)

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)


@MERGERS.register("pool", config=PoolMergerConfig)
class PoolMerger:
    """Average pooling of each frame's square grid to an h x w grid with h*w as close to the target as
    a grid allows (49 tokens at 0.25 -> 4x3 = 12). A pooled token stands at the original position of
    the token nearest its cell's centre."""

    def __init__(self, ratio: float = 0.25, name: str = "pool"):
        self.ratio = ratio

    def output_grid(self, side: int) -> tuple[int, int]:
        target = kept_tokens(side * side, self.ratio)
        h = min(side, max(1, round(side * math.sqrt(self.ratio))))
        return h, min(side, max(1, round(target / h)))

    needs = ()

    def __call__(self, features: torch.Tensor, metric=None, attention=None) -> Merged:
        f, t, d = features.shape
        side = grid_side(t)
        h, w = self.output_grid(side)
        grid = features.transpose(1, 2).reshape(f, d, side, side)
        pooled = F.adaptive_avg_pool2d(grid.float(), (h, w)).to(features.dtype).reshape(f, d, h * w).transpose(1, 2)
        # adaptive pooling cell i spans [floor(i*side/h), ceil((i+1)*side/h)); its centre, rounded down
        rows = [(math.floor(i * side / h) + math.ceil((i + 1) * side / h) - 1) // 2 for i in range(h)]
        cols = [(math.floor(j * side / w) + math.ceil((j + 1) * side / w) - 1) // 2 for j in range(w)]
        index = torch.tensor([r * side + c for r in rows for c in cols], device=features.device)
        return Merged(pooled, index.expand(f, -1))


@dataclass
class RandomMergerConfig:
    name: str = "random"
    ratio: float = 0.25
    seed: int = 0

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)


@MERGERS.register("random", config=RandomMergerConfig)
class RandomMerger:
    """Keep a uniformly random subset of each frame's tokens (in their original order). Seeded: the same
    seed draws the same subsets for the same sequence of calls."""

    def __init__(self, ratio: float = 0.25, seed: int = 0, name: str = "random"):
        self.ratio = ratio
        self.generator = torch.Generator().manual_seed(seed)

    needs = ()

    def __call__(self, features: torch.Tensor, metric=None, attention=None) -> Merged:
        f, t, d = features.shape
        k = kept_tokens(t, self.ratio)
        scores = torch.rand(f, t, generator=self.generator)
        index = scores.topk(k, dim=1).indices.sort(dim=1).values.to(features.device)
        return Merged(features.gather(1, index.unsqueeze(-1).expand(-1, -1, d)), index)
