"""The paper's table layout from one or more sweeps: method, TFLOPs, prefill ms (measured; and the roofline's),
then one column per benchmark with its score in percent, as Markdown and LaTeX.

    python analysis/tables.py outputs/sweeps/<videomme sweep> outputs/sweeps/<mlvu sweep> ...
    python analysis/tables.py outputs/sweeps/<time> --latex table.tex --markdown table.md

Prints the Markdown. One row per method and setting (its label: method and the parameters that vary), a row per
source where one ran more than once on a benchmark (never their mean); aim.analysis.tables says how rows and
columns are formed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from aim.analysis import tables
from aim.analysis.collect import collect


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", type=Path, help="sweep dirs (sweep.json) or dirs holding results.json")
    ap.add_argument("--markdown", type=Path, help="also write the Markdown here")
    ap.add_argument("--latex", type=Path, help="write the LaTeX (booktabs) here")
    ap.add_argument("--caption", default="Accuracy and efficiency.")
    args = ap.parse_args(argv)
    table = tables.paper_table(collect(args.sources))
    text = tables.to_markdown(table)
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)
    if args.latex:
        args.latex.write_text(tables.to_latex(table, caption=args.caption, label="tab:aim-results"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
