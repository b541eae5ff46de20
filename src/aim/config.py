"""Config validation: every group is checked against its plugin's dataclass schema before anything heavy
starts. Each plugin declares its schema when it registers (`Registry.register(name, config=Schema)`); the
schema's `__post_init__` checks ranges. Errors name the full field path and what is allowed."""
from __future__ import annotations

from dataclasses import dataclass, field, fields as dataclass_fields
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from aim.checks import ConfigError, check_choice, check_range, to_schema  # noqa: F401  (callers above import them here)


@dataclass
class EvalConfig:
    mode: str = "letter"  # letter: option-letter logits at the answer position; generate: decode, then
    # parse the letter; likelihood: next-token logits of each option's text after the question
    max_new_tokens: int = 8
    progress: bool = True
    # samples prefilled together (aim.eval.loop): consecutive samples whose prompts hold equally many visual
    # tokens share one LLM prefill (left-padded when their text lengths differ); 1: one at a time. A
    # throughput knob: the records are those of batch 1 (answers equal, scores within float tolerance)
    batch_size: int = 1

    def __post_init__(self):
        check_choice("mode", self.mode, ("letter", "generate", "likelihood"))
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("batch_size", self.batch_size, 1)


@dataclass
class LoadingConfig:
    """How samples are decoded (`dataset.num_workers`, read beside the dataset's own fields, which every
    dataset plugin has): in worker processes ahead of the model (aim.eval.loop's DataLoader), or, with 0, in
    the main process just before each sample is evaluated. Changes no result."""

    num_workers: int = 2

    def __post_init__(self):
        check_range("num_workers", self.num_workers, 0)


@dataclass
class ShardingConfig:
    """One evaluation split into `shards` parts (`dataset.shards`, read beside the dataset's own fields, which
    every dataset has): part i evaluates samples i, i+N, i+2N, ... of the dataset (after `dataset.limit`) into
    its own records, `<run dir>/shards/<i>/`, and one merge writes the run's samples.jsonl and results.json
    as an unsharded run would (aim.tracking.shards). `shard` is set by the launcher (the sweeper makes a
    sharded job N array tasks), or by a user's own array script; null: this process runs every shard in
    turn, then merges (aim.run)."""

    shards: int = 1
    shard: int | None = None

    def __post_init__(self):
        if isinstance(self.shards, bool) or not isinstance(self.shards, int):
            raise ValueError(f"shards: must be an integer >= 1, got {self.shards!r}")
        check_range("shards", self.shards, 1)
        if self.shard is not None:
            if isinstance(self.shard, bool) or not isinstance(self.shard, int):
                raise ValueError(f"shard: must be an integer in [0, {self.shards - 1}] or null, got {self.shard!r}")
            check_range("shard", self.shard, 0, self.shards - 1)


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "aim"
    entity: str | None = None
    mode: str = "offline"  # online | offline | disabled
    tags: list[str] = field(default_factory=list)
    log_every: int = 50  # samples between running-accuracy points
    group: str | None = None  # W&B run group; None: the sweep dir's name in a multirun, no group otherwise
    init_timeout_s: float = 90.0  # online mode: wait this long for the server, then log offline instead

    def __post_init__(self):
        check_choice("name", self.name, ("none", "wandb"))
        check_choice("mode", self.mode, ("online", "offline", "disabled"))
        check_range("log_every", self.log_every, 1)
        check_range("init_timeout_s", self.init_timeout_s, 0, low_open=True)


@dataclass
class BenchConfig:
    """`python -m aim.bench`: synthetic inputs of this size, timed reduced vs unreduced."""

    frames: int = 8
    text_tokens: int = 100
    repeats: int = 5  # timed prefills of each kind (alternating); medians are reported
    warmup: int = 1  # untimed prefills of each kind before the timed ones (the first, timed apart, always runs)
    new_tokens: int = 16  # greedy tokens decoded after each prefill for ttft / decode tokens/s / KV bytes; 0: none

    def __post_init__(self):
        check_range("frames", self.frames, 1)
        check_range("text_tokens", self.text_tokens, 2)
        check_range("repeats", self.repeats, 1)
        check_range("warmup", self.warmup, 0)
        check_range("new_tokens", self.new_tokens, 0)


@dataclass
class FlopsConfig:
    """`python -m aim.flops`: the roofline estimate of the LLM prefill (aim.efficiency.roofline)."""

    text_tokens: int = 100  # every non-visual token of the prompt (the paper's figures: 100)
    # frames (or images) per sample; None: 1 image for an image model (LLaVA-1.5), else dataset.num_frames
    frames: int | None = None
    # [height, width]: count one image of this size instead of video frames. LLaVA-OneVision's image tokens
    # depend on it (anyres crops); LLaVA-1.5's do not (576 either way)
    image_size: list[int] | None = None
    hardware: str = "a100_40gb"  # a profile of aim.efficiency.roofline.HARDWARE_PROFILES
    fused_attention: bool = False  # FlashAttention-style attention; the paper's figures are unfused
    peak_tflops: float | None = None  # overrides the profile's dense fp16/bf16 peak
    bandwidth_gbs: float | None = None  # overrides the profile's memory bandwidth
    json: bool = False  # also print the whole result as one JSON line, the last line of stdout (for scripts)
    # the FLOPs aim.flops leads with: real (2 per multiply-add, GQA-aware, gated MLP; the paper's) or fastv
    # (FastV's 4nd^2 + 2n^2d + 2ndm per layer, aim.efficiency.analytic); the JSON carries both
    convention: str = "real"
    gpu_memory_gib: float | None = None  # overrides the hardware profile's device memory (the memory estimate's GPUs)

    def __post_init__(self):
        from aim.efficiency.analytic import CONVENTIONS
        from aim.efficiency.roofline import HARDWARE_PROFILES

        check_range("text_tokens", self.text_tokens, 0)
        if self.frames is not None:
            check_range("frames", self.frames, 1)
        if self.image_size is not None:
            if len(self.image_size) != 2 or min(self.image_size) < 1:
                raise ValueError(f"image_size: [height, width] in pixels, got {list(self.image_size)}")
            if self.frames not in (None, 1):
                raise ValueError(f"frames: image_size counts one image, got frames={self.frames}")
        check_choice("hardware", self.hardware, HARDWARE_PROFILES)
        check_choice("convention", self.convention, CONVENTIONS)
        if self.gpu_memory_gib is not None:
            check_range("gpu_memory_gib", self.gpu_memory_gib, 1, low_open=True)
        if self.peak_tflops is not None:
            check_range("peak_tflops", self.peak_tflops, 0, low_open=True)
        if self.bandwidth_gbs is not None:
            check_range("bandwidth_gbs", self.bandwidth_gbs, 0, low_open=True)


@dataclass
class FidelityConfig:
    """Fidelity to the unreduced model (aim.eval.fidelity): per sample, agreement with its answer and
    KL(full || reduced) over the answer options; needs no labels. The unreduced answers are cached under
    `cache_dir`, one file per model + dataset + frames + eval mode + seed, shared by every run."""

    enabled: bool = True
    cache_dir: str = "~/.cache/aim/reference"

    def __post_init__(self):
        if not str(self.cache_dir).strip():
            raise ValueError("cache_dir: empty; give a directory for the cached unreduced answers")


@dataclass
class RunConfig:
    """aim.run's hold on its output dir (aim.tracking.rundir): one process at a time evaluates in it."""

    wait_for_lock: bool = False  # another process holds the dir: wait for it to end, or (false) fail at once, exit 3


BUDGET_LIMITS = ("tflops", "fraction", "prefill_ms")  # the units a budget is given in (one at a time)
OBJECTIVES = ("accuracy", "agreement")  # what a trade-off ranks by (maximized against TFLOPs)
BUDGET_PLANNING = ("hardware", "text_tokens", "tradeoff", "objective")  # read only with a budget limit


@dataclass
class BudgetConfig:
    """Budget mode (aim.budget): give at most one of tflops / fraction / prefill_ms, and aim.run, aim.flops
    and aim.bench choose the configured merger's and pruner's knob values (merge ratio, l1, l2, ...) that
    fit it, by a recorded trade-off or the default policy; none given: the knobs as configured."""

    tflops: float | None = None  # LLM-prefill TFLOPs per sample (the roofline count, aim.flops's `tflops`)
    fraction: float | None = None  # of the unreduced LLM prefill's TFLOPs at the same input
    prefill_ms: float | None = None  # roofline prefill time on `hardware`
    hardware: str | None = None  # a roofline profile for prefill_ms; None: flops.hardware
    # aim.run: the text length planned for; None: the median of the dataset's first 100 prompts, tokenized by
    # the model's tokenizer (aim.flops / aim.bench: their own text_tokens)
    text_tokens: int | None = None
    tradeoff: str | None = None  # a trade-off file; None: a bundled one for this model + dataset, else the
    # policy; "policy": always the policy
    objective: str | None = None  # accuracy | agreement: what the trade-off ranks by; None: the file's
    per_sample: bool = False  # aim.run: choose per sample from its own frames and prompt length (tflops only)

    def __post_init__(self):
        from aim.efficiency.roofline import HARDWARE_PROFILES

        given = [k for k in BUDGET_LIMITS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"{given[0]}: give one of tflops, fraction, prefill_ms; got {' and '.join(given)}")
        for key in ("tflops", "prefill_ms"):
            if getattr(self, key) is not None:
                check_range(key, getattr(self, key), 0, low_open=True)
        if self.fraction is not None:
            check_range("fraction", self.fraction, 0, 1, low_open=True)
        if self.hardware is not None:
            check_choice("hardware", self.hardware, HARDWARE_PROFILES)
        if self.text_tokens is not None:
            check_range("text_tokens", self.text_tokens, 0)
        if self.objective is not None:
            check_choice("objective", self.objective, OBJECTIVES)
        if self.per_sample and self.tflops is None:
            raise ValueError("per_sample: needs budget.tflops (the same TFLOPs for every sample), "
                             f"got {given[0] if given else 'no budget'}")
        if not given:  # how to plan a budget, with no budget to plan: the run would silently ignore it
            for key in BUDGET_PLANNING:
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: says how to plan a budget, and no budget is given (budget.tflops, "
                                     f"fraction or prefill_ms); give one, or leave budget.{key} null, "
                                     f"got {getattr(self, key)!r}")


def check_tool_budget(budget: BudgetConfig, tool: str) -> None:
    """aim.flops and aim.bench (`tool`: flops, bench) plan a budget for their own one input, `<tool>.text_tokens`
    long: budget.text_tokens and budget.per_sample, aim.run's, would be silently ignored there, so are refused."""
    if budget.text_tokens is not None:
        raise ConfigError(f"budget.text_tokens: aim.{tool} plans for its own text length, {tool}.text_tokens "
                          f"(budget.text_tokens is aim.run's); give {tool}.text_tokens={budget.text_tokens}, "
                          f"got budget.text_tokens={budget.text_tokens}")
    if budget.per_sample:
        raise ConfigError(f"budget.per_sample: aim.{tool} has one input, no samples (per_sample is aim.run's); "
                          "leave it false")


# --- knobs given that a tool would not read ---------------------------------------------------------------------
# flops.*: the roofline a cost in ms is estimated on (aim.efficiency.roofline), read beyond aim.flops too: by budget
# mode (aim.budget.hardware, with budget.hardware) and by the roofline columns aim.analysis.collect computes for a run
ROOFLINE_KNOBS = ("flops.hardware", "flops.peak_tflops", "flops.bandwidth_gbs", "flops.fused_attention")


@dataclass(frozen=True)
class ToolReads:
    """What an entry point reads of the run config: `reads`, the top-level keys of TOP_LEVEL it reads (a group:
    every field of it, and its choice, `logger=none`) or the single fields of a group it reads no more of
    (`flops.hardware`). A knob under any other key (`hydra.*` aside: Hydra's own) is one the tool never reads,
    whatever the config. `instead`: {a knob it never reads: its own knob for the same thing}."""

    reads: tuple[str, ...]
    instead: dict[str, str] = field(default_factory=dict)

    def reads_knob(self, knob: str) -> bool:
        return any(knob == r or knob.startswith(f"{r}.") for r in self.reads)


# One declaration per entry point, from what its code reads (the rules that depend on the config are UNREAD_KNOBS).
TOOLS = {
    # evaluate (model, dataset, merger, pruner, eval), torch.manual_seed and the fidelity cache's key (seed),
    # build_fidelity, make_logger, apply_budget, the run dir's lock (run), the search's task return (search), and
    # the roofline of its budget and of its records' analysis
    "aim.run": ToolReads(("model", "dataset", "merger", "pruner", "logger", "eval", "seed", "fidelity", "budget",
                          "run", "search", *ROOFLINE_KNOBS),
                         instead={"bench.frames": "dataset.num_frames", "flops.frames": "dataset.num_frames"}),
    # the model built from its config, synthetic inputs drawn from `seed`, bench.*, a budget planned at
    # bench.frames / bench.text_tokens (on the roofline, and the dataset's bundled trade-off); no dataset is decoded
    # (dataset.num_frames: UNREAD_KNOBS), no answer scored or logged
    "aim.bench": ToolReads(("model", "dataset", "merger", "pruner", "seed", "bench", "budget", *ROOFLINE_KNOBS),
                           instead={"flops.frames": "bench.frames", "flops.text_tokens": "bench.text_tokens",
                                    "eval.max_new_tokens": "bench.new_tokens"}),
    # the configs alone (the model's architecture, the dataset's frames and kind, the merger's ratio, the pruner's
    # schedule), flops.*, a budget: nothing is built, drawn at random, evaluated or logged
    "aim.flops": ToolReads(("model", "dataset", "merger", "pruner", "flops", "budget"),
                           instead={"bench.frames": "flops.frames", "bench.text_tokens": "flops.text_tokens"}),
}


def never_read(tool: str, knob: str, value: str) -> str | None:
    """Why `tool` never reads `knob` (given as `value`) and what to give instead, by its TOOLS declaration; None
    where it reads it, or where the knob is no key of the run config (Hydra's own, an experiment file's `+exp`,
    a helper value that another value interpolates)."""
    top, declared = knob.split(".")[0], TOOLS[tool]
    if top not in TOP_LEVEL or top == "hydra" or declared.reads_knob(knob):
        return None
    partly = [r for r in declared.reads if r.startswith(f"{top}.")]
    why = f"{tool} reads of {top}.* only {', '.join(partly)}" if partly else \
        f"{tool} never reads {top if knob == top else top + '.*'}"
    readers = [t for t, reads in TOOLS.items() if reads.reads_knob(knob)]
    if readers:
        why += f" ({knob} is read by {', '.join(readers)})"
    instead = declared.instead.get(knob)
    if instead and value != "null":
        return f"{why}; give {instead}={value} instead, or leave it out"
    return f"{why}; leave it out"


@dataclass(frozen=True)
class UnreadKnob:
    """A knob (`knob`, its dotted path) that an entry point (`tool`: aim.run, whose sweeps' jobs are aim.run's
    too; aim.bench; aim.flops) reads only in some configs: `unread(valid)` says why this config leaves it unread
    and what to give instead, or None where the tool reads it."""

    knob: str
    tool: str
    unread: Callable[[Validated], str | None]


def _max_new_tokens_unread(valid: Validated) -> str | None:
    if valid.eval.mode == "generate":
        return None
    return (f"the most tokens decoded per answer, read with eval.mode=generate only; eval.mode={valid.eval.mode} "
            "scores the logits of one prefill and decodes nothing; give eval.mode=generate to decode, or leave "
            "eval.max_new_tokens out")


def _batch_size_unread(valid: Validated) -> str | None:
    from aim.models import MODELS
    from aim.pruning import PRUNERS

    if valid.eval.batch_size == 1 or any(getattr(valid.budget, k) is not None for k in BUDGET_LIMITS):
        return None  # (a budget may choose pruner none in place of the configured one, and batch)
    if not MODELS.get(valid.model.name).batched_prefill:
        alone = (f"model {valid.model.name} prefills each sample alone: its prefills carry further LLM inputs of their "
                 "own (Qwen3-VL's DeepStack features)")
    elif not getattr(PRUNERS.get(valid.pruner.name), "batch_invariant", True):
        alone = (f"pruner {valid.pruner.name} is prefilled one sample at a time: its choices would depend on a "
                 "batch's rows and tokens")
    else:
        return None
    return (f"samples prefilled together; {alone}, so every prefill holds one sample (aim.eval.loop) whatever "
            "eval.batch_size says; leave eval.batch_size out, or give a model and pruner that batch")


def _cache_dir_unread(valid: Validated) -> str | None:
    if valid.fidelity.enabled:
        return None
    return ("where the unreduced answers are kept, read with fidelity.enabled=true only; fidelity.enabled=false "
            "measures no fidelity and keeps none; give fidelity.enabled=true, or leave fidelity.cache_dir out")


def _wandb_field_unread(valid: Validated) -> str | None:
    if valid.logger.name == "wandb":
        return None
    return (f"a W&B setting, read with logger=wandb only; logger.name={valid.logger.name} starts no W&B run "
            "(results.json and samples.jsonl alone); give logger=wandb, or leave it out")


def _image_frame_sampling_unread(valid: Validated) -> str | None:
    from aim.efficiency.cost import image_dataset

    if not image_dataset(valid):
        return None
    return (f"which frames of a video are decoded; dataset {valid.dataset.name} holds images, and no video is "
            "decoded; give a video dataset, or leave model.frame_sampling out")


def _shard_unread(valid: Validated) -> str | None:
    if valid.sharding.shards > 1 or valid.sharding.shard is None:
        return None
    return ("the one shard of dataset.shards this process evaluates; dataset.shards=1 splits nothing, and the run "
            "evaluates every sample; give dataset.shards=N (N > 1) to split it, or leave dataset.shard out")


def _no_video_decoded(tool: str, what: str) -> Callable[[Validated], str]:
    return lambda valid: (f"which frames of a video are decoded; {tool} decodes no video ({what}); leave "
                          "model.frame_sampling out")


def _bench_frames_unread(valid: Validated) -> str | None:
    frames = getattr(valid.dataset, "num_frames", None)
    if frames == valid.bench.frames:  # the input size asked is the one timed
        return None
    return (f"aim.bench times bench.frames={valid.bench.frames} frames of synthetic features (it reads no dataset); "
            f"give bench.frames={frames}")


def _bench_roofline_unread(valid: Validated) -> str | None:
    if any(getattr(valid.budget, k) is not None for k in BUDGET_LIMITS):
        return None
    return ("the roofline aim.bench plans a budget on, read with budget.tflops, fraction or prefill_ms only; "
            "without a budget it times the prefills on this device and estimates none; give a budget, or leave it out")


def _flops_frames_unread(valid: Validated) -> str | None:
    frames = getattr(valid.dataset, "num_frames", None)
    if valid.flops.frames is None or valid.flops.frames == frames:  # None: aim.flops counts dataset.num_frames
        return None
    return (f"aim.flops counts flops.frames={valid.flops.frames} frames, which replaces the dataset's when given; "
            f"give flops.frames={frames}, or leave flops.frames null to count dataset.num_frames")


UNREAD_KNOBS = (
    UnreadKnob("eval.max_new_tokens", "aim.run", _max_new_tokens_unread),
    UnreadKnob("eval.batch_size", "aim.run", _batch_size_unread),
    UnreadKnob("fidelity.cache_dir", "aim.run", _cache_dir_unread),
    *(UnreadKnob(f"logger.{f.name}", "aim.run", _wandb_field_unread)
      for f in dataclass_fields(LoggerConfig) if f.name != "name"),
    UnreadKnob("model.frame_sampling", "aim.run", _image_frame_sampling_unread),
    UnreadKnob("dataset.shard", "aim.run", _shard_unread),
    UnreadKnob("dataset.num_frames", "aim.bench", _bench_frames_unread),
    UnreadKnob("model.frame_sampling", "aim.bench", _no_video_decoded("aim.bench", "it times synthetic features")),
    *(UnreadKnob(knob, "aim.bench", _bench_roofline_unread) for knob in ROOFLINE_KNOBS),
    UnreadKnob("dataset.num_frames", "aim.flops", _flops_frames_unread),
    UnreadKnob("model.frame_sampling", "aim.flops", _no_video_decoded("aim.flops", "it counts from the configs")),
)


def given_knobs(overrides: Sequence[str]) -> dict[str, str]:
    """{knob: value as written} of Hydra task overrides (`eval.max_new_tokens=64`, `++logger.project=x`, a group's
    choice `logger=none` under the group's name); a deletion (`~key`) gives no value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {o.key_or_group: o.input_line.split("=", 1)[1] for o in parsed if not o.is_delete()}


def unread_knobs(valid: Validated, tool: str, overrides: Sequence[str]) -> dict[str, str]:
    """{knob: why it is refused} for each knob given in `overrides` (Hydra task overrides) that `tool` (aim.run,
    aim.bench, aim.flops) would not read in this config: never (its TOOLS declaration: `bench.*` in aim.run,
    `eval.*` in aim.bench), or not in this config (UNREAD_KNOBS). The message names it, why it is unread, what to
    give instead and the value given. A value set in a config file (conf/config.yaml's defaults, a group's or an
    experiment file's values) is no override and is never refused here."""
    out = {}
    for knob, value in given_knobs(overrides).items():
        rules = [rule for rule in UNREAD_KNOBS if rule.tool == tool and rule.knob == knob]
        why = never_read(tool, knob, value) or next(filter(None, (rule.unread(valid) for rule in rules)), None)
        if why is not None:
            out[knob] = f"{knob}: {why}, got {knob}={value}"
    return out


def check_knobs_read(valid: Validated, tool: str, overrides: Sequence[str]) -> None:
    """ConfigError for the first knob of `unread_knobs`. One run's check: a multirun is checked as a whole by its
    sweeper (aim.sweep.plan_jobs), where a knob given to every job is refused only if no job reads it
    (`-m eval.mode=letter,generate eval.max_new_tokens=64` is one sweep whose generate jobs read it)."""
    unread = unread_knobs(valid, tool, overrides)
    if unread:
        raise ConfigError(next(iter(unread.values())))


@dataclass
class ScheduleConfig:
    """The LLM depth a config file's layer indices were chosen for (`pruner.schedule_layers`, read beside any
    pruner's own fields): conf/pruner/aim_toy.yaml and the toy methods say 4, the bundled model's, and a model of
    another depth refuses them (`check_pruner_prunes`); null: any depth."""

    schedule_layers: int | None = None

    def __post_init__(self):
        layers = self.schedule_layers
        if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
            raise ValueError(f"schedule_layers: a layer count >= 1 or null, got {layers!r}")


LOADING_FIELD = "num_workers"  # the dataset group's field that every dataset has (LoadingConfig)
SHARDING_FIELDS = ("shards", "shard")  # the dataset group's fields that say how a run is split (ShardingConfig)
SCHEDULE_FIELD = "schedule_layers"  # the pruner group's field naming its layer indices' LLM depth (ScheduleConfig)
# fields of a group that belong to no plugin's schema, read apart into the framework's own: {group: (schema, keys)}
FRAMEWORK_FIELDS = {"dataset": ((LoadingConfig, (LOADING_FIELD,)), (ShardingConfig, SHARDING_FIELDS)),
                    "pruner": ((ScheduleConfig, (SCHEDULE_FIELD,)),)}


@dataclass
class Validated:
    """The validated, typed view of a run config (one dataclass per group)."""

    model: Any
    dataset: Any
    merger: Any
    pruner: Any
    logger: LoggerConfig
    eval: EvalConfig
    seed: int
    bench: BenchConfig
    flops: FlopsConfig
    fidelity: FidelityConfig
    budget: BudgetConfig
    run: RunConfig = field(default_factory=RunConfig)
    loading: LoadingConfig = field(default_factory=LoadingConfig)  # dataset.num_workers
    sharding: ShardingConfig = field(default_factory=ShardingConfig)  # dataset.shards, dataset.shard


def check_weights(valid: Validated) -> None:
    """For the jobs that load the model (aim.run, aim.bench; not aim.flops, which reads the preset alone, nor
    a sweep's validation, which may run where the jobs' weights are not): its weights are at hand or can be
    downloaded now."""
    from aim.models.base import check_weights as check

    try:
        check(valid.model)
    except ValueError as exc:
        raise ConfigError(f"model.{exc}") from None


def check_device(valid: Validated) -> None:
    """For the jobs that load the model (aim.run, aim.bench), not a sweep's validation (which may run where the
    jobs' GPUs are not): `model.device` is there."""
    import torch

    device = torch.device(valid.model.device)  # its form is checked by the model's schema
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index is not None and device.index >= count or not count:
            raise ConfigError(f"model.device: {valid.model.device} asked, and torch {torch.__version__} sees "
                              f"{count} CUDA device(s) here (CUDA build: {torch.version.cuda}); use model.device=cpu, "
                              "or run where the GPU is")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device: mps asked, and torch sees no MPS device here; use model.device=cpu")


def check_logger(valid: Validated) -> None:
    """For the jobs that log (aim.run, each job of a sweep; not aim.flops or aim.bench): logger=wandb (the
    default, offline) needs the wandb package, a dependency of aim-mllm, missing only where it was left out."""
    import importlib.util

    if valid.logger.name == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("logger.name: wandb is not installed (pip install wandb); or use logger=none, which "
                          "records results.json and samples.jsonl alone")


def check_fidelity_cache(valid: Validated) -> None:
    """For aim.run, before the run dir is taken: with fidelity on, `fidelity.cache_dir` is a directory it can
    make (it makes it, as the run would a moment later) and write."""
    import os
    from pathlib import Path

    if not valid.fidelity.enabled:
        return
    path = Path(os.path.expanduser(valid.fidelity.cache_dir))
    try:
        path.mkdir(parents=True, exist_ok=True)
        why = "" if os.access(path, os.W_OK | os.X_OK) else "not writable"
    except OSError as exc:
        why = exc.strerror or str(exc)
    if why:
        raise ConfigError(f"fidelity.cache_dir: cannot keep the unreduced answers in {path} ({why}); give a directory "
                          "you can write, or fidelity.enabled=false")


def check_frame_sampling(model) -> None:
    """model.frame_sampling names one of the data family's frame sampling rules (aim.data.video)."""
    from aim.data.video import FRAME_SAMPLING

    rule = getattr(model, "frame_sampling", "segment_middle")
    if rule not in FRAME_SAMPLING:
        raise ConfigError(f"model.frame_sampling: {rule!r} is not allowed; choose one of: {', '.join(FRAME_SAMPLING)}")


# the run config's top-level keys: the groups of `Validated` (loading and sharding are dataset fields), the
# trade-off search's `search` (aim.tradeoff) and, while a sweep is planned, `hydra`
TOP_LEVEL = ("model", "dataset", "merger", "pruner", "logger", "eval", "seed", "bench", "flops", "fidelity",
             "budget", "run", "search", "hydra")


def check_top_level(cfg: DictConfig) -> None:
    """A top-level key that nothing reads (`+seeed=3`, `+budget_tflops=1e-4`) is refused, as an unknown field
    of a group is; a helper value that another value interpolates (`${pruner_layers.0}`, as
    conf/exp/ablation_layers.yaml sweeps an (l1, l2) pair) is read through it, and allowed."""
    import re

    unknown = [str(k) for k in cfg.keys() if k not in TOP_LEVEL]
    if not unknown:
        return
    text = OmegaConf.to_yaml(cfg)  # unresolved: the interpolations as written
    for key in unknown:
        if not re.search(r"\$\{\s*" + re.escape(key) + r"\s*[.\[}]", text):
            raise ConfigError(f"{key}: unknown top-level key; allowed: {', '.join(TOP_LEVEL[:-1])} (or a helper value "
                              f"that another value interpolates, ${{{key}}})")


def validate(cfg: DictConfig) -> Validated:
    """Check every group of a composed run config; the first problem raises ConfigError."""
    from aim.data import DATASETS
    from aim.merging import MERGERS
    from aim.models import MODELS
    from aim.pruning import PRUNERS

    check_top_level(cfg)
    groups, framework = {}, {}  # framework: {schema: instance} of the FRAMEWORK_FIELDS given
    for group, registry in (("model", MODELS), ("dataset", DATASETS), ("merger", MERGERS), ("pruner", PRUNERS)):
        node = cfg.get(group)
        if node is None or "name" not in node:
            raise ConfigError(f"{group}.name: missing; registered {group}s: {', '.join(registry.names())}")
        for schema, keys in FRAMEWORK_FIELDS.get(group, ()):  # how samples are decoded, a run split, ...: no plugin's
            if any(k in node for k in keys):
                fields = OmegaConf.to_container(node, resolve=True)
                framework[schema] = to_schema(schema, {k: fields.pop(k) for k in keys if k in fields}, group)
                node = OmegaConf.create(fields)
        name = node.name
        if name not in registry:
            raise ConfigError(f"{group}.name: unknown {group} {name!r}; registered {group}s: {', '.join(registry.names())}")
        schema = registry.config_schema(name)
        groups[group] = to_schema(schema, node, group) if schema else OmegaConf.to_container(node, resolve=True)
    check_frame_sampling(groups["model"])
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"seed: must be an integer, got {seed!r}")
    eval_cfg = to_schema(EvalConfig, cfg.get("eval", {}), "eval")
    if getattr(groups["dataset"], "free_form", False) and eval_cfg.mode != "generate":
        # free-form answers (VQA, GQA, MME, POPE, ...) are generated and scored as text, not by option logits
        raise ConfigError(f"eval.mode: dataset {groups['dataset'].name} scores generated free-form answers; "
                          f"use eval.mode=generate, got {eval_cfg.mode}")
    if getattr(PRUNERS.get(groups["pruner"].name), "acts_while", "") == "decoding" and eval_cfg.mode != "generate":
        # a pruner that acts only while decoding (DyCoke's KV pruning) leaves a scored prefill unchanged
        raise ConfigError(f"eval.mode: pruner {groups['pruner'].name} prunes the KV cache while decoding only; "
                          f"use eval.mode=generate, got {eval_cfg.mode}")
    budget = to_schema(BudgetConfig, cfg.get("budget", {}), "budget")
    loading, sharding = framework.get(LoadingConfig, LoadingConfig()), framework.get(ShardingConfig, ShardingConfig())
    if sharding.shards > 1 and any(getattr(budget, k) is not None for k in BUDGET_LIMITS):
        # a budget's record sums up the plan it chose, which the merge of the shards' records does not have
        raise ConfigError(f"dataset.shards: budget mode (budget.tflops / fraction / prefill_ms) runs unsharded; use "
                          f"dataset.shards=1 or give the merger's and pruner's knobs themselves, got {sharding.shards}")
    if not any(getattr(budget, k) is not None for k in BUDGET_LIMITS):  # budget mode chooses pruner knobs itself
        check_pruner_prunes(groups["model"], groups["pruner"], framework.get(ScheduleConfig, ScheduleConfig()).schedule_layers)
    return Validated(
        **groups,
        logger=to_schema(LoggerConfig, cfg.get("logger", {}), "logger"),
        eval=eval_cfg,
        seed=seed,
        bench=to_schema(BenchConfig, cfg.get("bench", {}), "bench"),
        flops=to_schema(FlopsConfig, cfg.get("flops", {}), "flops"),
        fidelity=to_schema(FidelityConfig, cfg.get("fidelity", {}), "fidelity"),
        budget=budget,
        run=to_schema(RunConfig, cfg.get("run", {}), "run"),
        loading=loading,
        sharding=sharding,
    )


def check_pruner_prunes(model, pruner, schedule_layers: int | None = None) -> None:
    """A configured pruner must remove visual tokens on the configured model's LLM (its layer count read
    from the model's config, no weights), and none before the first layer the model can prune at
    (`Adapter.prunable_from`: Qwen3-VL's DeepStack); ConfigError naming the field otherwise (aim.pruning).
    A schedule written for an LLM of `schedule_layers` layers (the toy schedules: 4) is refused on an LLM of
    another depth: the bundled model's layer indices would run on a real model as if they were a method's."""
    from dataclasses import asdict, is_dataclass

    from aim.efficiency.cost import model_configs
    from aim.pruning import check_prunes_from, check_removes_tokens

    fields = asdict(pruner) if is_dataclass(pruner) else dict(pruner)
    if fields["name"] == "none":
        return
    hf_config, adapter = model_configs(model)
    layers, name = adapter.llm_layers(hf_config), model.pretrained or model.name
    if schedule_layers is not None and schedule_layers != layers:
        values = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "name")
        raise ConfigError(
            f"pruner.{SCHEDULE_FIELD}: the pruner's layer schedule ({fields['name']}: {values}) was written for an LLM "
            f"of {schedule_layers} decoder layers (the bundled toy model's, e.g. the default pruner=aim_toy), and {name} "
            f"has {layers}: choose a schedule for this model (pruner=aim is the paper's l1=14, l2=22 for 28 layers, "
            f"+method=aim the paper's setting; +method=aim_72b for 80 layers), or set pruner.{SCHEDULE_FIELD}=null to "
            "run these layer indices as they are")
    check_removes_tokens(fields["name"], fields, layers, name)
    check_prunes_from(fields["name"], fields, layers, *adapter.prunable_from(hf_config), name)
