"""AIM's PageRank importance as Triton kernels: the algorithm of `aim.pruning.importance.pagerank_blockwise`
(its specification and CPU path) on a GPU, no N x N matrix in memory.

With s_qk = q.k / (sqrt(d) tau) over keys k <= q (causal; pad keys excluded) and lse_q = log sum_k
exp(s_qk), the transition matrix is M_qk = exp(s_qk - lse_q). Two kernels, both recomputing the logits
tile by tile from q and k as flash attention does:
- `_lse_kernel`, one program per (query block, batch x head): each row's lse by the online softmax
  (running max and sum over key tiles up to the block's last row);
- `_step_kernel`, one program per (key block, batch x head), called once per power-iteration step
  (`iters`, 5 by default): dist'_k = sum over query tiles from the key block on (causal) of
  dist_q exp(s_qk - lse_q). Each program owns its keys, so the reduction needs no atomics.
Grouped-query attention reads key head
h // groups, so the keys are never repeated. The heads combine on the host: sqrt(mean_h dist_h^2).

Imported only where triton is installed (`importance.pagerank_from_qk` selects it for CUDA tensors).
Runs under Triton's interpreter (TRITON_INTERPRET=1, set before this module is imported) on CPU tensors,
which is how the tests check it without a GPU.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import triton
import triton.language as tl


@triton.jit
def _program(H: tl.constexpr, GROUPS: tl.constexpr, D_PAD: tl.constexpr):
    """What both kernels' programs start from: their block (grid axis 0); their batch x query head `bh` (axis
    1), that is batch `b` and query head `h`; the key head `hk` that query head reads (grouped-query attention:
    h // GROUPS); the head-dimension lanes."""
    bh = tl.program_id(1)
    h = bh % H
    return tl.program_id(0), bh, bh // H, h, h // GROUPS, tl.arange(0, D_PAD)


@triton.jit
def _query_tile(Q, b, h, rows, dims, n, sqb, sqh, sqn, D: tl.constexpr):
    """Queries `rows` of batch b, head h: [rows, D_PAD], zero past N and past D."""
    return tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqn + dims[None, :],
                   mask=(rows[:, None] < n) & (dims[None, :] < D), other=0.0)


@triton.jit
def _key_tile_t(K, b, hk, cols, dims, n, skb, skh, skn, D: tl.constexpr):
    """Keys `cols` of batch b, key head hk, transposed: [D_PAD, cols], zero past N and past D."""
    return tl.load(K + b * skb + hk * skh + cols[None, :] * skn + dims[:, None],
                   mask=(cols[None, :] < n) & (dims[:, None] < D), other=0.0)


@triton.jit
def _valid_keys(VALID, b, cols, n):
    """Whether keys `cols` of batch b are real tokens (not pads): [cols] booleans, False past N."""
    return tl.load(VALID + b * n + cols, mask=cols < n, other=0) != 0


@triton.jit
def _lse_kernel(Q, K, VALID, LSE, n, scale, sqb, sqh, sqn, skb, skh, skn,
                H: tl.constexpr, GROUPS: tl.constexpr, D: tl.constexpr, D_PAD: tl.constexpr,
                HAS_VALID: tl.constexpr, PRECISION: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_q, bh, b, h, hk, dims = _program(H, GROUPS, D_PAD)
    rows = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q = _query_tile(Q, b, h, rows, dims, n, sqb, sqh, sqn, D)
    m = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_Q], tl.float32)
    for start in range(0, (pid_q + 1) * BLOCK_Q, BLOCK_K):  # causal: no key after the block's last row
        cols = start + tl.arange(0, BLOCK_K)
        kt = _key_tile_t(K, b, hk, cols, dims, n, skb, skh, skn, D)
        s = tl.dot(q, kt, input_precision=PRECISION) * scale
        ok = (cols[None, :] <= rows[:, None]) & (cols[None, :] < n)
        if HAS_VALID:
            ok = ok & _valid_keys(VALID, b, cols, n)[None, :]
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet: nothing to rescale
        total = total * tl.exp(m - shift) + tl.sum(tl.exp(s - shift[:, None]), 1)
        m = m_new
    # a row without any key (a left pad) gets lse 0: its M row is exp(-inf) = 0, no NaN
    lse = tl.where(total > 0, m + tl.log(total), 0.0)
    tl.store(LSE + bh * n + rows, lse, mask=rows < n)


@triton.jit
def _step_kernel(Q, K, VALID, LSE, DIST, OUT, n, scale, sqb, sqh, sqn, skb, skh, skn,
                 H: tl.constexpr, GROUPS: tl.constexpr, D: tl.constexpr, D_PAD: tl.constexpr,
                 HAS_VALID: tl.constexpr, PRECISION: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_k, bh, b, h, hk, dims = _program(H, GROUPS, D_PAD)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    kt = _key_tile_t(K, b, hk, cols, dims, n, skb, skh, skn, D)
    key_ok = cols < n
    if HAS_VALID:
        key_ok = key_ok & _valid_keys(VALID, b, cols, n)
    acc = tl.zeros([BLOCK_K], tl.float32)
    first = (pid_k * BLOCK_K // BLOCK_Q) * BLOCK_Q  # causal: no query before the block's first key
    for start in range(first, n, BLOCK_Q):
        rows = start + tl.arange(0, BLOCK_Q)
        q = _query_tile(Q, b, h, rows, dims, n, sqb, sqh, sqn, D)
        lse = tl.load(LSE + bh * n + rows, mask=rows < n, other=0.0)
        weight = tl.load(DIST + bh * n + rows, mask=rows < n, other=0.0)  # 0 at pad queries (the host's)
        s = tl.dot(q, kt, input_precision=PRECISION) * scale
        ok = (cols[None, :] <= rows[:, None]) & key_ok[None, :] & (rows[:, None] < n)
        p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
        acc += tl.sum(p * weight[:, None], 0)
    tl.store(OUT + bh * n + cols, acc, mask=cols < n)


def pagerank_triton(q: torch.Tensor, k: torch.Tensor, tau: float = 0.1, iters: int = 5,
                    valid: torch.Tensor | None = None, block_q: int = 64, block_k: int = 64) -> torch.Tensor:
    """`importance.pagerank_blockwise` (same arguments; tiles of `block_q` query rows x `block_k` keys, each
    at least 16, powers of two) in Triton: [B, N] fp32. fp16/bf16 inputs multiply exactly into fp32 sums
    (tensor cores); fp32 inputs are multiplied in full fp32 ("ieee"), as the PyTorch paths do."""
    if not q.is_cuda and not triton.knobs.runtime.interpret:
        raise ValueError("pagerank_triton: the kernel runs on CUDA tensors (or, for tests, on CPU tensors under "
                         "Triton's interpreter, TRITON_INTERPRET=1); use importance.pagerank_blockwise on a CPU")
    b, h, n, d = q.shape
    hk = k.shape[1]
    if h % hk:
        raise ValueError(f"{h} query heads cannot share {hk} key heads (grouped-query attention needs a multiple)")
    q, k = q.contiguous(), k.contiguous()
    scale = d**-0.5 / tau
    lse = torch.empty(b * h * n, dtype=torch.float32, device=q.device)
    has_valid = valid is not None
    valid_i8 = valid.to(torch.int8).contiguous() if has_valid else lse  # not read without HAS_VALID
    meta = dict(H=h, GROUPS=h // hk, D=d, D_PAD=max(16, triton.next_power_of_2(d)), HAS_VALID=has_valid,
                PRECISION="ieee" if q.dtype == torch.float32 else "tf32", BLOCK_Q=block_q, BLOCK_K=block_k)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2))
    # Triton launches on the current CUDA device: make it the tensors' own (a layer on GPU 1 under a device_map
    # while GPU 0 is current would otherwise run the kernel on GPU 0 with GPU 1's pointers)
    with torch.cuda.device(q.device) if q.is_cuda else nullcontext():
        _lse_kernel[(triton.cdiv(n, block_q), b * h)](q, k, valid_i8, lse, n, scale, *strides, **meta)
        dist = torch.full((b, h, n), 1.0 / n, dtype=torch.float32, device=q.device)
        # a pad query passes nothing on: its share of the chain is dropped at every step
        passes = valid[:, None, :].to(torch.float32) if has_valid else None
        for _ in range(iters):
            weight = (dist * passes if has_valid else dist).contiguous()
            out = torch.empty_like(weight)
            _step_kernel[(triton.cdiv(n, block_k), b * h)](q, k, valid_i8, lse, weight, out, n, scale, *strides, **meta)
            dist = out
    return dist.pow(2).mean(1).sqrt()
