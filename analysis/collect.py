"""Collect sweeps into one tidy table: one row per job (expected jobs from sweep.json, so failed and missing
jobs are rows with their state), saved as Parquet and CSV.

    python analysis/collect.py outputs/sweeps/<time>                          # print; save beside nothing
    python analysis/collect.py outputs/sweeps/A outputs/sweeps/B --out results   # results.parquet + .csv
    python analysis/collect.py --wandb my-entity/aim --group <sweep name> --out results   # from W&B (online)

A dir without sweep.json (a single run, or an older sweep) contributes every results.json under it.
Columns and their meaning: aim.analysis.collect. `--wandb` reads the runs of a W&B project through the
public API: it needs network and an API key, and cannot tell which jobs are missing (no manifest there).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from aim.analysis.collect import collect, save_table, status_counts

SHOWN = ["sweep", "job", "run", "status", "label", "frames", "dataset", "score", "tflops", "prefill_ms",
         "roofline_prefill_ms", "visual_tokens", "num_samples", "pareto_tflops"]


def main(argv=None) -> int:
    """The command; a sweep dir that is not one, or whose sweep.json cannot be read: the reason, exit 2."""
    from aim.sweep import sweep_command

    return sweep_command("collect.py", _main, argv)


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="*", type=Path, help="sweep dirs (sweep.json) or dirs holding results.json")
    ap.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also collect the runs of this W&B project (online)")
    ap.add_argument("--group", help="only this W&B group (a sweep's group is its dir's name)")
    ap.add_argument("--out", type=Path, help="write OUT.parquet and OUT.csv")
    ap.add_argument("--csv", type=Path, help="(kept for older commands) also write this CSV")
    ap.add_argument("--no-roofline", action="store_true", help="skip the roofline columns")
    ap.add_argument("--scheduler", action="store_true", help="ask squeue which SLURM jobs still run")
    args = ap.parse_args(argv)
    if not args.sources and not args.wandb:
        ap.error("give sweep dirs, --wandb ENTITY/PROJECT, or both")
    table = collect(args.sources, roofline=not args.no_roofline, query_scheduler=args.scheduler, wandb=args.wandb,
                    wandb_group=args.group)
    if args.out:
        for path in save_table(table, args.out):
            print(f"wrote {path}")
    if args.csv:
        table.to_csv(args.csv, index=False)
    with pd.option_context("display.width", 220, "display.max_columns", 40, "display.max_colwidth", 40,
                           "display.float_format", "{:.4g}".format):
        print(table[SHOWN].to_string(index=False))
    for sweep, counts in status_counts(table).items():
        print(f"{sweep}: {sum(counts.values())} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
