"""Peak memory and time of AIM's PageRank importance at the paper's size, on this machine.

    python benchmarks/importance_memory.py [--tokens 6372] [--heads 28] [--head-dim 128] [--block-mib 1024]
                                           [--backend auto|triton|blockwise|dense]

Runs `pagerank_from_qk` once on random queries and keys (fp32) and reports the process's peak resident
memory above the inputs (CPU) or torch's peak allocation (CUDA), against the estimate of what `block_mib`
bounds it to: two [heads per block, N, N] fp32 blocks (the logits, then the transition matrix) on the
dense path, one [H, rows, N] block of logits (and its exp, in place) on the blockwise one.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from aim.pruning.importance import heads_per_block, pagerank_from_qk, rows_per_block


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=6372)
    ap.add_argument("--heads", type=int, default=28)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--block-mib", type=int, default=1024)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default="auto", choices=["auto", "triton", "blockwise", "dense"])
    args = ap.parse_args()
    n, h, d = args.tokens, args.heads, args.head_dim
    q = torch.randn(1, h, n, d, device=args.device)
    k = torch.randn(1, h, n, d, device=args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = rss_mb()
    start = time.perf_counter()
    pagerank_from_qk(q, k, block_mib=args.block_mib, backend=args.backend)
    if args.device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak = rss_mb() - base
    seconds = time.perf_counter() - start
    chunk = heads_per_block(1, n, h, args.block_mib)
    dense = args.backend == "dense" or (args.backend == "auto" and args.device == "cpu" and n * n * 4 <= args.block_mib * 2**20)
    rows = rows_per_block(1, h, n, args.block_mib)
    estimate = 2 * chunk * n * n * 4 / 2**20 if dense else h * rows * n * 4 / 2**20
    blocks = f"blocks of {chunk} heads" if dense else f"blocks of {rows} query rows x {h} heads"
    result = {"tokens": n, "heads": h, "block_mib": args.block_mib, "backend": args.backend, "dense": dense,
              "heads_per_block": chunk, "rows_per_block": rows, "device": args.device,
              "peak_mb_above_inputs": peak, "block_estimate_mb": estimate, "seconds": seconds}
    print(f"PageRank importance ({args.backend}), {n} tokens, {h} heads, {blocks}: peak {peak:.0f} MiB "
          f"above the inputs (estimate {estimate:.0f} MiB), {seconds:.1f} s on {args.device}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
