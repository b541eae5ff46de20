"""Reviewing results: sweeps -> one tidy table -> accuracy-efficiency curves, paper tables, a report page,
and a summary run on W&B. The command-line scripts are in `analysis/` at the repository root; the logic is
here so that they, the tests and a notebook share it.

- `collect`: one row per expected job of one or more sweep dirs (or runs found under any dir, or the runs
  of a W&B project/group): method, merger/pruner parameters, frames, model, dataset, score and accuracy
  (per type and category), TFLOPs (fvcore, analytic) and prefill ms (measured, roofline), visual tokens,
  status (done / running / queued / failed / missing). Saved as Parquet and CSV.
- `curves`: the Pareto frontier; accuracy vs TFLOPs / prefill ms, one line per method, as PNG (matplotlib)
  and interactive HTML (plotly).
- `tables`: the paper's layout (method, TFLOPs, prefill ms, one column per benchmark) as Markdown / LaTeX.
- `report`: one self-contained HTML page with the curves, the tables and the jobs that are not done.
- `wandb_summary`: a summary run per sweep on W&B (offline-capable) with the table and scatter charts.
- `efficiency_table`: the paper's efficiency table regenerated from `aim.flops`.
- `browser`: headless Chromium (install, render a page, count the points a plot drew).
"""
