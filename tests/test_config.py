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
from tests.in_process import run_in_process

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
    proc, seconds = run_aim("pruner=vtw", f"hydra.run.dir={tmp_path}", "logger=none", in_process=True)
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


def run_aim(*overrides, in_process=False, timeout=60):
    """`python -m aim.run OVERRIDES` and the seconds it took: as a process of its own, or with `in_process` the same
    main() on the same command line in this process (tests/in_process.py), for a refusal's message and exit status."""
    start = time.time()
    if in_process:
        proc = run_in_process("aim.run", *overrides)
    else:
        proc = subprocess.run([sys.executable, "-m", "aim.run", *overrides], capture_output=True, text=True,
                              timeout=timeout)
    return proc, time.time() - start


def test_cli_unknown_merger_fails_fast_listing_the_mergers():
    proc, seconds = run_aim("merger=nonexistent")
    assert proc.returncode != 0
    assert "Available options in 'merger'" in proc.stderr and "none" in proc.stderr
    assert seconds < 15


def test_cli_bad_field_fails_before_loading_anything(tmp_path):
    proc, seconds = run_aim("dataset.num_frames=0", f"hydra.run.dir={tmp_path}", in_process=True)
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
    # a group the tool never reads (aim.config.TOOLS), with the tool's own knob for the same thing where it has one
    ("aim.run", ["bench.frames=16"],
     "bench.frames: aim.run never reads bench.* (bench.frames is read by aim.bench); give dataset.num_frames=16 "
     "instead, or leave it out, got bench.frames=16"),
    ("aim.run", ["flops.text_tokens=50"],
     "flops.text_tokens: aim.run reads of flops.* only flops.hardware, flops.peak_tflops, flops.bandwidth_gbs, "
     "flops.fused_attention (flops.text_tokens is read by aim.flops); leave it out, got flops.text_tokens=50"),
    ("aim.bench", ["eval.max_new_tokens=64"],
     "eval.max_new_tokens: aim.bench never reads eval.* (eval.max_new_tokens is read by aim.run); give "
     "bench.new_tokens=64 instead, or leave it out, got eval.max_new_tokens=64"),
    ("aim.bench", ["logger=none"], "logger: aim.bench never reads logger (logger is read by aim.run); leave it out, "
                                   "got logger=none"),
    ("aim.flops", ["seed=3"], "seed: aim.flops never reads seed (seed is read by aim.run, aim.bench); leave it out"),
    ("aim.flops", ["bench.text_tokens=50"], "bench.text_tokens: aim.flops never reads bench.* (bench.text_tokens is "
                                            "read by aim.bench); give flops.text_tokens=50 instead"),
    # the roofline aim.bench plans a budget on, given without a budget
    ("aim.bench", ["flops.hardware=h100_sxm"],
     "flops.hardware: the roofline aim.bench plans a budget on, read with budget.tflops, fraction or prefill_ms only"),
    # samples that are prefilled one at a time whatever eval.batch_size says (aim.eval.loop)
    ("aim.run", ["+method=random_toy", "eval.batch_size=4"],
     "eval.batch_size: samples prefilled together; pruner random is prefilled one sample at a time: its choices "
     "would depend on a batch's rows and tokens, so every prefill holds one sample (aim.eval.loop) whatever "
     "eval.batch_size says; leave eval.batch_size out, or give a model and pruner that batch, got eval.batch_size=4"),
    ("aim.run", ["model=qwen3_vl_tiny", "eval.batch_size=2"],
     "eval.batch_size: samples prefilled together; model qwen3_vl prefills each sample alone: its prefills carry "
     "further LLM inputs of their own (Qwen3-VL's DeepStack features)"),
    # frames sampled where no video is decoded; a shard of an unsplit run
    ("aim.run", ["dataset=image_mcq", "dataset.root=/some/benchmark", "+model.frame_sampling=linspace"],
     "model.frame_sampling: which frames of a video are decoded; dataset image_mcq holds images, and no video is "
     "decoded; give a video dataset, or leave model.frame_sampling out, got model.frame_sampling=linspace"),
    ("aim.bench", ["+model.frame_sampling=linspace"],
     "model.frame_sampling: which frames of a video are decoded; aim.bench decodes no video"),
    ("aim.flops", ["+model.frame_sampling=linspace"],
     "model.frame_sampling: which frames of a video are decoded; aim.flops decodes no video"),
    ("aim.run", ["dataset.shard=0"],
     "dataset.shard: the one shard of dataset.shards this process evaluates; dataset.shards=1 splits nothing, and "
     "the run evaluates every sample; give dataset.shards=N (N > 1) to split it, or leave dataset.shard out, got "
     "dataset.shard=0"),
], ids=["max_new_tokens-letter", "max_new_tokens-likelihood", "cache_dir", "logger.name", "logger-group", "bench",
        "flops", "run-bench.frames", "run-flops.text_tokens", "bench-eval", "bench-logger-choice", "flops-seed",
        "flops-bench.text_tokens", "bench-roofline-without-budget", "batch-random-pruner", "batch-qwen3-vl",
        "frame_sampling-images", "frame_sampling-bench", "frame_sampling-flops", "shard-unsplit"])
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
    ("aim.bench", ["dataset.num_frames=8"]),  # the frames timed are the frames asked
    ("aim.flops", ["dataset.num_frames=32"]),  # flops.frames null: it counts the dataset's
    ("aim.flops", ["dataset.num_frames=8", "flops.frames=8"]),
    # the roofline: aim.run's records are costed on it (aim.analysis.collect), aim.bench plans a budget on it
    ("aim.run", ["flops.hardware=h100_sxm", "flops.fused_attention=true"]),
    ("aim.bench", ["budget.fraction=0.5", "flops.hardware=h100_sxm"]),
    # budget.hardware beside a TFLOPs budget: the budget's record reports its prefill_ms on that hardware
    ("aim.run", ["budget.tflops=3e-4", "budget.hardware=h100_sxm"]),
    ("aim.flops", ["budget.fraction=0.5", "budget.hardware=h100_sxm"]),
    # eval.batch_size where samples share prefills: the default method, generate mode (the prefill is batched, the
    # decoding not), and the random control in budget mode (which may choose pruner none, and batch)
    ("aim.run", ["eval.batch_size=4"]),
    ("aim.run", ["eval.mode=generate", "eval.batch_size=4"]),
    ("aim.run", ["+method=random_toy", "eval.batch_size=4", "budget.tflops=3e-4"]),
    ("aim.run", ["model=qwen3_vl_tiny", "eval.batch_size=1"]),
    ("aim.run", ["+model.frame_sampling=linspace"]),  # a video dataset
    ("aim.run", ["dataset.shards=2", "dataset.shard=1"]),
    # Hydra's own settings and an experiment or method file: no knob of the run config
    ("aim.bench", ["hydra.run.dir=/tmp/x", "+method=aim_toy", "+exp=main_video"]),
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


# what each entry point reads, from its code: whole groups (and their choice), or single fields of a group
ROOFLINE = ["flops.hardware", "flops.peak_tflops", "flops.bandwidth_gbs", "flops.fused_attention"]
READS = {
    # evaluate, the seed, fidelity, W&B, a budget, the run dir's lock, a search's return; its records' roofline
    "aim.run": ["model", "dataset", "merger", "pruner", "logger", "eval", "seed", "fidelity", "budget", "run",
                "search", *ROOFLINE],
    # the model, synthetic inputs drawn from the seed, bench.*, a budget planned on the roofline
    "aim.bench": ["model", "dataset", "merger", "pruner", "seed", "bench", "budget", *ROOFLINE],
    # the configs alone: no weights, no data, nothing random
    "aim.flops": ["model", "dataset", "merger", "pruner", "flops", "budget"],
}
# a config where each knob a tool reads only in some configs is read: decoding, W&B, a search's objective; aim.bench
# with a budget (its roofline) and timing the dataset's 4 frames
WHERE_READ = {"aim.run": ["eval.mode=generate", "logger=wandb", "+search.objective=agreement"],
              "aim.bench": ["budget.fraction=0.5", "bench.frames=4"], "aim.flops": []}


def as_value(value) -> str:
    """A composed value written back as a Hydra override's value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ",".join(as_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{as_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def every_knob(cfg) -> dict:
    """{dotted knob: value} of every field of a composed config (a top-level value: itself)."""
    from omegaconf import OmegaConf

    knobs = {}
    for key, node in OmegaConf.to_container(cfg, resolve=True).items():
        knobs.update({f"{key}.{k}": v for k, v in node.items()} if isinstance(node, dict) else {key: node})
    return knobs


@pytest.mark.parametrize("tool", list(READS))
def test_every_field_a_tool_reads_is_accepted_and_every_other_is_refused(tool):
    """Each field of the config given as an override with its own value: those the tool reads (READS, found by
    reading its code) pass; every other one is refused as never read (a group it never reads, a flops.* field
    beside the roofline)."""
    from aim.config import check_knobs_read, unread_knobs

    base = WHERE_READ[tool]
    knobs = every_knob(composed(base))
    read = {k: v for k, v in knobs.items() if any(k == r or k.startswith(f"{r}.") for r in READS[tool])}
    unread = {k: v for k, v in knobs.items() if k not in read}
    assert read and unread
    overrides = base + [f"{k}={as_value(v)}" for k, v in read.items()]
    check_knobs_read(validate(composed(overrides)), tool, overrides)
    overrides = base + [f"{k}={as_value(v)}" for k, v in unread.items()]
    assert set(unread_knobs(validate(composed(overrides)), tool, overrides)) == set(unread)
