"""The run summary (`results.json`) computed from the per-sample records, and its console table."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

TFLOPS_SOURCE = ("fvcore: traced LLM prefill, decoder layers, 2 FLOPs per multiply-add, SDPA counted "
                 "(aim.efficiency.fvcore_count); tflops_analytic: aim.efficiency.analytic at the same counts")


def summarize(records: list[dict], method: dict, config: dict) -> dict:
    """`score` is the benchmark's headline metric, named by `metric` (the dataset config's, else plain
    accuracy): `mean_over_types` averages the per-type accuracies, so every question type weighs the
    same however many questions it has (MLVU's m-avg, MVBench's average over its tasks)."""
    done = [r for r in records if not r.get("skipped")]
    skipped = [r for r in records if r.get("skipped")]
    by_type: dict[str, list[bool]] = defaultdict(list)
    by_category: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in done:
        by_type[r.get("question_type") or "all"].append(bool(r["correct"]))
        for key, value in (r.get("categories") or {}).items():
            by_category[key][value].append(bool(r["correct"]))

    def mean(key):
        return float(np.mean([r[key] for r in done])) if done else float("nan")

    accuracy_by_type = {k: float(np.mean(v)) for k, v in sorted(by_type.items())}
    metric = (config.get("dataset") or {}).get("metric") or "accuracy"
    if metric == "accuracy":
        score = mean("correct")
    elif metric == "mean_over_types":
        score = float(np.mean(list(accuracy_by_type.values()))) if done else float("nan")
    else:
        raise ValueError(f"dataset.metric: {metric!r} is not a metric this summary computes")
    return {
        "metric": metric,
        "score": score,
        "accuracy": mean("correct"),
        "accuracy_by_type": accuracy_by_type,
        "accuracy_by_category": {
            key: {value: float(np.mean(hits)) for value, hits in sorted(values.items())}
            for key, values in sorted(by_category.items())
        },
        "num_samples": len(done),
        "num_skipped": len(skipped),
        "skipped_ids": [r["id"] for r in skipped],
        "tflops": mean("tflops"),
        "tflops_source": TFLOPS_SOURCE,
        "tflops_analytic": mean("tflops_analytic"),
        "tflops_breakdown": {  # per sample, fvcore; the LLM prefill is `tflops`
            k.removesuffix("_tflops"): mean(k)
            for k in ("vision_tower_tflops", "projector_tflops", "merge_tflops", "importance_tflops", "lm_head_tflops")
        },
        "prefill_ms": mean("prefill_ms"),
        "prefill_ms_median": float(np.median([r["prefill_ms"] for r in done])) if done else float("nan"),
        "visual_tokens": mean("visual_tokens"),
        "text_tokens": mean("text_tokens"),
        "method": method,
        "config": config,
    }


def write_results(path: Path, summary: dict) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(path)


def print_summary(summary: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"aim run: merger={summary['method']['merger']} pruner={summary['method']['pruner']}")
    for col in ("accuracy", "samples", "skipped", "visual tokens", "TFLOPs", "prefill ms"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{summary['accuracy']:.3f}", str(summary["num_samples"]), str(summary["num_skipped"]),
        f"{summary['visual_tokens']:.1f}", f"{summary['tflops']:.3e}", f"{summary['prefill_ms']:.2f}",
    )
    console = Console()
    console.print(table)
    if summary.get("metric", "accuracy") != "accuracy":
        console.print(f"{summary['metric']}: {summary['score']:.3f}")
    by_type = "  ".join(f"{k} {v:.3f}" for k, v in summary["accuracy_by_type"].items())
    console.print(f"by question type: {by_type}")
    for key, values in summary.get("accuracy_by_category", {}).items():
        console.print(f"by {key}: " + "  ".join(f"{k} {v:.3f}" for k, v in values.items()))
    parts = "  ".join(f"{k} {v:.2e}" for k, v in summary["tflops_breakdown"].items())
    console.print(f"TFLOPs per sample besides the LLM prefill: {parts}")
    console.print(f"results: {out_dir / 'results.json'}")
