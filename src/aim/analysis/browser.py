"""Headless Chromium for the report: install it, render a page, count what its plots drew.

    python src/aim/analysis/browser.py install               # apt-get Debian's `chromium` if it is missing
    python -m aim.analysis.browser check report.html --screenshot report.png

Debian's `chromium` package (not a browser build downloaded by a Python package: the project's machines
reach package registries only). Run as root, Chromium needs `--no-sandbox`. The page is loaded from a
file with a virtual-time budget, so its scripts (plotly) run to completion before the DOM is dumped or
the screenshot taken. Standard library only, so that .ci/run can call it before the package is installed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PACKAGE = "chromium"


class BrowserError(RuntimeError):
    """No usable Chromium; the message says why."""


def find() -> str | None:
    return next((path for path in map(shutil.which, NAMES) if path), None)


def install(log=print) -> str:
    """The Chromium binary, apt-getting Debian's package first if none is installed (root and apt needed)."""
    path = find()
    if path:
        return path
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BrowserError("chromium is not installed and cannot be (needs root and apt-get)")
    log(f"installing {PACKAGE} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", PACKAGE]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise BrowserError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    path = find()
    if not path:
        raise BrowserError(f"installed {PACKAGE} but no {' / '.join(NAMES)} on PATH")
    return path


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find()
    if binary is None:
        raise BrowserError(f"no Chromium on PATH ({', '.join(NAMES)}); `python src/aim/analysis/browser.py install`")
    with tempfile.TemporaryDirectory(prefix="aim-chromium-") as profile:
        cmd = [binary, "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        if os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BrowserError(f"chromium exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc


def render_dom(page: Path, budget_ms: int = 15000, timeout: float = 180) -> str:
    """The page's DOM after its scripts ran (`--dump-dom`)."""
    return _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", Path(page).resolve().as_uri()], timeout).stdout


def screenshot(page: Path, out: Path, width: int = 1400, height: int = 3000, budget_ms: int = 15000,
               timeout: float = 180) -> Path:
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--virtual-time-budget={budget_ms}", f"--window-size={width},{height}", f"--screenshot={out}",
          Path(page).resolve().as_uri()], timeout)
    if not out.exists() or out.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot at {out}")
    return out


class _PlotCounter(HTMLParser):
    """For each plotly plot (a div of class `js-plotly-plot`): its id, the traces it drew (`g.trace`), the
    scatter markers (`path.point`) and the lines (`path.js-line`) inside it."""

    def __init__(self):
        super().__init__()
        self.plots: list[dict] = []
        self.stack: list[tuple[str, bool]] = []  # (tag, opens a plot)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        opens = tag == "div" and "js-plotly-plot" in classes
        if opens:
            self.plots.append({"id": attrs.get("id"), "traces": 0, "points": 0, "lines": 0, "svg": 0})
        inside = opens or any(o for _, o in self.stack)
        if inside and self.plots:
            plot = self.plots[-1]
            plot["svg"] += tag == "svg"
            plot["traces"] += tag == "g" and "trace" in classes and "scatter" in classes
            plot["points"] += tag == "path" and "point" in classes
            plot["lines"] += tag == "path" and "js-line" in classes
        if tag not in ("path", "img", "br", "meta", "input", "link", "rect", "use", "image", "hr"):
            self.stack.append((tag, opens))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if self.stack and self.stack[-1][0] == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):  # tolerate unclosed tags
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break


def plots_drawn(dom: str) -> list[dict]:
    """[{"id", "traces", "points", "lines", "svg"}] for every plotly plot the page drew."""
    parser = _PlotCounter()
    parser.feed(dom)
    return parser.plots


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("install", help="apt-get Debian's chromium if it is missing")
    ck = sub.add_parser("check", help="render a page; print what each plot drew (JSON)")
    ck.add_argument("page", type=Path)
    ck.add_argument("--screenshot", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.action == "install":
            print(f"chromium: {install()}")
            return 0
        plots = plots_drawn(render_dom(args.page))
        print(json.dumps(plots, indent=1))
        if args.screenshot:
            print(f"screenshot: {screenshot(args.page, args.screenshot)}")
        return 0 if plots and all(p["points"] for p in plots) else 1
    except BrowserError as exc:
        print(f"aim.analysis.browser: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
