"""Merging overhead against the LLM prefill it saves, measured in one process.

    python benchmarks/merge_overhead.py [--frames 8] [--ratio 0.25] [--repeats 3]

Times AIM merging of `frames` frames of 196 tokens (LLaVA-OneVision's per-frame count) in the hidden
size of the LLM, and the prefill of a Qwen2-0.5B-shaped LLM (random weights, fp32, SDPA) on the
unreduced and on the merged sequence (+100 text tokens). Prints ms per frame, the prefill saved, and
the overhead as a percentage of that saving. Timings alternate reduced/unreduced after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2Model

from aim.merging import MERGERS

QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=1024, max_position_embeddings=32768)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--text-tokens", type=int, default=100)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = Qwen2Config(**QWEN2_05B)
    cfg._attn_implementation = "sdpa"
    llm = Qwen2Model(cfg).eval()
    d = cfg.hidden_size
    frames = torch.randn(args.frames, 196, d)
    text = torch.randn(1, args.text_tokens, d)
    merger = MERGERS.build("aim", ratio=args.ratio)

    def prefill(visual):
        seq = torch.cat([visual.reshape(1, -1, d), text], 1)
        mask = torch.ones(seq.shape[:2], dtype=torch.long)
        with torch.no_grad():
            llm(inputs_embeds=seq, attention_mask=mask, use_cache=False)

    with torch.no_grad():
        merged = merger(frames).features
        merge_ms = timed(lambda: merger(frames), max(args.repeats, 10))
    prefill(frames), prefill(merged)  # warm-up
    full, reduced = [], []
    for _ in range(args.repeats):  # alternate, so drift hits both alike
        full.append(timed(lambda: prefill(frames), 1))
        reduced.append(timed(lambda: prefill(merged), 1))
    full_ms, reduced_ms = statistics.median(full), statistics.median(reduced)
    saved = full_ms - reduced_ms
    result = {
        "frames": args.frames, "ratio": args.ratio, "tokens_per_frame": 196, "kept_per_frame": merged.shape[1],
        "merge_ms_per_frame": merge_ms / args.frames, "merge_ms": merge_ms, "prefill_ms_full": full_ms,
        "prefill_ms_merged": reduced_ms, "prefill_saved_ms": saved, "overhead_pct_of_saving": 100 * merge_ms / saved,
        "threads": torch.get_num_threads(),
    }
    print(f"merge {merge_ms / args.frames:.2f} ms/frame ({merge_ms:.1f} ms for {args.frames} frames); "
          f"prefill {full_ms:.0f} -> {reduced_ms:.0f} ms, saved {saved:.0f} ms; "
          f"overhead {result['overhead_pct_of_saving']:.2f}% of the saving")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
