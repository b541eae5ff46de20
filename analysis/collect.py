"""Collect the results.json of every run under a directory into one table.

    python analysis/collect.py outputs/sweeps/<time> [--csv table.csv]

Columns: merger, ratio, pruner, accuracy, visual tokens, TFLOPs, prefill ms, samples, skipped, and the
accuracy per question type. Rows are sorted by merger, then ratio (largest first).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def collect(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(Path(root).rglob("results.json")):
        r = json.loads(path.read_text())
        merger_cfg, pruner_cfg = r["config"].get("merger", {}), r["config"].get("pruner", {})
        pruner_args = ",".join(f"{k}={v}" for k, v in pruner_cfg.items() if k != "name" and v is not None)
        rows.append({
            "merger": r["method"]["merger"], "ratio": merger_cfg.get("ratio", 1.0), "pruner": r["method"]["pruner"],
            "pruner_args": pruner_args,
            "accuracy": r["accuracy"], "visual_tokens": r["visual_tokens"], "tflops": r["tflops"],
            "prefill_ms": r["prefill_ms"], "samples": r["num_samples"], "skipped": r["num_skipped"],
            **{f"acc_{k}": v for k, v in r["accuracy_by_type"].items()}, "run": str(path.parent.relative_to(root)),
        })
    if not rows:
        raise SystemExit(f"no results.json under {root}")
    return pd.DataFrame(rows).sort_values(["merger", "ratio", "pruner", "pruner_args"], ascending=[True, False, True, True]).reset_index(drop=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args()
    table = collect(args.root)
    if args.csv:
        table.to_csv(args.csv, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print(table.drop(columns=["run"]).to_string(index=False))


if __name__ == "__main__":
    main()
