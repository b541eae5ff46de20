"""The GPU figures of issue #23 in one process: is the Triton PageRank right and fast at the paper's size, and
what does each reduction buy in wall clock, unreduced vs reduced.

    python benchmarks/gpu_speed.py [--out DIR] [--repeats 10] [--warmup 3] [--new-tokens 16] [--quick]

On one CUDA GPU (H100 or H200), with random weights of the LLaVA-OneVision-7B architecture (bf16, SDPA,
`model=llava_onevision_7b model.random_init=true`), the paper's 32 frames x 196 tokens + 100 text tokens:
1. the importance check: random bf16 queries [1, 28, 6,372, 128] and keys of 4 GQA heads (the 7B's layout,
   no merging), scored by the Triton kernel, the blockwise PyTorch code and the dense code: the largest
   relative difference, whether the same 1,568 tokens are kept, milliseconds and peak memory of each;
2. `aim.bench` for each row below (the model built once, each row's unreduced and reduced prefills
   alternating in this process): prefill ms, speedup, FLOPs ratio, speedup / FLOPs ratio, scoring ms and
   share of the reduced prefill, merging ms, time to first token, decode tokens/s and KV-cache bytes.
3. the launch-bound tail's levers (`--levers`, `model.compile`, aim.models.compiled): the paper's row, unreduced
   and reduced, with the decoder layers eager (`none`), as hand-captured CUDA graphs (`cuda_graphs`), compiled
   by inductor (`default`) and compiled with inductor's CUDA graphs (`reduce-overhead`), the same model
   switched from lever to lever: steady prefill ms, speedup, and the first prefill's extra time (compiling or
   capturing the layout's graphs), plus a check of each lever against eager on AIM pruning alone (no merging):
   largest logit difference and whether the same tokens are kept (bf16: ties may differ).
The bars (issue #23): the paper's row speedup / FLOPs ratio >= 0.85, AIM pruning alone faster than
unreduced, scoring <= 3% of the pruned prefill. Writes `importance.json`, `bench.jsonl` (one aim.bench
result per row), `levers.jsonl` (one per lever) and `table.md` under --out, and prints the tables. `--quick`:
2 repeats, 1 warm-up, the paper's row and AIM pruning alone only (a smoke test), then the levers. `--levers ""`
skips the levers; `--levers-only` runs only them (inductor's compilation of a layout's ~11 shapes takes minutes).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from aim.bench import bench
from aim.config import validate
from aim.models import MODELS
from aim.paths import CONF_DIR
from aim.pruning.importance import pagerank_blockwise, pagerank_dense, pagerank_from_qk

MODEL = ["model=llava_onevision_7b", "model.random_init=true", "bench.frames=32", "bench.text_tokens=100"]
ROWS = {  # label -> the row's overrides
    "paper (merge 25% + AIM 14/22)": ["merger=aim", "merger.ratio=0.25", "pruner=aim", "pruner.l1=14", "pruner.l2=22"],
    "paper, dense scoring": ["merger=aim", "merger.ratio=0.25", "pruner=aim", "pruner.l1=14", "pruner.l2=22",
                             "pruner.backend=dense"],
    "AIM pruning alone": ["merger=none", "pruner=aim", "pruner.l1=14", "pruner.l2=22"],
    "AIM pruning alone, dense scoring": ["merger=none", "pruner=aim", "pruner.l1=14", "pruner.l2=22", "pruner.backend=dense"],
    "merging alone (25%)": ["merger=aim", "merger.ratio=0.25", "pruner=none"],
    "FastV": ["merger=none", "pruner=fastv"],
    "PDrop": ["merger=none", "pruner=pdrop"],
    "random pruning 14/22 after merging (control)": ["merger=aim", "merger.ratio=0.25", "pruner=random", "pruner.l1=14",
                                                      "pruner.l2=22"],
}
QUICK = ("paper (merge 25% + AIM 14/22)", "AIM pruning alone")
LEVERS = ("none", "cuda_graphs", "default", "reduce-overhead")  # model.compile modes, eager first
LEVER_ROW = "paper (merge 25% + AIM 14/22)"


def timed(fn, repeats=5):
    """Median ms of fn on the device, and its peak memory above what was allocated before, MiB."""
    fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return out, sorted(times)[len(times) // 2], (torch.cuda.max_memory_allocated() - base) / 2**20


def importance_check(n=6372, heads=28, kv_heads=4, d=128, keep=1568) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, heads, n, d, device="cuda", generator=g).to(torch.bfloat16)
    k = torch.randn(1, kv_heads, n, d, device="cuda", generator=g).to(torch.bfloat16)
    runs = {
        "triton": lambda: pagerank_from_qk(q, k, backend="triton"),
        "blockwise": lambda: pagerank_blockwise(q, k),
        "dense": lambda: pagerank_dense(q, k),
    }
    out = {"tokens": n, "heads": heads, "kv_heads": kv_heads, "head_dim": d}
    scores = {}
    for name, fn in runs.items():
        scores[name], ms, mib = timed(fn)
        out[f"{name}_ms"], out[f"{name}_peak_mib"] = ms, mib
    ref = scores["dense"]
    kept = set(ref.topk(keep, dim=1).indices[0].tolist())
    for name in ("triton", "blockwise"):
        out[f"{name}_max_rel_diff"] = float(((scores[name] - ref).abs() / ref.abs()).max())
        out[f"{name}_same_kept"] = set(scores[name].topk(keep, dim=1).indices[0].tolist()) == kept
    return out


def lever_check(adapter, valid) -> dict:
    """The row's pruning alone (AIM 14/22, no merging) on bench's synthetic inputs under the adapter's current compile mode: the
    next-token logits and each layer's kept indices, to compare against eager."""
    from aim.bench import synthetic_inputs
    from aim.merging import NoMerge
    from aim.pruning import PRUNERS
    from aim.pruning.hooks import TokenPruner

    feats, grid_hw, before, after = synthetic_inputs(adapter, valid.bench.frames, valid.bench.text_tokens,
                                                     torch.Generator().manual_seed(valid.seed))
    unmerged = NoMerge()(feats)
    inputs = adapter.assemble(before, unmerged.features, unmerged.token_index, after, grid_hw)
    pruner = PRUNERS.build(valid.pruner.name, **asdict(valid.pruner))  # the row's pruner (AIM 14/22)
    with TokenPruner(adapter.decoder_layers, pruner).attached(inputs.token_roles) as trace:
        logits = adapter.prefill_logits(inputs)
    return {"logits": logits, "kept": {i: k.clone() for i, k in trace.kept_indices.items()}}


def run_levers(args, common, adapter, out, repeats, warmup) -> list[str]:
    """One aim.bench of the paper's row per model.compile lever, the same adapter switched between them."""
    levers = [m for m in args.levers.split(",") if m]
    header = ("| model.compile | prefill ms, unreduced -> reduced | speedup | speedup / FLOPs | first prefill extra ms, "
              "unreduced / reduced | max logit diff vs eager | same kept tokens |\n" + "| --- " * 7 + "|")
    lines, reference = [], None
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), (out / "levers.jsonl").open("w") as jsonl:
        valid = validate(compose("config", overrides=[*common, "bench.new_tokens=0", *ROWS[LEVER_ROW]]))
        if adapter is None:
            adapter = MODELS.get(valid.model.name).from_config(**asdict(valid.model))
        adapter.compile_layers("none")
        reference = lever_check(adapter, valid)
        for mode in levers:
            start = time.perf_counter()
            try:
                adapter.compile_layers(mode)
                check = lever_check(adapter, valid)  # compiles AIM-alone's layout (not timed below)
                r = bench(valid, adapter)
            except Exception as exc:  # noqa: BLE001  (one lever failing must not lose the others' figures)
                r = {"compile": mode, "error": f"{type(exc).__name__}: {exc}"}
                print(f"lever {mode} failed: {r['error']}", flush=True)
                jsonl.write(json.dumps(r) + "\n")
                jsonl.flush()
                lines.append(f"| {mode} | failed: {r['error'][:120]} |")
                continue
            diff = float((check["logits"] - reference["logits"]).abs().max())
            same = all(torch.equal(check["kept"][i], k) for i, k in reference["kept"].items())
            r.update(label=f"{LEVER_ROW}, model.compile={mode}", max_logit_diff_vs_eager=diff, same_kept_as_eager=same,
                     lever_wall_s=time.perf_counter() - start)
            jsonl.write(json.dumps(r) + "\n")
            jsonl.flush()
            line = (f"| {mode} | {r['prefill_ms_full']:.1f} -> {r['prefill_ms']:.1f} | {r['speedup']:.2f}x | "
                    f"{r['speedup_over_flops_ratio']:.2f} | {r['warmup_ms_full']:.0f} / {r['warmup_ms']:.0f} | {diff:.3g} | "
                    f"{same} |")
            lines.append(line)
            print(line, flush=True)
        adapter.compile_layers("none")
    return [header, *lines]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/gpu_speed")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--levers", default=",".join(LEVERS), help="model.compile modes timed on the paper's row ('': none)")
    ap.add_argument("--levers-only", action="store_true", help="skip the importance check and the rows")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu_speed.py needs a CUDA GPU")
    repeats, warmup = (2, 1) if args.quick else (args.repeats, args.warmup)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name()
    print(f"{device}, torch {torch.__version__}", flush=True)

    common = [*MODEL, f"bench.repeats={repeats}", f"bench.warmup={warmup}", f"bench.new_tokens={args.new_tokens}"]
    adapter, lines = None, []
    if args.levers_only:
        table = f"{device}, the paper's row per model.compile lever (decoding off)\n\n" + "\n".join(run_levers(args, common, adapter, out, repeats, warmup)) + "\n"
        (out / "table.md").write_text(table)
        print("\n" + table)
        return

    check = importance_check()
    (out / "importance.json").write_text(json.dumps(check, indent=1))
    print("importance at 6,372 tokens:", json.dumps(check), flush=True)

    header = ("| row | prefill ms, unreduced -> reduced | speedup | FLOPs ratio | speedup / FLOPs | scoring ms (% of "
              "prefill) | merge ms | ttft ms | decode tok/s | KV cache MiB |\n" + "| --- " * 10 + "|")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), (out / "bench.jsonl").open("w") as jsonl:
        for label, overrides in ROWS.items():
            if args.quick and label not in QUICK:
                continue
            valid = validate(compose("config", overrides=[*common, *overrides]))
            if adapter is None:
                start = time.perf_counter()
                adapter = MODELS.get(valid.model.name).from_config(**asdict(valid.model))
                print(f"model built in {time.perf_counter() - start:.0f} s", flush=True)
            r = bench(valid, adapter)
            r["label"], r["overrides"] = label, overrides
            jsonl.write(json.dumps(r) + "\n")
            jsonl.flush()
            rate = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
            line = (f"| {label} | {r['prefill_ms_full']:.1f} -> {r['prefill_ms']:.1f} | {r['speedup']:.2f}x | "
                    f"{r['flops_ratio']:.2f}x | {r['speedup_over_flops_ratio']:.2f} | {r['importance_ms']:.1f} "
                    f"({r['importance_pct_of_prefill']:.1f}%) | {r['merge_ms']:.1f} | "
                    f"{r.get('ttft_ms_full', 0):.1f} -> {r.get('ttft_ms', 0):.1f} | "
                    f"{rate(r.get('decode_tokens_per_s_full'))} -> {rate(r.get('decode_tokens_per_s'))} | "
                    f"{r.get('kv_cache_bytes_full', 0) / 2**20:.0f} -> {r.get('kv_cache_bytes', 0) / 2**20:.0f} |")
            lines.append(line)
            print(line, flush=True)
    lever_lines = run_levers(args, common, adapter, out, repeats, warmup) if args.levers else []
    table = f"{device}, bf16, SDPA, random weights of LLaVA-OneVision-7B, 32 frames x 196 + 100 text tokens, " \
            f"medians of {repeats} after {warmup} warm-ups\n\n{header}\n" + "\n".join(lines) + "\n"
    if lever_lines:
        table += "\nThe paper's row per model.compile lever (decoding off):\n\n" + "\n".join(lever_lines) + "\n"
    (out / "table.md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    main()
