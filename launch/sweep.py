"""A sweep's jobs after launch: what is done, running, queued, failed or missing; relaunch the rest.

    python launch/sweep.py status outputs/sweeps/<time>            # one line per job, then the counts
    python launch/sweep.py status outputs/sweeps/<time> --json
    python launch/sweep.py resubmit outputs/sweeps/<time>          # failed + missing jobs, same launcher
    python launch/sweep.py resubmit outputs/sweeps/<time> -- hydra/launcher=slurm hydra.launcher.partition=long
    python launch/sweep.py sync outputs/sweeps/<time>              # `wandb sync` every offline W&B run

The sweep dir's `sweep.json` (written before launch, aim.sweep) lists the expected jobs; each job's
`job.json` and `results.json` and, for SLURM jobs, `squeue` say where it is. A resubmission runs
`python -m aim.run -m` with the sweep's own overrides (its launcher and launcher settings included, then
the hydra overrides given after `--`) and `hydra.sweeper.rerun=[...]`: only those jobs are validated and
launched, with their configs from sweep.json, each in its original directory, where it resumes from its
samples.jsonl.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

from aim import sweep as aim_sweep


def print_status(rows: list[dict], sweep_dir: Path) -> None:
    width = max([len(r["subdir"]) for r in rows] + [6])
    print(f"{'job':>4}  {'state':8} {'samples':>7}  {'subdir':{width}}  detail")
    for r in rows:
        print(f"{r['num']:>4}  {r['state']:8} {r['samples']:>7}  {r['subdir']:{width}}  {r['detail'][:100]}")
    counts = Counter(r["state"] for r in rows)
    summary = ", ".join(f"{counts[s]} {s}" for s in aim_sweep.STATES if counts[s])
    print(f"{sweep_dir}: {len(rows)} jobs: {summary}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    st = sub.add_parser("status", help="state of every job of the sweep")
    st.add_argument("sweep_dir", type=Path)
    st.add_argument("--json", action="store_true", help="print the rows as JSON")
    st.add_argument("--no-scheduler", action="store_true", help="do not ask squeue (files only)")
    rs = sub.add_parser("resubmit", help="relaunch the failed and missing jobs")
    rs.add_argument("sweep_dir", type=Path)
    rs.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    rs.add_argument("--jobs", type=lambda s: [int(x) for x in s.split(",")], help="these job numbers instead")
    sy = sub.add_parser("sync", help="upload the sweep's offline W&B runs (wandb sync)")
    sy.add_argument("sweep_dir", type=Path)
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # overrides appended to the sweep's own
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    if args.action == "status":
        rows = aim_sweep.status(args.sweep_dir, query_scheduler=not args.no_scheduler)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print_status(rows, args.sweep_dir)
        return 0

    if args.action == "sync":
        runs = sorted(str(p) for p in args.sweep_dir.glob("**/wandb/offline-run-*"))
        if not runs:
            print(f"no offline W&B runs under {args.sweep_dir}", file=sys.stderr)
            return 1
        return subprocess.call(["wandb", "sync", *runs])

    manifest = aim_sweep.read_manifest(args.sweep_dir)
    job_level = [o for o in extra if not o.lstrip("+~").startswith("hydra")]
    if job_level:
        print(f"resubmit: {job_level} would change the jobs' configs; a resubmission reruns the jobs of "
              "sweep.json as they are (only hydra.* and hydra/launcher overrides may be added)", file=sys.stderr)
        return 2
    if args.jobs is not None:
        nums = args.jobs
    else:
        rows = aim_sweep.status(args.sweep_dir)
        nums = [r["num"] for r in rows if r["state"] in ("failed", "missing")]
        busy = [r["num"] for r in rows if r["state"] in ("running", "queued")]
        if busy:
            print(f"not resubmitting jobs {busy}: running or queued", file=sys.stderr)
    if not nums:
        print("nothing to resubmit: no failed or missing jobs", file=sys.stderr)
        return 0
    cmd = aim_sweep.resubmit_command(manifest, nums, extra)
    print(f"resubmitting jobs {nums}: {shlex.join(cmd)}", file=sys.stderr)
    if args.dry_run:
        return 0
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
