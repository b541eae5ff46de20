"""The paper's efficiency table, regenerated from `aim.flops`: LLM-prefill TFLOPs and roofline prefill ms of
LLaVA-OneVision-7B, unreduced, with 50% merging, and with AIM (25% merging + pruning l1=14, l2=22);
FastV (k=2, keep 0.5) and PyramidDrop (its four stages, lambda 0.5) without merging for context.

Each row is the config a user would pass to `python -m aim.flops` (the same overrides), composed and
validated like a run's and estimated by `aim.efficiency.cost.flops`: no weights, no data, no GPU. The paper's
figures stand beside ours where it gives them (its own setting only: 32 frames, 100 text tokens,
A100-40GB, unfused attention).
"""
from __future__ import annotations

PAPER_SETTING = {"frames": 32, "text_tokens": 100, "hardware": "a100_40gb", "fused_attention": False}

# (row, the method's overrides, paper TFLOPs, paper prefill ms)
ROWS = [
    ("unreduced", ["merger=none", "pruner=none"], 99.63, 439.58),
    ("merging 50%", ["merger=aim", "merger.ratio=0.5", "pruner=none"], 46.48, 182.65),
    ("AIM: merging 25% + pruning l1=14, l2=22",
     ["merger=aim", "merger.ratio=0.25", "pruner=aim", "pruner.l1=14", "pruner.l2=22"], 14.76, 55.03),
    ("FastV k=2, keep 0.5", ["merger=none", "pruner=fastv", "pruner.k=2", "pruner.keep=0.5"], None, None),
    ("PDrop (default stages, lambda 0.5)", ["merger=none", "pruner=pdrop"], None, None),
]


def setting_overrides(frames: int, text_tokens: int, hardware: str, fused_attention: bool,
                      model: str = "llava_onevision_7b") -> list[str]:
    return [f"model={model}", f"dataset.num_frames={frames}", f"flops.text_tokens={text_tokens}",
            f"flops.hardware={hardware}", f"flops.fused_attention={str(fused_attention).lower()}"]


def table(frames: int = 32, text_tokens: int = 100, hardware: str = "a100_40gb", fused_attention: bool = False,
          model: str = "llava_onevision_7b") -> list[dict]:
    """One dict per row: method, the overrides, visual tokens entering the LLM, TFLOPs (real, and in FastV's
    convention: `tflops_fastv`, aim.efficiency.analytic.fastv_prefill_flops), prefill ms, speedup
    over the unreduced row, and the paper's TFLOPs / ms (None outside its setting)."""
    from hydra import compose, initialize_config_dir

    from aim.config import validate
    from aim.efficiency.cost import flops
    from aim.paths import CONF_DIR

    setting = setting_overrides(frames, text_tokens, hardware, fused_attention, model)
    paper = (model == "llava_onevision_7b"
             and dict(frames=frames, text_tokens=text_tokens, hardware=hardware,
                      fused_attention=fused_attention) == PAPER_SETTING)
    rows = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name, method, paper_tflops, paper_ms in ROWS:
            est = flops(validate(compose("config", overrides=setting + method)))
            rows.append({
                "method": name, "overrides": " ".join(method), "visual_tokens": est["visual_tokens"],
                "tflops": est["tflops"], "tflops_fastv": est["tflops_fastv"], "prefill_ms": est["prefill_ms"],
                "paper_tflops": paper_tflops if paper else None, "paper_ms": paper_ms if paper else None,
            })
    full_ms = rows[0]["prefill_ms"]
    for r in rows:
        r["speedup"] = full_ms / r["prefill_ms"]
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (the paper's columns beside ours)."""
    import pandas as pd

    from aim.analysis.tables import to_markdown

    frame = pd.DataFrame(rows)[["method", "visual_tokens", "tflops", "paper_tflops", "tflops_fastv", "prefill_ms",
                                "paper_ms", "speedup"]]
    frame = frame.rename(columns={"visual_tokens": "visual tokens", "tflops": "TFLOPs", "paper_tflops": "paper TFLOPs",
                                  "tflops_fastv": "TFLOPs (FastV convention)",
                                  "prefill_ms": "prefill ms", "paper_ms": "paper prefill ms"})
    frame["speedup"] = [f"{s:.2f}x" for s in frame["speedup"]]
    frame = frame.astype({"paper TFLOPs": float, "paper prefill ms": float})
    return to_markdown(frame, bold=set())
