"""The paper-style efficiency table for LLaVA-OneVision-7B: LLM-prefill TFLOPs and roofline prefill time.

    python analysis/efficiency_table.py                       # the paper's setting: 32 frames, A100-40GB
    python analysis/efficiency_table.py --hardware h100_sxm --fused-attention

Rows: the unreduced model, 50% merging only, AIM (25% merging + pruning with l1=14, l2=22), and for
context FastV (k=2, keep 0.5) and PyramidDrop (its default four stages, lambda 0.5) without merging.
The paper's figures stand beside ours where it gives them (for its own setting only: 32 frames,
100 text tokens, A100-40GB, unfused attention). No weights, no GPU: `aim.efficiency.roofline` alone.
"""
from __future__ import annotations

import argparse

from aim.efficiency.roofline import HARDWARE_PROFILES, LLMShape, prefill_estimate
from aim.flops import tokens_per_layer
from aim.merging import kept_tokens
from aim.pruning.schedule import aim_schedule, fastv_schedule, pdrop_schedule

# (row, kept fraction per frame, retention schedule for L layers, paper TFLOPs, paper prefill ms)
ROWS = [
    ("unreduced", 1.0, lambda L: [1.0] * L, 99.63, 439.58),
    ("merging 50%", 0.5, lambda L: [1.0] * L, 46.48, 182.65),
    ("AIM: merging 25% + pruning l1=14, l2=22", 0.25, lambda L: aim_schedule(L, 14, 22), 14.76, 55.03),
    ("FastV k=2, keep 0.5", 1.0, lambda L: fastv_schedule(L, 2, 0.5), None, None),
    ("PDrop (default stages, lambda 0.5)", 1.0, lambda L: pdrop_schedule(L), None, None),
]


def preset(name: str):
    """(Hugging Face config, adapter class, validated model config) of a conf/model preset, no weights."""
    from hydra import compose, initialize_config_dir

    from aim.config import validate
    from aim.flops import model_configs
    from aim.run import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        model_cfg = validate(compose("config", overrides=[f"model={name}"])).model
    return (*model_configs(model_cfg), model_cfg)


def table(frames: int = 32, text_tokens: int = 100, hardware: str = "a100_40gb", fused_attention: bool = False):
    """One dict per row: visual tokens entering the LLM, TFLOPs, prefill ms (and the paper's)."""
    hf, adapter, model_cfg = preset("llava_onevision_7b")
    shape = LLMShape.from_text_config(hf.text_config)
    _, rows, cols = adapter.feature_grid(hf, model_cfg, frames)
    per_frame = rows * cols
    paper_setting = (frames, text_tokens, hardware, fused_attention) == (32, 100, "a100_40gb", False)
    rows = []
    for name, ratio, schedule, paper_tflops, paper_ms in ROWS:
        visual = frames * kept_tokens(per_frame, ratio)
        _, per_layer = tokens_per_layer(visual, text_tokens, schedule(shape.num_layers))
        est = prefill_estimate(shape, per_layer, hardware, fused_attention)
        rows.append({
            "method": name, "visual_tokens": visual, "tflops": est.tflops, "prefill_ms": est.prefill_ms,
            "paper_tflops": paper_tflops if paper_setting else None,
            "paper_ms": paper_ms if paper_setting else None,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--text-tokens", type=int, default=100)
    parser.add_argument("--hardware", default="a100_40gb", choices=list(HARDWARE_PROFILES))
    parser.add_argument("--fused-attention", action="store_true")
    args = parser.parse_args()
    rows = table(args.frames, args.text_tokens, args.hardware, args.fused_attention)
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    attention = "fused" if args.fused_attention else "unfused"
    print(f"LLaVA-OneVision-7B, {args.frames} frames, {args.text_tokens} text tokens; LLM prefill, roofline on "
          f"{args.hardware} ({attention} attention)")
    print(f"{'method':<42}{'visual':>8}{'TFLOPs':>9}{'paper':>9}{'ms':>10}{'paper':>10}{'speedup':>9}")
    full_ms = rows[0]["prefill_ms"]
    for r in rows:
        print(f"{r['method']:<42}{r['visual_tokens']:>8}{r['tflops']:>9.2f}{fmt(r['paper_tflops'], '.2f'):>9}"
              f"{r['prefill_ms']:>10.2f}{fmt(r['paper_ms'], '.2f'):>10}{full_ms / r['prefill_ms']:>8.2f}x")


if __name__ == "__main__":
    main()
