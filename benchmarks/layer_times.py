"""Where the reduced prefill's time goes, layer by layer, against each layer's FLOPs (issue #23's CPU bar).

    OMP_NUM_THREADS=1 python benchmarks/layer_times.py [--repeats 1] [--wall] [--compile default] [overrides ...]

aim.bench's inputs (random weights, `bench.frames` frames, `bench.text_tokens` text tokens; default: the
0.5B preset with AIM merging 25% + AIM pruning 14/22), the unreduced and the reduced prefill, eager. Per
decoder layer: the tokens it sees, the milliseconds of its body (the scoring of a layer that feeds a pruning
step included: it runs in forward hooks of the attention), of the pruning hook before it (gathers, slicing),
the analytic GFLOP (aim.efficiency.analytic, the full N x N attention as counted) and GFLOP/s; and the time
outside the layers (RoPE, masks, final norm, lm_head). Times are the main thread's CPU time
(`time.thread_time`: with one thread, other jobs on the machine barely change it), `--wall` for wall clock.
Medians over `--repeats`. `--compile MODE` runs the layers as `model.compile=MODE` does (aim.models.compiled;
the scored layers then recompute their q/k projections) and reports the first prefill of each kind (the
compilation) in wall clock apart.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict

import torch
from hydra import compose, initialize_config_dir

from aim.bench import synthetic_inputs
from aim.config import validate
from aim.efficiency.analytic import llm_prefill_flops
from aim.merging import MERGERS, NoMerge, reduce_clip
from aim.models import MODELS
from aim.paths import CONF_DIR
from aim.pruning import PRUNERS, NoPrune
from aim.pruning.hooks import TokenPruner

SETTING = ["model=llava_onevision_0.5b", "model.random_init=true", "merger=aim", "merger.ratio=0.25", "pruner=aim",
           "pruner.l1=14", "pruner.l2=22"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--wall", action="store_true", help="wall clock instead of the main thread's CPU time")
    ap.add_argument("--compile", default="none", help="model.compile mode of the decoder layers")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    now = time.perf_counter if args.wall else time.thread_time
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=[*SETTING, *args.overrides]))
    torch.manual_seed(valid.seed)
    adapter = MODELS.get(valid.model.name).from_config(**asdict(valid.model))
    adapter.compile_layers(args.compile)
    merger = MERGERS.build(valid.merger.name, **asdict(valid.merger))
    pruner = PRUNERS.build(valid.pruner.name, **asdict(valid.pruner))
    b = valid.bench
    feats, grid_hw, before, after = synthetic_inputs(adapter, b.frames, b.text_tokens, torch.Generator().manual_seed(valid.seed))
    unmerged = NoMerge()(feats)
    kinds = {
        "unreduced": (TokenPruner(adapter.decoder_layers, NoPrune()),
                      adapter.assemble(before, unmerged.features, unmerged.token_index, after, grid_hw)),
        "reduced": (TokenPruner(adapter.decoder_layers, pruner),
                    adapter.assemble_clip(before, reduce_clip(merger, feats), len(feats), after, grid_hw)),
    }
    layers = adapter.decoder_layers
    marks: dict = {}

    def mark(key):
        def hook(_module, args, kwargs):
            marks[key] = now()
            if key[0] == "body":
                marks[("n", key[1])] = (args[0] if args else kwargs["hidden_states"]).shape[1]
        return hook

    def run(hook, inputs):
        with hook.attached(inputs.token_roles):  # timers around the pruning hook: before it, after it, after the layer
            handles = []
            for i, layer in enumerate(layers):
                handles.append(layer.register_forward_pre_hook(mark(("pre", i)), prepend=True, with_kwargs=True))
                handles.append(layer.register_forward_pre_hook(mark(("body", i)), with_kwargs=True))
                handles.append(layer.register_forward_hook(lambda *_a, i=i: marks.__setitem__(("end", i), now())))
            start = now()
            adapter.prefill_logits(inputs)
            total = now() - start
            for h in handles:
                h.remove()
        rows = [(marks[("n", i)], (marks[("end", i)] - marks[("body", i)]) * 1e3, (marks[("body", i)] - marks[("pre", i)]) * 1e3)
                for i in range(len(layers))]
        return total * 1e3, rows

    for kind, (hook, inputs) in kinds.items():  # warm-up (with --compile: the compilation)
        start = time.perf_counter()
        run(hook, inputs)
        print(f"first {kind} prefill: {(time.perf_counter() - start) * 1e3:.0f} ms wall clock")
    results = {k: [run(*v) for _ in range(args.repeats)] for k, v in kinds.items()}
    clock = "wall clock" if args.wall else "main thread's CPU time"
    print(f"{torch.get_num_threads()} thread(s), {clock}, medians of {args.repeats}, model.compile={args.compile}")
    totals = {}
    for kind, runs in results.items():
        total = statistics.median(r[0] for r in runs)
        totals[kind] = total
        body = [statistics.median(r[1][i][1] for r in runs) for i in range(len(layers))]
        hook = [statistics.median(r[1][i][2] for r in runs) for i in range(len(layers))]
        print(f"\n{kind}: {total:.1f} ms; outside the layers {total - sum(body) - sum(hook):.1f} ms; hooks {sum(hook):.1f} ms")
        print("| layer | tokens | body ms | hook ms | GFLOP | GFLOP/s |\n| --- | --- | --- | --- | --- | --- |")
        for i in range(len(layers)):
            n = runs[0][1][i][0]
            gflop = llm_prefill_flops(adapter.text_config, [n]) / 1e9
            print(f"| {i} | {n} | {body[i]:.1f} | {hook[i]:.2f} | {gflop:.2f} | {gflop / body[i] * 1e3:.1f} |")
    tokens = {k: [r[0] for r in results[k][0][1]] for k in results}
    ratio = llm_prefill_flops(adapter.text_config, tokens["unreduced"]) / llm_prefill_flops(adapter.text_config, tokens["reduced"])
    speedup = totals["unreduced"] / totals["reduced"]
    print(f"\nspeedup {speedup:.2f}x for a FLOPs ratio of {ratio:.2f}x: {speedup / ratio:.3f}")


if __name__ == "__main__":
    main()
