"""Accuracy-efficiency curves of one or more sweeps: accuracy against TFLOPs and against prefill ms, one line
per method, the Pareto frontier marked, the unreduced model as a reference.

    python analysis/curves.py outputs/sweeps/<time> [more sweeps] --out curves/
    ->  curves/curves_tflops.png, curves/curves_prefill_ms.png (matplotlib), curves/curves.html (plotly)

See aim.analysis.curves for what is drawn; `python analysis/report.py` puts the same curves in a page with
the tables and the jobs that are missing or failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aim.analysis import curves
from aim.analysis.collect import collect


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", type=Path, help="sweep dirs (sweep.json) or dirs holding results.json")
    ap.add_argument("--out", type=Path, default=Path("."), help="output folder (default: here)")
    ap.add_argument("--cost", action="append", choices=list(curves.X_AXES),
                    help="x axis (repeatable; default: tflops and prefill_ms)")
    args = ap.parse_args(argv)
    costs = args.cost or ["tflops", "prefill_ms"]
    df = collect(args.sources)
    for x in costs:
        path = curves.png(df, x, args.out / f"curves_{x}.png")
        print(f"wrote {path}" if path else f"nothing done to plot against {x}")
        for job in curves.unplotted(df, x):
            print(f"not plotted against {x}: {job}", file=sys.stderr)
    if curves.plotly_available():
        print(f"wrote {curves.write_html(df, args.out / 'curves.html', costs)}")
    else:
        print("plotly is not installed: no interactive HTML (pip install plotly)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
