"""The GPU figures of issue #23 in one process: is the Triton PageRank right and fast at the paper's size, and
what does each reduction buy in wall clock, unreduced vs reduced.

    python benchmarks/gpu_speed.py [--out DIR] [--repeats 10] [--warmup 3] [--new-tokens 16] [--quick] [--rows KEYS]
    python benchmarks/gpu_speed.py --device cpu --model-preset llava_onevision_tiny --frames 8 --threads 1 \
        --importance-tokens 492 --repeats 1 --warmup 1 --new-tokens 2 --levers none     # the CPU dry run

On one CUDA GPU (H100 or H200), with random weights of the LLaVA-OneVision-7B architecture (bf16, SDPA,
`model=llava_onevision_7b model.random_init=true`), the paper's 32 frames x 196 tokens + 100 text tokens:
1. the importance check: random bf16 queries [1, 28, 6,372, 128] and keys of 4 GQA heads (the 7B's layout,
   no merging), scored by the Triton kernel, the blockwise PyTorch code and the dense code: the largest
   absolute and relative difference from the dense scores, whether within the tests' tolerance (1e-5
   relative, 1e-7 absolute), whether the same 1,568 tokens are kept, milliseconds and peak memory of each;
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
unreduced, scoring <= 3% of the pruned prefill (the paper's row): each checked, `bars.json` and the table's
last section. Writes `importance.json`, `bench.jsonl` (one aim.bench result per row), `levers.jsonl` (one per
lever) and `levers.md` (each lever's line written as it ends: a call stopped at its limit keeps the levers done),
`bars.json` and `table.md` under --out, and prints the tables. `--quick`: 2 repeats, 1 warm-up, the paper's row
and AIM pruning alone only (a smoke test), then the levers. `--rows` picks rows by key (ROWS). `--levers ""`
skips the levers; `--levers-only` runs only them (inductor's compilation of a layout's ~11 shapes takes minutes);
`--skip-importance` skips the importance check. benchmarks/gpu_measure.sh runs it all in one device call.

`--device cpu` is the dry run of the same code without a GPU (tests/test_gpu_scripts.py): another preset
(`--model-preset llava_onevision_tiny`), fewer frames, a smaller importance check (heads, KV heads and head
width are the preset's; the Triton kernel is not run on a CPU), only the CPU levers (`none`, `default`).
Timing is by CUDA events on a GPU, the host clock on a CPU. A preset with other than 28 LLM layers gets the
rows' layer indices (l1, l2, k) scaled to its depth (14/22 of 28 -> 2/3 of 4).
"""
from __future__ import annotations

import argparse
import json
import statistics
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

PAPER_LAYERS = 28  # the rows' layer indices are the 7B's; another depth gets them scaled (scaled_overrides)
ROWS = {  # key -> (label, the row's overrides); the dense-scoring comparisons last (the least needed if time runs out)
    "paper": ("paper (merge 25% + AIM 14/22)",
              ["merger=aim", "merger.ratio=0.25", "pruner=aim", "pruner.l1=14", "pruner.l2=22"]),
    "aim_alone": ("AIM pruning alone", ["merger=none", "pruner=aim", "pruner.l1=14", "pruner.l2=22"]),
    "merge": ("merging alone (25%)", ["merger=aim", "merger.ratio=0.25", "pruner=none"]),
    "fastv": ("FastV", ["merger=none", "pruner=fastv"]),
    "pdrop": ("PDrop", ["merger=none", "pruner=pdrop"]),
    "random": ("random pruning 14/22 after merging (control)", ["merger=aim", "merger.ratio=0.25", "pruner=random",
                                                                "pruner.l1=14", "pruner.l2=22"]),
    "paper_dense": ("paper, dense scoring", ["merger=aim", "merger.ratio=0.25", "pruner=aim", "pruner.l1=14",
                                             "pruner.l2=22", "pruner.backend=dense"]),
    "aim_alone_dense": ("AIM pruning alone, dense scoring", ["merger=none", "pruner=aim", "pruner.l1=14",
                                                             "pruner.l2=22", "pruner.backend=dense"]),
}
QUICK = ("paper", "aim_alone")
LEVERS = ("none", "cuda_graphs", "default", "reduce-overhead")  # model.compile modes, eager first
CPU_LEVERS = ("none", "default")  # the other two replay CUDA graphs
LEVER_ROW = "paper"
SCORE_RTOL, SCORE_ATOL = 1e-5, 1e-7  # the scores' agreement, as tests/test_pagerank_blockwise.py asks it


def scaled_overrides(overrides: list[str], num_layers: int) -> list[str]:
    """The row's layer indices (pruner.l1, l2, k: the 7B's 28 layers) scaled to a preset of `num_layers`
    layers, so the same rows run on the tiny preset of the CPU dry run; unchanged at 28 layers."""
    if num_layers == PAPER_LAYERS:
        return list(overrides)
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key in ("pruner.l1", "pruner.l2", "pruner.k"):
            o = f"{key}={max(1, min(num_layers - 1, round(int(value) * num_layers / PAPER_LAYERS)))}"
        out.append(o)
    return out


def model_overrides(args) -> list[str]:
    return [f"model={args.model_preset}", "model.random_init=true", f"model.device={args.device}",
            f"bench.frames={args.frames}", f"bench.text_tokens={args.text_tokens}"]


def timed(fn, device: str, repeats=5):
    """fn's last output, its median ms and its peak memory above what was allocated before (MiB): on a GPU by
    CUDA events between synchronizations and the allocator's peak; on a CPU by the host clock, no memory
    figure (None)."""
    fn()  # warm-up (a Triton kernel compiles here)
    if device != "cuda":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - start) * 1e3)
        return out, statistics.median(times), None
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
    return out, statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2**20


def importance_check(device="cuda", n=6372, heads=28, kv_heads=4, d=128, keep=1568, repeats=5) -> dict:
    """The PageRank backends on one layer's random bf16 queries and keys ([1, heads, n, d], [1, kv_heads, n, d]):
    each one's ms and peak memory, and the Triton kernel's and the blockwise code's largest absolute and relative
    difference from the dense reference, whether they are within the tests' tolerance of it (1e-5 relative, 1e-7
    absolute: tests/test_pagerank_blockwise.py) and keep the same `keep` tokens. The Triton kernel runs on CUDA
    only."""
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, heads, n, d, device=device, generator=g).to(torch.bfloat16)
    k = torch.randn(1, kv_heads, n, d, device=device, generator=g).to(torch.bfloat16)
    runs = {
        "triton": lambda: pagerank_from_qk(q, k, backend="triton"),
        "blockwise": lambda: pagerank_blockwise(q, k),
        "dense": lambda: pagerank_dense(q, k),
    }
    if device != "cuda":
        del runs["triton"]  # Triton's CPU interpreter is what tests/test_pagerank_blockwise.py checks it under
    out = {"device": device, "tokens": n, "heads": heads, "kv_heads": kv_heads, "head_dim": d, "keep": keep,
           "backends": list(runs)}
    scores = {}
    for name, fn in runs.items():
        scores[name], ms, mib = timed(fn, device, repeats)
        out[f"{name}_ms"], out[f"{name}_peak_mib"] = ms, mib
    ref = scores["dense"]
    kept = set(ref.topk(keep, dim=1).indices[0].tolist())
    for name in runs:
        if name != "dense":
            diff = (scores[name] - ref).abs()
            out[f"{name}_max_abs_diff"] = float(diff.max())
            # relative to the score, floored at 1e-7 (tau = 0.1 leaves some tokens exactly 0: 0/0 would be NaN)
            out[f"{name}_max_rel_diff"] = float((diff / ref.abs().clamp_min(SCORE_ATOL)).max())
            out[f"{name}_close"] = bool(torch.allclose(scores[name], ref, rtol=SCORE_RTOL, atol=SCORE_ATOL))
            out[f"{name}_same_kept"] = set(scores[name].topk(keep, dim=1).indices[0].tolist()) == kept
    return out


def check_bars(rows: dict) -> list[dict]:
    """Issue #23's bars from the rows' aim.bench results (by row key): the paper's row at >= 0.85 of its FLOPs
    ratio, AIM pruning alone faster than unreduced, the paper's scoring <= 3% of its pruned prefill. A bar
    whose row was not run has `ok` None."""
    def bar(name, key, field, threshold, passes):
        value = rows[key][field] if key in rows else None
        return {"bar": name, "row": ROWS[key][0], "field": field, "value": value, "threshold": threshold,
                "ok": None if value is None else bool(passes(value, threshold))}

    return [
        bar("paper's row: speedup / FLOPs ratio >= 0.85", "paper", "speedup_over_flops_ratio", 0.85, lambda v, t: v >= t),
        bar("AIM pruning alone faster than unreduced", "aim_alone", "speedup", 1.0, lambda v, t: v > t),
        bar("paper's row: scoring <= 3% of the pruned prefill", "paper", "importance_pct_of_prefill", 3.0,
            lambda v, t: v <= t),
    ]


def bars_table(bars: list[dict]) -> str:
    verdict = {True: "met", False: "**not met**", None: "not measured"}
    lines = ["| bar (issue #23) | value | verdict |", "| --- | --- | --- |"]
    for b in bars:
        value = "-" if b["value"] is None else f"{b['value']:.3g}"
        lines.append(f"| {b['bar']} | {value} | {verdict[b['ok']]} |")
    return "\n".join(lines)


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


def composed(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


def run_levers(levers, common, adapter, out, num_layers) -> list[str]:
    """One aim.bench of the paper's row per model.compile lever, the same adapter switched between them."""
    header = ("| model.compile | prefill ms, unreduced -> reduced | speedup | speedup / FLOPs | first prefill extra ms, "
              "unreduced / reduced | max logit diff vs eager | same kept tokens |\n" + "| --- " * 7 + "|")
    lines = []
    valid = composed([*common, "bench.new_tokens=0", *scaled_overrides(ROWS[LEVER_ROW][1], num_layers)])
    if adapter is None:
        adapter = build(valid)
    with (out / "levers.jsonl").open("w") as jsonl:
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
                (out / "levers.md").write_text("\n".join([header, *lines]) + "\n")
                continue
            diff = float((check["logits"] - reference["logits"]).abs().max())
            same = all(torch.equal(check["kept"][i], k) for i, k in reference["kept"].items())
            r.update(label=f"{ROWS[LEVER_ROW][0]}, model.compile={mode}", max_logit_diff_vs_eager=diff,
                     same_kept_as_eager=same, lever_wall_s=time.perf_counter() - start)
            jsonl.write(json.dumps(r) + "\n")
            jsonl.flush()
            line = (f"| {mode} | {r['prefill_ms_full']:.1f} -> {r['prefill_ms']:.1f} | {r['speedup']:.2f}x | "
                    f"{r['speedup_over_flops_ratio']:.2f} | {r['warmup_ms_full']:.0f} / {r['warmup_ms']:.0f} | {diff:.3g} | "
                    f"{same} |")
            lines.append(line)
            print(line, flush=True)
            # rewritten after each lever: a call stopped at its time limit keeps the levers it finished
            (out / "levers.md").write_text("\n".join([header, *lines]) + "\n")
        adapter.compile_layers("none")
    return [header, *lines]


def build(valid):
    start = time.perf_counter()
    adapter = MODELS.get(valid.model.name).from_config(**asdict(valid.model))
    print(f"model built in {time.perf_counter() - start:.0f} s", flush=True)
    return adapter


def row_line(label: str, r: dict) -> str:
    rate = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    return (f"| {label} | {r['prefill_ms_full']:.1f} -> {r['prefill_ms']:.1f} | {r['speedup']:.2f}x | "
            f"{r['flops_ratio']:.2f}x | {r['speedup_over_flops_ratio']:.2f} | {r['importance_ms']:.1f} "
            f"({r['importance_pct_of_prefill']:.1f}%) | {r['merge_ms']:.1f} | "
            f"{r.get('ttft_ms_full', 0):.1f} -> {r.get('ttft_ms', 0):.1f} | "
            f"{rate(r.get('decode_tokens_per_s_full'))} -> {rate(r.get('decode_tokens_per_s'))} | "
            f"{r.get('kv_cache_bytes_full', 0) / 2**20:.0f} -> {r.get('kv_cache_bytes', 0) / 2**20:.0f} |")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/gpu_speed")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: the dry run without a GPU")
    ap.add_argument("--threads", type=int, default=None, help="cpu: torch's intra-op threads (default: torch's own)")
    ap.add_argument("--model-preset", default="llava_onevision_7b", help="a conf/model preset, built with random weights")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--text-tokens", type=int, default=100)
    ap.add_argument("--importance-tokens", type=int, default=6372, help="the importance check's sequence length")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", default=None, help=f"comma-separated row keys (default all: {','.join(ROWS)})")
    ap.add_argument("--levers", default=None, help="model.compile modes timed on the paper's row ('': none; default "
                    f"{','.join(LEVERS)} on cuda, {CPU_LEVERS[0]} on cpu)")
    ap.add_argument("--levers-only", action="store_true", help="skip the importance check and the rows")
    ap.add_argument("--skip-importance", action="store_true", help="skip the importance check (a second run's rows)")
    args = ap.parse_args(argv)
    if args.levers is None:
        args.levers = ",".join(LEVERS) if args.device == "cuda" else CPU_LEVERS[0]
    args.lever_list = [m for m in args.levers.split(",") if m]
    allowed = LEVERS if args.device == "cuda" else CPU_LEVERS
    wrong = [m for m in args.lever_list if m not in allowed]
    if wrong:
        ap.error(f"--levers: {wrong} not among {', '.join(allowed)} on {args.device}")
    keys = list(QUICK) if args.quick and args.rows is None else (list(ROWS) if args.rows is None else
                                                                  [k for k in args.rows.split(",") if k])
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        ap.error(f"--rows: {unknown} not among {', '.join(ROWS)}")
    args.row_keys = keys
    if args.levers_only and not args.lever_list:
        ap.error("--levers-only with no levers runs nothing")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu_speed.py needs a CUDA GPU (--device cpu: the dry run)")
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)  # on a shared CPU, 2 threads can be 10x slower than 1
    repeats, warmup = (2, 1) if args.quick else (args.repeats, args.warmup)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    import aim
    import transformers

    print(f"{device}, torch {torch.__version__}, transformers {transformers.__version__}, aim from {aim.__file__}",
          flush=True)

    common = [*model_overrides(args), f"bench.repeats={repeats}", f"bench.warmup={warmup}",
              f"bench.new_tokens={args.new_tokens}"]
    base = composed(common)
    text = base.model.architecture["text_config"]
    num_layers = text["num_hidden_layers"]
    what = (f"{device}, {base.model.dtype}, {base.model.attn_implementation}, random weights of {args.model_preset}, "
            f"{args.frames} frames + {args.text_tokens} text tokens, medians of {repeats} after {warmup} warm-ups")
    adapter, lines = None, []
    if args.levers_only:
        lever_lines = run_levers(args.lever_list, common, adapter, out, num_layers)
        table = f"{what}: the paper's row per model.compile lever (decoding off)\n\n" + "\n".join(lever_lines) + "\n"
        (out / "table.md").write_text(table)
        print("\n" + table)
        return 1 if any("| failed:" in line for line in lever_lines) else 0

    heads, kv_heads = text["num_attention_heads"], text.get("num_key_value_heads") or text["num_attention_heads"]
    n, failed = args.importance_tokens, []
    if not args.skip_importance:
        try:  # a stage that fails must not lose the others' figures: recorded, and the exit status says so
            check = importance_check(args.device, n, heads, kv_heads, text["hidden_size"] // heads,
                                     keep=(n - args.text_tokens) // 4)
        except Exception as exc:  # noqa: BLE001
            check = {"tokens": n, "error": f"{type(exc).__name__}: {exc}"}
            failed.append("importance check")
        (out / "importance.json").write_text(json.dumps(check, indent=1))
        print(f"importance at {n} tokens:", json.dumps(check), flush=True)

    header = ("| row | prefill ms, unreduced -> reduced | speedup | FLOPs ratio | speedup / FLOPs | scoring ms (% of "
              "prefill) | merge ms | ttft ms | decode tok/s | KV cache MiB |\n" + "| --- " * 10 + "|")
    results = {}

    def write_table(lever_lines=()):
        """table.md and bars.json from the rows so far (rewritten after each: a call stopped at its limit keeps them)."""
        bars = check_bars(results)
        (out / "bars.json").write_text(json.dumps(bars, indent=1))
        table = f"{what}\n\n{header}\n" + "\n".join(lines) + "\n"
        if lever_lines:
            table += "\nThe paper's row per model.compile lever (decoding off):\n\n" + "\n".join(lever_lines) + "\n"
        (out / "table.md").write_text(table + "\n" + bars_table(bars) + "\n")
        return table + "\n" + bars_table(bars) + "\n"

    with (out / "bench.jsonl").open("w") as jsonl:
        for key in args.row_keys:
            label, overrides = ROWS[key][0], scaled_overrides(ROWS[key][1], num_layers)
            try:
                valid = composed([*common, *overrides])
                if adapter is None:
                    adapter = build(valid)
                r = bench(valid, adapter)
            except Exception as exc:  # noqa: BLE001
                r = {"error": f"{type(exc).__name__}: {exc}"}
                failed.append(key)
                lines.append(f"| {label} | failed: {r['error'][:160]} |")
                if args.device == "cuda":
                    torch.cuda.empty_cache()
            else:
                results[key] = r
                lines.append(row_line(label, r))
            r["key"], r["label"], r["overrides"] = key, label, overrides
            jsonl.write(json.dumps(r) + "\n")
            jsonl.flush()
            print(lines[-1], flush=True)
            write_table()
    lever_lines = run_levers(args.lever_list, common, adapter, out, num_layers) if args.lever_list else []
    failed += [line.split(" | ")[0][2:] for line in lever_lines[1:] if "| failed:" in line]
    print("\n" + write_table(lever_lines))
    if failed:
        print(f"gpu_speed: failed: {', '.join(failed)} (their errors are in the files above)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
