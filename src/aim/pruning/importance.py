"""Token importance inside the LLM, from one layer's attention (paper Sec. 3.2 and the baselines).

Scores come either from attention logits [B, H, N, N] (pre-softmax, the specification) or, as the
pruning hook computes them, straight from that layer's queries and keys [B, H, N, d] (after RoPE and the
GQA repeat), in blocks of heads bounded in memory so the N x N matrices of all heads need not exist at once.

- `pagerank` (AIM): the attention matrix as a Markov chain over tokens; a uniform start, `iters` steps of
  dist @ M with M the row softmax of the causally masked logits / tau, then sqrt(mean over heads of
  dist^2).
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


def pagerank_from_qk(
    q: torch.Tensor, k: torch.Tensor, tau: float = 0.1, iters: int = 5, block_mib: int = 1024,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """`pagerank` of the logits q k^T / sqrt(d): [B, N]. Heads go in blocks of as many as fit in
    `block_mib` MiB of fp32 [B, heads, N, N] attention; at most two such blocks exist at once (logits,
    then M). Few, large blocks matter on a GPU: at ~1.7k tokens the 28 heads of a 7B model in one block
    score in half the time of 4-head blocks (kernel launches), at 6k tokens the block size hardly matters.

    `valid` [B, N] (False at the pad positions of a padded batch) takes pad tokens out of the chain:
    no token attends to them and they pass nothing on, so each row ranks its tokens as it would alone."""
    b, h, n, d = q.shape
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
        dist = torch.full((b, m.shape[1], 1, n), 1.0 / n, device=q.device)
        for _ in range(iters):
            dist = dist @ m
        total += dist.squeeze(2).pow(2).sum(1)
    return (total / h).sqrt()


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
