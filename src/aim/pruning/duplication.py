"""DART's token choice inside the LLM (Wen et al., "Stop Looking for Important Tokens in Multimodal Language
Models: Duplication Matters More", EMNLP 2025, Sec. 3), without attention weights.

At the pruning layer K, from the keys k_i of layer K - 1 and the hidden states h_i that layer K receives:
1. pivots: the `pivot_image` visual tokens and the `pivot_text` question tokens with the largest key
   norm ||k_i||_1 (keys of all heads concatenated);
2. for each pivot p in turn, in sequence order (the paper's code visits them in Python set order, an
   artifact that decides which pivot claims a contested token), among the visual tokens not yet chosen
   (pivots excluded), keep the q_p least duplicated with it, i.e. with the smallest cos(h_p, h_j);
3. the kept visual tokens are the visual pivots and every token step 2 kept (text pivots are text: they
   stay anyway). Everything else -- the tokens most similar to a pivot first -- is dropped.

The quota: the schedule keeps `count` visual tokens; the `count - pivot_image` non-pivot ones are spread
over the P = pivot_image + pivot_text pivots, q_p = floor(rest / P), the first rest mod P pivots one more,
so the count is exactly the configured one (the paper's code takes floor(budget / P) per pivot and keeps
up to P - 1 fewer or more). The paper's defaults: K = 2, 4 visual and 4 text pivots, 128 of LLaVA-1.5's
576 visual tokens kept (a 77.8% reduction). The paper's code takes the cosine on the final-normed hidden
states; here on the residual stream itself (RMS normalization's per-token scale cancels in a cosine, its
per-channel weight is left out, as the hook has no handle on the final norm).

Its cost: the key norms and P cosine rows of at most T entries, P * T * D multiply-adds (counted by fvcore
as importance FLOPs, with the q/k projections of layer K - 1 the hook recomputes for every pruner).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from aim.tokens import QUESTION_TEXT, VISUAL


def key_norms(k: torch.Tensor) -> torch.Tensor:
    """[B, H, n, d] keys -> [B, n] L1 norm of each token's keys, all heads together."""
    return k.float().abs().sum(dim=(1, 3))


def dart_keep(hidden: torch.Tensor, norms: torch.Tensor, visual: torch.Tensor, question: torch.Tensor,
              count: int, pivot_image: int, pivot_text: int) -> torch.Tensor:
    """One row: hidden [n, D], key norms [n], visual / question token masks [n] -> the indices of the `count`
    kept visual tokens in the order they were chosen (visual pivots first)."""
    vis = visual.nonzero().flatten()
    image_pivots = vis[norms[vis].topk(min(pivot_image, count, len(vis))).indices]
    que = question.nonzero().flatten()
    text_pivots = que[norms[que].topk(min(pivot_text, len(que))).indices]
    pivots = torch.cat([image_pivots, text_pivots]).sort().values
    chosen = [image_pivots]
    left = torch.ones(len(hidden), dtype=torch.bool, device=hidden.device)
    left[~visual] = False
    left[image_pivots] = False
    rest = count - len(image_pivots)
    unit = F.normalize(hidden.float(), dim=-1)
    for p, pivot in enumerate(pivots.tolist()):
        quota = rest // len(pivots) + (p < rest % len(pivots))
        candidates = left.nonzero().flatten()
        quota = min(quota, len(candidates))
        if quota == 0:
            continue
        sim = (unit[candidates] @ unit[pivot, :, None]).squeeze(1)  # matrix @ matrix: fvcore counts it
        take = candidates[sim.topk(quota, largest=False).indices]
        chosen.append(take)
        left[take] = False
    return torch.cat(chosen)


def dart_scores(hidden: torch.Tensor, k: torch.Tensor, roles: torch.Tensor, count: int, pivot_image: int,
                pivot_text: int) -> torch.Tensor:
    """[B, n] scores whose `count` highest visual entries are each row's DART choice (earlier choices score
    higher); every other token scores 0."""
    norms = key_norms(k)
    scores = torch.zeros(roles.shape, dtype=torch.float32, device=hidden.device)
    for b in range(roles.shape[0]):
        keep = dart_keep(hidden[b], norms[b], roles[b] == VISUAL, roles[b] == QUESTION_TEXT, count,
                         pivot_image, pivot_text)
        scores[b, keep] = torch.arange(len(keep), 0, -1, dtype=torch.float32, device=hidden.device)
    return scores
