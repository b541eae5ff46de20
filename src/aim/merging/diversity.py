"""Diversity-based token selection before the LLM: DivPrune and CDPruner.

**DivPrune** (Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models",
CVPR 2025; written from the paper, Sec. 3 and Algorithm 1). Selecting M of a frame's T tokens is posed as
the Max-Min Diversity Problem on the cosine distance of the token features,

    d(i, j) = 1 - cos(x_i, x_j),      S* = argmax_{|S| = M} min_{i != j in S} d(i, j),

solved greedily: the first token is the one whose nearest other token is farthest,
s_1 = argmax_i min_{j != i} d(i, j); then, M - 1 times, s_{k+1} = argmax_{i not in S} min_{j in S} d(i, j),
the token farthest from everything selected so far (farthest-point sampling). Ties go to the lowest
position. The kept tokens are the selected ones, unchanged, at their original positions. The paper's main
LLaVA-1.5 tables keep about 10% of the visual tokens; here `ratio` sets the kept fraction, as for every
merger. The distance matrix costs T^2 D multiply-adds per frame (counted by fvcore as merge FLOPs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, Merged, kept_tokens


def cosine_distance(x: torch.Tensor) -> torch.Tensor:
    """[F, T, D] -> [F, T, T] pairwise 1 - cosine similarity."""
    unit = F.normalize(x.float(), dim=-1)
    return 1.0 - unit @ unit.transpose(1, 2)


def max_min_diverse(distance: torch.Tensor, count: int) -> torch.Tensor:
    """Greedy max-min diversity selection (DivPrune's Algorithm 1) on pairwise distances [F, T, T]:
    the `count` selected indices [F, count] in the order they were picked."""
    f, t, _ = distance.shape
    eye = torch.eye(t, dtype=torch.bool, device=distance.device)
    # first pick: the token whose nearest other token is farthest (its own zero distance left out)
    nearest_other = distance.masked_fill(eye, float("inf")).min(dim=2).values if t > 1 else distance[:, 0]
    picked = [nearest_other.argmax(dim=1)]
    # distance of every token to the selected set; -inf marks the selected tokens themselves
    to_selected = distance.gather(1, picked[0][:, None, None].expand(-1, 1, t)).squeeze(1)
    to_selected = to_selected.scatter(1, picked[0][:, None], float("-inf"))
    for _ in range(count - 1):
        nxt = to_selected.argmax(dim=1)
        picked.append(nxt)
        row = distance.gather(1, nxt[:, None, None].expand(-1, 1, t)).squeeze(1)
        to_selected = torch.minimum(to_selected, row).scatter(1, nxt[:, None], float("-inf"))
    return torch.stack(picked, dim=1)


@dataclass
class DivPruneConfig:
    name: str = "divprune"
    ratio: float = 0.25  # fraction of each frame's tokens kept (the paper's tables: about 0.1)

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)


@MERGERS.register("divprune", config=DivPruneConfig)
class DivPruneMerger:
    """DivPrune: keep each frame's `ratio` most mutually diverse tokens (max-min cosine distance of the
    projected features), in their original order."""

    needs = ()

    def __init__(self, ratio: float = 0.25, name: str = "divprune"):
        self.ratio = ratio

    def __call__(self, features: torch.Tensor, metric=None, attention=None) -> Merged:
        f, t, d = features.shape
        index = max_min_diverse(cosine_distance(features), kept_tokens(t, self.ratio)).sort(dim=1).values
        return Merged(features.gather(1, index.unsqueeze(-1).expand(-1, -1, d)), index)
