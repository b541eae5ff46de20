"""The analytic cost of a configured LLM prefill, from the model's config alone (no weights, no data): the
visual tokens per frame after the merger (`kept_per_frame`), the tokens each decoder layer sees under the
pruner's retention schedule (`tokens_per_layer`), and their roofline FLOPs and time (`PrefillCost`, the one
place that totals them: per operator for `flops`, the numbers `python -m aim.flops` prints, and memoized per
layer for the budget planner's grids). Used by
aim.flops (the CLI), aim.config (a pruner must prune on the model), the budget planner (aim.budget), the search
and the analysis.

`valid` below is a validated run config (aim.config.Validated); this module reads its groups and never
imports aim.config, which sits above it.
"""
from __future__ import annotations

from dataclasses import asdict, fields as schema_fields

from aim.checks import ConfigError


# The paper's unreduced LLM-prefill TFLOPs, by checkpoint and unmerged visual tokens per sample: its
# video table (LLaVA-OneVision-7B, 32 frames x 196 tokens, with 100 text tokens) and its image table
# (LLaVA-1.5-7B, one image of 576 tokens; the paper does not state the text length, see
# `matching_text_tokens`).
PUBLISHED_TFLOPS = {
    ("llava-hf/llava-onevision-qwen2-7b-ov-hf", 32 * 196): 99.63,
    ("llava-hf/llava-1.5-7b-hf", 576): 8.18,
}


def matching_text_tokens(cost: "PrefillCost", visual_tokens: int, published_tflops: float,
                         max_text: int = 8192) -> list[int]:
    """Text lengths at which the unreduced prefill (visual_tokens + text at every layer) rounds to the
    published TFLOPs figure (to its two decimals). The count grows with the text, so a bisection finds the
    first length at or above the lower rounding bound and the run of lengths that follow."""

    def tflops(text: int) -> float:
        return cost.estimate([visual_tokens + text] * cost.num_layers).tflops

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


def kept_per_frame(merger_cfg, num_tokens: int, grid: tuple[int, int] | None = None) -> int:
    """Tokens per frame after the merger, from its config alone; `grid`: the frame's (rows, cols) of tokens
    (default: a square one). A merger whose class declares `adaptive_count` (PruMerge: the IQR outliers of the
    tower's attention) keeps a count that cannot be known without running the tower."""
    from aim.merging import MERGERS, kept_tokens
    from aim.merging.baselines import PoolMerger, token_grid

    name = merger_cfg.name
    if name == "none":
        return num_tokens
    adaptive = getattr(MERGERS.get(name), "adaptive_count", None)
    if adaptive:
        raise ConfigError(f"merger.name: {name} keeps an adaptive number of tokens per frame ({adaptive})")
    ratio = getattr(merger_cfg, "ratio", None)
    if ratio is None:
        raise ConfigError(f"merger.name: {name} has no ratio; aim.flops cannot count its tokens per frame")
    if name == "pool":  # pooling keeps the nearest grid, not floor(ratio * T)
        try:
            h, w = PoolMerger(ratio=ratio).output_grid(*token_grid(num_tokens, grid))
        except ValueError as exc:
            raise ConfigError(f"merger.name: {exc}") from None
        return h * w
    return kept_tokens(num_tokens, ratio)


def kept_visual(merger_cfg, groups: int, num_tokens: int, grid: tuple[int, int] | None = None) -> int:
    """Visual tokens kept of `groups` merger groups (frames, temporal patches, tiles) of `num_tokens` each, from
    the merger's config alone: a per-frame merger keeps `kept_per_frame` of every group; a clip reducer
    (`scope = "clip"`, frames keeping different counts) keeps the total its `kept_total(groups, num_tokens, grid)`
    gives, built from the same config (aim.merging)."""
    from aim.merging import MERGERS

    name = merger_cfg.name
    if getattr(MERGERS.get(name), "scope", "frame") != "clip":
        return groups * kept_per_frame(merger_cfg, num_tokens, grid)
    schema = MERGERS.config_schema(name)
    fields = {f.name: getattr(merger_cfg, f.name) for f in schema_fields(schema) if hasattr(merger_cfg, f.name)} \
        if schema is not None else dict(vars(merger_cfg))
    reducer = MERGERS.build(name, **fields)
    if not hasattr(reducer, "kept_total"):
        raise ConfigError(f"merger.name: {name} reduces a clip with no kept_total(frames, tokens, grid): its visual tokens "
                          "cannot be counted without running it")
    try:
        return int(reducer.kept_total(groups, num_tokens, grid))
    except ValueError as exc:  # e.g. a grid the pooling cannot take
        raise ConfigError(f"merger.name: {exc}") from None


def tokens_per_layer(visual_tokens: int, text_tokens: int, retention: list[float]) -> tuple[list[int], list[int]]:
    """(visual tokens per layer, all tokens per layer): text tokens are never pruned."""
    from aim.pruning.schedule import kept_per_layer

    visual = kept_per_layer(visual_tokens, retention)
    return visual, [text_tokens + v for v in visual]


def image_tokens(valid, hf_config, adapter) -> dict:
    """One image of `flops.image_size`: its visual tokens before and after the merger, and the non-visual
    tokens the image adds (LLaVA-OneVision: a newline after each row of the anyres grid)."""
    size = tuple(valid.flops.image_size)
    if "image" not in adapter.modalities:
        raise ConfigError(f"flops.image_size: model {valid.model.name} takes {' or '.join(adapter.modalities)} "
                          "inputs, not images")
    if hasattr(adapter, "image_tiles"):
        # dynamic tiling (InternVL): the image's tiles, each the tower's token grid merged on its own; their
        # <img> / </img> markers are text, as a video's frame labels are
        tiles = adapter.image_tiles(hf_config, valid.model, size)
        rows = cols = adapter.tile_token_side(hf_config)  # one tile's grid (a video frame's may stack several)
        return {"size": list(size), "unmerged": tiles * rows * cols,
                "visual": kept_visual(valid.merger, tiles, rows * cols, (rows, cols)), "newline_tokens": 0,
                "token_grid": [rows, cols], "tiles": tiles}
    if getattr(adapter, "image_layout", None) is None:
        # one token grid per image: the image resized within the model's pixel budget (Qwen2-VL's
        # `image_grid`), or a fixed grid whatever the size (LLaVA-1.5: 24 x 24)
        if hasattr(adapter, "image_grid"):
            rows, cols = adapter.image_grid(hf_config, valid.model, size)
        else:
            _, rows, cols = adapter.feature_grid(hf_config, valid.model, 1)
        kept = kept_visual(valid.merger, 1, rows * cols, (rows, cols))
        return {"size": list(size), "unmerged": rows * cols, "visual": kept, "newline_tokens": 0,
                "token_grid": [rows, cols]}
    base, crops, (rows, cols) = adapter.image_layout(hf_config, size)
    cells = [r * c for r, c in crops]
    return {"size": list(size), "unmerged": base + sum(cells),
            "visual": kept_visual(valid.merger, 1, base)
            + sum(kept_visual(valid.merger, 1, r * c, (r, c)) for r, c in crops),
            "newline_tokens": rows, "token_grid": [rows, cols], "base_tokens": base, "crop_cells": cells}


def image_size_dependent(adapter) -> str | None:
    """How a model's image tokens depend on the image's size (anyres crops, a grid that follows the image), or
    None where every image gets the same tokens (LLaVA-1.5)."""
    if hasattr(adapter, "image_grid"):
        return "a grid that follows the image's aspect and size"
    if hasattr(adapter, "image_tiles"):
        return "dynamic tiling: more tiles for larger and longer images"
    return "anyres crops" if getattr(adapter, "image_layout", None) is not None else None


def sample_frames(valid, adapter) -> int:
    """flops.frames, else one image for an image model (LLaVA-1.5), else dataset.num_frames. An image
    dataset on a model whose image tokens depend on the image's size needs flops.image_size."""
    how = image_size_dependent(adapter)
    if valid.flops.image_size is None and image_dataset(valid) and valid.flops.frames is None and how is not None:
        raise ConfigError(f"flops.image_size: dataset {valid.dataset.name} holds images, and {valid.model.pretrained}'s "
                          f"image tokens depend on the image size ({how}); give flops.image_size=[height,width]")
    if valid.flops.frames is not None:
        return valid.flops.frames
    if adapter.modalities[0] == "image":
        return 1
    return getattr(valid.dataset, "num_frames", 1)


def flops(valid) -> dict:
    """What `python -m aim.flops` reports for a configured run: the tokens per layer (merger, pruner, model,
    frames or image, text) and their prefill cost (`PrefillCost.estimate`), reduced and unreduced."""
    from aim.efficiency.analytic import fastv_prefill_flops, llm_prefill_flops
    from aim.efficiency.roofline import hardware_profile
    from aim.pruning import PRUNERS

    f = valid.flops
    hf_config, adapter = model_configs(valid.model)
    text_config = hf_config.text_config
    hw = hardware_profile(f.hardware, f.peak_tflops, f.bandwidth_gbs)
    cost = PrefillCost(text_config, hw, f.fused_attention)
    frames = sample_frames(valid, adapter)
    groups, rows, cols = adapter.feature_grid(hf_config, valid.model, frames)
    per_frame = rows * cols
    visual = kept_visual(valid.merger, groups, per_frame, (rows, cols))
    unmerged, text = groups * per_frame, f.text_tokens
    image = None
    if f.image_size is not None:
        image, frames = image_tokens(valid, hf_config, adapter), 1
        groups = image.get("tiles", 1)  # InternVL's tiles are merger groups of one grid each
        visual, unmerged = image["visual"], image["unmerged"]
        per_frame = unmerged // groups
        text += image["newline_tokens"]  # never pruned, like text
        rows, cols = image["token_grid"]
    else:  # text the adapter writes inside the video (Qwen3-VL: a timestamp and markers per temporal patch)
        text += adapter.video_text_tokens(hf_config, valid.model, groups)
    retention = PRUNERS.build(valid.pruner.name, **asdict(valid.pruner)).retention_schedule(cost.num_layers)
    visual_per_layer, per_layer = tokens_per_layer(visual, text, retention)
    full_per_layer = [unmerged + text] * cost.num_layers
    est, full = cost.estimate(per_layer), cost.estimate(full_per_layer)
    published = PUBLISHED_TFLOPS.get((valid.model.pretrained, unmerged))
    return {
        "tflops": est.tflops,
        "prefill_ms": est.prefill_ms,
        "tflops_full": full.tflops,
        "prefill_ms_full": full.prefill_ms,
        "speedup": full.prefill_ms / est.prefill_ms,
        "flops_ratio": full.tflops / est.tflops,
        "tflops_analytic": llm_prefill_flops(text_config, per_layer) / 1e12,  # matmuls only, as runs record it
        # FastV's convention (4nd^2 + 2n^2d + 2ndm per layer; aim.efficiency.analytic), reduced and unreduced
        "tflops_fastv": fastv_prefill_flops(text_config, per_layer) / 1e12,
        "tflops_fastv_full": fastv_prefill_flops(text_config, full_per_layer) / 1e12,
        "convention": f.convention,  # which of the two aim.flops leads with
        "hardware": hw.name,
        "peak_tflops": hw.peak_tflops,
        "bandwidth_gbs": hw.bandwidth_gbs,
        "fused_attention": f.fused_attention,
        "published_tflops_full": published,  # the paper's unreduced figure for this input, if it has one
        "published_text_tokens": (matching_text_tokens(cost, unmerged, published) if published is not None else None),
        "input": "image" if adapter.modalities[0] == "image" or image is not None else "video",
        "image": image,  # with flops.image_size: the image's token layout
        "frames": frames,
        "frame_groups": groups,  # frames, Qwen2-VL's temporal patches (2 frames each), or an image's tiles
        "token_grid": [rows, cols],
        "tokens_per_frame": per_frame,  # per frame group
        # per frame group: a clip reducer's groups keep different counts, whose mean this is then
        "kept_per_frame": visual // groups if visual % groups == 0 else visual / groups,
        "visual_tokens": visual,
        "visual_tokens_unmerged": unmerged,
        "visual_tokens_per_layer": visual_per_layer,
        "text_tokens": text,
        "tokens_per_layer": per_layer,
        "by_operator": est.by_operator(),  # per operator type: tflops, ms, gb, memory_bound_layers
        "method": {"merger": valid.merger.name, "pruner": valid.pruner.name},
        "model": valid.model.pretrained,
    }


class PrefillCost:
    """The roofline cost of one LLM's prefill on one hardware as a function of the tokens each decoder layer
    sees: the one place that turns tokens per layer into TFLOPs and milliseconds, for aim.flops (`flops`, through
    `estimate`) and budget mode (aim.budget.CostModel, through `layer`, `total` and `totals`). Every figure is a
    sum of the same operators (aim.efficiency.roofline: `layer_operators` per decoder layer, `lm_head_operator`
    once; matmul-only FLOPs: aim.efficiency.analytic.layer_flops):
    - `estimate(per_layer)`: operator by operator, kept for the per-operator breakdown (what aim.flops prints);
    - `total(per_layer)`: the lm_head, then each layer's cost memoized by its token count (a budget grid has
      few distinct counts); `totals(counts)`: the same over a [settings, layers] array at once.
    They add the same terms in another order, so they agree to float rounding (1e-12 relative, tests/test_budget)."""

    def __init__(self, text_config, hw, fused_attention: bool):
        from aim.efficiency.roofline import LLMShape, lm_head_operator

        self.text_config, self.hw, self.fused = text_config, hw, fused_attention
        self.shape = LLMShape.from_text_config(text_config)
        head = lm_head_operator(self.shape)
        self.head = (head.flops, head.seconds(hw))  # (FLOPs, seconds); no matmul FLOPs in the analytic count
        self._memo: dict[int, tuple[float, float, float]] = {}

    @property
    def num_layers(self) -> int:
        return self.shape.num_layers

    def estimate(self, per_layer: list[int]):
        """The roofline.PrefillEstimate of a prefill in which decoder layer i sees per_layer[i] tokens."""
        from aim.efficiency.roofline import prefill_estimate

        return prefill_estimate(self.shape, per_layer, self.hw, self.fused)

    def layer(self, n: int) -> tuple[float, float, float]:
        """(all FLOPs, seconds, matmul FLOPs) of one decoder layer with n tokens, memoized."""
        if n not in self._memo:
            from aim.efficiency.analytic import layer_flops
            from aim.efficiency.roofline import layer_operators

            s = self.shape
            ops = layer_operators(n, s, self.fused, self.hw.onchip_buffer_bytes)
            self._memo[n] = (sum(op.flops for op in ops), sum(op.seconds(self.hw) for op in ops),
                             layer_flops(n, s.hidden, s.intermediate, s.heads, s.kv_heads, s.head_dim))
        return self._memo[n]

    def total(self, per_layer) -> tuple[float, float, float]:
        """(TFLOPs, prefill ms, matmul-only TFLOPs) of a prefill whose layer i sees per_layer[i] tokens."""
        flops, seconds, matmuls = self.head[0], self.head[1], 0.0
        for n in per_layer:
            f, s, m = self.layer(n)
            flops, seconds, matmuls = flops + f, seconds + s, matmuls + m
        return flops / 1e12, seconds * 1e3, matmuls / 1e12

    def totals(self, counts):
        """(TFLOPs, prefill ms) arrays of many prefills at once: counts[i, l] tokens at layer l of prefill i."""
        import numpy as np

        distinct, where = np.unique(counts, return_inverse=True)
        table = np.array([self.layer(int(n)) for n in distinct])  # [distinct n, (flops, seconds, matmuls)]
        per_layer = table[where.reshape(counts.shape)]
        return (per_layer[..., 0].sum(1) + self.head[0]) / 1e12, (per_layer[..., 1].sum(1) + self.head[1]) * 1e3


def image_dataset(valid) -> bool:
    """Whether the configured dataset's samples are images (its config class says so)."""
    return getattr(valid.dataset, "modality", "video") == "image"


GIB = 2**30
CUDA_CONTEXT_GIB = 1.0  # per GPU: the CUDA context, cuBLAS workspace and allocator slack an estimate sets aside


def parameter_count(adapter, hf_config) -> int:
    """Parameters of the whole model (vision tower, projector, LLM, lm_head; tied weights once), from the model
    class built on the meta device: no memory, no weights read."""
    import torch
    import transformers

    key = (adapter.hf_model_class, hf_config.to_json_string())
    if key not in _PARAMETERS:  # a 72B model takes seconds to build even on the meta device
        with torch.device("meta"):
            model = getattr(transformers, adapter.hf_model_class)._from_config(hf_config)
        _PARAMETERS[key] = sum(p.numel() for p in model.parameters())
    return _PARAMETERS[key]


_PARAMETERS: dict[tuple[str, str], int] = {}


def memory_estimate(valid, result: dict) -> dict:
    """Device memory of one prefill of `result` (`flops(valid)`'s tokens per layer) at the preset's dtype, and the
    GPUs of `flops.hardware` it needs when the model is spread over them (`model.device_map`):
    - weights: every parameter x bytes per element (bf16: 2);
    - KV cache: sum over layers of the tokens it holds x 2 (keys, values) x KV heads x head dim x bytes (a pruned
      layer holds its kept tokens; decoded tokens add theirs);
    - activations: the widest layer's transient tensors at the unreduced length n, n (3m + 4d) elements (the gated
      MLP's gate, up and their product, and q/k/v/output-sized tensors), plus the lm_head's fp32 logits of the last
      token; the pruner's importance scoring adds at most `pruner.block_mib` MiB on the PyTorch paths;
    - per GPU, CUDA_CONTEXT_GIB set aside.
    gpus_min = ceil(total / (memory_gib - CUDA_CONTEXT_GIB)); headroom_gib: what gpus_min GPUs (and
    model.gpus GPUs) have left over the total. An estimate for planning, not a measurement."""
    import math

    from aim.efficiency.roofline import LLMShape, hardware_profile
    from aim.models.base import DTYPES

    hf_config, adapter = model_configs(valid.model)
    shape = LLMShape.from_text_config(hf_config.text_config)
    itemsize = DTYPES[valid.model.dtype].itemsize
    params = parameter_count(adapter, hf_config)
    per_token = 2 * shape.kv_heads * shape.head_dim * itemsize  # one layer's keys and values of one token
    n = max(result["tokens_per_layer"] + [result["visual_tokens_unmerged"] + result["text_tokens"]])
    activations = n * (3 * shape.intermediate + 4 * shape.hidden) * itemsize + shape.vocab * 4
    scoring = getattr(valid.pruner, "block_mib", 0) * 2**20 if valid.pruner.name != "none" else 0
    hw = hardware_profile(valid.flops.hardware)
    gpu_gib = valid.flops.gpu_memory_gib or hw.memory_gib
    weights = params * itemsize
    kv_full = per_token * (result["visual_tokens_unmerged"] + result["text_tokens"]) * shape.num_layers
    kv = per_token * sum(result["tokens_per_layer"])
    total = weights + kv_full + activations + scoring  # the unreduced prefill's KV cache: the larger one
    usable = gpu_gib - CUDA_CONTEXT_GIB
    gpus_min = math.ceil(total / GIB / usable)
    return {
        "dtype": valid.model.dtype,
        "parameters": params,
        "weights_gib": weights / GIB,
        "kv_cache_gib": kv / GIB,  # the configured (reduced) prefill's
        "kv_cache_gib_full": kv_full / GIB,  # the unreduced prefill's
        "activations_gib": (activations + scoring) / GIB,
        "total_gib": total / GIB,
        "gpu": hw.name,
        "gpu_memory_gib": gpu_gib,
        "gpus_min": gpus_min,
        "headroom_gib": gpus_min * usable - total / GIB,
        "model_gpus": valid.model.gpus,  # what the preset asks the launcher for
        "model_gpus_headroom_gib": valid.model.gpus * usable - total / GIB,
    }
