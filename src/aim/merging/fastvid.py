"""FastVID (Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models", NeurIPS 2025)
as a clip-level reducer before the LLM: the clip is cut into segments of like frames (DySeg), then each
frame keeps its most attended tokens and every segment's other tokens are merged into density-chosen anchor
tokens of a few anchor frames (STPrune: ATS + DTM). Written from the paper, with the official code
(LunarShen/FastVID, the LLaVA-OneVision modeling_qwen2.py) read to settle the details.

Of the clip's features x [F, T, D] and the attention a [F, T] each token receives (the adapter's `attention`;
SigLIP has no [CLS], so the mean attention each patch receives, as for PruMerge and VisionZip):

- DySeg: g_t = mean_i x_{t,i} (the official code uses SigLIP's pooling-head output, which the adapters do
  not give), s_t = cos(g_t, g_{t+1}); a segment ends after frame t when s_t is among the c - 1 lowest
  (ties: the earliest) or s_t < tau. A scene cut therefore always starts a new segment, and a clip has at
  least min(c, F) segments;
- budget: each frame keeps K = floor(r T) tokens, K_s = K - floor(d K) salient and K_c = floor(d K)
  contextual; the clip keeps F K;
- ATS: frame t's K_s salient tokens are its most attended ones (ties: the lowest position), kept as they are;
- DTM, per segment of L frames (its tokens now the T - K_s non-salient ones of each frame): the segment's
  K_c L contextual tokens come from A = ceil(L / p) anchor frames, every p-th counting back from the
  segment's last frame, the budget split evenly (the first K_c L mod A anchors one more; the official code
  floors K_c L / A and keeps a few fewer). Where A anchors cannot hold the budget (high ratios, where the
  official code fails), A = ceil(K_c L / (T - K_s)) and the anchors are every min(p, floor((L-1)/(A-1)))-th
  frame back from the last. An anchor frame's anchor tokens are its tokens of highest DPC-kNN density score
      d_ij = ||x_i - x_j|| / sqrt(D),  rho_i = exp(-mean of the k = 4 smallest d_ij^2 (its own 0 included)),
      delta_i = min_{j denser than i} d_ij (the densest: max_ij d_ij),  score_i = rho_i delta_i,
  (denser: higher rho, ties to the lower position; the official code breaks ties with 1e-6 noise). For
  each anchor frame, every token of the segment goes to that frame's most cosine-similar anchor token (a
  token thus joins one anchor token of each anchor frame, as in the official code); anchor token c with n
  tokens assigned, mean m_c, becomes c + (1 - w)(m_c - c) = w c + (1 - w) m_c, w = max(1 / (n + 1), beta).

The paper's defaults (LLaVA-OneVision): c = 8, tau = 0.9, d = 0.4, p = 4, beta = 0.6, kept r = 25% .. 10%.
A merged token stands at its anchor token's (frame, index): a static region over a segment collapses to the
anchor frames' tokens. At ratio = 1 (K = T: nothing to reduce) the clip is returned unchanged. Scoring
cost: per anchor frame (T - K_s)^2 D (distances) and per segment 2 L (T - K_s) (K_c L) D (assignment
cosines, then the sums of each anchor's tokens) multiply-adds, matrix products counted by fvcore as merge
FLOPs (the frames' means and their cosines are elementwise, F D, not counted).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, ClipReduced, NoMerge, clip_of, kept_tokens, with_carry
from aim.merging.video import density_scores, gather_clip


def segments(features: torch.Tensor, cuts: int, threshold: float) -> list[tuple[int, int]]:
    """DySeg: the clip's segments as (start, end) frame ranges, from the cosine of adjacent frames' means."""
    f = int(features.shape[0])  # an int under fvcore's trace too
    g = F.normalize(features.float().mean(dim=1), dim=-1)
    s = (g[:-1] * g[1:]).sum(-1)  # [F - 1]
    ends = set(s.argsort(stable=True)[:max(0, min(cuts - 1, f - 1))].tolist()) | set((s < threshold).nonzero().flatten().tolist())
    bounds = [0, *sorted(e + 1 for e in ends), f]
    return list(zip(bounds[:-1], bounds[1:]))


def anchor_frames(length: int, budget: int, capacity: int, step: int) -> list[int]:
    """Anchor frames of a segment (positions in it, in order): every `step`-th back from the last, more of
    them, closer together, where `budget` contextual tokens exceed what ceil(length / step) anchors of
    `capacity` tokens each hold."""
    count = math.ceil(length / step)
    if capacity > 0:
        count = max(count, math.ceil(budget / capacity))
    gap = step if count == 1 else min(step, (length - 1) // (count - 1))
    return sorted(length - 1 - i * gap for i in range(count))


@dataclass
class FastVIDConfig:
    name: str = "fastvid"
    ratio: float = 0.25  # fraction of each frame's tokens kept, F * floor(ratio T) in all (the paper: 0.25 .. 0.1)
    cuts: int = 8  # DySeg's c: the c - 1 least similar adjacent frames always end a segment
    threshold: float = 0.9  # DySeg's tau: adjacent frames less similar than this end a segment
    contextual: float = 0.4  # STPrune's d: the share of each frame's kept tokens that are contextual (DTM)
    anchor_step: int = 4  # DTM's p: every p-th frame of a segment is an anchor frame
    beta: float = 0.6  # DTM's beta: an anchor token's least weight in its merged token

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)
        check_range("cuts", self.cuts, 1)
        check_range("threshold", self.threshold, -1, 1)
        check_range("contextual", self.contextual, 0, 1)
        check_range("anchor_step", self.anchor_step, 1)
        check_range("beta", self.beta, 0, 1)


@MERGERS.register("fastvid", config=FastVIDConfig)
class FastVIDReducer:
    """FastVID: segments of like frames; per frame the most attended tokens kept, the rest of each segment
    merged into density-chosen anchor tokens of its anchor frames."""

    scope = "clip"
    needs = ("attention",)

    def __init__(self, ratio: float = 0.25, cuts: int = 8, threshold: float = 0.9, contextual: float = 0.4,
                 anchor_step: int = 4, beta: float = 0.6, name: str = "fastvid"):
        self.ratio, self.cuts, self.threshold = ratio, cuts, threshold
        self.contextual, self.anchor_step, self.beta = contextual, anchor_step, beta

    def split(self, tokens: int) -> tuple[int, int]:
        """(salient, contextual) tokens per frame of `tokens`."""
        kept = kept_tokens(tokens, self.ratio)
        contextual = math.floor(self.contextual * kept + 1e-9)
        return kept - contextual, contextual

    def kept_total(self, frames: int, tokens: int, grid=None) -> int:
        """Tokens the clip keeps: F * floor(ratio * T) (what aim.flops and budget mode count)."""
        return frames * sum(self.split(tokens))

    def __call__(self, features: torch.Tensor, metric=None, attention=None, carry=None) -> ClipReduced:
        if attention is None:
            raise ValueError("fastvid needs the attention each token receives; this model adapter does not provide it")
        f, t, d = (int(n) for n in features.shape)  # ints under fvcore's trace too
        salient, contextual = self.split(t)
        if salient + contextual == t:  # every token kept: nothing to merge
            return clip_of(NoMerge()(features, carry=carry))
        x = with_carry(features, carry)  # merging is linear in the channels: the carry is merged alike
        order = (-attention.float()).argsort(dim=1, stable=True)
        top, rest = order[:, :salient], order[:, salient:].sort(dim=1).values  # rest: non-salient, in order
        frame = [torch.arange(f, device=x.device).repeat_interleave(salient)]
        index, parts = [top.reshape(-1)], [x[frame[0], top.reshape(-1)]]
        for start, end in segments(features, self.cuts, self.threshold):
            fr, ix, merged = self.merge_segment(features, x, rest, start, end, contextual)
            frame.append(fr), index.append(ix), parts.append(merged)
        return gather_clip(torch.cat(parts), torch.cat(frame), torch.cat(index), d, carry)

    def merge_segment(self, features, x, rest, start: int, end: int, contextual: int):
        """DTM on frames [start, end): (frames, indices, merged features) of the segment's contextual tokens."""
        length, capacity = end - start, int(rest.shape[1])
        budget = contextual * length
        anchors = anchor_frames(length, budget, capacity, self.anchor_step)
        share, extra = divmod(budget, len(anchors))
        seg_frames = torch.arange(start, end, device=x.device).repeat_interleave(capacity)
        tokens = rest[start:end].reshape(-1)
        unit = F.normalize(features[seg_frames, tokens].float(), dim=-1)
        frame, index, merged = [], [], []
        for i, a in enumerate(anchors):
            take = share + (i < extra)
            score, _ = density_scores(features[start + a, rest[start + a]])
            chosen = rest[start + a, score.argsort(descending=True, stable=True)[:take]]
            frame.append(torch.full((take,), start + a, dtype=torch.long, device=x.device)), index.append(chosen)
            target = F.normalize(features[start + a, chosen].float(), dim=-1)
            merged.append(self.merge_into(x, unit, target, seg_frames, tokens, start + a, chosen))
        return torch.cat(frame), torch.cat(index), torch.cat(merged)

    def merge_into(self, x, unit, target, seg_frames, tokens, frame: int, anchors: torch.Tensor) -> torch.Tensor:
        """Each of the segment's tokens (unit [N, D]: normalized, standing at seg_frames, tokens) into its most
        similar of one anchor frame's anchor tokens (target [A, D]: normalized): those merged [A, D + C]."""
        anchor = x[frame, anchors]
        if not len(anchors):
            return anchor
        nearest = (unit @ target.T).argmax(dim=1)
        assign = F.one_hot(nearest, len(anchors)).to(x.dtype).T  # [anchors, segment tokens]
        n = assign.sum(dim=1, keepdim=True)
        mean = (assign @ x[seg_frames, tokens]) / n.clamp_min(1)
        w = torch.maximum(1 / (n + 1), torch.full_like(n, self.beta))
        return torch.where(n > 0, anchor + (1 - w) * (mean - anchor), anchor)
