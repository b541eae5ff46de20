"""HoliTom's merging before the LLM (Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language
Models", NeurIPS 2025), as a clip-level reducer; its inner-LLM merging is the pruner `holitom`
(aim.pruning). Written from the paper, with the official code (cokeshao/HoliTom, holitom/llava_arch.py) read
to settle the details.

Of the clip's features x [F, T, D] and the attention a [F, T] each token receives (the adapter's `attention`:
SigLIP has no [CLS], so the mean attention each patch receives, as the official code takes it):

- redundancy: s_{t,i} = cos(x_{t,i}, x_{t+1,i}) of each position i of adjacent frames. In a segment [u, v]
  (frames u..v) the position i is redundant when s_{t,i} > tau for every t = u..v-1; merging it over time
  saves v - u tokens, so the segment's prunable count is P(u, v) = (v - u) |{i : redundant in [u, v]}|
  (P(u, u) = 0);
- global redundancy-aware segmentation: the partition of the clip into contiguous segments maximising
  sum P(u, v) over its segments, by dynamic programming, best(v) = max_u best(u - 1) + P(u, v) (the whole
  clip at once, not greedily; ties: the shortest last segment, a single frame first, as the official code).
  A scene cut (no position similar across it) therefore ends a segment: no segment gains by crossing it;
- temporal merging: each segment's redundant positions are merged over its frames into one token, their mean
  (1/(v-u+1)) sum_t x_{t,i}, standing at the segment's first frame u, position i (its first occurrence, as
  the paper places it). The rest of each segment's frames are its dynamic tokens;
- spatial merging to the budget N = floor(r F T): the clip has M = F T - sum P tokens left, in groups (each
  segment's merged tokens; each frame's dynamic tokens); each group of n keeps c = n N / M of them (the
  official code rescales r to r' = r F T / M and rounds per group; here largest remainders, so the clip
  keeps exactly N). A frame's dynamic group keeps its c_d = round(c (1 - d)) most attended tokens (dominant;
  ties: the lower position) and merges the rest into c - c_d contextual tokens; a segment's merged group is
  merged into c tokens. Merging n tokens into c is DPC-kNN clustering (density peaks, k = min(K, c)
  neighbours, the densest-and-farthest c tokens the centers, every other token to its nearest center), each
  center c with members m_1..m_j (itself excluded) becoming beta c + (1 - beta) mean(m), or c without members;
- where the temporal merge alone leaves fewer than N tokens (M < N, at high ratios on static clips; the
  official code then keeps all M), the redundant positions least similar over their segment (lowest
  min_t s_{t,i}; ties: the earlier segment, then the lower position) are split back into dynamic tokens
  until M >= N, so the clip keeps N exactly.

A token merged over frames (and a cluster of them) stands at its center's position in its segment's first
frame; a frame's dynamic token (and a contextual cluster) at its own (center's) frame and position: the kept
positions are unique, as a segment's redundant and dynamic positions are disjoint.

The paper's defaults (LLaVA-OneVision, the official scripts): tau = 0.8 (0.65 at r = 0.1), beta = 0.6, K = 7,
d = 0 (the scripts leave D unset: a frame's kept dynamic tokens are all its most attended ones), r = 0.25 ..
0.1 of 32 frames. At ratio = 1 (N = F T) the clip is returned unchanged. Scoring cost: the adjacent frames'
cosines (elementwise, F T D, not counted) and per group the DPC-kNN distances n^2 D and the cluster sums
c n D multiply-adds (matrix products, counted by fvcore as merge FLOPs); the dynamic programme is O(F^2 T) on
booleans, in Python ints, which fvcore's trace does not see.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, ClipReduced, NoMerge, clip_of, kept_tokens, with_carry
from aim.merging.prunevid import dpc_clusters
from aim.merging.video import apportion, gather_clip


def adjacent_similarity(features: torch.Tensor) -> torch.Tensor:
    """s [F - 1, T]: the cosine of each position's tokens in adjacent frames."""
    unit = F.normalize(features.float(), dim=-1)
    return (unit[:-1] * unit[1:]).sum(-1)


def prunable(similar: torch.Tensor) -> list[list[int]]:
    """P[u][v] (u <= v): tokens saved by merging over frames u..v the positions similar across all its
    adjacent pairs, (v - u) times their count; `similar` [F - 1, T] bool is s > tau."""
    f = int(similar.shape[0]) + 1
    table = [[0] * f for _ in range(f)]
    for u in range(f - 1):
        redundant = similar[u:].int().cumprod(dim=0).sum(dim=1).tolist()  # positions redundant in [u, u + 1 + j]
        for j, count in enumerate(redundant):
            table[u][u + 1 + j] = (1 + j) * count
    return table


def segments(similarity: torch.Tensor, threshold: float) -> list[tuple[int, int]]:
    """The clip's segments as (start, end) frame ranges (end exclusive) that maximise the tokens saved by
    temporal merging, sum P(u, v): best(v) = max over u <= v of best(u - 1) + P(u, v), the shortest last
    segment on ties."""
    f = int(similarity.shape[0]) + 1
    gain = prunable(similarity > threshold)
    best, start = [0] * f, [0] * f
    for v in range(f):
        best[v], start[v] = (best[v - 1] if v else 0), v
        for u in range(v - 1, -1, -1):
            value = (best[u - 1] if u else 0) + gain[u][v]
            if value > best[v]:
                best[v], start[v] = value, u
    bounds, v = [], f - 1
    while v >= 0:
        bounds.append((start[v], v + 1))
        v = start[v] - 1
    return bounds[::-1]


def redundant_positions(similarity: torch.Tensor, threshold: float, start: int, end: int) -> torch.Tensor:
    """[T] bool: the positions similar across every adjacent pair of frames start..end-1 (none in one frame)."""
    if end - start < 2:
        return torch.zeros(similarity.shape[1], dtype=torch.bool, device=similarity.device)
    return (similarity[start:end - 1] > threshold).all(dim=0)


@dataclass
class HoliTomConfig:
    name: str = "holitom"
    ratio: float = 0.25  # fraction of the clip's tokens kept, floor(ratio F T) (the paper: 0.25 .. 0.1)
    threshold: float = 0.8  # tau: adjacent frames' cosine above which a position is redundant (0.65 at r = 0.1)
    contextual: float = 0.0  # d: share of a frame's kept dynamic tokens that are merged contextual ones
    beta: float = 0.6  # a cluster center's weight in its merged token
    k: int = 7  # K: DPC-kNN neighbours (at most the cluster count)

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)
        check_range("threshold", self.threshold, -1, 1)
        check_range("contextual", self.contextual, 0, 1)
        check_range("beta", self.beta, 0, 1)
        check_range("k", self.k, 1)


@MERGERS.register("holitom", config=HoliTomConfig)
class HoliTomReducer:
    """HoliTom before the LLM: the segmentation that maximises temporal redundancy, redundant positions merged
    over each segment, then each segment's merged tokens and each frame's dynamic ones reduced spatially to
    the clip's budget."""

    scope = "clip"
    needs = ("attention",)

    def __init__(self, ratio: float = 0.25, threshold: float = 0.8, contextual: float = 0.0, beta: float = 0.6,
                 k: int = 7, name: str = "holitom"):
        self.ratio, self.threshold, self.contextual, self.beta, self.k = ratio, threshold, contextual, beta, k

    def kept_total(self, frames: int, tokens: int, grid=None) -> int:
        """Tokens the clip keeps: floor(ratio * F * T) (what aim.flops and budget mode count)."""
        return kept_tokens(frames * tokens, self.ratio)

    def __call__(self, features: torch.Tensor, metric=None, attention=None, carry=None) -> ClipReduced:
        if attention is None:
            raise ValueError("holitom needs the attention each token receives; this model adapter does not provide it")
        f, t, d = (int(n) for n in features.shape)  # ints under fvcore's trace too
        budget = self.kept_total(f, t)
        if budget >= f * t:  # every token kept: nothing to merge
            return clip_of(NoMerge()(features, carry=carry))
        x = with_carry(features, carry)  # merging is linear in the channels: the carry is merged alike
        similarity = adjacent_similarity(features)
        parts = segments(similarity, self.threshold)
        static = [redundant_positions(similarity, self.threshold, s, e) for s, e in parts]
        self.split_back(similarity, parts, static, f * t - budget)
        groups = []  # (choice features [n, D], merged channels [n, D + C], attention [n] or None, frame, positions [n])
        for (start, end), redundant in zip(parts, static):
            where = redundant.nonzero().flatten()
            if len(where):
                groups.append((features[start:end, where].mean(0), x[start:end, where].mean(0), None, start, where))
            moving = (~redundant).nonzero().flatten()
            for i in range(start, end):
                if len(moving):
                    groups.append((features[i, moving], x[i, moving], attention[i, moving], i, moving))
        sizes = torch.tensor([len(g[4]) for g in groups], dtype=torch.float64)
        counts = apportion(sizes * budget / sizes.sum(), budget, int(sizes.max()))
        frame, index, merged = [], [], []
        for (choose, values, attn, fr, positions), count in zip(groups, counts):
            if count == 0:
                continue
            kept, means = self.reduce_group(choose, values, attn, positions, count)
            frame.append(torch.full((len(kept),), fr, dtype=torch.long, device=x.device))
            index.append(kept), merged.append(means)
        return gather_clip(torch.cat(merged), torch.cat(frame), torch.cat(index), d, carry)

    def split_back(self, similarity, parts, static, most: int) -> None:
        """Where temporal merging saves more than `most` tokens, un-merge the redundant positions least similar
        over their segment (in place) until it saves at most `most`."""
        saved = sum((e - s - 1) * int(r.sum()) for (s, e), r in zip(parts, static))
        if saved <= most:
            return
        order = []  # (least similarity, segment, position)
        for n, ((s, e), r) in enumerate(zip(parts, static)):
            for i in r.nonzero().flatten().tolist():
                order.append((float(similarity[s:e - 1, i].min()), n, i))
        for _, n, i in sorted(order):
            static[n][i] = False
            saved -= parts[n][1] - parts[n][0] - 1
            if saved <= most:
                return

    def reduce_group(self, choose, values, attn, positions, count: int):
        """`count` tokens of one group: (their positions, their merged channels). A frame's dynamic group
        (with `attn`) keeps its most attended tokens and merges the rest into contextual clusters; a
        segment's merged group is clustered as a whole."""
        if count == len(positions):
            return positions, values
        if attn is None:
            return self.cluster(choose, values, positions, count)
        dominant = math.floor(count * (1 - self.contextual) + 0.5)
        order = (-attn.float()).argsort(stable=True)
        top, rest = order[:dominant], order[dominant:].sort().values
        kept, means = [positions[top]], [values[top]]
        if count > dominant:
            ctx_kept, ctx_means = self.cluster(choose[rest], values[rest], positions[rest], count - dominant)
            kept.append(ctx_kept), means.append(ctx_means)
        return torch.cat(kept), torch.cat(means)

    def cluster(self, choose, values, positions, count: int):
        """DPC-kNN merge of n tokens into `count`: (the centers' positions, beta center + (1 - beta) mean of its
        other members, or the center alone)."""
        centers, label = dpc_clusters(choose, count, min(self.k, count))
        assign = F.one_hot(label, count).to(values.dtype).T  # [count, n]
        assign[torch.arange(count, device=values.device), centers] = 0  # a center is not its own member
        members = assign.sum(dim=1, keepdim=True)
        mean = (assign @ values) / members.clamp_min(1)
        center = values[centers]
        return positions[centers], torch.where(members > 0, self.beta * center + (1 - self.beta) * mean, center)
