"""Accuracy-efficiency curves from the tidy table (`aim.analysis.collect`).

One plot per benchmark (and model, where several): the score (the benchmark's headline metric; accuracy
for most) against LLM-prefill TFLOPs or prefill ms, one line per method (its jobs sorted by cost), the
Pareto frontier over all methods of the plot (a dashed step line through ringed points), and the unreduced
model as a reference: its run as a star and a dotted horizontal line at its score, or, where the table
has no unreduced run, a dotted vertical line at its analytic TFLOPs (`tflops_unreduced_analytic`: the
cost is known without running it, the accuracy is not).

`png` draws with matplotlib (for papers); `plotly_figures` / `write_html` make interactive plotly charts
(hover shows each job's parameters, visual tokens and run dir; the legend toggles methods). A done job without a
score (NaN: no sample scored) or without the cost is no point (`plotted`); `unplotted` names each such job, for the
report, analysis/curves.py and the W&B summary run to say.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from aim.analysis.collect import panels, pareto_front

X_AXES = {
    "tflops": "LLM prefill TFLOPs per sample (fvcore)",
    "prefill_ms": "LLM prefill ms per sample (measured)",
    "roofline_prefill_ms": "LLM prefill ms per sample (roofline)",
}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
FRONTIER_COLOR = "#444444"
UNREDUCED_COLOR = "#000000"


def y_label(rows: pd.DataFrame) -> str:
    metrics = sorted(set(rows["metric"].dropna()))
    if metrics == ["accuracy"] or not metrics:
        return "accuracy"
    return "score (" + ", ".join(m.replace("_", " ") for m in metrics) + ")"


def series_colors(df: pd.DataFrame) -> dict[str, str]:
    """One colour per line, the same in every plot of a report."""
    names = sorted(set(df.loc[df["status"] == "done", "series"].dropna()))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def y_range(rows: pd.DataFrame) -> tuple[float, float] | None:
    """[0, 1] (a little headroom) for scores that are fractions, so that equal scores do not fill the plot."""
    scores = rows["score"].dropna()
    if len(scores) and scores.between(0, 1).all():
        return (-0.02, 1.04)
    return None


def use_log_x(values) -> bool:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    return len(v) > 1 and (v > 0).all() and v.max() / v.min() > 20


def reference(rows: pd.DataFrame, x: str) -> dict | None:
    """The unreduced model in this plot: {"kind": "run", "x", "y"} for its one run, {"kind": "analytic",
    "x"} for its analytic TFLOPs when no unreduced run is in the table, or None."""
    unreduced = rows[rows["unreduced"] & rows[x].notna()]
    if len(unreduced) == 1:
        return {"kind": "run", "x": float(unreduced[x].iloc[0]), "y": float(unreduced["score"].iloc[0])}
    if len(unreduced) == 0 and x == "tflops" and rows["tflops_unreduced_analytic"].notna().any():
        values = rows["tflops_unreduced_analytic"].dropna()
        if np.allclose(values, values.iloc[0], rtol=0.01):  # one setting (frames, model) in this plot
            return {"kind": "analytic", "x": float(values.mean())}
    return None


def lines(rows: pd.DataFrame, x: str):
    """(series name, its rows sorted by cost) for every line of one plot."""
    for name, group in plotted(rows, x).groupby("series", sort=True):
        yield name, group.sort_values([x, "score"])


def plotted(df: pd.DataFrame, x: str) -> pd.DataFrame:
    """The done jobs that are points against `x`: those with a score and an `x` (`unplotted` names the others)."""
    return df[(df["status"] == "done") & df["score"].notna() & df[x].notna()]


def unplotted(df: pd.DataFrame, x: str) -> list[str]:
    """Each done job that the plots against `x` leave out, named (sweep/run, label, benchmark) with what it lacks:
    its score (NaN: no sample scored) or its `x`. The report, analysis/curves.py and the W&B summary run
    (aim.analysis.wandb_summary) say them."""
    out = []
    for _, row in df[df["status"] == "done"].iterrows():
        lacks = [name for name in ("score", x) if pd.isna(row[name])]
        if lacks:
            out.append(f"{row['sweep']}/{row['run']} ({row['label']}, {row['dataset']}): no {' and no '.join(lacks)}")
    return out


def frontier(rows: pd.DataFrame, x: str) -> pd.DataFrame:
    """The plotted points on the Pareto frontier (recomputed, so a filtered table plots its own)."""
    return rows[pareto_front(rows[x], rows["score"])].sort_values(x)


# ------------------------------------------------------------------------------------------ matplotlib

def png(df: pd.DataFrame, x: str, path: Path, dpi: int = 150) -> Path | None:
    """All plots of the table against one cost, in one PNG; None if nothing is done yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(t, r) for t, r in panels(df) if r[x].notna().any()]
    if not groups:
        return None
    colors = series_colors(df)
    ncols = min(2, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.6 * nrows), squeeze=False)
    for ax, (title, rows) in zip(axes.flat, groups):
        for name, line in lines(rows, x):
            ax.plot(line[x], line["score"], marker="o", ms=5, lw=1.5, color=colors.get(name), label=name)
        front = frontier(rows, x)
        if len(front):
            ax.step(front[x], front["score"], where="post", ls="--", lw=1, color=FRONTIER_COLOR, label="Pareto frontier")
            ax.scatter(front[x], front["score"], s=110, facecolors="none", edgecolors=FRONTIER_COLOR, lw=1.2, zorder=3)
        ref = reference(rows, x)
        if ref and ref["kind"] == "run":
            ax.scatter([ref["x"]], [ref["y"]], marker="*", s=220, color=UNREDUCED_COLOR, zorder=4, label="unreduced")
            ax.axhline(ref["y"], ls=":", lw=1, color=UNREDUCED_COLOR)
        elif ref:
            ax.axvline(ref["x"], ls=":", lw=1, color=UNREDUCED_COLOR, label="unreduced (analytic TFLOPs, not run)")
        if use_log_x(list(rows[x]) + ([ref["x"]] if ref else [])):
            ax.set_xscale("log")
        if y_range(rows):
            ax.set_ylim(*y_range(rows))
        ax.set_xlabel(X_AXES.get(x, x))
        ax.set_ylabel(y_label(rows))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    return save_figure(fig, path, dpi)


def save_figure(fig, path, dpi: int) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; the path written."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ plotly

HOVER_COLUMNS = ["label", "run", "sweep", "frames", "visual_tokens", "tflops", "prefill_ms", "roofline_prefill_ms",
                 "num_samples"]


def _hover(rows: pd.DataFrame) -> list[str]:
    out = []
    for _, r in rows.iterrows():
        parts = [f"<b>{r['label']}</b>", f"score {r['score']:.4g}"]
        for col in HOVER_COLUMNS[1:]:
            v = r.get(col)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                parts.append(f"{col} {v:.4g}" if isinstance(v, float) else f"{col} {v}")
        out.append("<br>".join(parts))
    return out


def plotly_figures(df: pd.DataFrame, x: str) -> list[tuple[str, object]]:
    """(title, plotly Figure) per plot against one cost."""
    import plotly.graph_objects as go

    colors = series_colors(df)
    figures = []
    for title, rows in panels(df):
        if not rows[x].notna().any():
            continue
        fig = go.Figure()
        for name, line in lines(rows, x):
            fig.add_trace(go.Scatter(x=line[x], y=line["score"], mode="lines+markers", name=name,
                                     marker={"size": 8, "color": colors.get(name)}, line={"color": colors.get(name)},
                                     hovertext=_hover(line), hoverinfo="text"))
        front = frontier(rows, x)
        if len(front):
            fig.add_trace(go.Scatter(x=front[x], y=front["score"], mode="lines+markers", name="Pareto frontier",
                                     line={"shape": "hv", "dash": "dash", "color": FRONTIER_COLOR, "width": 1},
                                     marker={"size": 16, "symbol": "circle-open", "color": FRONTIER_COLOR},
                                     hovertext=_hover(front), hoverinfo="text"))
        ref = reference(rows, x)
        if ref and ref["kind"] == "run":
            fig.add_trace(go.Scatter(x=[ref["x"]], y=[ref["y"]], mode="markers", name="unreduced",
                                     marker={"size": 18, "symbol": "star", "color": UNREDUCED_COLOR},
                                     hovertext=_hover(rows[rows["unreduced"]]), hoverinfo="text"))
            fig.add_hline(y=ref["y"], line={"dash": "dot", "color": UNREDUCED_COLOR, "width": 1})
        elif ref:
            fig.add_vline(x=ref["x"], line={"dash": "dot", "color": UNREDUCED_COLOR, "width": 1},
                          annotation_text="unreduced (analytic TFLOPs, not run)", annotation_position="top left")
        log = use_log_x(list(rows[x]) + ([ref["x"]] if ref else []))
        fig.update_layout(title=f"{title}: {y_label(rows)} vs {x}", template="plotly_white", height=480,
                          xaxis={"title": X_AXES.get(x, x), "type": "log" if log else "linear",
                                 "exponentformat": "e"},  # not SI prefixes: "50µ TFLOPs" reads badly
                          yaxis={"title": y_label(rows), "range": y_range(rows)}, legend={"orientation": "v"},
                          margin={"l": 60, "r": 20, "t": 60, "b": 50})
        figures.append((f"{title} vs {x}", fig))
    return figures


def plotly_available() -> bool:
    try:
        import plotly  # noqa: F401
    except ImportError:
        return False
    return True


def plotly_js() -> str:
    """plotly.js itself, to inline into a page that must work offline."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_div(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"responsive": True})


def write_html(df: pd.DataFrame, path: Path, costs=("tflops", "prefill_ms")) -> Path:
    """Interactive curves, one self-contained page (plotly.js inlined once)."""
    from html import escape

    divs = []
    for x in costs:
        for i, (title, fig) in enumerate(plotly_figures(df, x)):
            divs.append(f"<h2>{escape(title)}</h2>\n{figure_div(fig, f'curve-{x}-{i}')}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>accuracy-efficiency curves</title>"
            f"<script>{plotly_js()}</script></head><body>\n" + "\n".join(divs) + "\n</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


# ------------------------------------------------------------------------------------------ trade-off search

def tradeoff_frame(data: dict) -> pd.DataFrame:
    """The points of a search's tradeoff.json (aim.search) as rows: series (merger + pruner), setting label,
    tflops, the objective as `value`, pareto."""
    from aim.tradeoff import knobs

    rows = []
    for p in data["points"]:
        parts = []
        for group in ("merger", "pruner"):
            shown = " ".join(f"{k}={_fmt(p[group][k])}" for k in knobs(group, p[group]))
            parts.append(p[group].get("name", "?") + (f" {shown}" if shown else ""))
        rows.append({"series": f"{p['merger'].get('name')}+{p['pruner'].get('name')}", "setting": " + ".join(parts),
                     "tflops": p.get("tflops"), "value": p.get(data["objective"]), "pareto": bool(p.get("pareto")),
                     "run": p.get("run"), "accuracy": p.get("accuracy"), "agreement": p.get("agreement")})
    df = pd.DataFrame(rows, columns=["series", "setting", "tflops", "value", "pareto", "run", "accuracy", "agreement"])
    for col in ("tflops", "value", "accuracy", "agreement"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def tradeoff_title(data: dict) -> str:
    return (f"trade-off search: {data['objective']} vs TFLOPs, {data.get('model')} on {data.get('dataset')}, "
            f"{data.get('num_frames')} frames")


def tradeoff_figure(data: dict):
    """Every evaluated setting of a search (a colour per merger + pruner), the Pareto set ringed and joined."""
    import plotly.graph_objects as go

    df = tradeoff_frame(data)
    fig = go.Figure()
    for i, (name, rows) in enumerate(df.groupby("series", sort=True)):
        hover = [f"<b>{r.setting}</b><br>{data['objective']} {r.value:.4g}<br>tflops {r.tflops:.4g}<br>run {r.run}"
                 for r in rows.itertuples()]
        fig.add_trace(go.Scatter(x=rows["tflops"], y=rows["value"], mode="markers", name=name,
                                 marker={"size": 9, "color": PALETTE[i % len(PALETTE)]}, hovertext=hover,
                                 hoverinfo="text"))
    front = df[df["pareto"]].sort_values("tflops")
    if len(front):
        fig.add_trace(go.Scatter(x=front["tflops"], y=front["value"], mode="lines+markers", name="Pareto set",
                                 line={"shape": "hv", "dash": "dash", "color": FRONTIER_COLOR, "width": 1},
                                 marker={"size": 16, "symbol": "circle-open", "color": FRONTIER_COLOR},
                                 hovertext=list(front["setting"]), hoverinfo="text"))
    log = use_log_x(list(df["tflops"]))
    y = df["value"].dropna()
    fig.update_layout(title=tradeoff_title(data), template="plotly_white", height=480,
                      xaxis={"title": X_AXES["tflops"], "type": "log" if log else "linear", "exponentformat": "e"},
                      yaxis={"title": data["objective"],
                             "range": (-0.02, 1.04) if len(y) and y.between(0, 1).all() else None},
                      margin={"l": 60, "r": 20, "t": 60, "b": 50})
    return fig


def tradeoff_png(data: dict, path: Path, dpi: int = 150) -> Path | None:
    """The same plot with matplotlib; None if no point has both coordinates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = tradeoff_frame(data).dropna(subset=["tflops", "value"])
    if df.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, (name, rows) in enumerate(df.groupby("series", sort=True)):
        ax.scatter(rows["tflops"], rows["value"], s=28, color=PALETTE[i % len(PALETTE)], label=name)
    front = df[df["pareto"]].sort_values("tflops")
    if len(front):
        ax.step(front["tflops"], front["value"], where="post", ls="--", lw=1, color=FRONTIER_COLOR, label="Pareto set")
        ax.scatter(front["tflops"], front["value"], s=110, facecolors="none", edgecolors=FRONTIER_COLOR, lw=1.2, zorder=3)
    if use_log_x(list(df["tflops"])):
        ax.set_xscale("log")
    if df["value"].between(0, 1).all():
        ax.set_ylim(-0.02, 1.04)
    ax.set_xlabel(X_AXES["tflops"])
    ax.set_ylabel(data["objective"])
    ax.set_title(tradeoff_title(data), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path, dpi)
