"""What a researcher gets wrong is refused with the field named, never silently ignored (the hardening audit).
Each case here ran silently before: the setting had no effect on what ran."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from aim.config import ConfigError, validate
from aim.paths import CONF_DIR
from tests.in_process import run_in_process  # `python -m aim.run ...` (aim.flops, aim.bench) in this process


def composed(overrides=()):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("override,key", [("+seeed=3", "seeed"), ("+budget_tflops=1e-4", "budget_tflops"),
                                          ("+limit=10", "limit")])
def test_a_misspelt_top_level_key_is_refused_naming_it(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}: unknown top-level key; allowed: model, dataset, .*budget, run"):
        validate(composed([override]))


def test_a_top_level_helper_that_another_value_interpolates_is_allowed():
    """conf/exp/ablation_layers.yaml sweeps (l1, l2) as one value, `pruner_layers`, read by pruner.l1/l2."""
    valid = validate(composed(["+pruner_layers=[1,3]", "pruner.l1=${pruner_layers.0}", "pruner.l2=${pruner_layers.1}"]))
    assert (valid.pruner.l1, valid.pruner.l2) == (1, 3)
    with pytest.raises(ConfigError, match=r"^pruner_layer: unknown top-level key"):  # one the pruner does not read
        validate(composed(["+pruner_layers=[1,3]", "+pruner_layer=[1,2]", "pruner.l1=${pruner_layers.0}",
                           "pruner.l2=${pruner_layers.1}"]))


@pytest.mark.parametrize("override,key", [("budget.tradeoff=/some/tradeoff.json", "tradeoff"),
                                          ("budget.objective=agreement", "objective"),
                                          ("budget.hardware=h100_sxm", "hardware"),
                                          ("budget.text_tokens=100", "text_tokens")])
def test_a_budget_planning_knob_without_a_budget_is_refused(override, key):
    with pytest.raises(ConfigError, match=rf"^budget.{key}: says how to plan a budget, and no budget is given"):
        validate(composed([override]))
    validate(composed([override, "budget.fraction=0.5"]))  # with a budget it plans it


@pytest.mark.parametrize("tool,override,message", [
    ("flops", "budget.text_tokens=50", "budget.text_tokens: aim.flops plans for its own text length, flops.text_tokens"),
    ("bench", "budget.per_sample=true", "budget.per_sample: aim.bench has one input, no samples"),
])
def test_aim_flops_and_bench_refuse_the_budget_knobs_only_aim_run_reads(tool, override, message, tmp_path):
    """aim.flops planned budget.fraction=0.5 for 100 text tokens (flops.text_tokens) with budget.text_tokens=50."""
    proc = run_in_process(f"aim.{tool}", "budget.tflops=3e-4", override, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"aim.{tool}: invalid config: " + message in proc.stderr


# ------------------------------------------------------------------------------------------ damaged records

def damage(run_dir, name, how):
    path = run_dir / name
    path.write_text("" if how == "empty" else path.read_text()[: len(path.read_text()) // 2])


def test_sweep_status_and_collect_name_a_damaged_file_and_go_on_with_the_other_jobs(tmp_path):
    """A results.json left empty or torn (copied half-way, disk full, edited by hand) and a torn job.json made
    `launch/sweep.py status`, `analysis/collect.py` and the report stop with a JSONDecodeError."""
    from aim.analysis.collect import collect
    from aim.sweep import status
    from tests.test_analysis import write_sweep

    sweep = write_sweep(tmp_path / "sweep", with_trouble=False)
    damage(sweep / "aim_r0.25", "results.json", "empty")
    damage(sweep / "pool_r0.5", "results.json", "torn")
    (sweep / "pool_r0.25" / "results.json").unlink()
    damage(sweep / "pool_r0.25", "job.json", "torn")
    states = {r["subdir"]: (r["state"], r["detail"]) for r in status(sweep, query_scheduler=False)}
    assert states["unreduced"] == states["aim_r0.5"] == ("done", "")
    for run in ("aim_r0.25", "pool_r0.5"):
        assert states[run][0] == "failed"
        assert states[run][1].startswith("results.json unreadable (")
        assert states[run][1].endswith("; resubmit the job to rewrite it from samples.jsonl")
    assert states["pool_r0.25"][0] == "failed" and states["pool_r0.25"][1].startswith("job.json unreadable")
    with pytest.warns(UserWarning, match=r"aim_r0.25: results.json unreadable"):
        rows = {row["run"]: row for _, row in collect([sweep]).iterrows()}
    assert len(rows) == 5 and rows["unreduced"]["score"] == 0.56 and rows["aim_r0.5"]["status"] == "done"
    assert rows["aim_r0.25"]["status"] == "failed" and rows["aim_r0.25"]["score"] != rows["aim_r0.25"]["score"]  # NaN


def test_collect_over_run_dirs_without_a_manifest_marks_a_damaged_one_failed(tmp_path):
    from aim.analysis.collect import collect
    from tests.test_analysis import write_sweep

    sweep = write_sweep(tmp_path / "sweep", with_trouble=False)
    (sweep / "sweep.json").unlink()  # an older sweep, or a folder of runs
    damage(sweep / "aim_r0.25", "results.json", "empty")
    with pytest.warns(UserWarning, match=r"results.json unreadable"):
        rows = {row["run"]: row for _, row in collect([sweep]).iterrows()}
    assert rows["aim_r0.25"]["status"] == "failed" and "results.json unreadable" in rows["aim_r0.25"]["detail"]
    assert [r["status"] for run, r in rows.items() if run != "aim_r0.25"] == ["done"] * 4
    # a run of its own has no job to resubmit (the sweep's wording): it is run again in its dir
    run = sweep / "aim_r0.25"
    assert "resubmit" not in rows["aim_r0.25"]["detail"]
    assert rows["aim_r0.25"]["detail"].endswith(
        f"; rerun `python -m aim.run` there (its overrides, in {run}/.hydra/overrides.yaml, and hydra.run.dir={run}) "
        "to rewrite it from samples.jsonl")


def rewrite_records(run_dir, edit):
    """samples.jsonl's readable records, passed through `edit` (list -> list) and written back."""
    path = run_dir / "samples.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    path.write_text("".join(json.dumps(r) + "\n" for r in edit(records)))


def test_collect_derives_no_column_from_records_that_are_not_the_samples_results_json_counts(tmp_path):
    """The roofline columns were the mean over whatever samples.jsonl held: one record of two after a torn or
    partly copied file, or three after a later invocation added one, while results.json counts two."""
    from aim.analysis.collect import collect
    from tests.test_analysis import write_sweep

    sweep = write_sweep(tmp_path / "sweep", with_trouble=False)
    rewrite_records(sweep / "aim_r0.5", lambda records: records[:1])
    (sweep / "aim_r0.5" / "samples.jsonl").write_text((sweep / "aim_r0.5" / "samples.jsonl").read_text() + '{"id": "q1", "cor')
    rewrite_records(sweep / "pool_r0.5", lambda records: records + [
        {"id": "q2", "correct": False, "tokens_per_layer": [205] * 4, "visual_tokens": 196, "text_tokens": 9}])
    with pytest.warns(UserWarning) as warned:
        rows = {row["run"]: row for _, row in collect([sweep]).iterrows()}
    for run, held in (("aim_r0.5", "1 answered record(s) and 1 unreadable line(s) (line 2: not JSON (torn or corrupt))"),
                      ("pool_r0.5", "3 answered record(s)")):
        why = f"samples.jsonl holds {held}, results.json counts num_samples=2"
        assert rows[run]["status"] == "done" and rows[run]["detail"].startswith(why)
        assert any(f"{run}: {why}" in str(w.message) for w in warned)
        assert np.isnan(rows[run]["roofline_tflops"]) and np.isnan(rows[run]["roofline_prefill_ms"])
        assert rows[run]["score"] in (0.56, 0.51)  # results.json's own figures stay
    assert rows["aim_r0.25"]["roofline_tflops"] > 0 and rows["aim_r0.25"]["detail"] == ""


def test_collect_averages_no_sample_column_over_only_the_records_that_carry_it(tmp_path):
    """A run resumed across versions: its older records lack tokens_per_layer / visual_tokens_per_frame, and the
    roofline and the tokens per frame were the mean over the newer records alone, as if they were the run's."""
    from aim.analysis.collect import collect
    from tests.test_analysis import write_sweep

    sweep = write_sweep(tmp_path / "sweep", with_trouble=False)

    def older_first(records):
        del records[0]["tokens_per_layer"]
        records[1]["visual_tokens_per_frame"] = [24, 24, 24, 24]
        return records

    rewrite_records(sweep / "aim_r0.5", older_first)
    with pytest.warns(UserWarning, match=r"aim_r0.5: 1 of 2 answered records in samples.jsonl lack "
                                         r"visual_tokens_per_frame: no tokens per frame; 1 of 2 answered records in "
                                         r"samples.jsonl lack tokens_per_layer: no roofline or tflops_fastv from them"):
        rows = {row["run"]: row for _, row in collect([sweep]).iterrows()}
    aim = rows["aim_r0.5"]
    assert np.isnan(aim["roofline_tflops"]) and np.isnan(aim["tflops_fastv"]) and np.isnan(aim["frames_without_tokens"])
    assert "lack tokens_per_layer" in aim["detail"] and aim["score"] == 0.56
    assert rows["aim_r0.25"]["roofline_tflops"] > 0


def test_collect_says_which_means_results_json_left_out(tmp_path):
    """aim.run leaves a mean out of results.json (null) where only some records carry the field (a run resumed across
    versions, aim.tracking.results.measured_means); collect's row says so instead of an empty cell without a word."""
    from aim.analysis.collect import collect
    from tests.test_analysis import write_sweep

    sweep = write_sweep(tmp_path / "sweep", with_trouble=False)
    results = json.loads((sweep / "aim_r0.5" / "results.json").read_text())
    why = "1 of 2 answered records lack tflops (written by an aim.run that did not record it, then resumed)"
    results.update(tflops=None, means_left_out={"tflops": why})
    (sweep / "aim_r0.5" / "results.json").write_text(json.dumps(results))
    with pytest.warns(UserWarning, match=r"aim_r0.5: results.json has no tflops: 1 of 2 answered records lack tflops"):
        rows = {row["run"]: row for _, row in collect([sweep], roofline=False).iterrows()}
    assert rows["aim_r0.5"]["status"] == "done" and np.isnan(rows["aim_r0.5"]["tflops"])
    assert rows["aim_r0.5"]["detail"] == f"results.json has no tflops: {why}" and rows["aim_r0.25"]["detail"] == ""


def test_collect_over_run_dirs_gives_a_run_without_results_json_its_state(tmp_path):
    """A folder of runs (no sweep.json) listed only the runs with a results.json: one still running, or killed,
    was left out without a word, and the report said that every job was done."""
    import os
    import socket

    from aim.analysis.collect import collect
    from aim.analysis.report import status_section
    from tests.test_analysis import write_sweep

    runs = write_sweep(tmp_path / "runs", with_trouble=False)
    (runs / "sweep.json").unlink()
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    for run, pid in (("aim_r0.25", os.getpid()), ("pool_r0.25", gone)):  # this process is alive; that one is not
        results = json.loads((runs / run / "results.json").read_text())
        (runs / run / "run_spec.json").write_text(json.dumps(results["config"]))
        (runs / run / "results.json").unlink()
        (runs / run / "job.json").write_text(json.dumps({"state": "running", "host": socket.gethostname(), "pid": pid}))
    df = collect([runs])
    rows = {row["run"]: row for _, row in df.iterrows()}
    assert len(rows) == 5
    assert (rows["aim_r0.25"]["status"], rows["aim_r0.25"]["detail"]) == ("running", f"pid {os.getpid()}")
    assert (rows["pool_r0.25"]["status"], rows["pool_r0.25"]["detail"]) == ("failed", f"pid {gone} is gone")
    assert rows["pool_r0.25"]["merger"] == "pool" and rows["pool_r0.25"]["merger.ratio"] == 0.25  # from run_spec.json
    assert np.isnan(rows["pool_r0.25"]["score"]) and np.isnan(rows["aim_r0.25"]["roofline_tflops"])
    page = status_section(df)
    assert "all-done" not in page and "2 of 5 jobs are not done; rerun a run of its own (no sweep.json) with " in page
    assert "resubmit" not in page  # no sweep to resubmit


NOTHING_EVALUATED = ("NothingEvaluated: every one of the 2 samples was skipped, nothing was evaluated "
                     "(first: q0: undecodable video; every reason in samples.jsonl)")


@pytest.mark.parametrize("manifest", [True, False])
def test_a_run_that_failed_after_writing_results_json_is_failed_not_done(manifest, tmp_path):
    """aim.run writes results.json, then fails when every sample was skipped (NothingEvaluated, score NaN); its
    job.json said failed with the reason, but sweep status, collect and the report counted it done."""
    from aim.analysis.collect import collect
    from aim.sweep import status
    from tests.test_analysis import write_sweep

    sweep = write_sweep(tmp_path / "sweep", with_trouble=False)
    run = sweep / "aim_r0.25"
    results = json.loads((run / "results.json").read_text())
    results.update(score=float("nan"), accuracy=float("nan"), num_samples=0, num_skipped=2)
    (run / "results.json").write_text(json.dumps(results))
    rewrite_records(run, lambda records: [{"id": r["id"], "skipped": True, "error": "undecodable video"} for r in records])
    (run / "job.json").write_text(json.dumps({"state": "failed", "error": NOTHING_EVALUATED}))
    if manifest:
        assert {r["subdir"]: (r["state"], r["detail"]) for r in status(sweep, query_scheduler=False)}["aim_r0.25"] == \
            ("failed", NOTHING_EVALUATED)
    else:
        (sweep / "sweep.json").unlink()
    rows = {row["run"]: row for _, row in collect([sweep]).iterrows()}
    assert (rows["aim_r0.25"]["status"], rows["aim_r0.25"]["detail"]) == ("failed", NOTHING_EVALUATED)
    assert [r["status"] for name, r in rows.items() if name != "aim_r0.25"] == ["done"] * 4


def test_the_report_goes_on_past_a_damaged_results_json_or_tradeoff_json(tmp_path):
    """`analysis/report.py --wandb` read the first job's results.json for the W&B summary's logger config, and the
    report a search's tradeoff.json, with json.loads: an empty or torn one stopped it with a JSONDecodeError."""
    from aim.analysis.collect import collect
    from aim.analysis.report import search_tradeoffs
    from aim.analysis.wandb_summary import jobs_logger_config
    from tests.test_analysis import write_sweep

    sweep = write_sweep(tmp_path / "sweep", with_trouble=False)
    damage(sweep / "unreduced", "results.json", "empty")  # job 0, the first row
    manifest = json.loads((sweep / "sweep.json").read_text())
    (sweep / "sweep.json").write_text(json.dumps({**manifest, "search": {"objective": "accuracy"}}))  # an aim.search sweep
    (sweep / "tradeoff.json").write_text('{"objective": "accuracy", "points": [{"merger"')
    with pytest.warns(UserWarning, match="unreduced: results.json unreadable"):
        df = collect([sweep], roofline=False)
    assert jobs_logger_config(df) == {"name": "none", "project": "aim-test"}  # the next job's
    with pytest.warns(UserWarning, match=r"sweep: tradeoff.json unreadable \(.*\); the report rebuilds the trade-off "
                                         r"from the jobs' results.json \(python -m aim.search .*sweep rewrites the file\)"):
        [(name, data, _png)] = search_tradeoffs(df)
    assert name == "sweep" and sorted(p["run"] for p in data["points"]) == ["aim_r0.25", "aim_r0.5", "pool_r0.25", "pool_r0.5"]


def test_aim_search_ranks_and_compares_no_nan_accuracy_and_says_which_points_lack_one(tmp_path, capsys):
    """A done job whose results.json has accuracy NaN (no sample scored) was a trade-off point with NaN, written
    into tradeoff.json as NaN (no JSON), and `--against` counted it as a setting the search failed to match."""
    import shutil

    from aim.search import main
    from tests.test_analysis import write_sweep

    search = write_sweep(tmp_path / "search", with_trouble=False)
    path = search / "pool_r0.5" / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": float("nan"), "score": float("nan")}))
    grid = shutil.copytree(search, tmp_path / "grid")
    assert main([str(search), "--against", str(grid)]) == 0
    out, err = capsys.readouterr()
    assert ("aim.search: 1 of 5 points have no finite accuracy or tflops in their results.json (null or NaN), so they "
            "are on no Pareto set and compared with nothing: pool_r0.5") in err
    assert "4 of 4 settings matched or beaten by a search setting at equal or lower TFLOPs (1 more without a finite " \
           "accuracy or tflops, not compared: pool_r0.5)" in out
    text = (search / "tradeoff.json").read_text()
    assert "NaN" not in text
    point = next(p for p in json.loads(text)["points"] if p["run"] == "pool_r0.5")
    assert point["accuracy"] is None and point["pareto"] is False


# ------------------------------------------------------------------------------------------ environment

@pytest.mark.parametrize("multirun", [False, True])
def test_logger_wandb_without_wandb_installed_fails_before_anything_starts(multirun, tmp_path, monkeypatch):
    """It was a traceback (ImportError) from inside the job, after its run dir was taken."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails, as where it is not installed
    where = ([f"hydra.sweep.dir={tmp_path}", "merger.ratio=0.5,0.25", "-m"] if multirun else
             [f"hydra.run.dir={tmp_path}"])
    proc = run_in_process("aim.run", "logger=wandb", *where)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "logger.name: wandb is not installed (pip install wandb); or use logger=none" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no run dir, no sweep.json: nothing started


# ------------------------------------------------------------------------------------------ run dirs

def test_a_run_dir_with_records_but_no_run_spec_is_refused_not_mixed_into(tmp_path):
    """An older run dir (before run_spec.json) or one whose run_spec.json was removed: its records were resumed
    under whatever config came next, and run_spec.json then written as if they were that config's."""
    from aim.run import check_resume

    records = '{"id": "q00000", "correct": true}\n'
    (tmp_path / "samples.jsonl").write_text(records)
    with pytest.raises(ConfigError, match=r"holds samples.jsonl but no run_spec.json, so the config of its records "
                                          r"cannot be checked; use another hydra.run.dir"):
        check_resume(tmp_path, {"seed": 0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.jsonl"]
    assert (tmp_path / "samples.jsonl").read_text() == records
    (tmp_path / "samples.jsonl").write_text("")  # an empty file holds no records: a fresh start is safe
    check_resume(tmp_path, {"seed": 0})


@pytest.mark.parametrize("text", ["", '{"seed": 0, "mod'])
def test_a_damaged_run_spec_is_refused_naming_it(tmp_path, text):
    """It was a JSONDecodeError traceback."""
    from aim.run import check_resume

    (tmp_path / "run_spec.json").write_text(text)
    with pytest.raises(ConfigError, match=r"run_spec.json unreadable \(.*\): the config of the run it holds cannot be "
                                          r"checked"):
        check_resume(tmp_path, {"seed": 0})


# ------------------------------------------------------------------------------------------ data

def damaged_copy(root, tmp_path, edit, pattern="*"):
    """A copy of a fixture release with its first question file's first row edited by `edit(row)` (the first
    file by name whose path relative to the release matches `pattern`)."""
    import shutil

    import pandas as pd

    copy = tmp_path / root.name
    shutil.copytree(root, copy)
    path = sorted(p for p in copy.rglob("*") if p.suffix in (".parquet", ".json") and p.is_file()
                  and p.relative_to(copy).match(pattern))[0]
    if path.suffix == ".parquet":
        rows = pd.read_parquet(path).to_dict("records")
        edit(rows[0])
        pd.DataFrame(rows).to_parquet(path)
    else:
        rows = json.loads(path.read_text())
        edit(rows[0])
        path.write_text(json.dumps(rows))
    return copy, path.stem


@pytest.mark.parametrize("name,edit,why", [
    ("videomme", lambda row: row.update(question=None), "ValueError: question: nan is not a text"),
    ("videomme", lambda row: row.update(options=None), "TypeError"),
    ("videomme", lambda row: row.update(answer="Z"), "ValueError: answer 'Z' is not an option letter"),
    ("mvbench", lambda row: row.pop("candidates"), "missing field 'candidates'"),
])
def test_a_release_row_that_cannot_be_read_is_skipped_naming_file_and_row(name, edit, why, benchmark_roots, tmp_path):
    """A null question was asked as the text "None"; null options, an answer that is no option or a missing
    field stopped the whole run (a traceback, or a ConfigError naming no row)."""
    from dataclasses import asdict

    from aim.data import build_dataset

    root, file = damaged_copy(benchmark_roots[name], tmp_path, edit)
    cfg = validate(composed([f"dataset={name}", f"dataset.root={root}", "dataset.num_frames=2"])).dataset
    intact = build_dataset(validate(composed([f"dataset={name}", f"dataset.root={benchmark_roots[name]}",
                                              "dataset.num_frames=2"])).dataset)
    samples = list(build_dataset(cfg))
    skipped = [s for s in samples if s.skip_reason.startswith("row ")]
    assert len(samples) == len(intact) and len(skipped) == 1
    assert skipped[0].skip_reason.startswith(f"row 0 of {file} cannot be read (") and why in skipped[0].skip_reason
    assert asdict(cfg)["name"] == name


@pytest.mark.parametrize("name,edit,why", [
    ("vqav2", lambda row: row.update(question=None), "ValueError: question: None is not a text"),
    ("gqa", lambda row: row.update(answer=None), "ValueError: answer: None is not a text"),
    ("mme", lambda row: row.update(question=None), "ValueError: question: None is not a text"),
    ("textvqa_val", lambda row: row.update(question=None), "ValueError: question: None is not a text"),
    ("scienceqa_img", lambda row: row.update(answer=7), "ValueError: answer: 7 is no index of the"),
    ("scienceqa_img", lambda row: row.update(answer=None), "TypeError"),
    ("mmbench_en_dev", lambda row: row.update(answer="Z"), "ValueError: answer: 'Z' is not an option letter"),
    ("pope", lambda row: row.update(answer=None), "ValueError: answer: None is not a text"),
])
def test_an_image_release_row_that_cannot_be_read_is_skipped_naming_file_and_row(name, edit, why, benchmark_roots,
                                                                                  tmp_path):
    """A null question was asked, and a null answer scored, as the text "None"; ScienceQA's null or
    out-of-range answer index stopped the whole run; MMBench scored an answer that is no option letter."""
    from aim.data import build_dataset

    generate = [] if name in ("scienceqa_img", "mmbench_en_dev") else ["eval.mode=generate"]
    pattern = {"gqa": "testdev_balanced_instructions/*", "vqav2": "data/validation-*"}.get(name, "*")
    root, file = damaged_copy(benchmark_roots[name], tmp_path, edit, pattern)
    samples = list(build_dataset(validate(composed([f"dataset={name}", f"dataset.root={root}", *generate])).dataset))
    intact = build_dataset(validate(composed([f"dataset={name}", f"dataset.root={benchmark_roots[name]}",
                                              *generate])).dataset)
    skipped = [s for s in samples if s.skip_reason]
    assert len(skipped) == 1, [s.skip_reason for s in skipped]
    assert skipped[0].skip_reason.startswith(f"row 0 of ") and file in skipped[0].skip_reason
    assert why in skipped[0].skip_reason and skipped[0].question == ""
    asked = [s for s in samples if not s.skip_reason]  # every other question as in the intact release
    assert asked and {s.id for s in asked} < {s.id for s in intact}
    assert all("None" not in s.question and s.answer not in ("None", "none") for s in asked)


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["launch/sweep.py", "status"], ["launch/sweep.py", "resubmit", "--dry-run"],
                                     ["analysis/collect.py"], ["analysis/report.py"], ["-m", "aim.search"]])
def test_the_sweep_commands_on_a_torn_sweep_json_or_no_sweep_dir_say_why_exit_2(command, tmp_path):
    """They stopped with a JSONDecodeError / FileNotFoundError traceback."""
    from tests.test_analysis import write_sweep

    sweep = write_sweep(tmp_path / "sweep", with_trouble=False)
    (sweep / "sweep.json").write_text((sweep / "sweep.json").read_text()[:100])
    script, *args = command if command[0] != "-m" else (" ".join(command), )
    program = command if command[0] == "-m" else [str(ROOT / script)]
    run = lambda where: subprocess.run([sys.executable, *program, *args[:1], str(where), *args[1:]],  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    proc = run(sweep)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"{sweep}: sweep.json unreadable (" in proc.stderr and "restore it" in proc.stderr
    if script == "launch/sweep.py":  # (collect and report read a dir without sweep.json as a folder of runs)
        proc = run(tmp_path / "nowhere")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "nowhere/sweep.json not found: not a sweep dir" in proc.stderr


def test_a_fidelity_cache_dir_that_cannot_be_made_fails_before_the_run_dir_is_taken(tmp_path):
    """It was a FileNotFoundError / NotADirectoryError traceback after the model loaded, the run dir taken."""
    (tmp_path / "a_file").write_text("")
    run_dir = tmp_path / "run"
    proc = run_in_process("aim.run", "logger=none", f"fidelity.cache_dir={tmp_path}/a_file/cache",
                          f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (f"aim: invalid config: fidelity.cache_dir: cannot keep the unreduced answers in {tmp_path}/a_file/cache "
            "(Not a directory); give a directory you can write, or fidelity.enabled=false") in proc.stderr
    assert not run_dir.exists() or list(run_dir.iterdir()) == []  # no run_spec.json, job.json, run.lock


def test_a_model_device_that_is_no_torch_device_is_refused_at_validation():
    """model.device=gpu was a RuntimeError traceback once the model was built, the run dir taken."""
    with pytest.raises(ConfigError, match=r"^model.device: 'gpu' is not a torch device; e.g. cpu, cuda, cuda:1, mps$"):
        validate(composed(["model.device=gpu"]))


@pytest.mark.parametrize("device,gpus,refused", [("cuda", 0, True), ("cuda:0", 0, True), ("cuda:3", 2, True),
                                                 ("cuda:1", 2, False), ("cuda", 1, False), ("cpu", 0, False)])
def test_aim_run_and_bench_refuse_a_cuda_device_this_machine_lacks(device, gpus, refused, monkeypatch):
    """model.device=cuda on a CPU-only torch was an AssertionError traceback ("Torch not compiled with CUDA
    enabled") after the run dir was taken. A sweep's validation does not check it (its jobs run elsewhere)."""
    import torch

    from aim.config import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    valid = validate(composed([f"model.device={device}"]))
    if refused:
        with pytest.raises(ConfigError, match=rf"^model.device: {device} asked, and torch .* sees {gpus} CUDA device\(s\) "
                                              r"here .*; use model.device=cpu, or run where the GPU is$"):
            check_device(valid)
    else:
        check_device(valid)


def test_aim_search_says_which_jobs_its_tradeoff_leaves_out_and_why(tmp_path, capsys):
    """A job whose results.json was damaged (or that failed, or never ran) was left out of tradeoff.json silently."""
    from aim.search import main
    from tests.test_analysis import write_sweep

    sweep = write_sweep(tmp_path / "sweep", with_trouble=False)
    damage(sweep / "aim_r0.25", "results.json", "empty")
    assert main([str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert "4 points" in out
    assert ("aim.search: 1 of 5 jobs are not done and not in the trade-off: job 2 (aim_r0.25) failed: results.json "
            "unreadable (") in err
