"""Every config under conf/ composes and validates; bad values fail early, naming the field."""
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from aim.config import ConfigError, validate
from aim.data import DATASETS
from aim.paths import CONF_DIR

GROUPS = ["model", "dataset", "merger", "pruner", "logger"]


def options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def composed(overrides=()):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_config_file_composes_and_validates(group, option, benchmark_roots):
    overrides = [f"{group}={option}"]
    if group == "dataset" and option in ("video_mcq", "image_mcq"):
        overrides.append("dataset.root=/some/benchmark")  # the one field a user must always give
    if group == "dataset" and option in benchmark_roots:  # a real benchmark validates only where it is
        overrides.append(f"dataset.root={benchmark_roots[option]}")
    if group == "dataset" and option in DATASETS and getattr(DATASETS.config_schema(option), "free_form", False):
        overrides.append("eval.mode=generate")  # free-form answers (VQA, GQA, MME, POPE, ...) are generated
    if group == "pruner" and option != "aim_toy":  # the papers' defaults for 28-layer LLMs (aim_toy: the bundled model's)
        overrides.append("model=llava_onevision_7b")
        if option == "dycoke":  # it prunes the KV cache while decoding only
            overrides.append("eval.mode=generate")
    if group == "model" and not any(toy in option for toy in ("toy", "tiny")):
        overrides.append("pruner=aim")  # the default aim_toy's layers are the bundled 4-layer model's (refused here)
    valid = validate(composed(overrides))
    assert getattr(valid, group).name  # the schema instance of that group


@pytest.mark.parametrize("group", ["exp", "method"])
def test_experiment_and_method_files_compose(group):
    files = sorted((CONF_DIR / group).glob("*.yaml"))
    assert files
    models = {"aim": "llava_onevision_7b", "aim_72b": "llava_onevision_72b"}  # the paper's setting at 28 / 80 layers
    for f in files:  # the rest are for the bundled model
        validate(composed([f"+{group}={f.stem}"] + ([f"model={models[f.stem]}"] if f.stem in models else [])))


def test_a_toy_schedule_is_refused_on_a_real_model_unless_asked_for():
    """The default pruner (aim_toy) and the toy methods name the LLM depth their layer indices were chosen for
    (pruner.schedule_layers: 4): a real preset without its own pruner or method fails validation, naming the
    field, both depths and the paper's schedule, instead of pruning a 28-layer LLM from layer 2."""
    for overrides in (["model=llava_onevision_7b"], ["model=qwen2_vl_7b", "+method=fastv_toy"]):
        with pytest.raises(ConfigError, match=r"pruner\.schedule_layers: .*written for an LLM of 4 decoder layers.*"
                                              r"has 28: .*pruner=aim is the paper's l1=14, l2=22"):
            validate(composed(overrides))
    assert validate(composed(["model=llava_onevision_7b", "pruner.schedule_layers=null"])).pruner.l1 == 2  # as asked
    assert validate(composed(["model=llava_onevision_7b", "pruner=aim"])).pruner.l1 == 14  # pruner=aim: any depth
    assert validate(composed([])).pruner.l1 == 2  # the bundled model: the depth it was written for
    with pytest.raises(ConfigError, match=r"pruner\.schedule_layers: a layer count >= 1 or null, got 0"):
        validate(composed(["pruner.schedule_layers=0"]))


@pytest.mark.parametrize("overrides,field,prunes", [
    ("pruner=aim", "l1", "l1 in 1..3"),  # the paper's l1=14, l2=22
    ("pruner.l1=10 pruner.l2=12", "l1", "l1 in 1..3"),
    ("pruner=random", "l1", "l1 in 1..3"),
    ("pruner=vtw", "k", "k in 1..3"),
    ("pruner=fastv pruner.k=100", "k", "k in 1..3"),
    ("pruner=fastv pruner.keep=1.0", "keep", "keep < 1"),
    ("pruner=pdrop pruner.lam=1.0", "lam", "lam < 1"),
    ("pruner=pdrop pruner.boundaries=[4,9]", "boundaries", "a boundary in 1..3"),
    ("pruner=dart pruner.k=4", "k", "k in 1..3"),
])
def test_a_pruner_that_removes_nothing_on_the_models_llm_fails_naming_the_field_layers_and_values(overrides, field, prunes):
    with pytest.raises(ConfigError) as error:
        validate(composed(overrides.split()))
    message = str(error.value)
    assert message.startswith(f"pruner.{field}: ") and "removes no visual token on aim:toy_llava_ov" in message
    assert "has 4 decoder layers" in message and f"it prunes with {prunes}" in message and "pruner=none" in message


def test_the_same_pruner_settings_are_valid_where_they_prune_and_pruner_none_stays_valid():
    assert validate(composed(["pruner=aim", "model=llava_onevision_7b"])).pruner.l1 == 14  # 28 layers: prunes
    assert validate(composed(["pruner=none"])).pruner.name == "none"
    assert validate(composed(["pruner=fastv", "pruner.k=3"])).pruner.k == 3  # the last layer loses half
    # in budget mode the configured knobs are replaced by chosen ones, which never prune nothing (test_budget)
    assert validate(composed(["pruner=aim", "budget.fraction=0.5"])).pruner.l1 == 14


def test_cli_pruner_that_removes_nothing_exits_2_before_the_model_loads(tmp_path):
    proc, seconds = run_aim("pruner=vtw", f"hydra.run.dir={tmp_path}", "logger=none")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "aim: invalid config: pruner.k: pruner vtw (k=14) removes no visual token" in proc.stderr
    assert not (tmp_path / "samples.jsonl").exists() and not (tmp_path / "run_spec.json").exists()
    assert seconds < 30


def test_the_default_is_the_bundled_model_on_the_bundled_benchmark():
    valid = validate(composed())
    assert valid.model.pretrained == "aim:toy_llava_ov"
    assert valid.dataset.name == "synthetic_video"
    assert valid.merger.name == "aim" and valid.pruner.name == "aim"  # AIM for both, as the paper
    assert (valid.pruner.l1, valid.pruner.l2) == (2, 4)  # scaled to the bundled 4-layer LLM


@pytest.mark.parametrize(
    "override,message",
    [
        ("merger.name=nonexistent", r"merger.name: unknown merger 'nonexistent'; registered mergers: aim, cdpruner, divprune, downsample, dycoke, fastvid, holitom, none, pool, prumerge, prumerge_plus, prunevid, random, vidcom2, visionzip"),
        ("pruner.name=magic", r"pruner.name: unknown pruner 'magic'; registered pruners: aim, dart, dycoke, fastv, holitom, none, pdrop, prunevid, random, vtw"),
        ("merger=aim merger.ratio=0", r"merger.ratio: must be in \(0, 1\], got 0"),
        ("merger=pool merger.ratio=1.5", r"merger.ratio: must be in \(0, 1\], got 1.5"),
        ("pruner=aim pruner.l1=20 pruner.l2=10", r"pruner.l2: must be greater than l1 \(20\), got 10"),
        ("pruner=fastv pruner.keep=2", r"pruner.keep: must be in \[0, 1\], got 2"),
        ("dataset.num_frames=0", r"dataset.num_frames: must be in \[1, inf\), got 0"),
        ("dataset.limit=0", r"dataset.limit: must be >= 1 \(the first `limit` samples\) or null \(every sample\), got 0"),
        ("+merger.ratoi=0.5", r"merger.ratoi: unknown field; allowed fields: name"),
        ("dataset.num_frames=many", r"dataset.num_frames: .*could not be converted to Integer"),
        ("eval.mode=vibes", r"eval.mode: 'vibes' is not allowed; choose one of: letter, generate, likelihood"),
        ("eval.batch_size=0", r"eval.batch_size: must be in \[1, inf\), got 0"),
        ("dataset.num_workers=-1", r"dataset.num_workers: must be in \[0, inf\), got -1"),
        ("dataset.num_workers=two", r"dataset.num_workers: .*could not be converted to Integer"),
        ("model.dtype=float8", r"model.dtype: 'float8' is not allowed; choose one of: float32, bfloat16, float16"),
        ("logger.mode=sometimes", r"logger.mode: 'sometimes' is not allowed"),
        ("model.compile=fast", r"model.compile: 'fast' is not allowed; choose one of: none, default, reduce-overhead, "
                               r"cuda_graphs"),
        ("model.compile=cuda_graphs", r"model.compile: 'cuda_graphs' replays CUDA graphs and needs a CUDA device "
                                      r"\(model.device=cuda\), got device 'cpu'; on a CPU choose one of: none, default"),
    ],
)
def test_invalid_values_name_the_field_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(composed(override.split()))


def run_aim(*overrides, timeout=60):
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "aim.run", *overrides], capture_output=True, text=True, timeout=timeout)
    return proc, time.time() - start


def test_cli_unknown_merger_fails_fast_listing_the_mergers():
    proc, seconds = run_aim("merger=nonexistent")
    assert proc.returncode != 0
    assert "Available options in 'merger'" in proc.stderr and "none" in proc.stderr
    assert seconds < 15


def test_cli_bad_field_fails_before_loading_anything(tmp_path):
    proc, seconds = run_aim("dataset.num_frames=0", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert "dataset.num_frames: must be in [1, inf), got 0" in proc.stderr
    assert seconds < 30
    assert not (tmp_path / "samples.jsonl").exists()


def test_a_setting_nothing_reads_is_refused_not_silently_ignored():
    """`eval.device_sync` was validated but never read (the loop always synchronises around timed prefills)."""
    with pytest.raises(ConfigError, match=r"eval.device_sync: unknown field; allowed fields: mode, max_new_tokens, "
                                          r"progress, batch_size$"):
        validate(composed(["+eval.device_sync=false"]))


# --- a knob given on the command line that the tool would not read (aim.config.check_knobs_read) ------------------
@pytest.mark.parametrize("tool,overrides,message", [
    ("aim.run", ["eval.max_new_tokens=64"],
     "eval.max_new_tokens: the most tokens decoded per answer, read with eval.mode=generate only; eval.mode=letter "
     "scores the logits of one prefill and decodes nothing; give eval.mode=generate to decode, or leave "
     "eval.max_new_tokens out, got eval.max_new_tokens=64"),
    ("aim.run", ["eval.mode=likelihood", "++eval.max_new_tokens=3"],
     "eval.max_new_tokens: the most tokens decoded per answer, read with eval.mode=generate only; "
     "eval.mode=likelihood"),
    ("aim.run", ["fidelity.enabled=false", "fidelity.cache_dir=/elsewhere"],
     "fidelity.cache_dir: where the unreduced answers are kept, read with fidelity.enabled=true only; "
     "fidelity.enabled=false measures no fidelity and keeps none; give fidelity.enabled=true, or leave "
     "fidelity.cache_dir out, got fidelity.cache_dir=/elsewhere"),
    ("aim.run", ["logger.name=none", "logger.project=mine"],
     "logger.project: a W&B setting, read with logger=wandb only; logger.name=none starts no W&B run (results.json "
     "and samples.jsonl alone); give logger=wandb, or leave it out, got logger.project=mine"),
    ("aim.run", ["logger=none", "+logger.tags=[a,b]"], "logger.tags: a W&B setting, read with logger=wandb only"),
    ("aim.bench", ["dataset.num_frames=32"],
     "dataset.num_frames: aim.bench times bench.frames=8 frames of synthetic features (it reads no dataset); give "
     "bench.frames=32, got dataset.num_frames=32"),
    ("aim.flops", ["dataset.num_frames=32", "flops.frames=8"],
     "dataset.num_frames: aim.flops counts flops.frames=8 frames, which replaces the dataset's when given; give "
     "flops.frames=32, or leave flops.frames null to count dataset.num_frames, got dataset.num_frames=32"),
], ids=["max_new_tokens-letter", "max_new_tokens-likelihood", "cache_dir", "logger.name", "logger-group", "bench",
        "flops"])
def test_a_knob_given_that_the_tool_would_not_read_is_refused_naming_why_and_what_to_give(tool, overrides, message):
    from aim.config import check_knobs_read

    valid = validate(composed(overrides))  # a valid config: each value alone is allowed
    with pytest.raises(ConfigError) as refused:
        check_knobs_read(valid, tool, overrides)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("tool,overrides", [
    ("aim.run", ["eval.mode=generate", "eval.max_new_tokens=64"]),  # read where it is given
    ("aim.run", ["fidelity.cache_dir=/elsewhere"]),
    ("aim.run", ["logger=wandb", "logger.project=mine"]),
    ("aim.run", ["dataset.num_frames=32"]),  # the knobs of another tool: aim.run reads the dataset's frames
    ("aim.bench", ["eval.max_new_tokens=64"]),  # (what aim.bench and aim.flops read of eval: beyond these checks)
    ("aim.bench", ["dataset.num_frames=8"]),  # the frames timed are the frames asked
    ("aim.flops", ["dataset.num_frames=32"]),  # flops.frames null: it counts the dataset's
    ("aim.flops", ["dataset.num_frames=8", "flops.frames=8"]),
    # the same knobs set by config files, not given: conf/config.yaml's eval.max_new_tokens and fidelity.cache_dir,
    # logger/wandb.yaml's project, tags, ..., an experiment file's dataset.num_frames (main_image: 1, bench.frames: 8)
    ("aim.run", ["fidelity.enabled=false", "logger.name=none"]),
    ("aim.bench", ["+exp=main_image"]),
    ("aim.flops", ["+exp=video_baselines", "flops.frames=8"]),
])
def test_the_same_knobs_pass_where_the_tool_reads_them_or_only_a_config_file_sets_them(tool, overrides):
    from aim.config import check_knobs_read

    valid = validate(composed(overrides))
    check_knobs_read(valid, tool, overrides)
