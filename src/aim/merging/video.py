"""Helpers the clip-level video reducers share (VidCom2, FastVID): integer budgets that follow real-valued
shares, and a clip's kept tokens gathered into a `ClipReduced`."""
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
