"""The paper-style efficiency table for LLaVA-OneVision-7B: LLM-prefill TFLOPs and roofline prefill time.

    python analysis/efficiency_table.py                       # the paper's setting: 32 frames, A100-40GB
    python analysis/efficiency_table.py --markdown            # the same as a Markdown table
    python analysis/efficiency_table.py --hardware h100_sxm --fused-attention

Rows: the unreduced model, 50% merging only, AIM (25% merging + pruning with l1=14, l2=22), and for
context FastV (k=2, keep 0.5) and PyramidDrop (its default four stages, lambda 0.5) without merging.
Each row is `python -m aim.flops` with that method's overrides (aim.analysis.efficiency_table); the
paper's figures stand beside ours where it gives them (for its own setting only: 32 frames, 100 text
tokens, A100-40GB, unfused attention). No weights, no GPU.
"""
from __future__ import annotations

import argparse

from aim.analysis.efficiency_table import markdown, table
from aim.efficiency.roofline import HARDWARE_PROFILES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--text-tokens", type=int, default=100)
    parser.add_argument("--hardware", default="a100_40gb", choices=list(HARDWARE_PROFILES))
    parser.add_argument("--fused-attention", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    rows = table(args.frames, args.text_tokens, args.hardware, args.fused_attention)
    attention = "fused" if args.fused_attention else "unfused"
    title = (f"LLaVA-OneVision-7B, {args.frames} frames, {args.text_tokens} text tokens; LLM prefill, roofline on "
             f"{args.hardware} ({attention} attention)")
    if args.markdown:
        print(f"{title}\n\n{markdown(rows)}", end="")
        return
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    print(title)
    print(f"{'method':<42}{'visual':>8}{'TFLOPs':>9}{'paper':>9}{'ms':>10}{'paper':>10}{'speedup':>9}")
    for r in rows:
        print(f"{r['method']:<42}{r['visual_tokens']:>8}{r['tflops']:>9.2f}{fmt(r['paper_tflops'], '.2f'):>9}"
              f"{r['prefill_ms']:>10.2f}{fmt(r['paper_ms'], '.2f'):>10}{r['speedup']:>8.2f}x")


if __name__ == "__main__":
    main()
