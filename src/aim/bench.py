"""Time the LLM prefill with the configured merger and pruner against the unreduced model, in one process.

    python -m aim.bench model=llava_onevision_0.5b model.random_init=true merger=aim merger.ratio=0.25 pruner=aim pruner.l1=12 pruner.l2=18

Builds the model from its config (random weights allowed: `model.random_init=true`), synthesizes
`bench.frames` frames of visual features at the model's tokens per frame and `bench.text_tokens` text
tokens, then times the reduced and the unreduced prefill alternately after warm-up (medians; the device
is synchronized around each, never inside). The first prefill of each kind is timed apart (`first_prefill_ms`,
`_full`) and never counted in the medians: with `model.compile` (aim.models.compiled: the decoder layers
compiled or graph-captured per layout) it compiles, and `warmup_ms` (`_full`) is what it took beyond a steady
prefill; `compile` names the mode. The vision tower is not run: only the LLM prefill and the
reduction's own overhead (merging, importance) are timed. A merger that needs the tower's signals (VisionZip,
PruMerge, HoliTom: keys, received attention) gets random ones of the real shapes (`synthetic_signals`): its
cost and its kept count are the real ones, which tokens it keeps is not. The importance scoring runs inside the reduced
prefill; its share is measured in extra reduced prefills that synchronize around each scoring call (not
in the timed ones, which would then wait on the device between layers). The last stdout line is one
JSON object with `speedup`, `flops_ratio`, `prefill_ms`, `prefill_ms_full`, `overhead_ms`, `merge_ms`,
`importance_ms` (the scoring) and `importance_pct_of_prefill` (its share of the reduced prefill),
`speedup_with_overhead` (merging counted too) and `overhead_pct`, `device`. With `bench.new_tokens` > 0
(default 16) it also decodes that many tokens greedily after each prefill (EOS ignored) and reports the
time to first token `ttft_ms`, `decode_tokens_per_s` and `kv_cache_bytes`, each also `_full` (unreduced).
With a budget (`budget.tflops`, `budget.fraction` or `budget.prefill_ms`; aim.budget) the merger's and
pruner's knobs are first chosen to fit it at `bench.frames` and `bench.text_tokens`, and the JSON carries
a `budget` entry (asked, setting, analytic cost, `chosen_by`).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from aim.config import ConfigError, check_device, check_knobs_read, check_tool_budget, check_weights, validate
from aim.paths import CONF_DIR


class TimedImportance:
    """Wraps a pruner so the time spent scoring tokens is measured (it runs inside the prefill)."""

    def __init__(self, pruner, sync):
        self.pruner, self.sync, self.ms = pruner, sync, 0.0
        self.needs = getattr(pruner, "needs", ())  # the signals the hook hands the pruner (DART: hidden states)

    def retention_schedule(self, num_layers):
        return self.pruner.retention_schedule(num_layers)

    def importance(self, q, k, valid, **signals):
        self.sync()
        start = time.perf_counter()
        scores = self.pruner.importance(q, k, valid, **signals)
        self.sync()
        self.ms += (time.perf_counter() - start) * 1e3
        return scores


def elapsed_ms(adapter, fn) -> float:
    """Wall time of fn in ms: CUDA events on one GPU (device time between the two records), else the host
    clock (a CPU, or a model spread over several GPUs, whose events on one would miss the others' work); every
    GPU of the model is synchronized before and after either way."""
    adapter.synchronize()
    if adapter.device.type == "cuda" and len(getattr(adapter, "cuda_devices", ())) <= 1:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(adapter.device)
        return start.elapsed_time(end)
    start_s = time.perf_counter()
    fn()
    adapter.synchronize()
    return (time.perf_counter() - start_s) * 1e3


def synthetic_inputs(adapter, frames: int, text_tokens: int, generator: torch.Generator):
    """Random visual features [frame groups, tokens per group, D] on the adapter's token grid for `frames`
    frames (LLaVA-OneVision: one group per frame; Qwen2-VL: per temporal patch of 2 frames, at the preset's
    `frame_size`), the grid (rows, cols), and random prompt token ids around them (one fewer than
    `text_tokens`: LLaVA-OneVision adds its image-newline token)."""
    groups, rows, cols = adapter.grid(frames)
    dim = adapter.text_config.hidden_size
    feats = torch.randn(groups, rows * cols, dim, generator=generator).to(adapter.device, adapter.dtype)
    vocab = adapter.text_config.vocab_size
    before = max(1, text_tokens // 10)
    ids = torch.randint(0, vocab, (text_tokens - adapter.extra_text_tokens,), generator=generator).tolist()
    return feats, (rows, cols), ids[:before], ids[before:]


def synthetic_signals(needs, feats: torch.Tensor, generator: torch.Generator, key_dim: int = 64) -> dict:
    """Random stand-ins for the vision tower's signals a merger `needs`, in the shapes the adapters hand over
    (encode_frames): `metric` keys [F, T, key_dim]; `attention` [F, T], each frame's attention received, a
    softmax of random logits (positive, summing to 1 per frame)."""
    f, t = feats.shape[:2]
    out = {}
    if "metric" in needs:
        out["metric"] = torch.randn(f, t, key_dim, generator=generator).to(feats.device, feats.dtype)
    if "attention" in needs:
        out["attention"] = torch.randn(f, t, generator=generator).softmax(-1).to(feats.device, feats.dtype)
    return out


def bench(valid, adapter=None) -> dict:
    """`adapter`: one already built from `valid.model` (a script timing several settings builds it once)."""
    from aim.efficiency.analytic import llm_prefill_flops
    from aim.merging import MERGERS, NoMerge, reduce_clip
    from aim.models import MODELS
    from aim.pruning import PRUNERS, NoPrune
    from aim.pruning.hooks import TokenPruner

    torch.manual_seed(valid.seed)
    if adapter is None:
        adapter = MODELS.get(valid.model.name).from_config(**asdict(valid.model))
    merger = MERGERS.build(valid.merger.name, **asdict(valid.merger))
    pruner = PRUNERS.build(valid.pruner.name, **asdict(valid.pruner))
    timed_pruner = TimedImportance(pruner, adapter.synchronize)
    b = valid.bench
    feats, grid_hw, before, after = synthetic_inputs(adapter, b.frames, b.text_tokens, torch.Generator().manual_seed(valid.seed))
    needs = set(getattr(merger, "needs", ()))
    unknown = needs - {"grid", "text", "metric", "attention"}
    if unknown:
        raise ConfigError(f"merger.name: {valid.merger.name} needs {sorted(unknown)}, which aim.bench cannot "
                          "synthesize (it does not run the vision tower)")
    layout = {"grid": grid_hw} if "grid" in needs else {}
    layout.update(synthetic_signals(needs, feats, torch.Generator().manual_seed(valid.seed + 1)))

    prompted = adapter.with_prompt(merger, after)  # a merger that needs the prompt's text gets it, as in prepare

    def merge():
        adapter.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            reduced = reduce_clip(prompted, feats, **layout)  # a clip reducer's ragged counts as they come
        adapter.synchronize()
        return reduced, (time.perf_counter() - start) * 1e3

    unmerged = NoMerge()(feats)
    full_inputs = adapter.assemble(before, unmerged.features, unmerged.token_index, after, grid_hw)
    reduced, _ = merge()
    reduced_inputs = adapter.assemble_clip(before, reduced, len(feats), after, grid_hw)
    full_hook, reduced_hook = TokenPruner(adapter.decoder_layers, NoPrune()), TokenPruner(adapter.decoder_layers, pruner)
    timed_hook = TokenPruner(adapter.decoder_layers, timed_pruner)

    def prefill(hook, inputs):
        with hook.attached(inputs.token_roles) as trace:
            return elapsed_ms(adapter, lambda: adapter.prefill_logits(inputs)), trace

    # the first prefill of each layout compiles or captures its graphs under model.compile: timed apart (and
    # always run, even with bench.warmup=0, so the timed prefills never include it)
    first_full_ms, first_reduced_ms = prefill(full_hook, full_inputs)[0], prefill(reduced_hook, reduced_inputs)[0]
    for _ in range(b.warmup - 1):
        prefill(full_hook, full_inputs), prefill(reduced_hook, reduced_inputs)
    full_ms, reduced_ms, merge_ms, importance_ms = [], [], [], []
    for _ in range(b.repeats):  # alternate, so drift and thermal state hit both alike
        full_ms.append(prefill(full_hook, full_inputs)[0])
        merge_ms.append(merge()[1])
        ms, trace = prefill(reduced_hook, reduced_inputs)
        reduced_ms.append(ms)
    for _ in range(b.repeats):
        timed_pruner.ms = 0.0
        prefill(timed_hook, reduced_inputs)
        importance_ms.append(timed_pruner.ms)
    decoding = decode_costs(adapter, b, (full_hook, full_inputs), (reduced_hook, reduced_inputs)) if b.new_tokens else {}
    layers = adapter.num_layers
    visual_per_layer = trace.visual_tokens_per_layer or [reduced_inputs.visual_tokens] * layers
    text = reduced_inputs.text_tokens
    flops_full = llm_prefill_flops(adapter.text_config, [full_inputs.visual_tokens + text] * layers)
    flops_reduced = llm_prefill_flops(adapter.text_config, [v + text for v in visual_per_layer])
    med = statistics.median
    result = {
        "speedup": med(full_ms) / med(reduced_ms),
        "flops_ratio": flops_full / flops_reduced,
        "prefill_ms": med(reduced_ms),
        "prefill_ms_full": med(full_ms),
        "overhead_ms": med(merge_ms) + med(importance_ms),
        "merge_ms": med(merge_ms),
        "importance_ms": med(importance_ms),
        "tflops": flops_reduced / 1e12,
        "tflops_full": flops_full / 1e12,
        "visual_tokens": full_inputs.visual_tokens,
        "visual_tokens_merged": reduced_inputs.visual_tokens,
        "visual_tokens_per_frame": reduced.counts(len(feats)),  # kept per merger group (ragged for a clip reducer)
        "visual_tokens_per_layer": visual_per_layer,
        "text_tokens": text,
        "frames": b.frames,
        "repeats": b.repeats,
        "device": (torch.cuda.get_device_name(adapter.device) if len(getattr(adapter, "cuda_devices", ())) <= 1
                   else f"{len(adapter.cuda_devices)} x {torch.cuda.get_device_name(adapter.device)} (model.device_map)")
        if adapter.device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": valid.model.dtype,
        "compile": getattr(adapter, "compile_mode", "none"),
        # the first prefill of each kind (with model.compile: compiling or capturing the layout's graphs), and
        # what it took beyond a steady-state one
        "first_prefill_ms": first_reduced_ms,
        "first_prefill_ms_full": first_full_ms,
        "warmup_ms": first_reduced_ms - med(reduced_ms),
        "warmup_ms_full": first_full_ms - med(full_ms),
        "method": {"merger": valid.merger.name, "pruner": valid.pruner.name},
    }
    result["speedup_over_flops_ratio"] = result["speedup"] / result["flops_ratio"]
    result["importance_pct_of_prefill"] = 100 * result["importance_ms"] / result["prefill_ms"]
    # with the merging counted too (the importance is inside prefill_ms already): the whole reduced path
    result["speedup_with_overhead"] = result["prefill_ms_full"] / (result["prefill_ms"] + result["merge_ms"])
    result["speedup_with_overhead_over_flops_ratio"] = result["speedup_with_overhead"] / result["flops_ratio"]
    result["overhead_pct"] = 100 * result["overhead_ms"] / (result["prefill_ms"] + result["merge_ms"])
    result.update(decoding)
    return result


def decode_costs(adapter, b, full, reduced) -> dict:
    """Greedy decoding of `b.new_tokens` tokens (EOS ignored, so both decode as many) after the unreduced
    and the reduced prefill, alternately, `b.repeats` times after `b.warmup`: medians of the time to first
    token (`ttft_ms`, the prefill with its KV cache and the first token) and of the decode rate
    (`decode_tokens_per_s`, the tokens after the first), and the KV-cache bytes the prefill leaves
    (`kv_cache_bytes`: a pruned layer caches only its kept tokens). `_full` names the unreduced figures."""
    runs = {"": [], "_full": []}

    def decode(hook, inputs):
        stats = {}
        with hook.attached(inputs.token_roles):
            adapter.generate_ids(inputs, b.new_tokens, stats, stop_at_eos=False)
        adapter.synchronize()
        return stats

    for i in range(b.warmup + b.repeats):
        for suffix, (hook, inputs) in (("_full", full), ("", reduced)):
            stats = decode(hook, inputs)
            if i >= b.warmup:
                runs[suffix].append(stats)
    out = {"new_tokens": b.new_tokens}
    for suffix, stats in runs.items():
        out[f"ttft_ms{suffix}"] = statistics.median(s["ttft_ms"] for s in stats)
        rates = [s["decode_tokens_per_s"] for s in stats if s["decode_tokens_per_s"] is not None]
        out[f"decode_tokens_per_s{suffix}"] = statistics.median(rates) if rates else None
        out[f"kv_cache_bytes{suffix}"] = stats[-1]["kv_cache_bytes"]
    out["ttft_speedup"] = out["ttft_ms_full"] / out["ttft_ms"]
    if out["decode_tokens_per_s"] is not None:
        out["decode_speedup"] = out["decode_tokens_per_s"] / out["decode_tokens_per_s_full"]
    out["kv_cache_ratio"] = out["kv_cache_bytes_full"] / out["kv_cache_bytes"] if out["kv_cache_bytes"] else None
    return out


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from aim.budget import apply_budget, print_choice

    try:
        valid = validate(cfg)
        check_knobs_read(valid, "aim.bench", HydraConfig.get().overrides.task)  # eval.*, logger, ...
        check_tool_budget(valid.budget, "bench")
        check_device(valid)
        check_weights(valid)
        # budget mode: the knobs that fit, for bench.frames / bench.text_tokens, written into cfg
        plan = apply_budget(cfg, valid, valid.bench.frames, valid.bench.text_tokens)
        if plan is not None:
            valid = validate(cfg)
            print_choice(plan.record())
        result = bench(valid)
    except ConfigError as exc:
        print(f"aim.bench: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    if plan is not None:
        result["budget"] = plan.record()
    print(f"{result['method']['merger']}/{result['method']['pruner']} on {result['device']}: prefill "
          f"{result['prefill_ms_full']:.1f} -> {result['prefill_ms']:.1f} ms (speedup {result['speedup']:.2f}x, "
          f"FLOPs ratio {result['flops_ratio']:.2f}x, speedup/FLOPs ratio {result['speedup_over_flops_ratio']:.2f}); "
          f"overhead {result['overhead_ms']:.2f} ms (merge {result['merge_ms']:.2f}, importance "
          f"{result['importance_ms']:.2f} = {result['importance_pct_of_prefill']:.1f}% of the reduced prefill; "
          f"overhead {result['overhead_pct']:.1f}% of prefill + merge, speedup with it {result['speedup_with_overhead']:.2f}x "
          f"= {result['speedup_with_overhead_over_flops_ratio']:.2f} of the FLOPs ratio)")
    print(f"model.compile={result['compile']}: first prefill {result['first_prefill_ms_full']:.1f} / "
          f"{result['first_prefill_ms']:.1f} ms (unreduced / reduced), {result['warmup_ms_full']:.1f} / "
          f"{result['warmup_ms']:.1f} ms beyond a steady one")
    if "ttft_ms" in result:
        rate = lambda x: "n/a" if x is None else f"{x:.1f}"  # noqa: E731
        print(f"decoding {result['new_tokens']} tokens: time to first token {result['ttft_ms_full']:.1f} -> "
              f"{result['ttft_ms']:.1f} ms, decode {rate(result['decode_tokens_per_s_full'])} -> "
              f"{rate(result['decode_tokens_per_s'])} tokens/s, KV cache {result['kv_cache_bytes_full'] / 2**20:.1f} -> "
              f"{result['kv_cache_bytes'] / 2**20:.1f} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
