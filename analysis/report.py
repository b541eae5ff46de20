"""The report of a sweep (or a comparison of sweeps): one self-contained HTML page with the accuracy-efficiency
curves, the paper table and what is missing or failed; beside it the table (Parquet, CSV), the curves
(PNG, interactive HTML) and the paper table (Markdown, LaTeX).

    python -m aim.run +exp=ablation_layers -m
    python analysis/report.py outputs/sweeps/<time>                 # -> outputs/sweeps/<time>/report/report.html
    python analysis/report.py outputs/sweeps/A outputs/sweeps/B --out outputs/reports/A_vs_B
    python analysis/report.py outputs/sweeps/<time> --wandb         # also a summary run on W&B (offline)
    python analysis/report.py --wandb-source my-entity/aim --group <sweep name> --out report/   # from W&B

`--wandb` logs, for each sweep, a run in the sweep's W&B group with the table and scatter charts of accuracy
vs TFLOPs and vs prefill ms (offline unless `--wandb-mode online`; `python launch/sweep.py sync <sweep dir>`
uploads it with the jobs' runs). `--wandb-source` reads runs back from W&B through its public API (needs
network and an API key; not testable offline).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from aim.analysis.collect import collect, status_counts
from aim.analysis.report import build


def main(argv=None) -> int:
    """The command; a sweep dir that is not one, or whose sweep.json cannot be read: the reason, exit 2."""
    from aim.sweep import sweep_command

    return sweep_command("report.py", _main, argv)


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="*", type=Path, help="sweep dirs (sweep.json) or dirs holding results.json")
    ap.add_argument("--out", type=Path, help="output folder (default: <sweep dir>/report for one sweep)")
    ap.add_argument("--title")
    ap.add_argument("--scheduler", action="store_true", help="ask squeue which SLURM jobs still run")
    ap.add_argument("--wandb", action="store_true", help="log a summary run per sweep to W&B")
    ap.add_argument("--wandb-mode", default="offline", choices=["offline", "online"])
    ap.add_argument("--wandb-project", help="default: the jobs' logger.project, else 'aim'")
    ap.add_argument("--wandb-entity")
    ap.add_argument("--wandb-source", metavar="ENTITY/PROJECT", help="collect runs from W&B (online)")
    ap.add_argument("--group", help="with --wandb-source: only this W&B group")
    args = ap.parse_args(argv)
    if not args.sources and not args.wandb_source:
        ap.error("give sweep dirs, --wandb-source ENTITY/PROJECT, or both")
    if args.out is None and len(args.sources) != 1:
        ap.error("--out is needed unless there is exactly one sweep dir")
    df = collect(args.sources, query_scheduler=args.scheduler, wandb=args.wandb_source, wandb_group=args.group)
    paths = build(args.sources, args.out, args.title, df=df)
    for sweep, counts in status_counts(df).items():
        print(f"{sweep}: {sum(counts.values())} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for name, path in paths.items():
        print(f"{name}: {path}")
    if args.wandb:
        from aim.analysis.wandb_summary import log_sweep_summaries

        for run_dir in log_sweep_summaries(df, args.wandb_project, args.wandb_entity, mode=args.wandb_mode):
            print(f"wandb summary run: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
