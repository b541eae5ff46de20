"""Budget mode: pick the merger and pruner knob values that fit a compute budget, before anything runs.

    python -m aim.flops model=llava_onevision_7b dataset.num_frames=32 budget.tflops=15
    python -m aim.flops model=llava_onevision_7b dataset.num_frames=32 budget.fraction=0.15
    python -m aim.flops model=llava_onevision_7b dataset.num_frames=32 budget.prefill_ms=60 budget.hardware=h100_sxm
    python -m aim.run budget.tflops=3e-4                      # the bundled model: the default method's knobs
    python -m aim.run merger=none pruner=fastv budget.fraction=0.5   # FastV's k and keep chosen
    python -m aim.run budget.tflops=3e-4 budget.per_sample=true      # a setting per sample (its own token counts)

The user picks the method family as always (`merger=`, `pruner=`); budget mode picks its knobs: merger.ratio,
and the knobs the pruner's class declares with their candidates (`budget_knobs`, `budget_candidates` in
aim.pruning: aim/random l1, l2; fastv/dart/holitom k, keep; prunevid layer, alpha; pdrop boundaries, lam; vtw k;
a plugin pruner its own; one that declares none is refused, naming it, and so is one that prunes only while
decoding, DyCoke, whose knobs change no prefill cost). The budget is one
of `budget.tflops` (LLM-prefill TFLOPs per sample), `budget.fraction` (of the unreduced LLM prefill's
TFLOPs at the same input) or `budget.prefill_ms` (the roofline prefill time on `budget.hardware`). Costs
come from the analytic roofline model (aim.efficiency.roofline, as `python -m aim.flops` reports them:
`tflops` counts every operator, the paper's convention, so its 14.76 TFLOPs setting costs 14.76 here;
runs record the matmul-only `tflops_analytic` beside it, which is at most this) for the model's LLM, the
frame count and the text length:
- `aim.run`: the dataset's `num_frames` (an image model on an image dataset: one image), and the dataset's
  own text length: the median text tokens of its first PROMPTS_MEASURED prompts, laid out and tokenized as
  the run does (`dataset_text_tokens`, with the model's tokenizer, no weights; subtitles are not counted),
  unless `budget.text_tokens` gives it (the paper's figures: 100); with `budget.per_sample` each sample's
  own frames and prompt length instead (below). The record says which (`text_tokens_from`);
- `aim.flops`: `flops.frames` (else as aim.flops counts them) and `flops.text_tokens`;
- `aim.bench`: `bench.frames` and `bench.text_tokens`.
The roofline for `prefill_ms` runs on `budget.hardware` (null: `flops.hardware`) with `flops.fused_attention`
and the `flops.peak_tflops` / `flops.bandwidth_gbs` overrides.

How the setting is chosen (`choose`):
1. A recorded trade-off (`budget.tradeoff`: a path; null: a bundled file under `src/aim/assets/tradeoffs/`
   recorded for this checkpoint and dataset, if there is one; "policy": never): among its points of the
   configured merger and pruner families, each one's cost re-evaluated for the current model, frames and
   text (the file may come from another frame count), the fitting point with the highest objective
   (`budget.objective`, else the file's, else accuracy; ties: the cheaper). `chosen_by`: "tradeoff <file>".
   No fitting point: the policy, with a note saying so.
2. The default policy (`policy_order`), the first setting in this order that fits (`chosen_by`: "policy"):
   merge first (ratio 1, 0.75, 0.5, 0.375, 0.25; no pruning: pruner none), then prune from the deepest layers at ratio
   0.25 (the pruner's declared `path`: for aim, a window of w = ceil(2L/7) layers, the paper's 8 of 28, moving
   earlier, l1 = L-1 ... 1, then narrowing at l1 = 1 down to l2 = 2), then merge further at the strongest
   pruning (ratio 0.2, 0.15, 0.125, 0.1, 0.075, 0.05). Every step removes tokens from some layer and
   adds none, so the costs fall along the order and the first fit is the mildest reduction that fits.
   If none of the order fits, the costliest fitting setting of the whole candidate grid (`candidates`).
A budget nothing meets raises ConfigError before anything is built, with the cheapest setting of the grid
and its cost. The chosen knob values are written into the run's config (`apply_budget`), so results.json's
`config` holds them, and `budget_record` is the `budget` entry of results.json and of aim.flops/aim.bench's
JSON: what was asked, the setting, its cost, how it was chosen.

Per-sample adaptivity (`budget.per_sample`, with `budget.tflops` only): `SampleBudget` chooses per sample
from its own frames and prompt length (the same rule, cached per token layout), so longer prompts and more
frames get more reduction and every sample fits the same TFLOPs; the loop (aim.eval.loop) asks it for each
sample's merger and pruner and records `budget` (setting, predicted TFLOPs, within_budget) in samples.jsonl.

Trade-off files (tradeoff.json, written by the trade-off search): format, reading and the bundled ones in
`aim.tradeoff` (`load_tradeoff`, `find_tradeoff`).

The parts: `aim.budget.settings` (the knobs and the candidate settings: the policy order and the grid),
`aim.budget.fit` (a setting's cost, the limit, `choose`), and here the plan for a run (its input size and text
length, `BudgetPlan`, `apply_budget`, the record and its line, per-sample choices).
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from functools import cached_property

from aim.budget.fit import POLICY, Choice, CostModel, Limit, choose
from aim.budget.settings import Setting, candidates, knobs_label, merger_knobs, policy_order, pruner_knobs
from aim.config import ConfigError
from aim.efficiency.cost import PrefillCost, image_dataset, image_size_dependent, model_configs
from aim.tradeoff import Tradeoff, find_tradeoff, load_tradeoff

__all__ = ["BudgetPlan", "Choice", "CostModel", "Limit", "SampleBudget", "Setting", "apply_budget", "candidates",
           "choose", "dataset_text_tokens", "policy_order", "print_choice"]

PROMPTS_MEASURED = 100  # aim.run without budget.text_tokens: the median text length of this many prompts


# --- applying it to a run config ------------------------------------------------------------------------
def input_size(valid, frames: int | None = None) -> tuple:
    """(hf config, adapter class, frames) for the configured model: `frames` if given, else the dataset's
    `num_frames` (an image dataset: one image, on image models only)."""
    hf_config, adapter = model_configs(valid.model)
    if frames is None:
        if image_dataset(valid) and adapter.modalities[0] != "image":
            raise ConfigError(f"dataset.name: {valid.dataset.name} holds images; their token count on "
                              f"{valid.model.pretrained} ({image_size_dependent(adapter)}, by image size) is not "
                              "modelled by budget mode, which takes video datasets on this model")
        frames = getattr(valid.dataset, "num_frames", 1)
    return hf_config, adapter, frames


def hardware(valid):
    from aim.efficiency.roofline import hardware_profile

    f = valid.flops
    return hardware_profile(valid.budget.hardware or f.hardware, f.peak_tflops, f.bandwidth_gbs)


def _tradeoff(valid) -> Tradeoff | None:
    b = valid.budget
    if b.tradeoff == POLICY:
        return None
    if b.tradeoff is not None:
        return load_tradeoff(b.tradeoff)
    found = find_tradeoff(valid.model.pretrained, valid.dataset.name, getattr(valid.dataset, "num_frames", None))
    return load_tradeoff(found) if found else None


def prompt_tokens(adapter, question: str, options, scoring: str, modality: str, task=None) -> int:
    """A prompt's text tokens as the run lays it out (`task`: the sample's prompt layout, aim.prompts): the
    prompt around the visual input and the tokens the adapter adds itself (LLaVA-OneVision's image newline);
    none of them is pruned."""
    before, after = adapter.prompt_ids(question, options, scoring, modality, task)
    return len(before) + len(after) + adapter.extra_text_tokens


def dataset_text_tokens(valid, count: int = PROMPTS_MEASURED) -> tuple[int, dict]:
    """(median text tokens, how they were measured) of the configured dataset's first `count` prompts, laid
    out for the configured model and eval mode and tokenized by its tokenizer (no weights are loaded).
    Samples that cannot be asked (one the run skips, a letter-scored question without options, a free-form one
    outside generate mode, a prompt the tokenizer refuses) are skipped and counted; none left is a ConfigError.
    `dataset.limit` is not applied: the plan, and so the run's config, stays the same when a rerun extends it."""
    import itertools
    import statistics

    from aim.data import DATASETS
    from aim.models import MODELS

    where = "budget.text_tokens: null plans for the dataset's own prompt lengths"
    try:
        adapter = MODELS.get(valid.model.name).for_prompts(**asdict(valid.model))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}, but model.pretrained {valid.model.pretrained!r} gave no tokenizer "
                          f"({str(exc).splitlines()[0]}); give budget.text_tokens") from None
    fields = asdict(valid.dataset)
    if "limit" in fields:
        fields["limit"] = None
    dataset = DATASETS.build(valid.dataset.name, **fields)
    mode, counts, skipped, reason = valid.eval.mode, [], 0, None
    for sample in itertools.islice(dataset, count):
        free_form = getattr(sample, "answer_format", "letter") != "letter"
        try:
            if sample.skip_reason:  # the run records it as skipped (aim.data.unaskable)
                raise ValueError(sample.skip_reason)
            if free_form and mode != "generate":
                raise ValueError(f"a free-form answer needs eval.mode=generate, not {mode}")
            if not free_form and not sample.options:
                raise ValueError("no options to choose a letter from")
            counts.append(prompt_tokens(adapter, sample.question, sample.options, mode, sample.modality,
                                        getattr(sample, "prompt", None)))
        except (ValueError, KeyError, IndexError) as exc:
            skipped, reason = skipped + 1, reason or f"{sample.id}: {exc}"
    if not counts:
        raise ConfigError(f"{where}, but none of the first {count} prompts of dataset {valid.dataset.name} could be "
                          f"laid out ({skipped} skipped; {reason or 'the dataset is empty'}); give budget.text_tokens")
    tokens = statistics.median_high(counts)  # a real prompt's length; of two middle ones, the longer
    return tokens, {"dataset": valid.dataset.name, "median_of": len(counts), "skipped": skipped,
                    "min": min(counts), "max": max(counts)}


class BudgetPlan:
    """Budget mode for one configured run: the cost model of its input, its trade-off, its choice.
    `text_tokens`: the caller's text length (aim.flops, aim.bench); None: `budget.text_tokens`, and where that
    is null the dataset's own (`dataset_text_tokens`). `text_tokens_from` says which."""

    def __init__(self, valid, frames: int | None = None, text_tokens: int | None = None):
        self.valid = valid
        self.limit = Limit.of(valid.budget)
        self.hf_config, self.adapter_class, self.frames = input_size(valid, frames)
        if text_tokens is not None:
            self.text_tokens, self.text_tokens_from = text_tokens, "the tool's text_tokens"
        elif valid.budget.text_tokens is not None:
            self.text_tokens, self.text_tokens_from = valid.budget.text_tokens, "budget.text_tokens"
        else:
            self.text_tokens, measured = dataset_text_tokens(valid)
            self.text_tokens_from = {"median of the prompts": measured}
        self.layers = PrefillCost(self.hf_config.text_config, hardware(valid), valid.flops.fused_attention)
        self.merger, self.pruner = asdict(valid.merger), asdict(valid.pruner)
        merger_knobs(self.merger), pruner_knobs(self.pruner)
        self.tradeoff = _tradeoff(valid)
        self._models: dict[tuple, CostModel] = {}

    def model(self, frames: int, text_tokens: int, frame_size=None) -> CostModel:
        groups, rows, cols = grid(self.adapter_class, self.hf_config, self.valid.model, frames, frame_size)
        # and the text the adapter writes inside the video (Qwen3-VL's timestamps), as aim.flops counts it
        text_tokens += self.adapter_class.video_text_tokens(self.hf_config, self.valid.model, groups)
        key = (groups, rows * cols, text_tokens, (rows, cols))
        if key not in self._models:
            self._models[key] = CostModel(self.layers, *key, self.adapter_class.prunable_from(self.hf_config)[0])
        return self._models[key]

    def choose(self, frames: int, text_tokens: int, frame_size=None, strict: bool = True) -> Choice:
        return choose(self.limit, self.model(frames, text_tokens, frame_size), self.merger, self.pruner,
                      self.tradeoff, self.valid.budget.objective, strict)

    @cached_property
    def choice(self) -> Choice:
        return self.choose(self.frames, self.text_tokens)

    def sample_budget(self) -> "SampleBudget | None":
        """The per-sample chooser for the evaluation loop, with budget.per_sample; else None."""
        return SampleBudget(self) if self.valid.budget.per_sample else None

    def record(self, records: list[dict] | None = None) -> dict:
        """The `budget` entry of results.json and of aim.flops / aim.bench's JSON. With per-sample choices,
        `samples` sums up the records' `budget` fields: how many fit, the costliest, the settings used."""
        c, model = self.choice, self.model(self.frames, self.text_tokens)
        b = self.valid.budget
        chosen = [r["budget"] for r in records or () if r.get("budget")]
        samples = {
            "num_samples": len(chosen),
            "within_budget": sum(bool(r["within_budget"]) for r in chosen),
            "max_tflops": max((r["tflops"] for r in chosen), default=None),
            "settings": {label: sum(1 for r in chosen if knobs_label(r["setting"]) == label)
                         for label in dict.fromkeys(knobs_label(r["setting"]) for r in chosen)},
        } if chosen else None
        return {
            "asked": {self.limit.unit: self.limit.value},
            "setting": c.setting.knobs(),
            "tflops": c.cost.tflops,
            "tflops_analytic": c.cost.tflops_analytic,
            "prefill_ms": c.cost.prefill_ms,
            "fraction": c.cost.tflops / model.full.tflops,
            "tflops_full": model.full.tflops,
            "prefill_ms_full": model.full.prefill_ms,
            "hardware": self.layers.hw.name,
            "fused_attention": self.layers.fused,
            "frames": self.frames,
            "text_tokens": self.text_tokens,
            "text_tokens_from": self.text_tokens_from,
            "visual_tokens": c.cost.visual_tokens,
            "tokens_per_layer": list(c.cost.tokens_per_layer),
            "chosen_by": c.chosen_by,
            **({"recorded": c.recorded} if c.recorded else {}),
            **({"note": c.note} if c.note else {}),
            "per_sample": b.per_sample,
            **({"samples": samples} if samples else {}),
        }


def grid(adapter_class, hf_config, model_cfg, frames: int, frame_size=None) -> tuple[int, int, int]:
    """The adapter's (groups, rows, cols) of `frames` frames, at `frame_size` where the adapter's token
    count depends on it (Qwen2-VL)."""
    if frame_size is not None and "frame_size" in inspect.signature(adapter_class.feature_grid).parameters:
        return adapter_class.feature_grid(hf_config, model_cfg, frames, frame_size=tuple(frame_size))
    return adapter_class.feature_grid(hf_config, model_cfg, frames)


def apply_budget(cfg, valid, frames: int | None = None, text_tokens: int | None = None) -> BudgetPlan | None:
    """Budget mode for a composed config: choose the setting (ConfigError if nothing fits) and write its
    knob values into `cfg`'s merger and pruner groups, so everything built from `cfg` and the config
    recorded with the results hold them. None when no budget is set. Re-validate `cfg` afterwards."""
    from omegaconf import open_dict

    if Limit.of(valid.budget) is None:
        return None
    plan = BudgetPlan(valid, frames, text_tokens)
    setting = plan.choice.setting
    with open_dict(cfg):
        for group, fields in (("merger", setting.merger), ("pruner", setting.pruner)):
            if cfg[group].name != fields["name"]:  # a pruner that would remove nothing: pruner none
                cfg[group] = fields
                continue
            for key, value in fields.items():
                if key != "name" and cfg[group].get(key) != value:
                    cfg[group][key] = value
    return plan


def print_choice(record: dict, file=None) -> None:
    asked = ", ".join(f"{k}={v:g}" for k, v in record["asked"].items())
    label = knobs_label(record["setting"])
    print(f"budget {asked}: {label} ({record['chosen_by']}): {record['tflops']:.4g} TFLOPs "
          f"({record['fraction']:.1%} of {record['tflops_full']:.4g}), {record['prefill_ms']:.4g} ms on "
          f"{record['hardware']}, {record['frames']} frames, {record['text_tokens']} text tokens"
          + (" (the dataset's median prompt)" if isinstance(record.get("text_tokens_from"), dict) else "")
          + (f"; {record['note']}" if record.get("note") else ""), file=file)


# --- per sample ----------------------------------------------------------------------------------------
@dataclass
class SampleBudget:
    """Per-sample adaptivity: `(adapter, frames, question, options, scoring, modality) -> (merger, pruner,
    record)`, the setting chosen for this sample's own frames and prompt length (the plan's rule, never
    failing: a sample nothing fits gets the cheapest setting and `within_budget: false`). Mergers and
    pruners are built once per setting and reused, so the loop's per-setting caches stay warm."""

    plan: BudgetPlan
    _built: dict = field(default_factory=dict)
    _choices: dict = field(default_factory=dict)

    def counts(self, adapter, frames, question: str, options, scoring: str, modality: str,
               task=None) -> tuple[int, int, tuple | None]:
        """(frames, text tokens, frame size) of a sample as the adapter will lay it out."""
        if modality == "image" and adapter.modalities[0] != "image":
            raise ConfigError(f"budget.per_sample: {type(adapter).__name__} lays images out in "
                              f"{image_size_dependent(adapter)}, whose token count budget mode does not model; "
                              "per-sample budgets take videos here")
        return len(frames), prompt_tokens(adapter, question, options, scoring, modality, task), tuple(frames.shape[1:3])

    def __call__(self, adapter, frames, question, options, scoring: str, modality: str, task=None):
        from aim.merging import MERGERS
        from aim.pruning import PRUNERS

        num_frames, text, size = self.counts(adapter, frames, question, options, scoring, modality, task)
        key = (num_frames, text, size)
        if key not in self._choices:
            self._choices[key] = self.plan.choose(num_frames, text, size, strict=False)
        c = self._choices[key]
        if c.setting not in self._built:
            self._built[c.setting] = (MERGERS.build(c.setting.merger["name"], **c.setting.merger),
                                      PRUNERS.build(c.setting.pruner["name"], **c.setting.pruner))
        merger, pruner = self._built[c.setting]
        record = {"setting": c.setting.knobs(), "tflops": c.cost.tflops, "tflops_analytic": c.cost.tflops_analytic,
                  "frames": num_frames, "visual_tokens": c.cost.visual_tokens, "text_tokens": text,
                  "within_budget": c.within_budget, "chosen_by": c.chosen_by}
        return merger, pruner, record
