"""Helpers the clip-level video reducers share (VidCom2, FastVID, PruneVid): integer budgets that follow
real-valued shares, DPC-kNN density scores, and a clip's kept tokens gathered into a `ClipReduced`."""
from __future__ import annotations

import torch

from aim.merging import ClipReduced


def apportion(shares: torch.Tensor, total: int, cap: int) -> list[int]:
    """Integer budgets [F] that sum to `total` (at most F * cap), none above `cap`, following the real-valued
    `shares` [F] by largest remainders: each frame first gets floor(min(share, cap)), then the tokens left go
    one by one to the frame (below `cap`) whose share exceeds its count the most (ties: the earliest frame)."""
    shares = shares.double().clamp(min=0)
    counts = shares.clamp(max=cap).floor().long()
    total = min(total, cap * len(counts))
    left = shares - counts
    for _ in range(total - int(counts.sum())):
        j = int(left.masked_fill(counts >= cap, float("-inf")).argmax())
        counts[j] += 1
        left[j] -= 1
    return counts.tolist()


def gather_clip(features: torch.Tensor, frame: torch.Tensor, index: torch.Tensor, dim: int,
                carry: torch.Tensor | None) -> ClipReduced:
    """`ClipReduced` of kept tokens [N, dim + C] (the features and the carry side by side, `with_carry`)
    standing at (frame, index), put in clip order: frame by frame, within a frame by index."""
    order = (frame * (int(index.max()) + 1 if len(index) else 1) + index).argsort()
    features, frame, index = features[order], frame[order], index[order]
    if carry is None:
        return ClipReduced(features, frame, index)
    return ClipReduced(features[:, :dim], frame, index, features[:, dim:].to(carry.dtype))


def density_scores(x: torch.Tensor, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN (density peaks with k nearest neighbours) of tokens x [n, D]: the score rho * delta [n] and the
    distances d_ij = ||x_i - x_j|| / sqrt(D) [n, n]. rho_i = exp(-mean of the k smallest d_ij^2, its own 0
    included); delta_i = min d_ij over the tokens j denser than i (higher rho, ties to the lower position;
    the densest: max_ij d_ij). The distances come from a matrix product, which fvcore counts (n^2 D)."""
    n, d = (int(m) for m in x.shape)  # ints under fvcore's trace too
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    sq = (x * x).sum(-1)
    dist = ((sq[:, None] + sq[None, :] - 2 * (x @ x.T)).clamp_min(0) / d).sqrt()
    rho = torch.exp(-dist.square().topk(min(k, n), dim=1, largest=False).values.mean(dim=1))
    position = torch.arange(n, device=x.device)
    denser = (rho[None, :] > rho[:, None]) | ((rho[None, :] == rho[:, None]) & (position[None, :] < position[:, None]))
    delta = dist.masked_fill(~denser, float("inf")).min(dim=1).values
    delta = torch.where(torch.isinf(delta), dist.max(), delta)
    return rho * delta, dist
