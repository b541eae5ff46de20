"""Reviewing results (aim.analysis, analysis/): a sweep's jobs become one tidy table whatever state they are in;
curves, paper tables, a report page and a W&B summary run are made from it; the paper's efficiency table is
regenerated from aim.flops. Built on sweeps written by the tests themselves (sweep.json, results.json,
samples.jsonl, job.json, run_spec.json as aim.run and the aim sweeper write them), so every number is known."""
from __future__ import annotations

import json
import os
import runpy
import socket
import sys

import numpy as np
import pandas as pd
import pytest

from aim.analysis import curves, tables
from aim.analysis.collect import collect, pareto_front, save_table

REPO_ANALYSIS = os.path.join(os.path.dirname(__file__), "..", "analysis")
LAYERS = 4  # the bundled model's LLM
TOKENS_PER_FRAME = 49  # the bundled model: 7x7 after its 2x2 pooling
FRAMES = 4
TEXT_TOKENS = 9


def job_config(merger: dict, pruner: dict, dataset: str = "synthetic_video", metric: str = "accuracy") -> dict:
    """A resolved job config as results.json holds it: the bundled model, so its roofline is computable."""
    return {
        "model": {"name": "llava_onevision", "pretrained": "aim:toy_llava_ov", "dtype": "float32", "device": "cpu"},
        "dataset": {"name": dataset, "num_frames": FRAMES, "metric": metric},
        "merger": merger, "pruner": pruner, "eval": {"mode": "likelihood"},
        "logger": {"name": "none", "project": "aim-test"},
        "flops": {"text_tokens": 100, "hardware": "a100_40gb", "fused_attention": False},
    }


def write_job(out, config: dict, score: float, tflops: float, prefill_ms: float, kept_visual: int,
              by_type=None, accuracy=None) -> None:
    """results.json + samples.jsonl (two samples with their tokens per layer) + job.json, done."""
    out.mkdir(parents=True)
    per_layer = [TEXT_TOKENS + kept_visual] * LAYERS
    records = [{"id": f"q{i}", "correct": True, "tokens_per_layer": per_layer, "visual_tokens": kept_visual,
                "text_tokens": TEXT_TOKENS} for i in range(2)]
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"id": "torn')
    results = {
        "metric": config["dataset"]["metric"], "score": score,
        "accuracy": score if accuracy is None else accuracy,
        "accuracy_by_type": by_type or {"colour": score, "count": score / 2},
        "accuracy_by_category": {}, "num_samples": 2, "num_skipped": 0, "tflops": tflops, "tflops_analytic": tflops,
        "prefill_ms": prefill_ms, "prefill_ms_median": prefill_ms, "visual_tokens": float(kept_visual),
        "text_tokens": float(TEXT_TOKENS), "method": {"merger": config["merger"]["name"], "pruner": config["pruner"]["name"]},
        "config": config,
    }
    (out / "results.json").write_text(json.dumps(results))
    (out / "job.json").write_text(json.dumps({"state": "done", "host": "elsewhere", "pid": 1}))


NONE = {"name": "none"}


def aim_merger(ratio):
    return {"name": "aim", "ratio": ratio, "averaging": "size_weighted"}


def pool_merger(ratio):
    return {"name": "pool", "ratio": ratio}


def write_sweep(sweep, dataset="synthetic_video", metric="accuracy", with_trouble=True):
    """A ratio sweep: unreduced, aim and pool merging at 0.5 and 0.25 (done); with_trouble adds pool 0.125
    (failed, with its run_spec.json), aim 0.125 (missing: never started) and random 0.5 (running here)."""
    done = [  # (subdir, method, merger, score, tflops, prefill ms, visual tokens)
        ("unreduced", "none+none", NONE, 0.56, 4.0e-4, 10.0, 196),
        ("aim_r0.5", "aim+none", aim_merger(0.5), 0.56, 2.0e-4, 7.0, 96),
        ("aim_r0.25", "aim+none", aim_merger(0.25), 0.54, 1.0e-4, 6.0, 48),
        ("pool_r0.5", "pool+none", pool_merger(0.5), 0.51, 2.0e-4, 6.5, 100),
        ("pool_r0.25", "pool+none", pool_merger(0.25), 0.48, 1.0e-4, 5.0, 48),
    ]
    trouble = [("pool_r0.125", "pool+none", pool_merger(0.125)), ("aim_r0.125", "aim+none", aim_merger(0.125)),
               ("random_r0.5", "random+none", {"name": "random", "ratio": 0.5})]
    jobs = []
    for num, (subdir, method, merger, *_rest) in enumerate(done + (trouble if with_trouble else [])):
        jobs.append({"num": num, "overrides": [f"merger={merger['name']}", f"merger.ratio={merger.get('ratio', 1.0)}"],
                     "subdir": subdir, "merger": merger["name"], "pruner": "none", "method": method})
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({
        "sweep_dir": str(sweep), "created": "2026-01-01T00:00:00", "argv": ["aim.run", "-m", "+exp=test"],
        "task_overrides": ["+exp=test"], "hydra_overrides": [], "launcher": "local", "num_jobs": len(jobs), "jobs": jobs}))
    for subdir, _method, merger, score, tflops, ms, visual in done:
        write_job(sweep / subdir, job_config(merger, NONE, dataset, metric), score, tflops, ms, visual,
                  accuracy=score + 0.01 if metric != "accuracy" else None)
    if with_trouble:
        failed = sweep / "pool_r0.125"
        failed.mkdir()
        (failed / "run_spec.json").write_text(json.dumps(job_config(pool_merger(0.125), NONE, dataset, metric)))
        (failed / "job.json").write_text(json.dumps({"state": "failed", "error": "RuntimeError: CUDA out of memory"}))
        running = sweep / "random_r0.5"
        running.mkdir()
        (running / "run_spec.json").write_text(json.dumps(job_config({"name": "random", "ratio": 0.5}, NONE, dataset)))
        (running / "job.json").write_text(json.dumps({"state": "running", "host": socket.gethostname(),
                                                      "pid": os.getpid()}))  # this process: alive
        (running / "results.json").write_text("{}")  # a stale partial file does not make it done
    return sweep


@pytest.fixture
def sweep_a(tmp_path):
    return write_sweep(tmp_path / "video" / "sweep")


@pytest.fixture
def sweep_b(tmp_path):
    return write_sweep(tmp_path / "mvb" / "sweep", dataset="mvbench", metric="mean_over_types", with_trouble=False)


def by_run(df):
    return {row["run"]: row for _, row in df.iterrows()}


# ------------------------------------------------------------------------------------------ collect

def test_collect_has_one_row_per_expected_job_in_every_state(sweep_a):
    df = collect([sweep_a])
    rows = by_run(df)
    assert len(df) == 8  # every job of sweep.json, not only those with results
    assert {run: row["status"] for run, row in rows.items()} == {
        "unreduced": "done", "aim_r0.5": "done", "aim_r0.25": "done", "pool_r0.5": "done", "pool_r0.25": "done",
        "pool_r0.125": "failed", "aim_r0.125": "missing", "random_r0.5": "running"}
    failed, missing, running = rows["pool_r0.125"], rows["aim_r0.125"], rows["random_r0.5"]
    assert "CUDA out of memory" in failed["detail"]
    assert failed["merger.ratio"] == 0.125 and failed["frames"] == FRAMES  # from its run_spec.json
    assert np.isnan(failed["score"]) and np.isnan(failed["tflops"])
    assert missing["method"] == "aim+none" and "merger.ratio=0.125" in missing["overrides"]
    assert np.isnan(missing["score"]) and np.isnan(running["score"])  # a partial results.json is no result

    aim = rows["aim_r0.25"]
    assert (aim["method"], aim["merger"], aim["pruner"], aim["merger.ratio"]) == ("aim+none", "aim", "none", 0.25)
    assert (aim["model"], aim["dataset"], aim["frames"], aim["eval_mode"]) == ("aim:toy_llava_ov", "synthetic_video", 4, "likelihood")
    assert (aim["score"], aim["tflops"], aim["prefill_ms"], aim["visual_tokens"]) == (0.54, 1.0e-4, 6.0, 48)
    assert aim["accuracy_by_type/colour"] == 0.54 and aim["accuracy_by_type/count"] == 0.27
    assert aim["params"] == "ratio=0.25" and aim["label"] == "aim+none ratio=0.25"
    assert rows["unreduced"]["unreduced"] and not aim["unreduced"]


def test_roofline_columns_are_the_roofline_at_each_jobs_tokens_per_layer(sweep_a):
    from aim.efficiency.analytic import llm_prefill_flops
    from aim.efficiency.roofline import LLMShape, prefill_estimate
    from aim.models.base import resolve_pretrained
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(resolve_pretrained("aim:toy_llava_ov"))
    shape = LLMShape.from_text_config(hf.text_config)
    rows = by_run(collect([sweep_a]))
    for run, visual in (("unreduced", 196), ("aim_r0.25", 48)):
        est = prefill_estimate(shape, [TEXT_TOKENS + visual] * LAYERS, "a100_40gb")
        assert rows[run]["roofline_prefill_ms"] == pytest.approx(est.prefill_ms)
        assert rows[run]["roofline_tflops"] == pytest.approx(est.tflops)
        assert rows[run]["roofline_hardware"] == "a100_40gb"
        # the unreduced prefill's analytic cost is known for every job, reduced or not
        full = llm_prefill_flops(hf.text_config, [TEXT_TOKENS + FRAMES * TOKENS_PER_FRAME] * LAYERS) / 1e12
        assert rows[run]["tflops_unreduced_analytic"] == pytest.approx(full)
        # FastV's convention by hand, 4nd^2 + 2n^2d + 2ndm per layer, at the job's and the unreduced counts
        d, m = hf.text_config.hidden_size, hf.text_config.intermediate_size
        for n, column in ((TEXT_TOKENS + visual, "tflops_fastv"),
                          (TEXT_TOKENS + FRAMES * TOKENS_PER_FRAME, "tflops_unreduced_fastv")):
            assert rows[run][column] == pytest.approx(LAYERS * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m) / 1e12)
    assert rows["aim_r0.25"]["roofline_prefill_ms"] < rows["unreduced"]["roofline_prefill_ms"]


def test_collect_takes_two_sweeps_at_once_and_tells_same_named_dirs_apart(sweep_a, sweep_b):
    df = collect([sweep_a, sweep_b])
    assert len(df) == 8 + 5
    assert set(df["sweep"]) == {"video/sweep", "mvb/sweep"}  # both dirs are called `sweep`
    b = df[df["sweep"] == "mvb/sweep"]
    assert set(b["status"]) == {"done"} and set(b["dataset"]) == {"mvbench"}
    # MVBench's headline metric is the mean over its tasks: `score`, not plain accuracy
    assert set(b["metric"]) == {"mean_over_types"}
    assert (b["accuracy"] - b["score"]).round(6).eq(0.01).all()
    # one method, two sweeps, two benchmarks: a line per benchmark plot, so no sweep suffix is needed
    assert set(b["series"]) == {"none+none", "aim+none", "pool+none"}


def test_a_method_from_two_sweeps_on_one_benchmark_gets_a_line_per_sweep(tmp_path):
    a, b = write_sweep(tmp_path / "a", with_trouble=False), write_sweep(tmp_path / "b", with_trouble=False)
    df = collect([a, b])
    assert {"aim+none (a)", "aim+none (b)"} <= set(df["series"])


def test_the_table_saves_as_parquet_and_csv(sweep_a, tmp_path):
    df = collect([sweep_a])
    parquet, csv = save_table(df, tmp_path / "out" / "results")
    for back in (pd.read_parquet(parquet), pd.read_csv(csv)):
        assert list(back.columns) == list(df.columns)
        assert list(back["status"].astype(str)) == list(df["status"].astype(str))
        assert back["score"].tolist() == pytest.approx(df["score"].tolist(), nan_ok=True)


def test_a_dir_without_sweep_json_contributes_every_results_json_as_done(tmp_path):
    root = tmp_path / "old_sweep"
    write_job(root / "x", job_config(aim_merger(0.5), NONE), 0.5, 2e-4, 7.0, 96)
    write_job(root / "y", job_config(NONE, NONE), 0.6, 4e-4, 9.0, 196)
    df = collect([root])
    assert list(df["run"]) == ["x", "y"] and set(df["status"]) == {"done"}
    assert list(df["method"]) == ["aim+none", "none+none"]


def test_collect_from_wandb_maps_runs_through_the_public_api_shape(sweep_a):
    """Offline here: a stand-in for wandb.Api() with the attributes the public API's runs have. The real
    API needs network and a key; this checks the mapping, not W&B."""
    from aim.tracking.wandb_logger import flat_summary

    results = json.loads((sweep_a / "aim_r0.25" / "results.json").read_text())

    class Run:
        def __init__(self, name, state, job_type=None):
            self.name, self.id, self.state, self.group, self.job_type = name, name + "-id", state, "sweep", job_type
            self.summary = flat_summary(results) if state == "finished" else {}
            self.config = {k: {"value": v, "desc": None} for k, v in results["config"].items()}

    class Api:
        def runs(self, path, filters=None):
            assert path == "ent/aim" and filters == {"group": "sweep"}
            return [Run("aim_r0.25", "finished"), Run("pool_r0.125", "crashed"), Run("sweep summary", "finished", "sweep-summary")]

    df = collect(wandb="ent/aim", wandb_group="sweep", api=Api())
    rows = by_run(df)
    assert set(rows) == {"aim_r0.25", "pool_r0.125"}  # the sweep's summary run is not a job
    assert rows["aim_r0.25"]["status"] == "done" and rows["pool_r0.125"]["status"] == "failed"
    assert rows["aim_r0.25"]["score"] == 0.54 and rows["aim_r0.25"]["accuracy_by_type/count"] == 0.27
    assert rows["aim_r0.25"]["merger.ratio"] == 0.25 and rows["aim_r0.25"]["frames"] == FRAMES
    assert np.isnan(rows["pool_r0.125"]["score"])


# ------------------------------------------------------------------------------------------ Pareto, curves

def test_pareto_front_keeps_the_points_nothing_cheaper_beats():
    x = [1.0, 1.0, 2.0, 2.0, 3.0, 4.0, np.nan, 0.5]
    y = [0.50, 0.40, 0.60, 0.60, 0.55, 0.70, 0.99, np.nan]
    assert pareto_front(x, y).tolist() == [True, False, True, False, False, True, False, False]


def test_the_frontier_in_the_table_is_per_benchmark_and_cost(sweep_a, sweep_b):
    df = collect([sweep_a, sweep_b])
    a = df[df["sweep"] == "video/sweep"]
    assert set(a.loc[a["pareto_tflops"], "run"]) == {"aim_r0.25", "aim_r0.5"}  # unreduced: no better than aim 0.5
    assert set(a.loc[a["pareto_prefill_ms"], "run"]) == {"pool_r0.25", "aim_r0.25", "aim_r0.5"}
    assert not df.loc[df["status"] != "done", ["pareto_tflops", "pareto_prefill_ms"]].any().any()
    b = df[df["sweep"] == "mvb/sweep"]
    assert b["pareto_tflops"].sum() == 2  # its own frontier, not sweep A's


def test_plotly_curves_have_a_line_per_method_the_frontier_and_the_unreduced_star(sweep_a):
    df = collect([sweep_a])
    (title, fig), = curves.plotly_figures(df, "tflops")
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"none+none", "aim+none", "pool+none", "Pareto frontier", "unreduced"}
    assert list(traces["aim+none"].x) == [1.0e-4, 2.0e-4] and list(traces["aim+none"].y) == [0.54, 0.56]
    assert list(traces["Pareto frontier"].x) == [1.0e-4, 2.0e-4] and traces["Pareto frontier"].line.shape == "hv"
    assert (list(traces["unreduced"].x), traces["unreduced"].marker.symbol) == ([4.0e-4], "star")
    assert [s.y0 for s in fig.layout.shapes] == [0.56]  # the dotted line at the unreduced score
    assert "synthetic_video" in title
    (_, fig_ms), = curves.plotly_figures(df, "prefill_ms")
    assert {t.name: list(t.x) for t in fig_ms.data}["pool+none"] == [5.0, 6.5]


def test_without_an_unreduced_run_its_analytic_tflops_are_the_reference(sweep_a):
    df = collect([sweep_a])
    df = df[~df["unreduced"]]
    (_, fig), = curves.plotly_figures(df, "tflops")
    assert "unreduced" not in {t.name for t in fig.data}
    (line,) = fig.layout.shapes
    assert line.x0 == pytest.approx(df["tflops_unreduced_analytic"].iloc[0])
    assert "analytic" in fig.layout.annotations[0].text


def test_png_curves_are_drawn(sweep_a, sweep_b, tmp_path):
    import matplotlib.image

    df = collect([sweep_a, sweep_b])
    path = curves.png(df, "tflops", tmp_path / "c.png")
    image = matplotlib.image.imread(path)
    assert image.shape[1] > 2 * image.shape[0] * 0.9  # two benchmarks side by side
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert curves.png(df[df["status"] != "done"], "tflops", tmp_path / "none.png") is None


# ------------------------------------------------------------------------------------------ tables

def test_paper_table_has_a_row_per_method_and_a_column_per_benchmark(sweep_a, sweep_b):
    table = tables.paper_table(collect([sweep_a, sweep_b]))
    assert list(table.columns) == ["method", "TFLOPs", "TFLOPs (FastV)", "prefill ms",
                                   "prefill ms (roofline, a100_40gb)", "mvbench", "synthetic_video"]
    assert table["method"].iloc[0] == "none+none"  # the unreduced model first, then by cost
    row = table.set_index("method").loc["aim+none ratio=0.25"]
    assert row["synthetic_video"] == pytest.approx(54.0) and row["mvbench"] == pytest.approx(54.0)
    assert row["TFLOPs"] == pytest.approx(1.0e-4)
    assert table["TFLOPs"].is_monotonic_decreasing  # the most expensive first
    assert table["TFLOPs (FastV)"].gt(0).all()  # from each job's tokens per layer (test_roofline_columns_...)

    md = tables.to_markdown(table).splitlines()
    assert md[0] == ("| method | TFLOPs | TFLOPs (FastV) | prefill ms | prefill ms (roofline, a100_40gb) | mvbench "
                     "| synthetic_video |")
    assert md[1] == "|---|---:|---:|---:|---:|---:|---:|"
    assert md[2].startswith("| none+none | 0.0004 |") and md[2].endswith("| **56.0** | **56.0** |")
    assert len(md) == 2 + 5

    tex = tables.to_latex(table, caption="Results (25% merging)", label="tab:r")
    assert "\\begin{tabular}{lrrrrrr}" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert "synthetic\\_video" in tex and "a100\\_40gb" in tex and "Results (25\\% merging)" in tex
    assert "none+none & 0.0004 & " in tex and "\\textbf{56.0}" in tex


def test_paper_table_shows_fractions_in_percent_and_points_as_they_are(tmp_path):
    root = tmp_path / "runs"
    write_job(root / "acc", job_config(NONE, NONE, "synthetic_video"), 0.5625, 4e-4, 9.0, 196)
    write_job(root / "mme", job_config(NONE, NONE, "mme", "mme_score"), 1502.5, 4e-4, 9.0, 196, accuracy=0.7)
    table = tables.paper_table(collect([root], roofline=False))
    assert table[["synthetic_video", "mme"]].iloc[0].tolist() == [56.25, 1502.5]


def test_fidelity_sits_beside_accuracy_in_the_table_the_paper_table_and_the_report(tmp_path):
    root = tmp_path / "runs"
    for name, merger, score, tflops, visual, agreement, kl in (("full", NONE, 0.56, 4e-4, 196, 1.0, 0.0),
                                                               ("aim", aim_merger(0.25), 0.54, 1e-4, 48, 0.75, 0.0794)):
        write_job(root / name, job_config(merger, NONE), score, tflops, 9.0, visual)
        path = root / name / "results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "agreement": agreement, "kl": kl}))
    df = collect([root], roofline=False)
    columns = list(df.columns)
    assert columns[columns.index("accuracy") + 1:columns.index("accuracy") + 3] == ["agreement", "kl"]
    rows = {row["merger"]: row for _, row in df.iterrows()}
    assert (rows["none"]["agreement"], rows["none"]["kl"]) == (1.0, 0.0)
    assert rows["aim"]["agreement"] == 0.75 and rows["aim"]["kl"] == pytest.approx(0.0794)

    table = tables.paper_table(df)
    assert list(table.columns) == ["method", "TFLOPs", "prefill ms", "synthetic_video", "agreement %", "KL"]
    md = tables.to_markdown(table).splitlines()
    assert md[2] == "| none+none | 0.0004 | 9.00 | **56.0** | 100.0 | 0 |"  # fidelity is not a score to bold
    assert md[3] == "| aim+none | 0.0001 | 9.00 | 54.0 | 75.0 | 0.0794 |"

    from aim.analysis import report

    page = report.build(df=df, out_dir=tmp_path / "report")["report"].read_text()
    assert "<th>agreement %</th><th>KL</th>" in page  # the paper table
    assert "<th>accuracy</th><th>agreement</th><th>kl</th>" in page  # every job


def test_a_benchmark_without_a_score_is_marked_and_named_and_the_curves_name_a_job_they_leave_out(tmp_path):
    """A method without a score on one benchmark (its job failed; done with no sample scored) showed a bare "-"
    there, and its TFLOPs and ms, the mean over its other benchmarks only, sat beside rows averaged over every
    benchmark without a word; the curves dropped the done job with a NaN score silently."""
    from aim.analysis import report

    video = write_sweep(tmp_path / "video" / "sweep", with_trouble=False)
    mvb = write_sweep(tmp_path / "mvb" / "sweep", dataset="mvbench", metric="mean_over_types", with_trouble=False)
    failed = mvb / "aim_r0.25"
    (failed / "run_spec.json").write_text(json.dumps(json.loads((failed / "results.json").read_text())["config"]))
    (failed / "results.json").unlink()
    (failed / "job.json").write_text(json.dumps({"state": "failed", "error": "RuntimeError: CUDA out of memory"}))
    unscored = mvb / "pool_r0.5" / "results.json"
    unscored.write_text(json.dumps({**json.loads(unscored.read_text()), "score": float("nan")}))
    df = collect([video, mvb], roofline=False)

    table = tables.paper_table(df)
    rows = table.set_index("method")
    assert np.isnan(rows.loc["aim+none ratio=0.25", "mvbench"]) and np.isnan(rows.loc["pool+none ratio=0.5", "mvbench"])
    assert rows.loc["aim+none ratio=0.25", "TFLOPs"] == pytest.approx(1e-4)  # its synthetic_video job's alone
    notes = ["pool+none ratio=0.5: no mvbench score (its job is done, with no sample scored)",
             "aim+none ratio=0.25: no mvbench score (its job is failed); its TFLOPs and prefill ms are the mean over "
             "synthetic_video only"]
    assert table.attrs["notes"] == notes  # in the table's row order
    md = tables.to_markdown(table).splitlines()
    assert md[2 + 5:] == ["", "Notes:"] + [f"- {note}" for note in notes]
    assert next(line for line in md if line.startswith("| aim+none ratio=0.25 |")).endswith("| - | 54.0 |")
    assert "its TFLOPs and prefill ms are the mean over synthetic\\_video only\n\\end{table}" in tables.to_latex(table)
    assert "<li>aim+none ratio=0.25: no mvbench score (its job is failed)" in tables.to_html(table)
    assert "Notes:" not in tables.to_markdown(tables.paper_table(collect([video], roofline=False)))  # nothing missing

    left_out = "mvb/sweep/pool_r0.5 (pool+none ratio=0.5, mvbench): no score"
    assert curves.unplotted(df, "tflops") == curves.unplotted(df, "prefill_ms") == [left_out]
    assert f"Not plotted against tflops: 1 done job(s): {left_out}</p>" in report.curves_section(df, {})


def test_a_method_run_twice_on_a_benchmark_is_a_row_per_source_not_their_mean(sweep_a, tmp_path):
    """The same method in two sweeps given to one table, or run twice in one folder of runs, was averaged into one
    cell without a word (54.0 and 50.0 showed as 52.0, a score no run gave). Each source is a row of its own,
    told apart in a `source` column, and a note names the run dirs."""
    rerun = tmp_path / "rerun"
    write_job(rerun / "aim_r0.25", job_config(aim_merger(0.25), NONE), 0.50, 1.0e-4, 6.0, 48)
    table = tables.paper_table(collect([sweep_a, rerun], roofline=False))
    assert list(table.columns) == ["method", "source", "TFLOPs", "prefill ms", "synthetic_video"]
    twice = table[table["method"] == "aim+none ratio=0.25"]
    assert sorted(zip(twice["source"], twice["synthetic_video"])) == [("rerun", pytest.approx(50.0)),
                                                                        ("sweep", pytest.approx(54.0))]
    assert (table.loc[table["method"] != "aim+none ratio=0.25", "source"] == "").all()  # the others: one source
    note = ("aim+none ratio=0.25: 2 done jobs on synthetic_video (rerun/aim_r0.25, sweep/aim_r0.25): a row for each "
            "sweep (source), not their mean")
    assert table.attrs["notes"] == [note]
    assert tables.to_markdown(table).endswith(f"Notes:\n- {note}\n")
    assert "source" not in tables.score_columns(table)  # not a benchmark: never bold

    runs = tmp_path / "runs"  # a folder of runs: one sweep name, told apart by run
    write_job(runs / "monday", job_config(NONE, NONE), 0.56, 4.0e-4, 10.0, 196)
    write_job(runs / "tuesday", job_config(NONE, NONE), 0.60, 4.0e-4, 10.0, 196)
    table = tables.paper_table(collect([runs], roofline=False))
    assert sorted(zip(table["source"], table["synthetic_video"])) == [("runs/monday", pytest.approx(56.0)),
                                                                      ("runs/tuesday", pytest.approx(60.0))]
    assert table.attrs["notes"] == ["none+none: 2 done jobs on synthetic_video (runs/monday, runs/tuesday): a row for "
                                    "each run (source), not their mean"]


def test_efficiency_table_from_aim_flops_reproduces_the_papers_figures():
    from aim.analysis.efficiency_table import markdown, table

    rows = table()
    for row in rows[:3]:  # unreduced, merging 50%, AIM: the three the paper gives
        assert round(row["tflops"], 2) == row["paper_tflops"] and round(row["prefill_ms"], 2) == row["paper_ms"]
    md = markdown(rows).splitlines()
    assert md[0] == ("| method | visual tokens | TFLOPs | paper TFLOPs | TFLOPs (FastV convention) | prefill ms | "
                     "paper prefill ms | speedup |")
    # FastV's convention (4nd^2 + 2n^2d + 2ndm per layer): 41.54 T unreduced, as the issue computes it
    assert md[2] == "| unreduced | 6272 | 99.63 | 99.63 | 41.54 | 439.58 | 439.58 | 1.00x |"
    assert md[4] == "| AIM: merging 25% + pruning l1=14, l2=22 | 1568 | 14.76 | 14.76 | 5.99 | 55.03 | 55.03 | 7.99x |"
    assert md[5].startswith("| FastV k=2, keep 0.5 | 6272 |") and "| - |" in md[5]  # no paper figure
    other = table(frames=16, hardware="h100_sxm")
    assert other[0]["paper_tflops"] is None and other[0]["visual_tokens"] == 16 * 196


def test_efficiency_table_script_prints_markdown(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["efficiency_table.py", "--markdown"])
    runpy.run_path(os.path.join(REPO_ANALYSIS, "efficiency_table.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "| merging 50% | 3136 | 46.48 | 46.48 | 19.06 | 182.65 | 182.65 | 2.41x |" in out


# ------------------------------------------------------------------------------------------ report, W&B

def external_references(page: str) -> list[str]:
    """src/href attributes of the page's tags that load something (not data: URIs, not in-page anchors);
    script bodies are not parsed as tags (plotly.js mentions CDN URLs in its strings)."""
    from html.parser import HTMLParser

    found = []

    class Refs(HTMLParser):
        def handle_starttag(self, tag, attrs):
            for name, value in attrs:
                if name in ("src", "href") and value and not value.startswith(("data:", "#")):
                    found.append(f"<{tag} {name}={value}>")

    Refs().feed(page)
    return found


def test_report_page_is_self_contained_and_lists_what_is_missing_or_failed(sweep_a, sweep_b, tmp_path, monkeypatch):
    out = tmp_path / "report"
    monkeypatch.setattr(sys, "argv", ["report.py", str(sweep_a), str(sweep_b), "--out", str(out)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(os.path.join(REPO_ANALYSIS, "report.py"), run_name="__main__")
    assert exit_.value.code == 0
    for name in ("results.parquet", "results.csv", "curves_tflops.png", "curves_prefill_ms.png", "curves.html",
                 "table.md", "table.tex", "report.html"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    assert external_references(page) == []  # plotly.js and the PNGs are inlined: the page opens offline
    assert page.count("class=\"plotly-graph-div\"") == 4  # 2 benchmarks x (TFLOPs, prefill ms)
    assert page.count("src='data:image/png;base64,") == 2  # the static curves, one per cost
    not_done = page[page.index("id='not-done'"):page.index("id='curves'")]
    assert ("3 of 13 jobs are not done; relaunch a sweep's failed and missing ones with <code>python launch/sweep.py "
            "resubmit &lt;sweep dir&gt;</code>.") in not_done
    for run, state in (("pool_r0.125", "failed"), ("aim_r0.125", "missing"), ("random_r0.5", "running")):
        assert f"<td>{run}</td><td>{state}</td>" in not_done
    assert "RuntimeError: CUDA out of memory" in not_done
    assert (out / "table.md").read_text().splitlines()[0] in page  # the Markdown source, under the table


def test_each_sweep_gets_a_wandb_summary_run_with_the_table_and_a_scatter_chart(sweep_a, sweep_b, monkeypatch, tmp_path):
    from aim.analysis.wandb_summary import TABLE_COLUMNS, log_sweep_summaries
    from tests.wandb_records import read_run, wait_until_complete

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no key anywhere: offline needs none
    df = collect([sweep_a, sweep_b])
    run_dirs = log_sweep_summaries(df, mode="offline")
    assert [d.parent for d in run_dirs] == [sweep_b / "wandb", sweep_a / "wandb"]  # mvb/sweep, video/sweep
    run_dir = run_dirs[1]
    run = read_run(wait_until_complete(next(run_dir.glob("run-*.wandb"))))
    assert run["job_type"] == "sweep-summary" and run["name"] == "video/sweep summary"
    assert run["group"] == "sweep"  # the jobs' group: the sweep dir's name (aim.tracking.wandb_logger)
    assert run["summary"]["jobs/done"] == 5 and run["summary"]["jobs/failed"] == 1 and run["summary"]["jobs/running"] == 1
    assert run["summary"]["jobs/missing"] == 1 and run["summary"]["best_score"] == pytest.approx(0.56)
    assert run["summary"]["unplotted/tflops"] == run["summary"]["unplotted/prefill_ms"] == []  # every done job plotted

    table = json.loads((run_dir / "files" / run["summary"]["results/path"]).read_text())
    assert table["columns"] == TABLE_COLUMNS and len(table["data"]) == 8  # every job, failed and missing too
    states = {r[TABLE_COLUMNS.index("run")]: r[TABLE_COLUMNS.index("status")] for r in table["data"]}
    assert states["aim_r0.125"] == "missing" and states["pool_r0.125"] == "failed"

    chart = run["config"]["_wandb/visualize/accuracy_vs_tflops"]["panel_config"]
    assert chart["panelDefId"] == "wandb/scatter/v0" and chart["fieldSettings"] == {"x": "tflops", "y": "score"}
    points = json.loads((run_dir / "files" / run["summary"]["accuracy_vs_tflops_table/path"]).read_text())
    xy = sorted((r[points["columns"].index("tflops")], r[points["columns"].index("score")]) for r in points["data"])
    assert xy == [(1e-4, 0.48), (1e-4, 0.54), (2e-4, 0.51), (2e-4, 0.56), (4e-4, 0.56)]  # the done jobs
    assert "_wandb/visualize/accuracy_vs_prefill_ms" in run["config"]


def test_the_wandb_summary_charts_name_the_done_jobs_they_leave_out(sweep_a, monkeypatch, tmp_path):
    """The summary's scatter charts dropped a done job with no score or no cost without a word (and the prefill-ms
    chart dropped a job that lacked only TFLOPs). Each chart plots the jobs with a score and its cost, and the run's
    summary and the chart's title name the rest, as the report does (curves.unplotted)."""
    from aim.analysis.wandb_summary import log_sweep_summaries
    from tests.wandb_records import read_run, wait_until_complete

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for run, field, value in (("aim_r0.5", "score", float("nan")), ("pool_r0.5", "tflops", None)):
        path = sweep_a / run / "results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    (run_dir,) = log_sweep_summaries(collect([sweep_a], roofline=False), mode="offline")
    run = read_run(wait_until_complete(next(run_dir.glob("run-*.wandb"))))

    unscored = "sweep/aim_r0.5 (aim+none ratio=0.5, synthetic_video): no score"
    assert run["summary"]["unplotted/tflops"] == [unscored, "sweep/pool_r0.5 (pool+none ratio=0.5, synthetic_video): no tflops"]
    assert run["summary"]["unplotted/prefill_ms"] == [unscored]
    for cost, n in (("tflops", 2), ("prefill_ms", 1)):
        chart = run["config"][f"_wandb/visualize/accuracy_vs_{cost}"]["panel_config"]
        assert chart["stringSettings"]["title"].endswith(f"({n} done job(s) not plotted: see unplotted/{cost})")
    points = json.loads((run_dir / "files" / run["summary"]["accuracy_vs_prefill_ms_table/path"]).read_text())
    xy = sorted((r[points["columns"].index("prefill_ms")], r[points["columns"].index("score")]) for r in points["data"])
    assert xy == [(5.0, 0.48), (6.0, 0.54), (6.5, 0.51), (10.0, 0.56)]  # pool_r0.5 (6.5 ms, no TFLOPs) too


def test_collect_shows_how_the_kept_tokens_fall_over_the_frames(tmp_path):
    """A clip reducer keeps ragged counts per frame (records' visual_tokens_per_frame): the table gives each
    frame's mean over the answered samples and how many frames keep nothing; skipped samples do not count."""
    run = tmp_path / "run"
    write_job(run, job_config({"name": "vidcom2", "ratio": 0.25}, NONE), 0.5, 1e-4, 5.0, 40)
    records = [{"id": "a", "correct": True, "visual_tokens_per_frame": [20, 0, 10, 10]},
               {"id": "b", "correct": False, "visual_tokens_per_frame": [10, 0, 0, 30]},
               {"id": "c", "skipped": True, "reason": "undecodable video"}]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    row = by_run(collect([tmp_path], roofline=False))["run"]
    assert json.loads(row["visual_tokens_per_frame"]) == [15.0, 0.0, 5.0, 20.0]
    assert row["frames_without_tokens"] == 1.5
