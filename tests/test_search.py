"""The automatic trade-off search (issue #11): `python -m aim.run +exp=search_tradeoff -m` searches the merge
ratio, the pruner and its layers with NSGA-II, every trial a valid config, the search space validated before
any job runs; sweep.json lists each launched trial; tradeoff.json holds every evaluated setting with the
non-dominated ones on (objective max, TFLOPs min) marked, and the report shows that Pareto set."""
import json
import shutil
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from aim.paths import CONF_DIR
from aim.search import SearchError, TradeoffSearch, assignment_overrides, corners
from aim.tradeoff import TRADEOFF, task_return
from tests.in_process import run_in_process
from tests.sweep_helpers import REPO, multirun, multirun_args

TINY = ["+exp=search_tradeoff", "dataset.limit=2", "logger=none", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=3",
        "hydra.sweeper.sampler.population_size=2", "pruner=choice(aim,fastv,none)"]
TOP_KEYS = {"model", "pretrained", "dataset", "num_frames", "objective", "source", "points"}
POINT_KEYS = {"merger", "pruner", "tflops", "accuracy", "agreement", "kl", "num_samples", "pareto"}
AIM_SCHEDULE = {"aim", "random"}  # pruners with l1 < l2


@pytest.fixture(scope="module")
def env(bundled_env, tmp_path_factory):
    # the unreduced answers (fidelity) cached apart from the user's cache
    return {**bundled_env, "AIM_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory, env):
    """A 3-trial search on 2 questions per trial, run as a user runs it."""
    sweep = tmp_path_factory.mktemp("search") / "sweep"
    proc = multirun(sweep, *TINY, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def dominated(p, q, objective) -> bool:
    """q beats p: no costlier, no worse, better in one."""
    return (q["tflops"] <= p["tflops"] and q[objective] >= p[objective]
            and (q["tflops"] < p["tflops"] or q[objective] > p[objective]))


def check_pareto(points, objective):
    scored = [p for p in points if p[objective] is not None and p["tflops"] is not None]
    for p in points:
        if p["pareto"]:
            assert p in scored and not any(dominated(p, q, objective) for q in scored), p
        elif p in scored and not any(dominated(p, q, objective) for q in scored):
            # a non-dominated point left unmarked only as the twin of a marked one
            assert any(q["pareto"] and (q["tflops"], q[objective]) == (p["tflops"], p[objective]) for q in scored), p


def test_a_tiny_search_runs_locally_and_writes_the_pareto_set_of_its_trials(tiny_search):
    manifest = json.loads((tiny_search / "sweep.json").read_text())
    assert manifest["num_jobs"] == 3 and [j["num"] for j in manifest["jobs"]] == [0, 1, 2]
    # the enqueued setting runs first
    assert {"merger.ratio=0.25", "pruner=aim", "pruner.l1=2", "pruner.l2=4"} <= set(manifest["jobs"][0]["overrides"])
    assert manifest["search"]["objective"] == "accuracy" and manifest["search"]["sampler"] == "NSGAIISampler"
    data = json.loads((tiny_search / TRADEOFF).read_text())
    assert TOP_KEYS <= set(data)
    assert (data["model"], data["pretrained"], data["dataset"], data["num_frames"], data["objective"]) == \
        ("toy_llava_ov", "aim:toy_llava_ov", "synthetic_video", 4, "accuracy")
    assert data["source"] == str(tiny_search.resolve())
    assert len(data["points"]) == 3
    for job, point in zip(manifest["jobs"], data["points"]):
        results = json.loads((tiny_search / job["subdir"] / "results.json").read_text())
        assert POINT_KEYS <= set(point)
        assert point["merger"] == results["config"]["merger"] and point["pruner"] == results["config"]["pruner"]
        assert point["tflops"] == results["tflops"] > 0 and point["accuracy"] == results["accuracy"]
        assert point["num_samples"] == 2 and isinstance(point["pareto"], bool)
        assert point["agreement"] == results.get("agreement") and point["kl"] == results.get("kl")
    assert any(p["pareto"] for p in data["points"])
    check_pareto(data["points"], "accuracy")


def test_every_trial_ran_a_valid_setting_with_only_its_pruners_fields(tiny_search):
    manifest = json.loads((tiny_search / "sweep.json").read_text())
    for job in manifest["jobs"]:
        sampled = dict(o.split("=", 1) for o in job["overrides"] if o.startswith(("merger.", "pruner")))
        config = json.loads((tiny_search / job["subdir"] / "results.json").read_text())["config"]
        pruner = config["pruner"]
        assert sampled["pruner"] == pruner["name"]
        fields = {k.split(".", 1)[1] for k in sampled if k.startswith("pruner.")}
        assert fields == set(pruner) - {"name", "tau", "iters", "block_mib", "backend", "seed"}  # what the search varies
        if pruner["name"] in AIM_SCHEDULE:
            assert 1 <= pruner["l1"] < pruner["l2"] <= pruner["l1"] + 4
        assert float(sampled["merger.ratio"]) == pytest.approx(config["merger"]["ratio"])
        assert 0.02 <= config["merger"]["ratio"] <= 1.0


def test_the_task_function_returned_the_objectives_the_study_was_told(tiny_search):
    # optimization_results.yaml holds the study's Pareto trials with the values aim.run's main() returned
    solutions = OmegaConf.to_container(OmegaConf.load(tiny_search / "optimization_results.yaml"))["solutions"]
    assert solutions
    for solution in solutions:
        job = next(j for j in json.loads((tiny_search / "sweep.json").read_text())["jobs"] if j["num"] == solution["job"])
        results = json.loads((tiny_search / job["subdir"] / "results.json").read_text())
        assert solution["values"] == [pytest.approx(results["accuracy"]), pytest.approx(results["tflops"])]


def test_task_return_is_the_accuracy_or_the_searched_objective_and_tflops():
    summary = {"accuracy": 0.5, "tflops": 2e-4, "agreement": 0.75, "kl": 0.1}
    assert task_return(OmegaConf.create({}), summary) == 0.5  # any single-objective sweeper
    assert task_return(OmegaConf.create({"search": {"objective": "accuracy"}}), summary) == [0.5, 2e-4]
    assert task_return(OmegaConf.create({"search": {"objective": "agreement"}}), summary) == [0.75, 2e-4]
    with pytest.raises(ValueError, match="no finite 'agreement'.*fidelity"):
        task_return(OmegaConf.create({"search": {"objective": "agreement"}}), {**summary, "agreement": None})


# ------------------------------------------------------------------------------------- the search space

def prepared(*overrides, params=None):
    """The search of `+exp=search_tradeoff <overrides>` (its params updated with `params`) as the sweeper sets
    it up, checked (no job runs)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    args = ["+exp=search_tradeoff", *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", args, run_mode=RunMode.MULTIRUN)
        HydraConfig.instance().set_config(master)
        sweeper = OmegaConf.to_container(master.hydra.sweeper, resolve=True)
        search = TradeoffSearch(None, sweeper["n_trials"], sweeper["n_jobs"], params={**sweeper["params"], **(params or {})},
                                offsets=sweeper["offsets"], enqueue=sweeper["enqueue"])
        search.config, search.loader = master, loader
        distributions, fixed = search.search_space(args)
        return search, distributions, fixed, search.check(distributions, fixed)


def test_the_search_space_makes_every_trial_valid_by_construction():
    import numpy as np

    search, distributions, fixed, fields = prepared("pruner=choice(aim,fastv,none)")  # a command-line sweep
    assert set(distributions) == {"merger.ratio", "pruner", "pruner.l1", "pruner.l2", "pruner.k", "pruner.keep"}
    assert len(corners(distributions)) == 2 * 3  # lows and highs, for each pruner: all composed and validated
    rng = np.random.default_rng(0)
    for _ in range(300):  # any values of the space, e.g. a crossover of two parents
        values = {k: (rng.choice(d.choices) if hasattr(d, "choices") else
                      int(rng.integers(d.low, d.high + 1)) if type(d).__name__.startswith("Int") else
                      float(rng.uniform(d.low, d.high))) for k, d in distributions.items()}
        job = dict(o.split("=", 1) for o in assignment_overrides(values, fixed, search.offsets, fields)
                   if o.startswith("pruner"))
        if job["pruner"] == "aim":
            assert set(job) == {"pruner", "pruner.l1", "pruner.l2"} and int(job["pruner.l1"]) < int(job["pruner.l2"])
        elif job["pruner"] == "fastv":
            assert set(job) == {"pruner", "pruner.k", "pruner.keep"}
        else:
            assert set(job) == {"pruner"}


def test_known_settings_seed_the_search_in_config_terms_when_they_lie_in_its_space(caplog):
    search, distributions, fixed, fields = prepared()  # the exp file seeds the default job's setting
    assert search.seeds(distributions) == [{"merger.ratio": 0.25, "pruner": "aim", "pruner.l1": 2, "pruner.l2": 2}]
    search.enqueue = [{"merger.ratio": 0.25, "pruner": "aim", "pruner.l1": 1, "pruner.l2": 6},  # gap 5 > 4
                      {"merger.ratio": 0.5, "pruner": "none"}]
    assert search.seeds(distributions) == [{"merger.ratio": 0.5, "pruner": "none"}]
    assert "enqueue[0]" in caplog.text and "pruner.l2 - pruner.l1 = 5 is outside the search space" in caplog.text


def test_a_fixed_pruner_gets_only_its_own_searched_fields():
    search, distributions, fixed, fields = prepared("pruner=none")  # merge ratio only
    assert "pruner" not in distributions and "pruner=none" in fixed
    values = {k: getattr(d, "low", None) for k, d in distributions.items()}
    assert [o for o in assignment_overrides(values, fixed, search.offsets, fields) if o.startswith("pruner.")] == []


@pytest.mark.parametrize("overrides, message", [
    (["search.l2_gap=[0,4]"], "pruner.l2: must be greater than l1 (1), got 1"),
    (["search.ratio=[0.0,1.0]"], "merger.ratio=tag(log, interval(0.0, 1.0)): The `low` value must be larger than 0"),
    (["search.ratio=[0.02,1.5]"], "merger.ratio: must be in (0, 1], got 1.5"),
    (["search.objective=loss"], "search.objective: 'loss' is not allowed; choose one of: accuracy, agreement"),
    (["budget.tflops=1e-4"], "budget.tflops: a search sets the merger's and pruner's knobs itself"),
])
def test_an_invalid_search_fails_before_any_job_naming_the_field(overrides, message):
    with pytest.raises(SearchError, match=None) as info:
        prepared(*overrides)
    assert message in str(info.value)


def test_an_invalid_search_space_launches_nothing(tmp_path, env):
    sweep = tmp_path / "sweep"
    # the sweep's command line in this process (tests/in_process.py); the search as a process: tiny_search
    proc = run_in_process("aim.run", *multirun_args(sweep, *TINY, "search.layers=[0,3]"), env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "aim: invalid search space, nothing was launched: 2 of 6 corner settings are invalid" in proc.stderr
    assert "pruner.l1: must be in [1, inf), got 0" in proc.stderr  # the field, in the aim corners' lows
    assert not sweep.exists()  # no sweep.json, no job dir


class ModelFreeLauncher:
    """Stands in for Hydra's launcher: each job's accuracy and TFLOPs follow from its overrides (no model), its
    results.json and job.json written as aim.run writes them; `fail` names settings whose job fails."""

    def __init__(self, sweep_dir, fail=()):
        self.sweep_dir, self.fail, self.launched = sweep_dir, set(fail), []

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus

        returns = []
        for num, overrides in enumerate(job_overrides, initial_job_idx):
            setting = dict(o.split("=", 1) for o in overrides if o.startswith(("merger.", "pruner")))
            self.launched.append(setting)
            ratio, pruned = float(setting["merger.ratio"]), setting["pruner"] != "none"
            tflops, accuracy = ratio * (0.5 if pruned else 1.0), 0.5 + ratio / 2 - (0.1 if pruned else 0.0)
            out = self.sweep_dir / str(num)
            out.mkdir(parents=True)
            if tuple(sorted(setting.items())) in self.fail:
                (out / "job.json").write_text(json.dumps({"state": "failed", "error": "RuntimeError: boom"}))
                returns.append(JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("boom")))
                continue
            pruner = {"name": setting["pruner"], **({"l1": 1, "l2": 2} if pruned else {})}
            config = {"model": {"name": "llava_onevision", "pretrained": "aim:toy_llava_ov"},
                      "dataset": {"name": "synthetic_video", "num_frames": 4}, "search": {"objective": "accuracy"},
                      "merger": {"name": "aim", "ratio": ratio}, "pruner": pruner}
            (out / "results.json").write_text(json.dumps({"config": config, "accuracy": accuracy, "tflops": tflops,
                                                          "num_samples": 10}))
            (out / "job.json").write_text(json.dumps({"state": "done"}))
            returns.append(JobReturn(status=JobStatus.COMPLETED, _return_value=[accuracy, tflops]))
        return returns


# 4 settings in all: (ratio 0.25 or 0.5) x (aim at l1=1, l2=2, or none)
SMALL_SPACE = {"merger.ratio": "choice(0.25, 0.5)", "pruner": "choice(aim, none)", "pruner.l1": "int(interval(1, 1))",
               "pruner.l2": "int(interval(1, 1))"}


def small_search(tmp_path, n_trials, fail=()):
    import optuna

    search, distributions, fixed, fields = prepared(params=SMALL_SPACE)
    search.n_trials, search.n_jobs = n_trials, 2
    search.sampler = optuna.samplers.NSGAIISampler(seed=0, population_size=2)
    search.sweep_dir = tmp_path / "sweep"
    search.launcher = ModelFreeLauncher(search.sweep_dir, fail)
    return search, distributions, fixed, fields


def test_a_setting_proposed_again_is_not_run_again_and_the_search_stops_when_all_are_run(tmp_path):
    search, distributions, fixed, fields = small_search(tmp_path, n_trials=8)
    search._search(distributions, fixed, fields)
    launched = [tuple(sorted(s.items())) for s in search.launcher.launched]
    assert len(launched) == len(set(launched)) == 4  # every setting once, then the space is spent
    assert len(search.trial_jobs) > 4  # NSGA-II proposed some twice; those got the measured values
    manifest = json.loads((search.sweep_dir / "sweep.json").read_text())
    assert [j["num"] for j in manifest["jobs"]] == [0, 1, 2, 3] and manifest["num_jobs"] == 4
    data = json.loads((search.sweep_dir / TRADEOFF).read_text())
    assert len(data["points"]) == 4
    check_pareto(data["points"], "accuracy")


def test_a_failed_job_does_not_stop_the_search_and_is_reported_at_the_end(tmp_path):
    bad = (("merger.ratio", "0.5"), ("pruner", "none"))
    search, distributions, fixed, fields = small_search(tmp_path, n_trials=4, fail=[bad])
    with pytest.raises(RuntimeError, match="boom"):
        search._search(distributions, fixed, fields)
    assert len(search.launcher.launched) == 4  # the search went on after the failure
    data = json.loads((search.sweep_dir / TRADEOFF).read_text())
    assert len(data["points"]) == 3  # the failed job is no point


def test_a_torn_sweep_json_stops_the_search_before_its_next_batch_saying_why(tmp_path, capsys):
    """sweep.json torn while a batch ran (disk full, edited by hand): adding the next batch to it was a
    JSONDecodeError traceback; the other sweep commands name the file and exit 2, and so does the search now."""
    search, distributions, fixed, fields = small_search(tmp_path, n_trials=4)
    launch = search.launcher.launch

    def launch_then_tear(job_overrides, initial_job_idx):
        returns = launch(job_overrides, initial_job_idx)
        manifest = search.sweep_dir / "sweep.json"
        manifest.write_text(manifest.read_text()[:80])
        return returns

    search.launcher.launch = launch_then_tear
    with pytest.raises(SystemExit) as exit_:
        search._search(distributions, fixed, fields)
    assert exit_.value.code == 2 and len(search.launcher.launched) == 2  # the first batch only
    err = capsys.readouterr().err
    assert f"{search.sweep_dir}: sweep.json unreadable (" in err and "restore it" in err
    assert "aim: search stopped before job 2" in err


# ------------------------------------------------------------------------------------- tradeoff.json

def fake_sweep(root, points, objective="accuracy"):
    """A sweep dir with done jobs whose results.json hold these (merger ratio, l1, l2, tflops, accuracy,
    agreement) points, and one job that never ran."""
    jobs = []
    for i, (ratio, l1, l2, tflops, accuracy, agreement) in enumerate(points + [(0.5, 1, 2, None, None, None)]):
        jobs.append({"num": i, "overrides": [f"merger.ratio={ratio}"], "subdir": str(i), "merger": "aim", "pruner": "aim"})
        if tflops is None:
            continue
        out = root / str(i)
        out.mkdir(parents=True)
        config = {"model": {"name": "llava_onevision", "pretrained": "aim:toy_llava_ov"},
                  "dataset": {"name": "synthetic_video", "num_frames": 4, "limit": 100}, "eval": {"mode": "letter"},
                  "merger": {"name": "aim", "ratio": ratio}, "pruner": {"name": "aim", "l1": l1, "l2": l2},
                  "search": {"objective": objective}}
        (out / "results.json").write_text(json.dumps({
            "config": config, "method": {"merger": "aim", "pruner": "aim"}, "metric": "accuracy", "score": accuracy,
            "accuracy": accuracy, "agreement": agreement, "kl": 0.1, "tflops": tflops, "num_samples": 100}))
        (out / "job.json").write_text(json.dumps({"state": "done"}))
    (root / "sweep.json").write_text(json.dumps({"sweep_dir": str(root), "argv": [], "task_overrides": [],
                                                 "hydra_overrides": [], "num_jobs": len(jobs), "jobs": jobs,
                                                 "search": {"objective": objective, "model": "toy_llava_ov"}}))
    return root


#        ratio, l1, l2, tflops, accuracy, agreement
POINTS = [(0.1, 1, 2, 1.0, 0.50, 0.60),   # cheapest: on the set
          (0.2, 1, 3, 1.5, 0.50, 0.90),   # same accuracy, costlier: dominated (best agreement for its cost)
          (0.3, 2, 3, 2.0, 0.70, 0.70),   # on the set
          (0.4, 2, 4, 2.0, 0.60, 0.95),   # same cost, less accurate: dominated
          (0.5, 3, 4, 3.0, 0.70, 0.80),   # same accuracy, costlier: dominated
          (1.0, 3, 5, 4.0, 0.90, 1.00),   # on the set
          (0.6, 1, 2, 2.5, None, None)]   # no accuracy (e.g. unlabeled): never on the set


def test_tradeoff_marks_exactly_the_non_dominated_points(tmp_path):
    from aim.tradeoff import write_tradeoff

    sweep = fake_sweep(tmp_path / "sweep", POINTS)
    data = json.loads(write_tradeoff(sweep).read_text())
    assert [p["pareto"] for p in data["points"]] == [True, False, True, False, False, True, False]
    assert len(data["points"]) == len(POINTS)  # the job that never ran is no point, and says so
    assert data["left_out"] == [{"num": len(POINTS), "run": str(len(POINTS)), "state": "missing", "why": ""}]
    assert data["model"] == "toy_llava_ov" and data["dataset_limit"] == 100
    check_pareto(data["points"], "accuracy")
    by_agreement = json.loads(write_tradeoff(sweep, "agreement").read_text())
    assert [p["pareto"] for p in by_agreement["points"]] == [True, True, False, True, False, True, False]
    check_pareto(by_agreement["points"], "agreement")


def test_a_done_job_whose_results_cannot_be_read_is_left_out_saying_why(tmp_path, monkeypatch):
    """results.json damaged (or removed) after the status called its job done, as a rerun of the job rewriting it
    would leave it: it was skipped in silence; now it is in `left_out`, failed, with the reason."""
    import aim.sweep
    from aim.tradeoff import tradeoff

    sweep = fake_sweep(tmp_path / "sweep", POINTS)
    rows = aim.sweep.status(sweep, query_scheduler=False)  # the status as read before the damage
    monkeypatch.setattr(aim.sweep, "status", lambda *args, **kwargs: rows)
    (sweep / "1" / "results.json").write_text('{"config": {')
    (sweep / "2" / "results.json").unlink()
    data = tradeoff(sweep)
    assert [p["run"] for p in data["points"]] == ["0", "3", "4", "5", "6"]
    left = {r["run"]: r for r in data["left_out"]}
    assert sorted(left) == ["1", "2", "7"]
    assert left["1"]["state"] == "failed" and left["1"]["why"].startswith("results.json unreadable (")
    assert left["2"] == {"num": 2, "run": "2", "state": "failed", "why": "results.json removed since its status was read"}
    assert left["7"]["state"] == "missing"


def test_aim_search_prints_each_left_out_job_with_its_reason(capsys):
    from aim.search import print_left_out

    scored = {"run": "r1", "accuracy": 0.9, "tflops": 1.0}
    print_left_out({"objective": "accuracy", "points": [scored, scored],
                    "left_out": [{"num": 2, "run": "r2", "state": "failed", "why": "boom"},
                                 {"num": 3, "run": "r3", "state": "missing", "why": ""}]})
    assert capsys.readouterr().err == ("aim.search: 2 of 4 jobs are not done and not in the trade-off: job 2 (r2) "
                                       "failed: boom; job 3 (r3) missing\n")
    print_left_out({"objective": "accuracy", "points": [scored], "left_out": []})
    assert capsys.readouterr().err == ""


def test_the_command_rewrites_tradeoff_json_and_prints_the_pareto_set(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep", POINTS)
    proc = subprocess.run([sys.executable, "-m", "aim.search", str(sweep), "--objective", "agreement"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "7 points, 4 on the Pareto front (agreement max, tflops min)" in proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[1].split()[:7] == ["merger", "merger.ratio", "pruner", "pruner.l1", "pruner.l2", "tflops", "accuracy"]
    assert [line.split()[1] for line in lines[2:]] == ["0.1", "0.2", "0.4", "1"]  # the set, cheapest first
    assert json.loads((sweep / TRADEOFF).read_text())["objective"] == "agreement"


def test_the_command_compares_a_search_with_a_grid_at_equal_or_lower_tflops(tmp_path, capsys):
    from aim.search import main

    search = fake_sweep(tmp_path / "search", POINTS)
    grid = fake_sweep(tmp_path / "grid", [(0.25, 1, 2, 1.2, 0.5, 0.6),    # the search has 0.5 at 1.0: matched
                                          (0.25, 1, 3, 2.5, 0.8, 0.8),    # the best at <= 2.5 is 0.7: not matched
                                          (0.25, 2, 4, 5.0, 0.9, 0.9)])   # 0.9 at 4.0: matched
    # `python -m aim.search SEARCH --against GRID`, its main() in this process (the command as a process: the test above)
    assert main([str(search), "--against", str(grid)]) == 0
    stdout = capsys.readouterr().out
    table = [line for line in stdout.splitlines() if line.startswith("| aim")]
    assert [line.rsplit("|", 2)[1].strip() for line in table] == ["yes", "no", "yes"]
    assert "aim ratio=0.3 + aim l1=2 l2=3 | 2 | 0.7 | no" in table[1]  # the best search setting, shown
    assert "2 of 3 settings matched or beaten by a search setting at equal or lower TFLOPs" in stdout
    assert not (grid / TRADEOFF).exists()  # the grid is read, not written to


def test_the_report_shows_the_pareto_set_of_a_search(tmp_path):
    from aim.analysis.report import build

    sweep = fake_sweep(tmp_path / "sweep", POINTS)
    paths = build([sweep], tmp_path / "report", roofline=False)
    page = paths["report"].read_text()
    assert "Trade-off search: the Pareto set" in page
    assert "7 settings evaluated on the first 100 questions; 3 on the Pareto set of accuracy" in page
    section = page[page.index("id='pareto'"):page.index("id='table'")]
    assert section.count("<tr>") == 1 + 3  # the header and the three Pareto settings
    assert paths["png_pareto_0"].exists()


def test_resubmit_reruns_a_failed_trial_in_its_dir_and_rewrites_tradeoff_json(tiny_search, tmp_path, env):
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_search, sweep)
    job = json.loads((sweep / "sweep.json").read_text())["jobs"][1]
    (sweep / job["subdir"] / "results.json").unlink()
    state = json.loads((sweep / job["subdir"] / "job.json").read_text())
    (sweep / job["subdir"] / "job.json").write_text(json.dumps({**state, "state": "failed", "error": "boom"}))
    (sweep / TRADEOFF).write_text(json.dumps(json.loads((sweep / TRADEOFF).read_text()) | {"points": []}))
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "sweep.py"), "resubmit", str(sweep)], env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resubmitting jobs [1]" in proc.stderr
    assert (sweep / job["subdir"] / "results.json").exists()
    data = json.loads((sweep / TRADEOFF).read_text())
    assert len(data["points"]) == 3 and data["source"] == str(sweep.resolve())
