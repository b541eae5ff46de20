"""Tables in the paper's layout: one row per method (and setting), its TFLOPs and prefill ms, then one
column per benchmark with its headline score in percent; as Markdown and LaTeX (booktabs).

TFLOPs are real (2 per multiply-add, GQA-aware); `TFLOPs (FastV)` is the same prefill in FastV's
convention (4nd^2 + 2n^2d + 2ndm per layer), shown where the runs recorded or the records allow it.
Scores that are fractions are shown in percent; a benchmark scored in points (MME) as it is.
A method's row is keyed by its label (method and the parameters that vary between its jobs), and by
model and frames where the table holds several. A cell is one job's score, never a mean of runs: where a row
has more than one done job on a benchmark (the same method in two sweeps given to one table, or run twice in one
folder of runs), it becomes a row per source, told apart in a `source` column (the sweep, else sweep/run), and a
note names the run dirs (`sources`). Its TFLOPs and ms are the mean over the benchmarks it
ran on (they differ a little with each benchmark's prompt lengths; on one benchmark they are its own).
Fidelity to the unreduced model, where the jobs measured it (aim.eval.fidelity), follows the scores:
`agreement %` (samples answered as the unreduced model answers) and `KL` (mean KL(full || reduced) over
the answer options, nats), both the mean over the benchmarks a method ran on.
The best score of each benchmark column is bold. The Markdown and LaTeX writers take any DataFrame, so
the efficiency table (`aim.analysis.efficiency_table`) uses them too.

A row without a score in a benchmark column shows "-" there, and a note under the table names the benchmark and
why (its job is not done, or done with no sample scored); a row whose TFLOPs, ms, agreement or KL are a mean
over only some of the table's benchmarks says which (`table_notes`). The notes travel with the table
(`table.attrs["notes"]`) and every writer prints them under it.
"""
from __future__ import annotations

import math

import pandas as pd

EFFICIENCY_COLUMNS = {  # tidy-table column -> paper-table header
    "tflops": "TFLOPs",
    "tflops_fastv": "TFLOPs (FastV)",  # FastV's convention, for tables of papers that use it
    "prefill_ms": "prefill ms",
    "roofline_prefill_ms": "prefill ms (roofline)",
}
FIDELITY_COLUMNS = {"agreement": "agreement %", "kl": "KL"}  # tidy-table column -> paper-table header


def paper_table(df: pd.DataFrame,
                efficiency=("tflops", "tflops_fastv", "prefill_ms", "roofline_prefill_ms")) -> pd.DataFrame:
    """The done jobs as method rows x benchmark columns (scores in percent where they are fractions), with what
    the cells do not say on their own in `attrs["notes"]`: a method run more than once on a benchmark, a row per
    source (`sources`), and the scores and means a row lacks (`table_notes`)."""
    done = df[df["status"] == "done"]
    if done.empty:
        return pd.DataFrame(columns=["method", *[EFFICIENCY_COLUMNS[c] for c in efficiency]])
    keys = ["label"]
    for extra in ("model", "frames"):
        if done[extra].nunique(dropna=False) > 1:
            keys.append(extra)
    source, repeats = sources(df, keys)
    if repeats:  # a row per source where a method ran more than once on a benchmark
        df = df.assign(source=source)
        keys.append("source")
    done = df[df["status"] == "done"].copy()
    efficiency = [c for c in efficiency if c in done and done[c].notna().any()]
    headers = dict(EFFICIENCY_COLUMNS)
    hardware = done["roofline_hardware"].dropna().unique()
    if "roofline_prefill_ms" in efficiency and len(hardware) == 1:
        headers["roofline_prefill_ms"] = f"prefill ms (roofline, {hardware[0]})"
    # fractions (accuracy, F1, ...) in percent, as the paper prints them; a benchmark scored in points
    # (MME's perception + cognition) as it is
    fraction = done.groupby("dataset", dropna=False)["score"].transform(lambda s: s.dropna().between(0, 1).all())
    done["score_pct"] = done["score"].where(~fraction.astype(bool), 100 * done["score"])
    scores = done.pivot_table(index=keys, columns="dataset", values="score_pct", aggfunc="mean", dropna=False)
    cost = done.groupby(keys, dropna=False)[efficiency].mean()
    unreduced = done.groupby(keys, dropna=False)["unreduced"].any()
    table = cost.join(scores)
    fidelity = [c for c in FIDELITY_COLUMNS if c in done and done[c].notna().any()]
    if fidelity:
        means = done.groupby(keys, dropna=False)[fidelity].mean()
        if "agreement" in means:
            means["agreement"] = 100 * means["agreement"]
        table = table.join(means.rename(columns=FIDELITY_COLUMNS))
    table = table.join(unreduced)
    # the unreduced model first, then by cost, most expensive first (as the paper lists them)
    sort_by = efficiency[0] if efficiency else table.columns[0]
    table = table.sort_values(["unreduced", sort_by], ascending=[False, False]).drop(columns="unreduced")
    order = [key if isinstance(key, tuple) else (key,) for key in table.index]
    notes = repeats + table_notes(df, keys, order,
                                  {c: headers[c] for c in efficiency} | {c: FIDELITY_COLUMNS[c] for c in fidelity})
    table = table.reset_index().rename(columns={"label": "method", **headers})
    table.columns.name = None
    table.attrs["notes"] = notes
    return table


def sources(df: pd.DataFrame, keys: list[str]) -> tuple[pd.Series, list[str]]:
    """Where a table row (its `keys`) has more than one done job on one benchmark (the same method in two sweeps
    given to one table, or run twice in one folder of runs), the source of each of its jobs: the sweep where that
    tells them apart, else sweep/run (every other row: ''); with a note per such benchmark naming the run dirs. A
    cell is one job's score, never the mean of runs the user did not ask to average."""
    source = pd.Series("", index=df.index, dtype=object)
    notes = []
    done = df[df["status"] == "done"]
    for key, rows in done.groupby(keys, dropna=False, sort=False):
        repeated = rows[rows.duplicated("dataset", keep=False)]
        if repeated.empty:
            continue
        by = "sweep" if not rows.duplicated(["dataset", "sweep"]).any() else "run"
        of_row = df[_matching(df, keys, key)]
        source[of_row.index] = of_row["sweep"].astype(str) + ("" if by == "sweep" else "/" + of_row["run"].astype(str))
        for benchmark, jobs in repeated.groupby("dataset", dropna=False, sort=True):
            runs = ", ".join(f"{s}/{r}" for s, r in zip(jobs["sweep"], jobs["run"]))
            notes.append(f"{_row_name(keys, key)}: {len(jobs)} done jobs on {benchmark} ({runs}): a row for each {by} "
                         f"(source), not their mean")
    return source, notes


def _matching(df: pd.DataFrame, keys: list[str], key: tuple) -> pd.Series:
    """The rows of `df` (any state) whose `keys` are `key` (a missing value matches a missing value)."""
    same = pd.Series(True, index=df.index)
    for column, value in zip(keys, key):
        same &= df[column].isna() if pd.isna(value) else df[column] == value
    return same


def _row_name(keys: list[str], key: tuple) -> str:
    """A table row as a note names it: its label, then the other keys (model, frames, source) where the table has them."""
    extra = [f"{k}={v}" for k, v in zip(keys[1:], key[1:])]
    return f"{key[0]}{' (' + ', '.join(extra) + ')' if extra else ''}"


def table_notes(df: pd.DataFrame, keys: list[str], order: list[tuple], averaged: dict[str, str]) -> list[str]:
    """One line per method row (in `order`, the table's row keys as tuples of `keys`) whose cells need one: each benchmark column it
    has no score in ("-") and why (its job done with no sample scored; its job failed, running, ...; no job of
    it done), and the averaged columns (`averaged`: tidy column -> header) that are a mean over only some of the
    table's benchmarks, since a row's TFLOPs over two benchmarks and another's over three do not compare."""
    done = df[df["status"] == "done"]
    benchmarks = sorted({str(b) for b in done["dataset"]})
    by_row = {}
    for key, rows in done.groupby(keys, dropna=False, sort=False):
        parts = []
        for benchmark in benchmarks:
            on = rows[rows["dataset"].astype(str) == benchmark]
            if on["score"].notna().any():
                continue
            if len(on):
                why = "its job is done, with no sample scored"
            else:
                same = (df["status"] != "done") & (df["dataset"].astype(str) == benchmark) & _matching(df, keys, key)
                states = sorted({str(s) for s in df.loc[same, "status"]})
                why = f"its job is {' / '.join(states)}" if states else "no job of it is done"
            parts.append(f"no {benchmark} score ({why})")
        over_by_columns: dict[tuple, list[str]] = {}
        for column, header in averaged.items():
            over = tuple(sorted({str(b) for b in rows.loc[rows[column].notna(), "dataset"]}))
            if over and len(over) < len(benchmarks):
                over_by_columns.setdefault(over, []).append(header)
        for over, headers in over_by_columns.items():
            parts.append(f"its {_and(headers)} {'is' if len(headers) == 1 else 'are'} the mean over {_and(over)} only")
        if parts:
            by_row[key] = f"{_row_name(keys, key)}: " + "; ".join(parts)
    return [by_row[key] for key in order if key in by_row]


def _and(items) -> str:
    """Items as prose: a; a and b; a, b and c."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fmt(value, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if "TFLOPs" in column or "tflops" in column:
            return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
        if "ms" in column:
            return f"{value:.2f}" if abs(value) >= 0.01 else f"{value:.3g}"
        if column == FIDELITY_COLUMNS["kl"]:
            return f"{value:.3g}"
        return f"{value:.1f}"  # a score in percent
    return str(value)


def _best(table: pd.DataFrame, score_columns) -> set[tuple[int, str]]:
    best = set()
    for col in score_columns:
        values = pd.to_numeric(table[col], errors="coerce")
        if values.notna().any():
            top = values.max()
            best |= {(i, col) for i in table.index[values == top]}
    return best


def score_columns(table: pd.DataFrame) -> list[str]:
    fixed = {"method", "model", "frames", "source", *EFFICIENCY_COLUMNS.values(), *FIDELITY_COLUMNS.values()}
    return [c for c in table.columns if c not in fixed and not str(c).startswith("prefill ms (roofline")]


def to_markdown(table: pd.DataFrame, bold=None) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned; `bold`: (row index, column) cells."""
    bold = _best(table, score_columns(table)) if bold is None else bold
    cols = list(table.columns)
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in cols]
    lines = ["| " + " | ".join(str(c) for c in cols) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for i, row in table.iterrows():
        cells = []
        for c in cols:
            text = _fmt(row[c], str(c)).replace("|", "\\|")
            cells.append(f"**{text}**" if (i, c) in bold else text)
        lines.append("| " + " | ".join(cells) + " |")
    notes = table.attrs.get("notes") or []
    if notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None, bold=None) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    bold = _best(table, score_columns(table)) if bold is None else bold
    cols = list(table.columns)
    align = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) else "l" for c in cols)
    out = ["\\begin{table}[t]", "\\centering"]
    if caption:
        out.append(f"\\caption{{{latex_escape(caption)}}}")
    if label:
        out.append(f"\\label{{{label}}}")
    out += [f"\\begin{{tabular}}{{{align}}}", "\\toprule", " & ".join(latex_escape(c) for c in cols) + " \\\\",
            "\\midrule"]
    for i, row in table.iterrows():
        cells = []
        for c in cols:
            text = latex_escape(_fmt(row[c], str(c)))
            cells.append(f"\\textbf{{{text}}}" if (i, c) in bold else text)
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    notes = table.attrs.get("notes") or []
    if notes:
        out += ["\\par\\smallskip\\footnotesize", " \\\\\n".join(latex_escape(note) for note in notes)]
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def to_html(table: pd.DataFrame, bold=None) -> str:
    """The same table as an HTML <table> (escaped), for the report."""
    from html import escape

    bold = _best(table, score_columns(table)) if bold is None else bold
    cols = list(table.columns)
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = []
    for i, row in table.iterrows():
        cells = []
        for c in cols:
            text = escape(_fmt(row[c], str(c)))
            num = pd.api.types.is_numeric_dtype(table[c])
            cells.append(f"<td class='{'num' if num else 'txt'}'>{f'<b>{text}</b>' if (i, c) in bold else text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<li>{escape(note)}</li>" for note in table.attrs.get("notes") or [])
    return (f"<table class='paper'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + (f"<p class='note'>Notes:</p><ul class='note table-notes'>{notes}</ul>" if notes else ""))
