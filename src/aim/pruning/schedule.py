"""Retention schedules: for an LLM of L decoder layers, the fraction of the original visual tokens that
each layer sees (index i = decoder layer i, 0-based). Text tokens are never counted or pruned.

Tokens seen by layer i are chosen before it from the importance computed in layer i - 1, so layer 0
always sees everything.
"""
from __future__ import annotations

import numpy as np


def aim_schedule(num_layers: int, l1: int, l2: int) -> list[float]:
    """AIM (paper Sec. 3.2): layers 0..l1-1 see all visual tokens; layer i in [l1, l2) sees
    1 - (i - l1 + 1) / (l2 - l1) of them; layers >= l2 see none. l2 > L never reaches zero; l1 >= L
    never prunes. With L=28, l1=14, l2=22: layer 14 sees 87.5%, layer 20 12.5%, layers 21+ none.
    This reproduces the paper's 14.76 TFLOPs for LLaVA-OneVision-7B (tests/test_efficiency.py)."""
    if not 1 <= l1 < l2:
        raise ValueError(f"aim schedule needs 1 <= l1 < l2, got l1={l1}, l2={l2}")
    return [1.0 if i < l1 else max(0.0, 1 - (i - l1 + 1) / (l2 - l1)) for i in range(num_layers)]


def fastv_schedule(num_layers: int, k: int = 2, keep: float = 0.5) -> list[float]:
    """FastV: from layer k on, keep `keep` of the visual tokens (ranked by layer k-1's attention)."""
    return [1.0 if i < k else keep for i in range(num_layers)]


def pdrop_schedule(num_layers: int, boundaries: list[int] | None = None, lam: float = 0.5) -> list[float]:
    """PyramidDrop: at each stage boundary the visual tokens shrink by the factor lam. Its defaults split
    the LLM into four equal stages (boundaries 8, 16, 24 for 32 layers; 7, 14, 21 for 28)."""
    if boundaries is None:
        boundaries = [num_layers * s // 4 for s in (1, 2, 3)]
    return [lam ** sum(i >= b for b in boundaries) for i in range(num_layers)]


def vtw_schedule(num_layers: int, k: int) -> list[float]:
    """Visual Tokens Withdrawal: every visual token is withdrawn from layer k on (FastV's with nothing kept)."""
    return fastv_schedule(num_layers, k, 0.0)


def explicit_schedule(num_layers: int, retention: list[float]) -> list[float]:
    """A per-layer list as given; shorter lists repeat their last value."""
    if not retention:
        raise ValueError("retention: give at least one value")
    return [float(retention[min(i, len(retention) - 1)]) for i in range(num_layers)]


def kept_counts(visual_tokens, retention) -> np.ndarray:
    """The token-count rule: the visual tokens each layer sees are floor(retention * original) (up to float
    rounding), never growing from layer to layer. Vectorized: `visual_tokens` [...] and `retention`
    [..., layers] broadcast to int64 counts [..., layers] (the budget planner's grid of settings); the pruning
    hooks, aim.flops and the planner all count with it."""
    visual = np.asarray(visual_tokens, dtype=np.int64)[..., None]
    counts = np.floor(visual * np.asarray(retention, dtype=np.float64) + 1e-9).astype(np.int64)
    return np.minimum(np.minimum.accumulate(counts, axis=-1), visual)


def kept_per_layer(visual_tokens: int, retention: list[float]) -> list[int]:
    """Visual tokens each layer sees, for one input (`kept_counts`)."""
    return kept_counts(visual_tokens, retention).tolist()
