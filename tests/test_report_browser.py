"""The report of a real sweep, looked at in a real browser: `python -m aim.run +exp=ablation_layers -m` on the
bundled model (one question per job; the sweep the sweep tests also use), then `python analysis/report.py`;
the page is rendered in headless Chromium (Debian's `chromium`, installed by .ci/run through
`python src/aim/analysis/browser.py install`), its plots must be drawn with a point per job, and a
screenshot is saved (beside the report; also copied into $AIM_TEST_ARTIFACTS when that is set). Without
Chromium the browser check skips, and under CI=true fails (tests/ci.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from aim.analysis import browser
from tests.ci import require_or_skip
from tests.sweep_helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(layers_sweep, tmp_path_factory, bundled_env):
    sweep = tmp_path_factory.mktemp("report") / "ablation_layers"
    shutil.copytree(layers_sweep, sweep)  # the report goes into the sweep dir; the shared sweep stays as it was
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "report.py"), str(sweep)], env=bundled_env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{sweep.name}: 9 jobs: 9 done" in proc.stdout
    return sweep / "report"


def test_the_report_of_ablation_layers_shows_the_trade_off(report):
    import pandas as pd

    df = pd.read_parquet(report / "results.parquet")
    assert len(df) == 9 and set(df["status"]) == {"done"} and set(df["method"]) == {"aim+aim"}
    tflops = df.set_index("run")["tflops"]
    # pruning earlier and harder costs less: the nine (l1, l2) pairs spread the cost
    assert tflops["l1=1_l2=2"] < tflops["l1=2_l2=4"] < tflops["l1=3_l2=5"]
    assert tflops.max() / tflops.min() > 2
    # and all of them are far below the unreduced model (its analytic TFLOPs: every visual token kept)
    assert (df["tflops_unreduced_analytic"] > 3 * df["tflops"]).all()
    assert df["pareto_tflops"].any() and (df["roofline_prefill_ms"] > 0).all()
    assert (report / "table.md").read_text().count("\n") == 2 + 9  # header, rule, a row per (l1, l2)


def test_the_report_renders_in_headless_chromium_with_its_plots_drawn(report):
    if browser.find() is None:
        require_or_skip("chromium is not installed (python src/aim/analysis/browser.py install: needs root and apt-get)")
    page = report / "report.html"
    dom = browser.render_dom(page)  # the DOM after plotly ran
    plots = {p["id"]: p for p in browser.plots_drawn(dom)}
    assert set(plots) == {"curve-tflops-0", "curve-prefill_ms-0"}  # one benchmark, two costs
    for plot in plots.values():
        assert plot["svg"] > 0 and plot["traces"] >= 2  # the method's line and the Pareto frontier
        assert plot["points"] >= 9 + 1  # a marker per job, and the frontier's rings
    assert "unreduced (analytic TFLOPs, not run)" in dom  # the reference line's label was drawn

    shot = browser.screenshot(page, report / "report.png")
    import matplotlib.image

    image = matplotlib.image.imread(shot)
    assert image.shape[0] > 1000 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05  # not a blank page
    if os.environ.get("AIM_TEST_ARTIFACTS"):
        os.makedirs(os.environ["AIM_TEST_ARTIFACTS"], exist_ok=True)
        shutil.copy(shot, os.path.join(os.environ["AIM_TEST_ARTIFACTS"], "report_ablation_layers.png"))
    print(f"screenshot: {shot}")
