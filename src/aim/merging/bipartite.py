"""AIM's merging before the LLM (paper Sec. 3.1): per frame, iterative bipartite soft matching on the
cosine similarity of token embeddings, in the manner of ToMe (Bolya et al., 2023).

One step on N tokens: alternate tokens form sets A (even) and B (odd); each A token finds its most
similar B token; the r A tokens with the most similar matches are averaged into their B partners.
r is at most the size of A (half the tokens), so steps repeat until the frame holds the target count.
A merged token stands at the original position of the B token it merged into (the token that
survives); with `keep_order` the survivors stay in their original spatial order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_choice, check_range
from aim.merging import MERGERS, Merged, kept_tokens, split_carry, with_carry

AVERAGING = ("size_weighted", "plain")
METRICS = ("features", "keys")


def bipartite_merge_step(x: torch.Tensor, metric: torch.Tensor, size: torch.Tensor, index: torch.Tensor,
                         r: int, size_weighted: bool = True):
    """Merge r tokens of every frame. x [F, N, D] features, metric [F, N, Dm], size [F, N] tokens each
    current token stands for, index [F, N] original positions. Returns the four with N - r tokens."""
    m = F.normalize(metric.float(), dim=-1)
    a, b = m[:, ::2], m[:, 1::2]
    scores = a @ b.transpose(1, 2)  # [F, Na, Nb] cosine similarity
    best, best_b = scores.max(-1)  # each A token's most similar B token
    order = best.argsort(-1, descending=True)
    src, keep = order[:, :r], order[:, r:]  # A tokens merged away / kept
    dst = best_b.gather(1, src)

    def split(t):
        return t[:, ::2], t[:, 1::2]

    xa, xb = split(x)
    sa, sb = split(size)
    ia, ib = split(index)
    ma, mb = split(metric)
    w_a = sa.unsqueeze(-1).to(x.dtype) if size_weighted else torch.ones_like(sa).unsqueeze(-1).to(x.dtype)
    w_b = sb.unsqueeze(-1).to(x.dtype) if size_weighted else torch.ones_like(sb).unsqueeze(-1).to(x.dtype)

    def merge(ta, tb):
        """Weighted mean of each B token and the A tokens merged into it."""
        d = ta.shape[-1]
        total = (tb * w_b).scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, d), ta.gather(1, src.unsqueeze(-1).expand(-1, -1, d)) * w_a.gather(1, src.unsqueeze(-1)))
        weight = w_b.scatter_add(1, dst.unsqueeze(-1), w_a.gather(1, src.unsqueeze(-1)))
        return total / weight

    def gather_keep(t):
        if t.dim() == 3:
            return t.gather(1, keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        return t.gather(1, keep)

    new_x = torch.cat([gather_keep(xa), merge(xa, xb)], 1)
    new_metric = torch.cat([gather_keep(ma), merge(ma, mb)], 1)
    new_size = torch.cat([gather_keep(sa), sb.scatter_add(1, dst, sa.gather(1, src))], 1)
    new_index = torch.cat([gather_keep(ia), ib], 1)
    return new_x, new_metric, new_size, new_index


@dataclass
class AimMergerConfig:
    name: str = "aim"
    ratio: float = 0.25  # fraction of each frame's tokens kept
    keep_order: bool = True  # survivors keep their original spatial order
    averaging: str = "size_weighted"  # or "plain": each step averages pairs equally, as the paper's code
    metric: str = "features"  # similarity on the projected features, or the vision tower's keys

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)
        check_choice("averaging", self.averaging, AVERAGING)
        check_choice("metric", self.metric, METRICS)


@MERGERS.register("aim", config=AimMergerConfig)
class BipartiteMerger:
    def __init__(self, ratio: float = 0.25, keep_order: bool = True, averaging: str = "size_weighted",
                 metric: str = "features", name: str = "aim"):
        self.ratio, self.keep_order, self.metric_source = ratio, keep_order, metric
        self.needs = ("metric",) if metric == "keys" else ()
        self.size_weighted = averaging == "size_weighted"

    def __call__(self, features: torch.Tensor, metric=None, attention=None, carry=None) -> Merged:
        f, t, dim = features.shape
        if self.metric_source == "keys" and metric is None:
            raise ValueError("merger.metric: 'keys' needs the vision tower's keys, which this model adapter "
                             "does not provide; use merger.metric=features")
        target = kept_tokens(t, self.ratio)
        x, m = with_carry(features, carry), (features if self.metric_source == "features" else metric)
        size = torch.ones(f, t, dtype=torch.long, device=features.device)
        index = torch.arange(t, device=features.device).expand(f, t).contiguous()
        while x.shape[1] > target:
            n = x.shape[1]
            r = min(n - target, n // 2)  # at most half the tokens per step
            x, m, size, index = bipartite_merge_step(x, m, size, index, r, self.size_weighted)
        if self.keep_order:
            order = index.argsort(1)
            x = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            index = index.gather(1, order)
        return split_carry(x, index, dim, carry)
