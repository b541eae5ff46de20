"""Token importance inside the LLM, from one layer's attention (paper Sec. 3.2 and the baselines).

Scores come either from attention logits [B, H, N, N] (pre-softmax, the specification) or, as the
pruning hook computes them, straight from that layer's queries and keys [B, H, N, d] (after RoPE; the
keys may keep their fewer GQA heads).

- `pagerank` (AIM): the attention matrix as a Markov chain over tokens; a uniform start, `iters` steps of
  dist @ M with M the row softmax of the causally masked logits / tau, then sqrt(mean over heads of
  dist^2). From queries and keys (`pagerank_from_qk`) three ways, the same scores: `pagerank_blockwise`
  (flash-attention style, no N x N matrix: each row's log-sum-exp, then each step a sum over blocks of
  query rows with the logits recomputed), its Triton kernel for CUDA (aim.pruning.pagerank_triton), and
  `pagerank_dense` (each head's N x N in memory: faster where it fits, e.g. on a CPU).
- `query_attention`: the head-averaged attention one query pays to every key: the last token's (FastV),
  the last instruction token's (PDrop).
- `question_attention_max` (PruneVid): the most attention any question token pays a key in any head.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from aim.tokens import QUESTION_TEXT


@contextmanager
def exact_tf32(dtype: torch.dtype):
    """Lets CUDA fp32 matmuls use TF32 tensor cores while queries and keys come from fp16/bf16: their
    mantissas (10 and 7 bits) fit TF32's 10, so the fp32 copies multiply exactly and the sums stay fp32.
    The logits are the ones fp32 CUDA-core matmuls give (measured on an H200 at 6,372 tokens: scores
    within 3e-7 of them, the product 3.6x faster). fp32 inputs keep full fp32."""
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    matmul.allow_tf32 = before or dtype in (torch.float16, torch.bfloat16)
    try:
        yield
    finally:
        matmul.allow_tf32 = before


def causal_softmax(logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    n = logits.shape[-1]
    mask = torch.ones(n, n, dtype=torch.bool, device=logits.device).triu(1)
    return torch.softmax((logits.float() / tau).masked_fill(mask, float("-inf")), dim=-1)


def pagerank(attn_logits: torch.Tensor, tau: float = 0.1, iters: int = 5) -> torch.Tensor:
    """[B, H, N, N] logits -> [B, N] importance."""
    m = causal_softmax(attn_logits, tau)  # m[q, k]: attention of query q to key k; rows sum to one
    b, h, n, _ = m.shape
    dist = torch.full((b, h, 1, n), 1.0 / n, dtype=m.dtype, device=m.device)
    for _ in range(iters):
        dist = dist @ m
    return dist.squeeze(2).pow(2).mean(1).sqrt()


def heads_per_block(batch: int, n: int, heads: int, block_mib: int) -> int:
    """How many heads' [B, N, N] fp32 attention fit in `block_mib` MiB (at least one, at most all)."""
    per_head = batch * n * n * 4
    return max(1, min(heads, block_mib * 2**20 // per_head))


def rows_per_block(batch: int, heads: int, n: int, block_mib: int) -> int:
    """How many query rows of every head's fp32 logits [B, H, rows, N] fit in `block_mib` MiB (at least
    one, at most N): the one block of logits the blockwise PageRank holds at a time."""
    return max(1, min(n, block_mib * 2**20 // (batch * heads * n * 4)))


def _grouped(q: torch.Tensor, k: torch.Tensor) -> int:
    """Queries per key head: k may hold fewer heads than q (grouped-query attention, before the repeat)."""
    h, hk = q.shape[1], k.shape[1]
    if h % hk:
        raise ValueError(f"{h} query heads cannot share {hk} key heads (grouped-query attention needs a multiple)")
    return h // hk


def pagerank_dense(
    q: torch.Tensor, k: torch.Tensor, tau: float = 0.1, iters: int = 5, block_mib: int = 1024,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """`pagerank` of the logits q k^T / sqrt(d) with each head's N x N transition matrix in memory: [B, N].
    Heads go in blocks of as many as fit in `block_mib` MiB of fp32 [B, heads, N, N] attention; at most two
    such blocks exist at once (logits, then M). Faster than `pagerank_blockwise` at small N (one logit
    pass, not `iters`), so `pagerank_from_qk` uses it on a CPU where one head fits in `block_mib`. k may hold fewer heads
    (GQA): it is repeated here. `valid` as in `pagerank_blockwise`."""
    b, h, n, d = q.shape
    k = k.repeat_interleave(_grouped(q, k), dim=1)
    chunk = heads_per_block(b, n, h, block_mib)
    total = torch.zeros(b, n, dtype=torch.float32, device=q.device)
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    if valid is not None:
        future = future | ~valid[:, None, None, :]  # [B, 1, N, N]: pad keys are never attended
    for start in range(0, h, chunk):
        qs, ks = q[:, start : start + chunk].float(), k[:, start : start + chunk].float()
        with exact_tf32(q.dtype):
            logits = qs @ ks.transpose(-1, -2)
        # in place, so at most two [B, chunk, N, N] fp32 tensors exist at once (logits, then M)
        logits.mul_(d**-0.5 / tau).masked_fill_(future, float("-inf"))
        m = torch.softmax(logits, dim=-1)
        del logits
        if valid is not None:  # a pad query's row had no keys at all (NaN): it passes nothing on
            m.masked_fill_(~valid[:, None, :, None], 0.0)
        dist = torch.full((b, m.shape[1], 1, n), 1.0 / n, dtype=m.dtype, device=q.device)
        for _ in range(iters):
            dist = dist @ m
        total += dist.squeeze(2).pow(2).sum(1)
    return (total / h).sqrt()


def pagerank_blockwise(
    q: torch.Tensor, k: torch.Tensor, tau: float = 0.1, iters: int = 5, valid: torch.Tensor | None = None,
    block_rows: int | None = None, block_mib: int = 1024,
) -> torch.Tensor:
    """AIM's PageRank importance [B, N] from queries [B, H, N, d] and keys [B, H_kv, N, d] (H_kv divides H:
    grouped-query attention needs no repeat) without any head's N x N matrix in memory, the way flash
    attention computes attention. With s_qk = q.k / (sqrt(d) tau) (tau = 0.1 by default) and
    lse_q = log sum_{k <= q} exp(s_qk), the transition matrix is M_qk = exp(s_qk - lse_q) (k <= q), and
    each of the `iters` (5) power-iteration steps dist'_k = sum_q dist_q M_qk is a sum over blocks of query
    rows, the logits of each block recomputed: peak extra memory one [B, H, rows, N] fp32 block.
    The first pass computes each row's lse and the first step together (a row's lse needs only its own
    logits). A block of rows [r0, r1) needs only keys < r1 (causal), which halves the work.
    The start is uniform (1/N), the heads combine as sqrt(mean over heads of dist_k^2) (paper Sec. 3.2).

    `block_rows`: query rows per block (None: as many as `block_mib` MiB of logits hold, `rows_per_block`).
    `valid` [B, N] (False at the pad positions of a padded batch) takes pad tokens out of the chain: no
    token attends to them and they pass nothing on, so each row ranks its tokens as it would alone."""
    b, h, n, d = q.shape
    groups = _grouped(q, k)
    hk = h // groups
    rows = block_rows or rows_per_block(b, h, n, block_mib)
    scale = d**-0.5 / tau
    positions = torch.arange(n, device=q.device)
    lse = torch.empty(b, h, n, dtype=torch.float32, device=q.device)
    # a pad query passes nothing on: its share of the chain is dropped at every step
    passes = valid[:, None, :].float() if valid is not None else None
    dist = torch.full((b, h, n), 1.0 / n, dtype=torch.float32, device=q.device)
    for step in range(iters):
        new = torch.zeros_like(dist)
        weight = dist * passes if passes is not None else dist
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            # [B, H, R, d] -> [B, H_kv, groups * R, d]: one matmul per key head, no repeated keys
            qs = q[:, :, r0:r1].float().reshape(b, hk, groups * (r1 - r0), d)
            with exact_tf32(q.dtype):
                s = qs @ k[:, :, :r1].float().transpose(-1, -2)
            s = s.view(b, h, r1 - r0, r1).mul_(scale)
            hidden = positions[None, :r1] > positions[r0:r1, None]  # [R, r1]: later keys
            if valid is not None:
                hidden = hidden | ~valid[:, None, None, :r1]  # [B, 1, R, r1]: pad keys
            s.masked_fill_(hidden, float("-inf"))
            if step == 0:  # the rows' softmax in place (no second block), and their lse for the later steps
                top = s.amax(-1, keepdim=True)
                top.masked_fill_(torch.isinf(top), 0.0)  # a row without any key (a left pad): exp(-inf) = 0, no NaN
                total = s.sub_(top).exp_().sum(-1, keepdim=True)
                s.div_(total.clamp_min(torch.finfo(s.dtype).tiny))
                lse[:, :, r0:r1] = (top + total.log()).masked_fill(total == 0, 0.0).squeeze(-1)
            else:
                s.sub_(lse[:, :, r0:r1, None]).exp_()  # M's rows r0..r1-1, keys 0..r1-1
            new[:, :, :r1] += (weight[:, :, None, r0:r1] @ s).squeeze(2)
            del s
        dist = new
    return dist.pow(2).mean(1).sqrt()


def pagerank_from_qk(
    q: torch.Tensor, k: torch.Tensor, tau: float = 0.1, iters: int = 5, block_mib: int = 1024,
    valid: torch.Tensor | None = None, backend: str = "auto",
) -> torch.Tensor:
    """`pagerank` of the logits q k^T / sqrt(d): [B, N], from queries [B, H, N, d] and keys [B, H or H_kv,
    N, d]. `backend` "auto" picks, on CUDA tensors, the Triton kernel of `pagerank_blockwise`
    (aim.pruning.pagerank_triton) where the `triton` package is installed, else `pagerank_blockwise`;
    elsewhere (a CPU) the dense code wherever one head's fp32 N x N fits in `block_mib` MiB (it computes
    the logits once instead of `iters` times: 3-6x faster than blockwise on a CPU at 300-3,000 tokens),
    else `pagerank_blockwise`. "triton", "blockwise" and "dense" force one. `block_mib` bounds the one
    block of logits of either PyTorch path (the dense one holds two blocks of whole heads)."""
    b, h, n, _ = q.shape
    if backend == "auto":
        if q.is_cuda:
            backend = "triton" if triton_available() else "blockwise"
        else:
            backend = "dense" if b * n * n * 4 <= block_mib * 2**20 else "blockwise"
    if backend == "triton":
        from aim.pruning.pagerank_triton import pagerank_triton

        return pagerank_triton(q, k, tau, iters, valid=valid)
    if backend == "blockwise":
        return pagerank_blockwise(q, k, tau, iters, valid=valid, block_mib=block_mib)
    if backend == "dense":
        return pagerank_dense(q, k, tau, iters, block_mib, valid=valid)
    raise ValueError(f"backend: one of {', '.join(PAGERANK_BACKENDS)}, got {backend!r}")


PAGERANK_BACKENDS = ("auto", "triton", "blockwise", "dense")


def triton_available() -> bool:
    """Whether the `triton` package can be imported (the GPU kernel of `pagerank_from_qk`)."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def query_attention(q: torch.Tensor, k: torch.Tensor, query: int = -1, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Head-averaged attention of query position `query` to every key (keys after it get zero): [B, N].
    `valid` [B, N] is False at pad positions, which get no attention."""
    n, d = k.shape[2], k.shape[3]
    query = query % n
    logits = (q[:, :, query : query + 1].float() @ k[:, :, : query + 1].float().transpose(-1, -2)) * d**-0.5
    if valid is not None:
        logits = logits.masked_fill(~valid[:, None, None, : query + 1], float("-inf"))
    probs = torch.softmax(logits, dim=-1).mean(1).squeeze(1)  # [B, query + 1]
    return torch.nn.functional.pad(probs, (0, n - query - 1))


def question_attention_max(q: torch.Tensor, k: torch.Tensor, roles: torch.Tensor,
                           valid: torch.Tensor | None = None) -> torch.Tensor:
    """PruneVid's question-guided score: s_j = max over heads h and question tokens t of A_h[t, j], with A_h
    the causal softmax(q k^T / sqrt(d)) of the layer (rows of the question tokens only, `roles` [B, N] ==
    QUESTION_TEXT: the prompt after the visual tokens): [B, N]. `valid` [B, N] False at pad keys."""
    b, _, n, d = q.shape
    scores = torch.zeros(b, n, dtype=torch.float32, device=q.device)
    keys = torch.arange(n, device=q.device)
    for row in range(b):
        rows = (roles[row] == QUESTION_TEXT).nonzero().flatten()
        if len(rows) == 0:
            continue
        with exact_tf32(q.dtype):
            logits = (q[row][:, rows].float() @ k[row].float().transpose(-1, -2)) * d**-0.5  # [H, Q, N]
        hidden = keys[None, :] > rows[:, None]  # causal: a question token sees the keys up to itself
        if valid is not None:
            hidden = hidden | ~valid[row][None, :]
        probs = logits.masked_fill(hidden, float("-inf")).softmax(-1)
        scores[row] = probs.amax(dim=(0, 1))
    return scores
