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

**CDPruner** (Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for Token
Pruning in MLLMs", NeurIPS 2025; Sec. 3, with the official code read for the details). The kept set is the
MAP of a determinantal point process whose kernel weighs feature similarity by relevance to the prompt,

    S_ij = cos(x_i, x_j),   r_i = mean_m cos(x_i, t_m),   r <- (r - min r + 1e-6) / (max r - min r),
    L = diag(r) S diag(r),  S* = argmax_{|S| = M} det(L_S),

found by the greedy MAP inference of Chen et al. (2018): each step adds the token with the largest
marginal gain d_i^2 (the squared residual of its kernel row against the selected ones, updated by one
Cholesky-like step e_i = (L_ji - <c_j, c_i>) / d_j, d_i^2 <- d_i^2 - e_i^2). Here x are a frame's projected
features and t_m the LLM input embeddings of the prompt text after the visual tokens (the question, its
options, the answer cue), which the adapter gives when a merger `needs` "text": the projected features live
in that embedding space. The paper's LLaVA-1.5 code takes CLIP's image and text embeddings instead and
negates their cosine (an effect its authors saw in CLIP only); the relevance is normalized per frame (the
code: over the batch), and a constant relevance (max r - min r <= 1e-6) counts as 1 everywhere, which makes L = S:
plain DPP diversity. The paper's default keeps 64 of LLaVA-1.5's 576 tokens; `ratio` sets the kept
fraction. Cost per frame: T^2 D (similarity) + T M D (relevance) + about M_kept^2 T / 2 (greedy updates)
multiply-adds, counted by fvcore as merge FLOPs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, Merged, kept_tokens, split_carry, with_carry


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

    def __call__(self, features: torch.Tensor, metric=None, attention=None, carry=None) -> Merged:
        f, t, d = features.shape
        index = max_min_diverse(cosine_distance(features), kept_tokens(t, self.ratio)).sort(dim=1).values
        return keep(features, index, carry)


def keep(features: torch.Tensor, index: torch.Tensor, carry=None) -> Merged:
    """The selected tokens `index` [F, K] of each frame (and of the carry alike)."""
    x = with_carry(features, carry)
    return split_carry(x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1])), index, features.shape[-1], carry)


def prompt_relevance(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """[F, T, D] features, [M, D] prompt embeddings -> [F, T] relevance in (0, 1]: the mean cosine to the
    prompt tokens, min-max normalized per frame (a constant one, max - min <= 1e-6, becomes 1)."""
    r = (F.normalize(features.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T).mean(-1)
    low, high = r.min(dim=1, keepdim=True).values, r.max(dim=1, keepdim=True).values
    spread = high - low  # cosines: a spread below 1e-6 is float noise around a constant
    return torch.where(spread > 1e-6, (r - low + 1e-6) / spread.clamp_min(1e-6), torch.ones_like(r))


def conditional_kernel(features: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """L = diag(r) S diag(r), S the cosine similarity of the features: [F, T, T]."""
    unit = F.normalize(features.float(), dim=-1)
    return relevance.unsqueeze(2) * (unit @ unit.transpose(1, 2)) * relevance.unsqueeze(1)


def dpp_greedy_map(kernel: torch.Tensor, count: int) -> torch.Tensor:
    """Greedy MAP inference of a DPP (Chen et al., 2018) on kernels [F, T, T]: the `count` selected indices
    [F, count] in the order they were picked. Once the gains reach 0 (the kernel's rank, at most the
    feature width, used up) the remaining picks take the largest residual gains without further updates."""
    f, t, _ = kernel.shape
    rows = torch.arange(f, device=kernel.device)
    c = kernel.new_zeros(f, count, t)  # c[:, i]: the i-th selected token's Cholesky row against every token
    gain = kernel.diagonal(dim1=1, dim2=2).clone()  # d_i^2
    picked = []
    for i in range(count):
        j = gain.argmax(dim=1)
        picked.append(j)
        done = (c[rows, :i, j].unsqueeze(1) @ c[:, :i]).squeeze(1)  # <c_j, c_i> for every token i
        d = gain[rows, j].unsqueeze(1)
        # once the kernel's rank is used up (gain ~ 0) the update is skipped: no division by ~0
        e = torch.where(d > 1e-10, (kernel[rows, j] - done) / d.clamp_min(1e-10).sqrt(), torch.zeros_like(done))
        c[:, i] = e
        gain = (gain - e.square()).scatter(1, j[:, None], float("-inf"))
    return torch.stack(picked, dim=1)


@dataclass
class CDPrunerConfig:
    name: str = "cdpruner"
    ratio: float = 0.25  # fraction of each frame's tokens kept (the paper: 64 of 576, 0.111)

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)


@MERGERS.register("cdpruner", config=CDPrunerConfig)
class CDPrunerMerger:
    """CDPruner: keep each frame's tokens of greatest conditional diversity, the greedy MAP of a DPP whose
    kernel weighs feature similarity by relevance to the prompt's text embeddings."""

    needs = ("text",)

    def __init__(self, ratio: float = 0.25, name: str = "cdpruner"):
        self.ratio = ratio

    def __call__(self, features: torch.Tensor, metric=None, attention=None, text=None, carry=None) -> Merged:
        if text is None:
            raise ValueError("cdpruner needs the prompt's text embeddings; this model adapter does not provide them")
        f, t, d = features.shape
        kernel = conditional_kernel(features, prompt_relevance(features, text))
        index = dpp_greedy_map(kernel, kept_tokens(t, self.ratio)).sort(dim=1).values
        return keep(features, index, carry)
