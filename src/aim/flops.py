"""Roofline estimate of the LLM prefill for a configured model, merger and pruner: no weights, no data.

    python -m aim.flops model=llava_onevision_7b dataset.num_frames=32 merger=aim merger.ratio=0.25 pruner=aim
    python -m aim.flops model=llava_onevision_7b dataset.num_frames=32 flops.hardware=h100_sxm flops.fused_attention=true
    python -m aim.flops model=qwen2_vl_7b dataset.num_frames=32 model.frame_size=[448,448]
    python -m aim.flops model=llava_1.5_7b merger=aim merger.ratio=0.25 pruner=aim pruner.l1=8 pruner.l2=16

Takes the same overrides as `aim.run`. Reads only the model's config (the preset's `architecture`, or
else the config.json of `model.pretrained`); the model is never built (its parameters are counted on the meta
device), so `model.device` does not matter, and `model.dtype` only for the memory lines (the roofline assumes
fp16/bf16). The visual tokens per frame come from the
adapter's `feature_grid` (LLaVA-OneVision: the tower's patch grid, then 2x2 pooling; Qwen2-VL: the
preset's `frame_size` resized within its pixel budget, one token per 28x28 pixels, one group of tokens
per temporal patch of 2 frames; LLaVA-1.5: 24x24 per image), frames from `flops.frames` (default: one
image for an image model such as LLaVA-1.5, else `dataset.num_frames`; a `dataset.num_frames` given beside a
different `flops.frames` is refused, as unread), text tokens from `flops.text_tokens`;
the merger's ratio gives the tokens kept per frame (per group) and the pruner's retention schedule the
visual tokens each decoder layer sees. See `aim.efficiency.roofline` for the accounting. With
`flops.image_size=[H,W]` one image of that size is counted instead (LLaVA-OneVision: the base image and the
anyres crops, each merged on its own, plus a newline token per grid row; LLaVA-1.5: 24x24 at any size).

Prints a breakdown per operator type and the tokens per layer. With `flops.json=true` the LAST stdout line
is also the whole result as one JSON object (for scripts; long, so not printed by default), with `tflops`, `prefill_ms`, `hardware`, `visual_tokens`, `text_tokens`, `tokens_per_layer` and more
(the same for the unreduced prefill under `tflops_full`, `prefill_ms_full`).

The memory lines (`memory` in the JSON; `aim.efficiency.cost.memory_estimate`): the parameters (the model
class built on the meta device), their bytes at `model.dtype`, the KV cache of the unreduced and the configured
prefill, the activations, and how many GPUs of `flops.hardware` (or `flops.gpu_memory_gib`) hold them when
`model.device_map` spreads the model; `model.gpus` is what the preset asks SLURM for. The 72B preset:

    python -m aim.flops model=llava_onevision_72b dataset.num_frames=32 flops.hardware=h100_sxm

Two FLOPs conventions are printed and in the JSON: `tflops` / `tflops_full` count real FLOPs (2 per
multiply-add, grouped-query attention and the gated MLP as built, attention included: the AIM paper's
99.63 T for LLaVA-OneVision-7B at 32 frames + 100 text tokens); `tflops_fastv` / `tflops_fastv_full`
use FastV's per-layer 4nd^2 + 2n^2d + 2ndm (no GQA, no lm_head; 41.54 T for the same input), the figure
FastV and most token-reduction papers after it report. `flops.convention=fastv` prints the FastV line
first:

    python -m aim.flops model=llava_onevision_7b dataset.num_frames=32 flops.convention=fastv Where the paper publishes
the unreduced figure for this checkpoint and visual token count (`aim.efficiency.cost.PUBLISHED_TFLOPS`), it is printed
beside ours with the text lengths at which our unreduced count rounds to it
(`published_tflops_full`, `published_text_tokens`).

With a budget (`budget.tflops=15`, `budget.fraction=0.15` or `budget.prefill_ms=60 budget.hardware=h100_sxm`;
aim.budget) the merger's and pruner's knobs are chosen to fit it for these frames and text tokens first;
the breakdown is then that setting's, and the JSON carries a `budget` entry (asked, setting, its cost on
the budget's hardware, `chosen_by`).

    python -m aim.flops model=llava_onevision_7b dataset.num_frames=32 budget.tflops=15
"""
from __future__ import annotations

import json
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from aim.config import ConfigError, check_knobs_read, check_tool_budget, validate
from aim.efficiency.cost import flops, memory_estimate, model_configs, sample_frames
from aim.paths import CONF_DIR


def print_memory(memory: dict) -> None:
    """The memory lines: weights, KV cache, activations, and the GPUs they need (`memory_estimate`)."""
    m = memory
    print(f"memory ({m['dtype']}): weights {m['parameters'] / 1e9:.2f} B parameters = {m['weights_gib']:.1f} GiB; KV cache "
          f"{m['kv_cache_gib_full']:.2f} GiB unreduced -> {m['kv_cache_gib']:.2f} GiB; activations ~{m['activations_gib']:.2f} "
          f"GiB; total {m['total_gib']:.1f} GiB")
    print(f"GPUs ({m['gpu']}, {m['gpu_memory_gib']:g} GiB each, 1 GiB set aside per GPU): at least {m['gpus_min']} "
          f"({m['headroom_gib']:.1f} GiB headroom); model.gpus={m['model_gpus']} leaves {m['model_gpus_headroom_gib']:.1f} GiB"
          + ("" if m["model_gpus_headroom_gib"] >= 0 else " -- too few: raise model.gpus or use larger GPUs"))


def print_breakdown(result: dict) -> None:
    unit = "image" if result["input"] == "image" else "frame"
    tiled = unit == "image" and result["frame_groups"] > 1  # InternVL: tokens and kept tokens per tile
    per = "tile" if tiled else unit
    groups = "" if result["frame_groups"] == result["frames"] else \
        f" in {result['frame_groups']} {'tiles' if tiled else 'temporal patches'}"
    plural = "" if result["frames"] == 1 else "s"
    print(f"{result['model']}: {result['frames']} {unit}{plural}{groups} x {result['tokens_per_frame']} -> {result['kept_per_frame']} "
          f"visual tokens per {per} (merger {result['method']['merger']}), {result['text_tokens']} text tokens, "
          f"pruner {result['method']['pruner']}; {result['hardware']} ({result['peak_tflops']:g} TFLOP/s, "
          f"{result['bandwidth_gbs']:g} GB/s), attention {'fused' if result['fused_attention'] else 'unfused'}")
    print(f"{'operator':<16}{'TFLOPs':>10}{'ms':>10}{'GB':>10}  memory-bound layers")
    for name, row in result["by_operator"].items():
        print(f"{name:<16}{row['tflops']:>10.3f}{row['ms']:>10.2f}{row['gb']:>10.2f}  {row['memory_bound_layers']}")
    print(f"{'total':<16}{result['tflops']:>10.3f}{result['prefill_ms']:>10.2f}")
    print("tokens per layer:", " ".join(map(str, result["tokens_per_layer"])))
    fastv = (f"FastV convention (4nd^2 + 2n^2d + 2ndm per layer, no GQA, no lm_head): unreduced "
             f"{result['tflops_fastv_full']:.2f} TFLOPs -> {result['tflops_fastv']:.2f} TFLOPs (FLOPs ratio "
             f"{result['tflops_fastv_full'] / result['tflops_fastv']:.2f}x)")
    if result["convention"] == "fastv":
        print(fastv)
    print(f"unreduced: {result['tflops_full']:.2f} TFLOPs, {result['prefill_ms_full']:.2f} ms -> "
          f"{result['tflops']:.2f} TFLOPs, {result['prefill_ms']:.2f} ms (speedup {result['speedup']:.2f}x, "
          f"FLOPs ratio {result['flops_ratio']:.2f}x)")
    if result["convention"] != "fastv":
        print(fastv)
    if result["published_tflops_full"] is not None:
        match = result["published_text_tokens"]
        where = (f"with {match[0]} text tokens" if len(match) == 1 else
                 f"with {match[0]}-{match[-1]} text tokens" if match else "at no text length up to 8192")
        print(f"paper, unreduced ({result['visual_tokens_unmerged']} visual tokens): {result['published_tflops_full']:.2f} "
              f"TFLOPs; ours is {result['tflops_full']:.2f} with {result['text_tokens']} text tokens and rounds to the "
              f"paper's figure {where}")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from aim.budget import Limit, apply_budget, print_choice

    try:
        valid = validate(cfg)
        check_knobs_read(valid, "aim.flops", HydraConfig.get().overrides.task)  # eval.*, bench.*, seed, ...
        check_tool_budget(valid.budget, "flops")
        if valid.flops.image_size is not None and Limit.of(valid.budget) is not None:
            raise ConfigError("flops.image_size: budgets are planned for video frames; leave budget.tflops, "
                              "budget.fraction and budget.prefill_ms null to count an image")
        # budget mode: the knobs that fit, for flops.frames / flops.text_tokens, written into cfg
        plan = apply_budget(cfg, valid, sample_frames(valid, model_configs(valid.model)[1]), valid.flops.text_tokens)
        if plan is not None:
            valid = validate(cfg)
        result = flops(valid)
        result["memory"] = memory_estimate(valid, result)
    except ConfigError as exc:
        print(f"aim.flops: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    print_breakdown(result)
    print_memory(result["memory"])
    if plan is not None:
        result["budget"] = plan.record()
        print_choice(result["budget"])
    if valid.flops.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
