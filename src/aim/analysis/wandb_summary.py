"""A summary run on W&B for each sweep: the tidy table and scatter charts of accuracy vs TFLOPs and vs
prefill ms, so the project's dashboard shows the curve without local tools.

The run joins the sweep's jobs: same project (the jobs' `logger.project`, unless given), same group (the
sweep dir's name, as `aim.tracking.wandb_logger` groups a sweep's jobs, unless given); its job type is
`sweep-summary` (so `aim.analysis.collect.wandb_rows` skips it), its id is fixed by the sweep dir (a
later report updates the same run) and it writes under `<sweep dir>/wandb/`, where
`python launch/sweep.py sync <sweep dir>` finds it with the jobs' offline runs. Offline by default; online
without an API key or network falls back to offline (aim.tracking.wandb_logger.init_run).

Logged: `results` (a wandb.Table, one row per job, every state), `accuracy_vs_tflops` and
`accuracy_vs_prefill_ms` (wandb.plot.scatter over the done jobs with a score and that cost: a Vega panel on the
run page), and in the summary `jobs/<state>` counts, the best score of the done jobs and `unplotted/<cost>`: each
done job a chart leaves out (an empty list where none) (no score, or no such cost; aim.analysis.curves.unplotted, as the report names them),
its count also in the chart's title.

The offline run file is written by W&B's service process, which may still be flushing it for a moment after
`run.finish()` returns; it is complete when this process exits (or wandb.teardown() is called), before any
`wandb sync`.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from aim.analysis import curves
from aim.analysis.collect import SUMMARY_JOB_TYPE
from aim.tracking.rundir import read_json

TABLE_COLUMNS = ["sweep", "job", "run", "status", "method", "params", "label", "series", "frames", "model", "dataset",
                 "metric", "score", "accuracy", "tflops", "prefill_ms", "roofline_prefill_ms", "visual_tokens",
                 "num_samples", "pareto_tflops", "pareto_prefill_ms", "detail"]
SCATTER_COLUMNS = ["label", "series", "dataset", "tflops", "prefill_ms", "score", "pareto_tflops", "pareto_prefill_ms"]


def _plain(value):
    """A value W&B's table accepts: NaN -> None, numpy scalars -> Python."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _rows(df: pd.DataFrame, columns: list[str]) -> list[list]:
    frame = df[columns].copy()
    if "status" in frame:
        frame["status"] = frame["status"].astype(str)  # categorical in the tidy table
    return [[_plain(v) for v in row] for row in frame.itertuples(index=False, name=None)]


def jobs_logger_config(rows: pd.DataFrame) -> dict:
    """The `logger` section of the first readable results.json's config (project, entity, group), if any (a
    damaged one is a failed row of the table already)."""
    for sweep_dir, run in zip(rows["sweep_dir"], rows["run"]):
        results = read_json(Path(str(sweep_dir)) / str(run) / "results.json")[0]
        if results is not None:
            return (results.get("config") or {}).get("logger") or {}
    return {}


def log_sweep_summaries(df: pd.DataFrame, project: str | None = None, entity: str | None = None,
                        group: str | None = None, mode: str = "offline", init_timeout_s: float = 90.0) -> list[Path]:
    """One summary run per sweep of the table; returns each run's local directory (`.../wandb/*run-*`)."""
    import wandb

    from aim.tracking.wandb_logger import init_run, run_id

    out = []
    for sweep, rows in df.groupby("sweep", sort=True):
        sweep_dir = Path(str(rows["sweep_dir"].iloc[0]))
        if str(sweep_dir).startswith("wandb:"):
            continue  # already on W&B
        logger_cfg = jobs_logger_config(rows)
        done = rows[rows["status"] == "done"]
        counts = rows["status"].astype(str).value_counts()
        run = init_run(
            mode, sweep_dir, init_timeout_s,
            project=project or logger_cfg.get("project") or "aim", entity=entity or logger_cfg.get("entity"),
            group=group or logger_cfg.get("group") or sweep_dir.name,  # where the jobs' runs are
            job_type=SUMMARY_JOB_TYPE, name=f"{sweep} summary",
            id=run_id(sweep_dir, ":sweep-summary"), resume="allow", tags=["sweep-summary"],
            config={"sweep_dir": str(sweep_dir), "num_jobs": len(rows)},
        )
        metric = ", ".join(sorted(set(done["metric"].dropna()))) or "accuracy"
        charts, left_out = {}, {}
        for cost, what in (("tflops", "LLM prefill TFLOPs"), ("prefill_ms", "prefill ms")):
            points = wandb.Table(columns=SCATTER_COLUMNS, data=_rows(curves.plotted(rows, cost), SCATTER_COLUMNS))
            title = f"{sweep}: {metric} vs {what}"
            # written when empty too: a later report updates the same run, and must not keep an old list
            unplotted = left_out[f"unplotted/{cost}"] = curves.unplotted(rows, cost)
            if unplotted:
                title += f" ({len(unplotted)} done job(s) not plotted: see unplotted/{cost})"
            charts[f"accuracy_vs_{cost}"] = wandb.plot.scatter(points, cost, "score", title=title)  # a table each
        run.log({"results": wandb.Table(columns=TABLE_COLUMNS, data=_rows(rows, TABLE_COLUMNS)), **charts})
        run.summary.update({f"jobs/{state}": int(n) for state, n in counts.items() if n})
        run.summary.update(left_out)
        if done["score"].notna().any():
            run.summary["best_score"] = float(done["score"].max())
        run_dir = Path(run.dir).parent  # run.dir is <run dir>/files
        run.finish()
        out.append(run_dir)
    return out
