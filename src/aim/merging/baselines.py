"""Merging baselines: spatial average pooling to a smaller grid, and uniform random keeping (the control
every ablation needs)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, Merged, kept_tokens, split_carry, with_carry


def token_grid(num_tokens: int, grid: tuple[int, int] | None = None) -> tuple[int, int]:
    """(rows, cols) of a frame's `num_tokens` tokens in raster order: `grid` as the adapter gives it, else the
    square grid (ValueError if `num_tokens` is no square or `grid` does not hold `num_tokens` tokens)."""
    if grid is None:
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"{num_tokens} tokens per frame form no square grid, and the model adapter gave no "
                             "(rows, cols) grid")
        return side, side
    rows, cols = int(grid[0]), int(grid[1])
    if rows * cols != num_tokens:
        raise ValueError(f"a {rows} x {cols} token grid does not hold {num_tokens} tokens")
    return rows, cols


def cell_centres(size: int, cells: int) -> list[int]:
    """Adaptive pooling of `size` positions into `cells`: cell i spans [floor(i*size/cells),
    ceil((i+1)*size/cells)); the position at its centre, rounded down."""
    return [(math.floor(i * size / cells) + math.ceil((i + 1) * size / cells) - 1) // 2 for i in range(cells)]


@dataclass
class PoolMergerConfig:
    name: str = "pool"
    ratio: float = 0.25  # fraction of each frame's tokens kept (as near as a grid allows)

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)


@MERGERS.register("pool", config=PoolMergerConfig)
class PoolMerger:
    """Average pooling of each frame's rows x cols token grid to the nearest grid of the ratio: h x w cells,
    h = round(rows * sqrt(ratio)) (1..rows), w = round(target / h) (1..cols), target = floor(ratio * rows *
    cols). Both sides shrink by about sqrt(ratio), so the pooled grid keeps the frame's aspect ratio, and h * w
    is as close to the target as a grid with that h allows: 7 x 7 at 0.25 -> 4 x 3 = 12 of 12; Qwen2-VL's
    13 x 23 at 0.25 -> 6 x 12 = 72 of 74. A pooled token stands at the original position of the token
    nearest its cell's centre. The adapter gives the grid (`needs` "grid"); without one the frame's
    tokens must form a square."""

    def __init__(self, ratio: float = 0.25, name: str = "pool"):
        self.ratio = ratio

    def output_grid(self, rows: int, cols: int | None = None) -> tuple[int, int]:
        """(h, w) of the pooled grid of a rows x cols grid (a square one when `cols` is None)."""
        cols = rows if cols is None else cols
        target = kept_tokens(rows * cols, self.ratio)
        h = min(rows, max(1, round(rows * math.sqrt(self.ratio))))
        return h, min(cols, max(1, round(target / h)))

    needs = ("grid",)

    def __call__(self, features: torch.Tensor, metric=None, attention=None, grid=None, carry=None) -> Merged:
        dim = features.shape[-1]
        x = with_carry(features, carry)
        f, t, d = x.shape
        rows, cols = token_grid(t, grid)
        h, w = self.output_grid(rows, cols)
        cells = x.transpose(1, 2).reshape(f, d, rows, cols)
        pooled = F.adaptive_avg_pool2d(cells.float(), (h, w)).to(features.dtype).reshape(f, d, h * w).transpose(1, 2)
        index = torch.tensor([r * cols + c for r in cell_centres(rows, h) for c in cell_centres(cols, w)],
                             device=features.device)
        return split_carry(pooled, index.expand(f, -1), dim, carry)


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

    def __call__(self, features: torch.Tensor, metric=None, attention=None, carry=None) -> Merged:
        dim = features.shape[-1]
        x = with_carry(features, carry)
        f, t, d = x.shape
        k = kept_tokens(t, self.ratio)
        scores = torch.rand(f, t, generator=self.generator)
        index = scores.topk(k, dim=1).indices.sort(dim=1).values.to(features.device)
        return split_carry(x.gather(1, index.unsqueeze(-1).expand(-1, -1, d)), index, dim, carry)
