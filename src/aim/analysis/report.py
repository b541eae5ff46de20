"""The report of one sweep, or a comparison of several: a folder with the tidy table (Parquet, CSV), the
curves (PNG per cost, interactive HTML), the paper table (Markdown, LaTeX) and `report.html`, one
self-contained page (plotly.js and the PNGs inlined; it opens offline, from a file, anywhere) with:

1. what was collected: each sweep's command line (from sweep.json) and its jobs by state;
2. what is missing or failed: every job not done, with its state, error and overrides;
3. the curves: accuracy vs TFLOPs and vs prefill ms, one line per method, Pareto frontier, unreduced
   reference (interactive; the static PNG beside it);
4. for a trade-off search (aim.search), its Pareto set: every evaluated setting, the frontier, a table of
   the Pareto settings;
5. the paper table, with its Markdown and LaTeX source;
6. every job in one table.
"""
from __future__ import annotations

import base64
import datetime
import warnings
from html import escape
from pathlib import Path
from typing import Iterable

import pandas as pd

from aim.analysis import curves, tables
from aim.analysis.collect import STATUSES, collect, save_table, status_counts
from aim.sweep import MANIFEST
from aim.tracking.rundir import read_json

COSTS = ("tflops", "prefill_ms")
JOB_COLUMNS = ["sweep", "job", "run", "status", "label", "frames", "dataset", "score", "accuracy", "agreement", "kl",
               "num_samples", "tflops", "tflops_fastv", "prefill_ms", "roofline_prefill_ms", "visual_tokens",
               "pareto_tflops"]
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; } th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.state-done { color: #2a7a2a; } .state-failed { color: #b00020; font-weight: bold; }
.state-missing { color: #b06000; font-weight: bold; } .state-running, .state-queued { color: #1f5fa0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
code { background: #f2f2f2; padding: 0 3px; } .note { color: #555; font-size: 0.9em; }
"""


def _manifest(sweep_dir: str) -> dict | None:
    """A sweep's sweep.json (collect has read it already: None for a folder of runs without one)."""
    return read_json(Path(sweep_dir) / MANIFEST)[0]


def _png_img(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).exists():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{data}' style='max-width:100%'>"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "<td></td>"
    if isinstance(value, bool):
        return f"<td>{'yes' if value else ''}</td>"
    if isinstance(value, float):
        return f"<td class='num'>{value:.4g}</td>"
    if isinstance(value, int):
        return f"<td class='num'>{value}</td>"
    return f"<td>{escape(str(value))}</td>"


def html_table(df: pd.DataFrame, columns: list[str], state_column: str | None = "status") -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for _, row in df.iterrows():
        cls = f" class='state-{escape(str(row[state_column]))}'" if state_column and state_column in row else ""
        cells = "".join(_cell(row[c].item() if hasattr(row[c], "item") else row[c]) for c in columns)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def status_section(df: pd.DataFrame) -> str:
    counts = status_counts(df)
    lines = ["<h2 id='status'>Jobs</h2>", "<table><thead><tr><th>sweep</th><th>jobs</th>"
             + "".join(f"<th>{s}</th>" for s in STATUSES) + "</tr></thead><tbody>"]
    for sweep, c in counts.items():
        lines.append(f"<tr><td>{escape(sweep)}</td><td class='num'>{sum(c.values())}</td>"
                     + "".join(f"<td class='num state-{s}'>{c.get(s, 0)}</td>" for s in STATUSES) + "</tr>")
    lines.append("</tbody></table>")
    not_done = df[df["status"] != "done"]
    lines.append("<h2 id='not-done'>Missing, failed or not finished</h2>")
    if not_done.empty:
        lines.append(f"<p id='all-done'>All {len(df)} jobs are done.</p>")
    else:
        lines.append(f"<p>{len(not_done)} of {len(df)} jobs are not done{relaunch_advice(not_done)}.</p>")
        lines.append(html_table(not_done, ["sweep", "job", "run", "status", "method", "detail", "overrides"]))
    return "\n".join(lines)


def relaunch_advice(not_done: pd.DataFrame) -> str:
    """How to relaunch the jobs not done: a sweep's (sweep.json) are resubmitted, a run dir of its own is run
    again in its dir (W&B rows: neither, they are not here)."""
    dirs = [str(d) for d in not_done["sweep_dir"] if not str(d).startswith("wandb:")]
    in_sweep = [(Path(d) / MANIFEST).exists() for d in dirs]
    how = []
    if any(in_sweep):
        how.append("relaunch a sweep's failed and missing ones with <code>python launch/sweep.py resubmit "
                   "&lt;sweep dir&gt;</code>")
    if not all(in_sweep):
        how.append("rerun a run of its own (no sweep.json) with <code>python -m aim.run</code> there (its "
                   "<code>.hydra/overrides.yaml</code>, and <code>hydra.run.dir</code> its dir)")
    return "".join(f"; {h}" for h in how)


def curves_section(df: pd.DataFrame, pngs: dict[str, Path | None]) -> str:
    parts = ["<h2 id='curves'>Accuracy against cost</h2>",
             "<p class='note'>One line per method; dashed: the Pareto frontier over all of a plot's points "
             "(ringed); star and dotted line: the unreduced model (a vertical dotted line where no unreduced run is "
             "in the table: its analytic TFLOPs). Prefill ms are measured wall clock on the machine that ran "
             "each job.</p>"]
    interactive = curves.plotly_available()
    if interactive:
        parts.append(f"<script>{curves.plotly_js()}</script>")
    for x in COSTS:
        if interactive:
            for i, (title, fig) in enumerate(curves.plotly_figures(df, x)):
                parts.append(curves.figure_div(fig, f"curve-{x}-{i}"))
            img = _png_img(pngs.get(x), f"curves vs {x}")
            if img:
                parts.append(f"<details><summary>static image (PNG)</summary>{img}</details>")
        else:
            parts.append(_png_img(pngs.get(x), f"curves vs {x}") or f"<p>nothing to plot against {x}</p>")
        left_out = curves.unplotted(df, x)
        if left_out:
            parts.append(f"<p class='note' id='unplotted-{x}'>Not plotted against {x}: {len(left_out)} done job(s): "
                         + escape("; ".join(left_out)) + "</p>")
    return "\n".join(parts)


def search_tradeoffs(df: pd.DataFrame, out_dir: Path | None = None) -> list[tuple[str, dict, Path | None]]:
    """(sweep, trade-off, PNG) for every trade-off search in the table (its sweep.json has a `search` block;
    aim.search): the trade-off rebuilt from the sweep's results (tradeoff.json's objective kept), else the
    tradeoff.json as written; the PNG drawn into out_dir."""
    from aim.tradeoff import TRADEOFF, tradeoff

    out = []
    for sweep, rows in df.groupby("sweep", sort=True):
        sweep_dir = Path(str(rows["sweep_dir"].iloc[0]))
        manifest = _manifest(str(sweep_dir))
        if not manifest or "search" not in manifest:
            continue
        written, damaged = read_json(sweep_dir / TRADEOFF)
        if damaged:
            warnings.warn(f"aim.analysis: {sweep_dir}: {damaged}; the report rebuilds the trade-off from the jobs' "
                          f"results.json (python -m aim.search {sweep_dir} rewrites the file)", stacklevel=2)
        try:
            data = tradeoff(sweep_dir, (written or {}).get("objective"))
        except Exception:  # e.g. jobs of several models: show what the search wrote, if anything
            data = written
        if data is None:
            continue
        png = curves.tradeoff_png(data, out_dir / f"pareto_{len(out)}.png") if out_dir is not None else None
        out.append((str(sweep), data, png))
    return out


def search_section(searches: list[tuple[str, dict, Path | None]]) -> str:
    """The Pareto set of each trade-off search: every evaluated setting and the frontier, and a table of the
    Pareto settings (what budget mode chooses from)."""
    from aim.tradeoff import pareto_rows, row_columns

    if not searches:
        return ""
    parts = ["<h2 id='pareto'>Trade-off search: the Pareto set</h2>",
             "<p class='note'>Each point is one evaluated setting of the search (a trial, on the calibration subset); "
             "ringed and joined: the Pareto set, the settings no other point beats on the objective at lower or equal "
             "TFLOPs. Budget mode (<code>budget.tradeoff=&lt;sweep dir&gt;/tradeoff.json</code>) chooses from these "
             "points; <code>python -m aim.search &lt;sweep dir&gt;</code> rewrites the file.</p>"]
    interactive = curves.plotly_available()
    for i, (sweep, data, png) in enumerate(searches):
        rows = pareto_rows(data)
        limit = data.get("dataset_limit")
        parts.append(f"<h3>{escape(sweep)}</h3><p>{len(data['points'])} settings evaluated"
                     + (f" on the first {limit} questions" if limit else "")
                     + f"; {len(rows)} on the Pareto set of {escape(str(data['objective']))} (max) against TFLOPs (min). "
                     f"<code>{escape(str(Path(data.get('source') or '') / 'tradeoff.json'))}</code></p>")
        if interactive and data["points"]:
            parts.append(curves.figure_div(curves.tradeoff_figure(data), f"pareto-{i}"))
            img = _png_img(png, f"trade-off {sweep}")
            if img:
                parts.append(f"<details><summary>static image (PNG)</summary>{img}</details>")
        else:
            parts.append(_png_img(png, f"trade-off {sweep}"))
        if rows:
            parts.append(html_table(pd.DataFrame(rows), row_columns(rows), state_column=None))
    return "\n".join(parts)


def table_section(paper: pd.DataFrame) -> str:
    if paper.empty:
        return "<h2 id='table'>Paper table</h2><p>No job is done yet.</p>"
    fidelity = ("; agreement % and KL: fidelity to the unreduced model (the samples answered as it answers; "
                "KL(full || reduced) over the answer options, nats), measured without labels"
                if set(tables.FIDELITY_COLUMNS.values()) & set(paper.columns) else "")
    return ("<h2 id='table'>Paper table</h2><p class='note'>Scores in percent (the best of each benchmark in bold); "
            f"TFLOPs and ms per sample, mean over the benchmarks a method ran on{fidelity}.</p>" + tables.to_html(paper)
            + "<details><summary>Markdown</summary><pre>" + escape(tables.to_markdown(paper)) + "</pre></details>"
            + "<details><summary>LaTeX</summary><pre>" + escape(tables.to_latex(paper)) + "</pre></details>")


def render(df: pd.DataFrame, pngs: dict[str, Path | None], title: str,
           searches: list[tuple[str, dict, Path | None]] = ()) -> str:
    sources = []
    for sweep, rows in df.groupby("sweep", sort=True):
        sweep_dir = str(rows["sweep_dir"].iloc[0])
        manifest = _manifest(sweep_dir)
        command = " ".join(manifest.get("argv") or []) if manifest else ""
        when = f", created {manifest['created']}" if manifest and manifest.get("created") else ""
        sources.append(f"<li><b>{escape(sweep)}</b>: <code>{escape(sweep_dir)}</code>{escape(when)}"
                       + (f"<br><code>{escape(command)}</code>" if command else "") + "</li>")
    per_type = sorted(c for c in df.columns if c.startswith(("accuracy_by_type/", "accuracy_by_category/")))
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="note">Generated {generated} by <code>python analysis/report.py</code>.</p>
<ul>{''.join(sources)}</ul>
{status_section(df)}
{curves_section(df, pngs)}
{search_section(list(searches))}
{table_section(tables.paper_table(df))}
<h2 id="jobs">All jobs</h2>
<div style="overflow-x:auto">{html_table(df, JOB_COLUMNS + per_type)}</div>
</body></html>
"""


def build(sources: Iterable[str | Path] = (), out_dir: Path | None = None, title: str | None = None,
          df: pd.DataFrame | None = None, roofline: bool = True, query_scheduler: bool = False) -> dict[str, Path]:
    """Collect (unless `df` is given) and write everything into `out_dir`; returns the paths by name."""
    sources = [Path(s) for s in sources]
    if df is None:
        df = collect(sources, roofline=roofline, query_scheduler=query_scheduler)
    if out_dir is None:
        out_dir = (sources[0] if len(sources) == 1 else Path("outputs/reports")) / "report"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = title or "aim report: " + " vs ".join(sorted(df["sweep"].astype(str).unique()))
    paths: dict[str, Path] = {}
    paths["parquet"], paths["csv"] = save_table(df, out_dir / "results")
    pngs = {x: curves.png(df, x, out_dir / f"curves_{x}.png") for x in COSTS}
    paths.update({f"png_{x}": p for x, p in pngs.items() if p})
    if curves.plotly_available():
        paths["curves_html"] = curves.write_html(df, out_dir / "curves.html", COSTS)
    paper = tables.paper_table(df)
    (out_dir / "table.md").write_text(tables.to_markdown(paper))
    (out_dir / "table.tex").write_text(tables.to_latex(paper, caption=title, label="tab:aim-results"))
    paths["markdown"], paths["latex"] = out_dir / "table.md", out_dir / "table.tex"
    paths["report"] = out_dir / "report.html"
    searches = search_tradeoffs(df, out_dir)
    paths.update({f"png_pareto_{i}": png for i, (_, _, png) in enumerate(searches) if png})
    paths["report"].write_text(render(df, pngs, title, searches))
    return paths
