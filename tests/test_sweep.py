"""Sweeps as a user runs them (`python -m aim.run +exp=NAME -m`, the local launcher): every job is
validated before any is launched, `sweep.json` lists the expected jobs, each job writes its results,
a status view tells done / running / failed / missing apart and a resubmission reruns only the failed
and missing jobs; W&B runs are grouped by sweep, tagged by method, and fall back to offline without a key.
The ablation_layers sweep (conftest.py), the resubmission and the W&B sweep run as processes of their own;
the refused sweeps and the image table run the same main() on the same command line in this process
(`in_process`)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from aim.paths import CONF_DIR
from tests.in_process import run_in_process
from tests.sweep_helpers import REPO, multirun, multirun_args
from tests.wandb_records import read_run

# the paper's (l1, l2) pairs for 28 layers, scaled to the bundled 4-layer LLM, and (1, 4)
BUNDLED_LAYER_PAIRS = {(3, 5), (2, 5), (1, 5), (3, 4), (2, 4), (2, 3), (1, 3), (1, 2), (1, 4)}


@pytest.fixture(scope="module")
def env(bundled_env):
    return bundled_env


def in_process(sweep_dir, *overrides, env):
    """`multirun(...)` run in this process (tests/in_process.py): the same sweep, its files and exit status."""
    return run_in_process("aim.run", *multirun_args(sweep_dir, *overrides), env=env)


def expand(exp: str, *overrides: str) -> list[dict]:
    """The jobs `python -m aim.run +exp=<exp> -m` would launch, composed and validated as the sweeper does."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from aim.sweep import plan_jobs, sweep_overrides

    args = [f"+exp={exp}", *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", args, run_mode=RunMode.MULTIRUN)
        return plan_jobs(loader, master, list(enumerate(sweep_overrides(loader, master.hydra.sweeper.params, args))))


NUM_JOBS = {"ablation_layers": 9, "ablation_ratio": 42, "ablation_frames": 10, "baselines": 12, "compare_methods": 12,
            "main_video": 2, "main_image": 12}


def grid_experiments() -> list[str]:
    """The experiment files whose sweep is a grid (the aim sweeper); a trade-off search draws its trials
    from distributions as it goes, and tests/test_search.py validates its space instead."""
    return sorted(p.stem for p in (CONF_DIR / "exp").glob("*.yaml") if "AimOptunaSweeper" not in p.read_text())


@pytest.mark.parametrize("exp", grid_experiments())
def test_every_experiment_file_names_its_sweep_and_every_job_validates(exp):
    jobs = expand(exp)  # raises InvalidSweep naming any job whose config is invalid
    assert len(jobs) == NUM_JOBS.get(exp, len(jobs)) and len(jobs) > 1
    assert len({j["subdir"] for j in jobs}) == len(jobs)  # one output dir per job


def test_the_issues_experiments_exist():
    assert set(NUM_JOBS) <= {p.stem for p in (CONF_DIR / "exp").glob("*.yaml")}


def test_ablation_layers_covers_the_papers_pairs_scaled_to_the_bundled_model():
    jobs = expand("ablation_layers")
    pairs = {tuple(int(x) for x in j["subdir"].removeprefix("l1=").split("_l2=")) for j in jobs}
    assert pairs == BUNDLED_LAYER_PAIRS
    # the paper's own pairs for a 28-layer LLM are one override away (its (28, 29) prunes nothing: pruner=none)
    paper = expand("ablation_layers", "model=llava_onevision_7b",
                   "pruner_layers=[21,29],[14,29],[7,29],[21,22],[14,22],[14,15],[7,15],[7,8]")
    assert [j["subdir"] for j in paper][:2] == ["l1=21_l2=29", "l1=14_l2=29"] and len(paper) == 8


def test_a_sweep_with_a_job_that_prunes_nothing_is_refused_naming_the_job():
    """(4, 5) on the bundled 4-layer LLM removes no visual token: the sweep says so before launching."""
    from aim.sweep import InvalidSweep

    with pytest.raises(InvalidSweep, match=r"pruner_layers=\[4,5\].*pruner.l1: pruner aim .* has 4 decoder layers"):
        expand("ablation_layers", "pruner_layers=[2,4],[4,5]")


def test_a_sweep_given_a_knob_no_job_reads_is_refused_naming_each_job():
    """eval.max_new_tokens is read in generate mode only. Given to a sweep whose jobs all score letters, each job
    is named; given to one that sweeps eval.mode=letter,generate, its generate jobs read it and the sweep is valid
    (the letter jobs leave it unused, as the sweep asked)."""
    from aim.sweep import InvalidSweep

    with pytest.raises(InvalidSweep) as refused:
        expand("main_video", "eval.mode=letter", "eval.max_new_tokens=16")
    problems = {num: message for num, _, message in refused.value.problems}
    assert sorted(problems) == [0, 1]  # +method=unreduced,aim_toy
    assert all(m.startswith("eval.max_new_tokens: the most tokens decoded per answer, read with eval.mode=generate "
                            "only; eval.mode=letter") for m in problems.values())
    assert "invalid config in 2 of 2 jobs" in str(refused.value)
    assert len(expand("main_video", "eval.mode=letter,generate", "eval.max_new_tokens=16",
                      "hydra.sweep.subdir=${hydra.job.num}")) == 4
    assert len(expand("main_video", "eval.mode=generate", "eval.max_new_tokens=16")) == 2


def test_a_batch_size_is_refused_only_in_a_sweep_whose_jobs_all_prefill_one_sample_at_a_time():
    """The random control is prefilled one sample at a time: eval.batch_size=4 given to a sweep of it alone is
    unread, and refused; beside AIM's job, which batches, it is the sweep's throughput knob (the random job's
    results.json says `prefill_batch_size` 1)."""
    from aim.sweep import InvalidSweep

    with pytest.raises(InvalidSweep, match=r"eval.batch_size: samples prefilled together; pruner random is "
                                           r"prefilled one sample at a time"):
        expand("main_video", "+method=random_toy", "eval.batch_size=4")
    assert len(expand("main_video", "+method=aim_toy,random_toy", "eval.batch_size=4")) == 2


def test_a_sweep_given_a_knob_of_another_tool_is_refused():
    """bench.frames is aim.bench's: no job of aim.run reads it, whatever the sweep."""
    from aim.sweep import InvalidSweep

    with pytest.raises(InvalidSweep, match=r"bench.frames: aim.run never reads bench.\* \(bench.frames is read by "
                                           r"aim.bench\); give dataset.num_frames=2 instead"):
        expand("main_video", "bench.frames=2,4")


def test_a_sweep_given_a_knob_no_job_would_read_launches_nothing(tmp_path, env):
    sweep = tmp_path / "sweep"
    proc = in_process(sweep, "merger=aim,pool", "dataset.limit=1", "logger=none", "fidelity.enabled=false",
                      "fidelity.cache_dir=/elsewhere", env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "invalid sweep, nothing was launched: invalid config in 2 of 2 jobs" in proc.stderr
    assert "fidelity.cache_dir: where the unreduced answers are kept, read with fidelity.enabled=true only" in proc.stderr
    assert not sweep.exists()


def test_a_sweep_with_one_invalid_job_launches_nothing_and_names_the_job_and_field(tmp_path, env):
    sweep = tmp_path / "sweep"
    proc = in_process(sweep, "+exp=ablation_layers", "pruner_layers=[1,2],[3,3]", "dataset.limit=1", "logger=none",
                      env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "invalid sweep, nothing was launched" in proc.stderr
    assert "job 1 [pruner_layers=[3,3]" in proc.stderr  # the job's overrides ...
    assert "pruner.l2: must be greater than l1 (3), got 3" in proc.stderr  # ... and the field
    assert "job 0" not in proc.stderr  # the valid job is not blamed
    assert not sweep.exists()  # no manifest, no job directory: job 0 did not start either


def test_ablation_layers_runs_locally_with_one_results_json_per_job(layers_sweep):
    from aim.pruning.schedule import aim_schedule, kept_per_layer

    manifest = json.loads((layers_sweep / "sweep.json").read_text())
    assert manifest["num_jobs"] == 9 and manifest["launcher"] == "local"
    assert "+exp=ablation_layers" in manifest["task_overrides"]
    results = sorted(layers_sweep.glob("*/results.json"))
    assert len(results) == 9
    assert {p.parent.name for p in results} == {j["subdir"] for j in manifest["jobs"]}
    for job in manifest["jobs"]:
        out = layers_sweep / job["subdir"]
        summary = json.loads((out / "results.json").read_text())
        l1, l2 = summary["config"]["pruner"]["l1"], summary["config"]["pruner"]["l2"]
        assert job["subdir"] == f"l1={l1}_l2={l2}" and f"pruner_layers=[{l1},{l2}]" in job["overrides"]
        assert summary["num_samples"] == 1 and summary["config"]["merger"]["ratio"] == 0.25
        record = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
        # the pair really reached the pruner: each layer saw the tokens AIM's schedule keeps
        assert record["visual_tokens_per_layer"] == kept_per_layer(record["visual_tokens"], aim_schedule(4, l1, l2))
        assert json.loads((out / "job.json").read_text())["state"] == "done"


# the image table's methods: (merger, pruner) of each job of +exp=main_image (conf/method/*.yaml)
IMAGE_TABLE = {"unreduced": ("none", "none"), "aim_toy": ("aim", "aim"), "random_toy": ("random", "random"),
               "fastv_toy": ("none", "fastv"), "pdrop_toy": ("none", "pdrop"), "vtw_toy": ("none", "vtw"),
               "prumerge_toy": ("prumerge", "none"), "prumerge_plus_toy": ("prumerge_plus", "none"),
               "divprune_toy": ("divprune", "none"), "visionzip_toy": ("visionzip", "none"),
               "cdpruner_toy": ("cdpruner", "none"), "dart_toy": ("none", "dart")}


def test_main_image_runs_the_image_table_on_an_image_model_with_one_results_json_per_job(tmp_path, env):
    sweep = tmp_path / "sweep"
    proc = in_process(sweep, "+exp=main_image", "dataset.limit=1", "logger=none", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["launcher"] == "local" and manifest["num_jobs"] == len(IMAGE_TABLE)
    assert {j["subdir"]: (j["merger"], j["pruner"]) for j in manifest["jobs"]} == IMAGE_TABLE
    assert {p.parent.name for p in sweep.glob("*/results.json")} == set(IMAGE_TABLE)  # one per expected job
    results = {j["subdir"]: json.loads((sweep / j["subdir"] / "results.json").read_text()) for j in manifest["jobs"]}
    for method, summary in results.items():
        assert summary["num_samples"] == 1 and summary["num_skipped"] == 0
        assert (summary["method"]["merger"], summary["method"]["pruner"]) == IMAGE_TABLE[method]
        # the default: LLaVA-1.5's classes with random weights, each question on one frame seen as one image
        assert summary["config"]["model"]["name"] == "llava" and summary["config"]["model"]["random_init"]
        assert summary["config"]["dataset"]["num_frames"] == 1
    unreduced = results["unreduced"]
    assert unreduced["visual_tokens"] == 24 * 24  # LLaVA-1.5's 576 tokens per image
    for method, summary in results.items():  # every method spends less of the LLM prefill than the unreduced model
        if method != "unreduced":
            assert summary["tflops"] < unreduced["tflops"], method


IMAGE_BENCHMARKS = ("vqav2", "gqa", "mme", "textvqa_val", "scienceqa_img", "mmbench_en_dev", "pope")
FREE_FORM = {"vqav2", "gqa", "mme", "textvqa_val", "pope"}  # generated answers: eval.mode=generate


@pytest.mark.parametrize("image_benchmark", IMAGE_BENCHMARKS)
def test_main_image_takes_the_papers_image_model_and_each_image_benchmark(image_benchmark, benchmark_roots):
    mode = ["eval.mode=generate"] if image_benchmark in FREE_FORM else []
    jobs = expand("main_image", "model=llava_1.5_7b", f"dataset={image_benchmark}",
                  f"dataset.root={benchmark_roots[image_benchmark]}", "+method=unreduced,aim", *mode)
    assert [(j["subdir"], j["merger"], j["pruner"]) for j in jobs] == [("unreduced", "none", "none"), ("aim", "aim", "aim")]


def sweep_cli(*args, env, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "launch" / "sweep.py"), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_status_tells_states_apart_and_resubmit_reruns_only_failed_and_missing_jobs(layers_sweep, tmp_path, env):
    sweep = tmp_path / "sweep"
    shutil.copytree(layers_sweep, sweep)
    jobs = json.loads((sweep / "sweep.json").read_text())["jobs"]
    failed, missing, running = jobs[2]["subdir"], jobs[5]["subdir"], jobs[7]["subdir"]
    (sweep / failed / "results.json").unlink()
    state = json.loads((sweep / failed / "job.json").read_text())
    (sweep / failed / "job.json").write_text(json.dumps({**state, "state": "failed", "error": "RuntimeError: boom"}))
    shutil.rmtree(sweep / missing)
    (sweep / running / "results.json").unlink()  # a live process on this host (this test) holds the job
    (sweep / running / "job.json").write_text(json.dumps({**state, "state": "running", "pid": os.getpid()}))
    untouched = {j["subdir"]: (sweep / j["subdir"] / "results.json").stat().st_mtime_ns
                 for j in jobs if j["subdir"] not in (failed, missing, running)}

    status = sweep_cli("status", sweep, "--json", env=env)
    assert status.returncode == 0, status.stderr
    states = {row["subdir"]: row["state"] for row in json.loads(status.stdout)}
    assert states[failed] == "failed" and states[missing] == "missing" and states[running] == "running"
    assert sum(s == "done" for s in states.values()) == len(jobs) - 3

    proc = sweep_cli("resubmit", sweep, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resubmitting jobs [2, 5]" in proc.stderr
    assert (sweep / failed / "results.json").exists() and (sweep / missing / "results.json").exists()
    assert not (sweep / running / "results.json").exists()  # a running job is left alone
    assert len((sweep / failed / "samples.jsonl").read_text().splitlines()) == 1  # resumed, not redone
    assert json.loads((sweep / failed / "job.json").read_text())["attempt"] == 2
    for subdir, mtime in untouched.items():  # done jobs were not run again
        assert (sweep / subdir / "results.json").stat().st_mtime_ns == mtime
    after = {row["subdir"]: row["state"] for row in json.loads(sweep_cli("status", sweep, "--json", env=env).stdout)}
    assert after == {**states, failed: "done", missing: "done"}


def test_wandb_runs_are_grouped_by_sweep_tagged_by_method_and_offline_without_a_key(tmp_path, env):
    sweep = tmp_path / "sweep_w"
    no_key = {**env, "HOME": str(tmp_path / "home")}  # no ~/.netrc, no WANDB_API_KEY: online cannot start
    proc = multirun(sweep, "merger=aim,pool", "pruner=none", "dataset.limit=1", "logger=wandb", "logger.mode=online",
                    env=no_key, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("W&B online logging unavailable") == 2 and "logging offline" in proc.stderr
    for merger in ("aim", "pool"):
        job = next(j for j in json.loads((sweep / "sweep.json").read_text())["jobs"] if j["merger"] == merger)
        out = sweep / job["subdir"]
        files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(files) == 1
        run = read_run(files[0])
        results = json.loads((out / "results.json").read_text())
        assert run["group"] == "sweep_w"  # the sweep dir's name: both jobs in one group
        assert {f"merger:{merger}", "pruner:none"} <= set(run["tags"])
        assert run["config"]["merger"]["name"] == merger
        for key in ("accuracy", "tflops", "prefill_ms", "visual_tokens", "num_samples"):
            assert run["summary"][key] == pytest.approx(results[key]), key
        for question_type, accuracy in results["accuracy_by_type"].items():
            assert run["summary"][f"accuracy_by_type/{question_type}"] == pytest.approx(accuracy)
