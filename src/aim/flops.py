"""Roofline estimate of the LLM prefill for a configured model, merger and pruner: no weights, no data.

    python -m aim.flops model=llava_onevision_7b dataset.num_frames=32 merger=aim merger.ratio=0.25 pruner=aim
    python -m aim.flops model=llava_onevision_7b dataset.num_frames=32 flops.hardware=h100_sxm flops.fused_attention=true
    python -m aim.flops model=qwen2_vl_7b dataset.num_frames=32 model.frame_size=[448,448]
    python -m aim.flops model=llava_1.5_7b merger=aim merger.ratio=0.25 pruner=aim pruner.l1=8 pruner.l2=16

Takes the same overrides as `aim.run`. Reads only the model's config (the preset's `architecture`, or
else the config.json of `model.pretrained`); the model is never built, so `model.device` and
`model.dtype` do not matter (the roofline assumes fp16/bf16). The visual tokens per frame come from the
adapter's `feature_grid` (LLaVA-OneVision: the tower's patch grid, then 2x2 pooling; Qwen2-VL: the
preset's `frame_size` resized within its pixel budget, one token per 28x28 pixels, one group of tokens
per temporal patch of 2 frames; LLaVA-1.5: 24x24 per image), frames from `flops.frames` (default: one
image for an image model such as LLaVA-1.5, else `dataset.num_frames`), text tokens from `flops.text_tokens`;
the merger's ratio gives the tokens kept per frame (per group) and the pruner's retention schedule the
visual tokens each decoder layer sees. See `aim.efficiency.roofline` for the accounting. With
`flops.image_size=[H,W]` one image of that size is counted instead (LLaVA-OneVision: the base image and the
anyres crops, each merged on its own, plus a newline token per grid row; LLaVA-1.5: 24x24 at any size).

Prints a breakdown per operator type and the tokens per layer. With `flops.json=true` the LAST stdout line
is also the whole result as one JSON object (for scripts; long, so not printed by default), with `tflops`, `prefill_ms`, `hardware`, `visual_tokens`, `text_tokens`, `tokens_per_layer` and more
(the same for the unreduced prefill under `tflops_full`, `prefill_ms_full`). Where the paper publishes
the unreduced figure for this checkpoint and visual token count (`PUBLISHED_TFLOPS`), it is printed
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
import math
import sys
from dataclasses import asdict

import hydra
from omegaconf import DictConfig

from aim.config import ConfigError, Validated, validate
from aim.paths import CONF_DIR


# The paper's unreduced LLM-prefill TFLOPs, by checkpoint and unmerged visual tokens per sample: its
# video table (LLaVA-OneVision-7B, 32 frames x 196 tokens, with 100 text tokens) and its image table
# (LLaVA-1.5-7B, one image of 576 tokens; the paper does not state the text length, see
# `matching_text_tokens`).
PUBLISHED_TFLOPS = {
    ("llava-hf/llava-onevision-qwen2-7b-ov-hf", 32 * 196): 99.63,
    ("llava-hf/llava-1.5-7b-hf", 576): 8.18,
}


def matching_text_tokens(shape, visual_tokens: int, published_tflops: float, hw, fused_attention: bool,
                         max_text: int = 8192) -> list[int]:
    """Text lengths at which the unreduced prefill (visual_tokens + text at every layer) rounds to the
    published TFLOPs figure (to its two decimals). The count grows with the text, so a bisection finds the
    first length at or above the lower rounding bound and the run of lengths that follow."""
    from aim.efficiency.roofline import prefill_estimate

    def tflops(text: int) -> float:
        return prefill_estimate(shape, [visual_tokens + text] * shape.num_layers, hw, fused_attention).tflops

    low, high = 0, max_text
    while low < high:
        mid = (low + high) // 2
        if tflops(mid) < published_tflops - 0.005:
            low = mid + 1
        else:
            high = mid
    found = []
    while low <= max_text and round(tflops(low), 2) == round(published_tflops, 2):
        found.append(low)
        low += 1
    return found


def model_configs(model_cfg):
    """(Hugging Face config, adapter class) of the configured model, without weights."""
    from aim.models import MODELS

    from aim.models.base import check_local_dir, resolve_pretrained

    adapter = MODELS.get(model_cfg.name)
    try:
        if not model_cfg.architecture:
            check_local_dir(resolve_pretrained(model_cfg.pretrained))
    except ValueError as exc:
        raise ConfigError(f"model.{exc}") from None
    try:
        hf_config = adapter.hf_config(model_cfg)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.architecture: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"model.pretrained: cannot read the config of {model_cfg.pretrained!r} (and the preset "
                          f"has no architecture): {exc}") from None
    if not hasattr(hf_config, "text_config") or not hasattr(hf_config, "vision_config"):
        raise ConfigError(f"model.pretrained: {model_cfg.pretrained!r} is not a vision-language config "
                          "(no text_config / vision_config)")
    return hf_config, adapter


def kept_per_frame(merger_cfg, num_tokens: int) -> int:
    """Tokens per frame after the merger, from its config alone. PruMerge keeps an adaptive count
    (the IQR outliers of the tower's attention), which cannot be known without running the tower."""
    from aim.merging import kept_tokens
    from aim.merging.baselines import PoolMerger, grid_side

    name = merger_cfg.name
    if name == "none":
        return num_tokens
    if name == "prumerge":
        raise ConfigError("merger.name: prumerge keeps an adaptive number of tokens per frame (attention "
                          "outliers), unknown without running the vision tower; use merger=prumerge_plus "
                          "(at least merger.ratio of each frame) or another merger")
    ratio = getattr(merger_cfg, "ratio", None)
    if ratio is None:
        raise ConfigError(f"merger.name: {name} has no ratio; aim.flops cannot count its tokens per frame")
    if name == "pool":  # pooling keeps the nearest grid, not floor(ratio * T)
        try:
            h, w = PoolMerger(ratio=ratio).output_grid(grid_side(num_tokens))
        except ValueError as exc:
            raise ConfigError(f"merger.name: {exc}") from None
        return h * w
    return kept_tokens(num_tokens, ratio)


def tokens_per_layer(visual_tokens: int, text_tokens: int, retention: list[float]) -> tuple[list[int], list[int]]:
    """(visual tokens per layer, all tokens per layer): text tokens are never pruned."""
    from aim.pruning.schedule import kept_per_layer

    visual = kept_per_layer(visual_tokens, retention)
    return visual, [text_tokens + v for v in visual]


def image_tokens(valid: Validated, hf_config, adapter) -> dict:
    """One image of `flops.image_size`: its visual tokens before and after the merger, and the non-visual
    tokens the image adds (LLaVA-OneVision: a newline after each row of the anyres grid)."""
    size = tuple(valid.flops.image_size)
    if "image" not in adapter.modalities:
        raise ConfigError(f"flops.image_size: model {valid.model.name} takes {' or '.join(adapter.modalities)} "
                          "inputs, not images")
    if getattr(adapter, "image_layout", None) is None:  # a fixed grid whatever the size (LLaVA-1.5: 24 x 24)
        _, rows, cols = adapter.feature_grid(hf_config, valid.model, 1)
        kept = kept_per_frame(valid.merger, rows * cols)
        return {"size": list(size), "unmerged": rows * cols, "visual": kept, "newline_tokens": 0,
                "token_grid": [rows, cols]}
    base, cells, (rows, cols) = adapter.image_layout(hf_config, size)
    return {"size": list(size), "unmerged": base + sum(cells),
            "visual": kept_per_frame(valid.merger, base) + sum(kept_per_frame(valid.merger, c) for c in cells),
            "newline_tokens": rows, "token_grid": [rows, cols], "base_tokens": base, "crop_cells": cells}


def sample_frames(valid: Validated, adapter) -> int:
    """flops.frames, else one image for an image model (LLaVA-1.5), else dataset.num_frames. An image
    dataset on a model whose image tokens depend on the image's size needs flops.image_size."""
    from aim.budget import image_dataset

    if (valid.flops.image_size is None and image_dataset(valid) and valid.flops.frames is None
            and getattr(adapter, "image_layout", None) is not None):
        raise ConfigError(f"flops.image_size: dataset {valid.dataset.name} holds images, and {valid.model.pretrained}'s "
                          "image tokens depend on the image size (anyres crops); give flops.image_size=[height,width]")
    if valid.flops.frames is not None:
        return valid.flops.frames
    if adapter.modalities[0] == "image":
        return 1
    return getattr(valid.dataset, "num_frames", 1)


def flops(valid: Validated) -> dict:
    from aim.efficiency.analytic import llm_prefill_flops
    from aim.efficiency.roofline import LLMShape, hardware_profile, prefill_estimate
    from aim.pruning import PRUNERS

    f = valid.flops
    hf_config, adapter = model_configs(valid.model)
    text_config = hf_config.text_config
    shape = LLMShape.from_text_config(text_config)
    hw = hardware_profile(f.hardware, f.peak_tflops, f.bandwidth_gbs)
    frames = sample_frames(valid, adapter)
    groups, rows, cols = adapter.feature_grid(hf_config, valid.model, frames)
    per_frame = rows * cols
    kept = kept_per_frame(valid.merger, per_frame)
    visual, unmerged, text = groups * kept, groups * per_frame, f.text_tokens
    image = None
    if f.image_size is not None:
        image, frames, groups = image_tokens(valid, hf_config, adapter), 1, 1
        visual, unmerged, per_frame, kept = image["visual"], image["unmerged"], image["unmerged"], image["visual"]
        text += image["newline_tokens"]  # never pruned, like text
        rows, cols = image["token_grid"]
    retention = PRUNERS.build(valid.pruner.name, **asdict(valid.pruner)).retention_schedule(shape.num_layers)
    visual_per_layer, per_layer = tokens_per_layer(visual, text, retention)
    full_per_layer = [unmerged + text] * shape.num_layers
    est = prefill_estimate(shape, per_layer, hw, f.fused_attention)
    full = prefill_estimate(shape, full_per_layer, hw, f.fused_attention)
    published = PUBLISHED_TFLOPS.get((valid.model.pretrained, unmerged))
    return {
        "tflops": est.tflops,
        "prefill_ms": est.prefill_ms,
        "tflops_full": full.tflops,
        "prefill_ms_full": full.prefill_ms,
        "speedup": full.prefill_ms / est.prefill_ms,
        "flops_ratio": full.tflops / est.tflops,
        "tflops_analytic": llm_prefill_flops(text_config, per_layer) / 1e12,  # matmuls only, as runs record it
        "hardware": hw.name,
        "peak_tflops": hw.peak_tflops,
        "bandwidth_gbs": hw.bandwidth_gbs,
        "fused_attention": f.fused_attention,
        "published_tflops_full": published,  # the paper's unreduced figure for this input, if it has one
        "published_text_tokens": (matching_text_tokens(shape, unmerged, published, hw, f.fused_attention)
                                  if published is not None else None),
        "input": "image" if adapter.modalities[0] == "image" or image is not None else "video",
        "image": image,  # with flops.image_size: the image's token layout
        "frames": frames,
        "frame_groups": groups,  # frames, or Qwen2-VL's temporal patches (2 frames each)
        "token_grid": [rows, cols],
        "tokens_per_frame": per_frame,  # per frame group
        "kept_per_frame": kept,
        "visual_tokens": visual,
        "visual_tokens_unmerged": unmerged,
        "visual_tokens_per_layer": visual_per_layer,
        "text_tokens": text,
        "tokens_per_layer": per_layer,
        "by_operator": est.by_operator(),  # per operator type: tflops, ms, gb, memory_bound_layers
        "method": {"merger": valid.merger.name, "pruner": valid.pruner.name},
        "model": valid.model.pretrained,
    }


def print_breakdown(result: dict) -> None:
    groups = "" if result["frame_groups"] == result["frames"] else f" in {result['frame_groups']} temporal patches"
    unit = "image" if result["input"] == "image" else "frame"
    plural = "" if result["frames"] == 1 else "s"
    print(f"{result['model']}: {result['frames']} {unit}{plural}{groups} x {result['tokens_per_frame']} -> {result['kept_per_frame']} "
          f"visual tokens per {unit} (merger {result['method']['merger']}), {result['text_tokens']} text tokens, "
          f"pruner {result['method']['pruner']}; {result['hardware']} ({result['peak_tflops']:g} TFLOP/s, "
          f"{result['bandwidth_gbs']:g} GB/s), attention {'fused' if result['fused_attention'] else 'unfused'}")
    print(f"{'operator':<16}{'TFLOPs':>10}{'ms':>10}{'GB':>10}  memory-bound layers")
    for name, row in result["by_operator"].items():
        print(f"{name:<16}{row['tflops']:>10.3f}{row['ms']:>10.2f}{row['gb']:>10.2f}  {row['memory_bound_layers']}")
    print(f"{'total':<16}{result['tflops']:>10.3f}{result['prefill_ms']:>10.2f}")
    print("tokens per layer:", " ".join(map(str, result["tokens_per_layer"])))
    print(f"unreduced: {result['tflops_full']:.2f} TFLOPs, {result['prefill_ms_full']:.2f} ms -> "
          f"{result['tflops']:.2f} TFLOPs, {result['prefill_ms']:.2f} ms (speedup {result['speedup']:.2f}x, "
          f"FLOPs ratio {result['flops_ratio']:.2f}x)")
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
        if valid.flops.image_size is not None and Limit.of(valid.budget) is not None:
            raise ConfigError("flops.image_size: budgets are planned for video frames; leave budget.tflops, "
                              "budget.fraction and budget.prefill_ms null to count an image")
        # budget mode: the knobs that fit, for flops.frames / flops.text_tokens, written into cfg
        plan = apply_budget(cfg, valid, sample_frames(valid, model_configs(valid.model)[1]), valid.flops.text_tokens)
        if plan is not None:
            valid = validate(cfg)
        result = flops(valid)
    except ConfigError as exc:
        print(f"aim.flops: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    print_breakdown(result)
    if plan is not None:
        result["budget"] = plan.record()
        print_choice(result["budget"])
    if valid.flops.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
