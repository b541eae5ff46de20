"""PruneVid's merging before the LLM (Huang et al., "PruneVid: Visual Token Pruning for Efficient Video Large
Language Models", ACL Findings 2025, Sec. 3.1; its question-guided selection inside the LLM is the pruner
`prunevid`: `merger=prunevid pruner=prunevid` is the whole method), as a clip-level reducer. Written from the paper, with the official code (Visual-AI/PruneVid,
models/pllava/modeling_pllava.py, merge_frames_dynamic) read to settle the details.

Of the clip's features x [F, T, D]:

- temporal segments: the frames' means g_t = mean_i x_{t,i} are clustered by DPC-kNN (k = min(7, F)) into
  m = max(1, floor(s F)) clusters, s = 0.25: the m tokens of highest density score are centers, every other
  frame joins its nearest center. Clusters are made contiguous (the official refinement): each keeps its
  longest runs of consecutive frames; a cluster whose runs are all single frames, and the shorter runs of
  the others, are relabelled with the neighbouring run that is longer (the left one on ties). The
  segments are the runs of equal labels;
- static / dynamic: in a segment of W > 1 frames, position i is static when its mean pairwise cosine over
  the frames, 1/(W(W-1)) sum_{w != v} cos(x_{w,i}, x_{v,i}), exceeds tau = 0.8; a static position is
  merged over time into one token, the mean of its W tokens. A single-frame segment is all dynamic;
- spatial merging: each segment's static tokens, and each frame's dynamic ones, are a group clustered by
  DPC-kNN (k = 7) into c groups' centers, every token joining its nearest center (centers themselves), and
  replaced by the means of its clusters. The paper clusters every group (of more than 14 tokens) to
  cluster_ratio = 0.5 of its tokens, so its kept count depends on the clip; here `ratio` sets the clip's
  kept count N = floor(r F T) and the groups' cluster counts follow their sizes (largest remainders, each at
  most its size). Where the static merge alone leaves fewer than N tokens, all of them are kept.

A merged token stands at its cluster center's position: in its own frame for a dynamic token, in the
segment's first frame for a static one (merged over the segment's frames). ratio = 1 keeps the clip
unchanged. The paper's defaults on PLLaVA: s = 0.25, tau = 0.8, cluster_ratio = 0.5, k = 7. Scoring cost:
the frames' cosines per position, W^2 T D per segment, and each group's DPC-kNN distances, n^2 D, and its
cluster sums, c n D, multiply-adds (matrix products, counted by fvcore as merge FLOPs; the frame clustering,
F^2 D, decides the segments through Python ints, which fvcore's trace does not see).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, ClipReduced, NoMerge, clip_of, kept_tokens, with_carry
from aim.merging.video import apportion, density_scores, gather_clip


def dpc_clusters(x: torch.Tensor, count: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN clustering of tokens x [n, D] into `count` clusters: (centers [count], label of each token [n]
    as an index into centers); a center is labelled with itself."""
    score, dist = density_scores(x, k)
    centers = score.argsort(descending=True, stable=True)[:count]
    label = dist[:, centers].argmin(dim=1)
    label[centers] = torch.arange(len(centers), device=x.device)
    return centers, label


def contiguous(label: list[int]) -> list[int]:
    """The official refinement of frame clusters into contiguous segments (see the module docstring)."""
    runs = []  # [label, start, end)
    for i, value in enumerate(label):
        if runs and runs[-1][0] == value:
            runs[-1][2] = i + 1
        else:
            runs.append([value, i, i + 1])
    longest = {}
    for value, start, end in runs:
        longest[value] = max(longest.get(value, 0), end - start)
    out = list(label)
    for value, start, end in runs:
        if longest[value] == 1 or end - start < longest[value]:
            out[start:end] = [None] * (end - start)
    i = 0
    while i < len(out):
        if out[i] is not None:
            i += 1
            continue
        start = i
        while i < len(out) and out[i] is None:
            i += 1
        left = right = 0
        if start > 0:
            j = start - 1
            while j >= 0 and out[j] == out[start - 1]:
                j -= 1
            left = start - 1 - j
        if i < len(out):
            j = i
            while j < len(out) and out[j] == out[i]:
                j += 1
            right = j - i
        new = out[start - 1] if left >= right and start > 0 else (out[i] if i < len(out) else 0)
        out[start:i] = [new] * (i - start)
    return out


def segments(features: torch.Tensor, share: float, k: int) -> list[tuple[int, int]]:
    """The clip's temporal segments as (start, end) frame ranges."""
    f = int(features.shape[0])
    _, label = dpc_clusters(features.mean(dim=1), max(1, math.floor(share * f + 1e-9)), min(k, f))
    label = contiguous(label.tolist())
    bounds = [0, *[i for i in range(1, f) if label[i] != label[i - 1]], f]
    return list(zip(bounds[:-1], bounds[1:]))


def static_positions(frames: torch.Tensor, threshold: float) -> torch.Tensor:
    """[W, T, D] frames of a segment -> [T] bool: positions whose mean pairwise cosine over the frames
    exceeds `threshold` (none in a single frame)."""
    w = int(frames.shape[0])
    if w < 2:
        return torch.zeros(frames.shape[1], dtype=torch.bool, device=frames.device)
    unit = F.normalize(frames.float(), dim=-1).transpose(0, 1)  # [T, W, D]
    cos = unit @ unit.transpose(1, 2)  # [T, W, W]: a matrix product, counted
    return (cos.sum(dim=(1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(-1)) / (w * (w - 1)) > threshold


@dataclass
class PruneVidConfig:
    name: str = "prunevid"
    ratio: float = 0.25  # fraction of the clip's tokens kept (the paper's count follows cluster_ratio 0.5)
    segment_share: float = 0.25  # temporal clusters per frame (the paper: 0.25)
    threshold: float = 0.8  # tau: mean cosine over a segment above which a position is static (the paper: 0.8)
    k: int = 7  # DPC-kNN neighbours (the paper: 7)

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)
        check_range("segment_share", self.segment_share, 0, 1, low_open=True)
        check_range("threshold", self.threshold, -1, 1)
        check_range("k", self.k, 1)


@MERGERS.register("prunevid", config=PruneVidConfig)
class PruneVidReducer:
    """PruneVid before the LLM: temporal segments, static positions merged over each segment, then static and
    dynamic tokens clustered spatially to the clip's budget."""

    scope = "clip"
    needs = ()

    def __init__(self, ratio: float = 0.25, segment_share: float = 0.25, threshold: float = 0.8, k: int = 7,
                 name: str = "prunevid"):
        self.ratio, self.segment_share, self.threshold, self.k = ratio, segment_share, threshold, k

    def kept_total(self, frames: int, tokens: int, grid=None) -> int:
        """Tokens the clip keeps: floor(ratio * F * T) (what aim.flops and budget mode count); fewer only where
        merging the static regions alone leaves fewer, which the config cannot tell."""
        return kept_tokens(frames * tokens, self.ratio)

    def __call__(self, features: torch.Tensor, metric=None, attention=None, carry=None) -> ClipReduced:
        f, t, d = (int(n) for n in features.shape)  # ints under fvcore's trace too
        budget = self.kept_total(f, t)
        if budget >= f * t:  # every token kept: nothing to merge
            return clip_of(NoMerge()(features, carry=carry))
        x = with_carry(features, carry)  # merging is linear in the channels: the carry is merged alike
        groups = []  # (choice features [n, D], merged channels [n, D + C], frame, positions [n])
        for start, end in segments(features, self.segment_share, self.k):
            static = static_positions(features[start:end], self.threshold)
            where = static.nonzero().flatten()
            if len(where):
                groups.append((features[start:end, where].mean(0), x[start:end, where].mean(0), start, where))
            moving = (~static).nonzero().flatten()
            for i in range(start, end):
                if len(moving):
                    groups.append((features[i, moving], x[i, moving], i, moving))
        sizes = torch.tensor([len(g[3]) for g in groups], dtype=torch.float64)
        budget = min(budget, int(sizes.sum()))  # shares below the sizes: no group gets more than it has
        counts = apportion(sizes * budget / sizes.sum(), budget, int(sizes.max()))
        frame, index, merged = [], [], []
        for (choose, values, fr, positions), count in zip(groups, counts):
            if count == 0:
                continue
            if count == len(positions):
                kept, means = positions, values
            else:
                centers, label = dpc_clusters(choose, count, self.k)
                assign = F.one_hot(label, count).to(values.dtype).T  # [count, n]
                kept, means = positions[centers], (assign @ values) / assign.sum(1, keepdim=True)
            frame.append(torch.full((len(kept),), fr, dtype=torch.long, device=x.device))
            index.append(kept), merged.append(means)
        return gather_clip(torch.cat(merged), torch.cat(frame), torch.cat(index), d, carry)
