"""A sweep's jobs after launch: what is done, running, queued, failed or missing; relaunch the rest.

    python launch/sweep.py status outputs/sweeps/<time>            # one line per job, then the counts
    python launch/sweep.py status outputs/sweeps/<time> --json
    python launch/sweep.py resubmit outputs/sweeps/<time>          # failed + missing jobs, same launcher
    python launch/sweep.py resubmit outputs/sweeps/<time> -- hydra/launcher=slurm hydra.launcher.partition=long
    python launch/sweep.py sync outputs/sweeps/<time>              # `wandb sync` every offline W&B run
    python launch/sweep.py merge outputs/runs/<run>                # a sharded run's shards into its run dir
    python launch/sweep.py merge outputs/sweeps/<time>             # ... every sharded job of a sweep

A sharded job (`dataset.shards=N`) is merged by the last of its shards to finish; `merge` does the same by
hand (aim.tracking.shards.merge), and refuses, naming them, while shards lack records. It writes the run's
samples.jsonl and results.json; it does not log to W&B (the automatic merge does).

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


def merge(directory: Path) -> int:
    """Merge the run dir's shards, or those of every sharded job of a sweep dir; 1 if any could not be."""
    from aim.tracking.shards import IncompleteShards, merge as merge_shards

    if (directory / aim_sweep.MANIFEST).exists():
        runs = [directory / j["subdir"] for j in aim_sweep.read_manifest(directory)["jobs"] if j.get("shards", 1) > 1]
        if not runs:
            print(f"{directory}: no job of this sweep is sharded", file=sys.stderr)
            return 1
    else:
        runs = [directory]
    failed = 0
    for run_dir in runs:
        try:
            summary, _ = merge_shards(run_dir)
        except IncompleteShards as exc:
            print(f"merge: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"merged {run_dir}: {summary['num_samples']} samples, {summary['metric']} {summary['score']:.4f}")
    return 1 if failed else 0


def main(argv=None) -> int:
    """The command; a sweep dir that is not one, or whose sweep.json cannot be read: the reason, exit 2."""
    from aim.sweep import sweep_command

    return sweep_command("sweep.py", _main, argv)


def _main(argv=None) -> int:
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
    mg = sub.add_parser("merge", help="merge a sharded run's shards (every sharded job of a sweep dir)")
    mg.add_argument("dir", type=Path, help="a sharded run's dir, or a sweep dir")
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

    if args.action == "merge":
        return merge(args.dir)

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
