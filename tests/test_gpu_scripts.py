"""The GPU benchmark scripts' CPU dry runs (benchmarks/gpu_speed.py for #23, benchmarks/device_map_logits.py
for #24): every stage of each runs on the tiny preset without a GPU and writes well-formed files, so a lent GPU's
few minutes are not spent finding a plumbing error. The figures themselves are the GPU's to measure."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_speed():
    return script("gpu_speed")


@pytest.fixture(scope="module")
def dry_run(gpu_speed, tmp_path_factory):
    """gpu_speed.py's CPU dry run: every row, the CPU's eager lever, 1 repeat, 2 frames of the tiny preset."""
    out, threads = tmp_path_factory.mktemp("gpu_speed"), torch.get_num_threads()
    try:
        assert gpu_speed.main(["--device", "cpu", "--threads", "1", "--model-preset", "llava_onevision_tiny",
                               "--frames", "2", "--importance-tokens", "150", "--repeats", "1", "--warmup", "0",
                               "--new-tokens", "2", "--levers", "none", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow  # the dry run it reads: the tiny preset end to end, every row (~15 s on a busy CPU)
def test_the_dry_run_writes_every_file(dry_run):
    assert sorted(p.name for p in dry_run.iterdir()) == ["bars.json", "bench.jsonl", "importance.json",
                                                         "levers.jsonl", "levers.md", "table.md"]
    assert (dry_run / "levers.md").read_text().splitlines()[-1].startswith("| none | ")


@pytest.mark.slow  # the tiny preset end to end (~10 s of CPU)
def test_the_dry_run_benches_every_row_with_its_figures(gpu_speed, dry_run):
    rows = [json.loads(line) for line in (dry_run / "bench.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == list(gpu_speed.ROWS)
    for r in rows:
        assert r["device"].startswith("cpu") and r["repeats"] == 1 and r["frames"] == 2
        assert r["prefill_ms"] > 0 and r["prefill_ms_full"] > 0 and r["flops_ratio"] >= 1
        assert r["speedup_over_flops_ratio"] == pytest.approx(r["speedup"] / r["flops_ratio"])
        assert r["new_tokens"] == 2 and r["kv_cache_bytes_full"] > 0 and r["ttft_ms"] > 0
    by_key = {r["key"]: r for r in rows}
    # the rows' layer indices scaled to the tiny preset's 4 layers: AIM 14/22 of 28 -> 2/3 of 4
    assert "pruner.l1=2" in by_key["paper"]["overrides"] and "pruner.l2=3" in by_key["paper"]["overrides"]
    assert by_key["paper"]["importance_ms"] > 0 and by_key["merge"]["importance_ms"] == 0
    assert by_key["paper"]["flops_ratio"] > by_key["merge"]["flops_ratio"] > 1  # pruning after merging cuts more
    table = (dry_run / "table.md").read_text()
    assert all(label in table for label, _ in gpu_speed.ROWS.values())


@pytest.mark.slow  # the tiny preset end to end (~10 s of CPU)
def test_the_dry_run_checks_the_importance_backends_it_can_run(dry_run):
    check = json.loads((dry_run / "importance.json").read_text())
    assert check["backends"] == ["blockwise", "dense"]  # the Triton kernel is the GPU's
    assert (check["tokens"], check["heads"], check["kv_heads"], check["head_dim"]) == (150, 4, 2, 32)  # the preset's
    assert check["blockwise_close"] and check["blockwise_same_kept"]
    assert check["blockwise_max_rel_diff"] < 1e-3  # finite: zero scores do not make it NaN
    assert check["dense_ms"] > 0 and check["dense_peak_mib"] is None  # no memory figure on a CPU


@pytest.mark.slow  # the tiny preset end to end (~10 s of CPU)
def test_the_dry_run_times_the_eager_lever_against_itself(dry_run):
    (lever,) = [json.loads(line) for line in (dry_run / "levers.jsonl").read_text().splitlines()]
    assert lever["compile"] == "none" and "error" not in lever
    assert lever["max_logit_diff_vs_eager"] == 0 and lever["same_kept_as_eager"]
    assert "ttft_ms" not in lever and lever["prefill_ms"] > 0  # decoding off


@pytest.mark.slow  # the tiny preset end to end (~10 s of CPU)
def test_the_dry_run_checks_the_bars_on_its_rows(dry_run):
    bars = json.loads((dry_run / "bars.json").read_text())
    rows = {json.loads(line)["key"]: json.loads(line) for line in (dry_run / "bench.jsonl").read_text().splitlines()}
    assert [b["value"] for b in bars] == [rows["paper"]["speedup_over_flops_ratio"], rows["aim_alone"]["speedup"],
                                          rows["paper"]["importance_pct_of_prefill"]]
    assert [b["ok"] for b in bars] == [bars[0]["value"] >= 0.85, bars[1]["value"] > 1, bars[2]["value"] <= 3]
    assert "| bar (issue #23) | value | verdict |" in (dry_run / "table.md").read_text()


def test_a_failing_row_is_recorded_and_the_others_still_run(gpu_speed, tmp_path, monkeypatch):
    def bench(valid, adapter):
        if valid.pruner.name == "aim":
            raise RuntimeError("CUDA out of memory (planted)")
        return real(valid, adapter)

    real, threads = gpu_speed.bench, torch.get_num_threads()
    monkeypatch.setattr(gpu_speed, "bench", bench)
    try:
        code = gpu_speed.main(["--device", "cpu", "--threads", "1", "--model-preset", "llava_onevision_tiny",
                               "--frames", "2", "--importance-tokens", "150", "--repeats", "1", "--warmup", "0",
                               "--new-tokens", "0", "--rows", "paper,fastv", "--levers", "", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert code == 1  # the exit status says a stage failed
    paper, fastv = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert paper["key"] == "paper" and paper["error"] == "RuntimeError: CUDA out of memory (planted)"
    assert fastv["key"] == "fastv" and fastv["speedup"] > 0 and "error" not in fastv
    bars = json.loads((tmp_path / "bars.json").read_text())
    assert [b["ok"] for b in bars] == [None, None, None]  # neither the paper's row nor AIM alone measured
    table = (tmp_path / "table.md").read_text()
    assert "| paper (merge 25% + AIM 14/22) | failed: RuntimeError: CUDA out of memory (planted) |" in table
    assert "| FastV | " in table and not (tmp_path / "levers.jsonl").exists()


def test_bars_say_met_not_met_and_not_measured(gpu_speed):
    bars = gpu_speed.check_bars({"paper": {"speedup_over_flops_ratio": 0.85, "importance_pct_of_prefill": 3.5}})
    assert [b["ok"] for b in bars] == [True, None, False]  # AIM pruning alone's row was not run
    table = gpu_speed.bars_table(bars)
    assert "| met |" in table and "not measured" in table and "**not met**" in table


def test_layer_indices_scale_to_the_presets_depth_and_stay_at_28(gpu_speed):
    paper = gpu_speed.ROWS["paper"][1]
    assert gpu_speed.scaled_overrides(paper, 28) == paper
    assert gpu_speed.scaled_overrides(paper, 4)[-2:] == ["pruner.l1=2", "pruner.l2=3"]
    assert gpu_speed.scaled_overrides(["pruner=fastv", "pruner.k=2"], 80) == ["pruner=fastv", "pruner.k=6"]


def test_cuda_only_levers_and_unknown_rows_are_refused_before_anything_runs(gpu_speed):
    with pytest.raises(SystemExit):
        gpu_speed.parse_args(["--device", "cpu", "--levers", "none,cuda_graphs"])
    with pytest.raises(SystemExit):
        gpu_speed.parse_args(["--rows", "paper,nope"])
    assert gpu_speed.parse_args(["--device", "cpu"]).lever_list == ["none"]
    assert gpu_speed.parse_args([]).lever_list == list(gpu_speed.LEVERS)
    assert gpu_speed.parse_args(["--quick"]).row_keys == list(gpu_speed.QUICK)


def test_every_config_of_the_gpu_run_validates_before_device_time_is_spent(gpu_speed):
    """The configs the device call of README's "Measuring on a GPU" composes (the 7B preset, 28 layers: the
    paper's l1/l2 as they are), each row's and each lever's, validated here: a wrong override fails on a CPU."""
    args = gpu_speed.parse_args([])
    common = [*gpu_speed.model_overrides(args), "bench.repeats=10", "bench.warmup=3", "bench.new_tokens=16"]
    for key, (_, overrides) in gpu_speed.ROWS.items():
        valid = gpu_speed.composed([*common, *gpu_speed.scaled_overrides(overrides, 28)])
        assert (valid.model.pretrained, valid.model.device, valid.model.dtype) == (
            "llava-hf/llava-onevision-qwen2-7b-ov-hf", "cuda", "bfloat16")
        assert valid.bench.frames == 32 and valid.bench.text_tokens == 100 and valid.model.random_init
    paper = gpu_speed.ROWS[gpu_speed.LEVER_ROW][1]
    for mode in gpu_speed.LEVERS:
        assert gpu_speed.composed([*common, *paper, f"model.compile={mode}"]).model.compile == mode
    assert (valid.pruner.l1, valid.pruner.l2, valid.pruner.backend) == (14, 22, "dense")  # the last row's


def test_the_one_device_call_runs_every_row_once_and_parses(gpu_speed):
    """benchmarks/gpu_measure.sh (README's one device call): valid bash; its gpu_speed.py command lines parse, the
    first with the GPU's levers and the importance check, and between them they name every row exactly once."""
    import shlex
    import subprocess

    measure = BENCHMARKS / "gpu_measure.sh"
    subprocess.run(["bash", "-n", str(measure)], check=True)
    script_text = measure.read_text().replace("\\\n", " ")  # continuation lines joined
    runs = []
    for line in script_text.splitlines():
        if "gpu_speed.py --" in line and not line.lstrip().startswith("#"):
            args = shlex.split(line.split("gpu_speed.py", 1)[1].split("2>&1")[0])
            args = [a for a in args if a != '"$@"' and a != "$@"]
            runs.append(gpu_speed.parse_args(args))
    assert len(runs) == 2
    assert sorted(runs[0].row_keys + runs[1].row_keys) == sorted(gpu_speed.ROWS)
    assert runs[0].lever_list == list(gpu_speed.LEVERS) and not runs[0].skip_importance
    assert runs[1].lever_list == [] and runs[1].skip_importance


def test_timed_uses_the_host_clock_on_a_cpu(gpu_speed):
    calls = []
    out, ms, mib = gpu_speed.timed(lambda: calls.append(1) or len(calls), "cpu", repeats=3)
    assert out == 4 and len(calls) == 4 and ms >= 0 and mib is None  # one warm-up, three timed


def test_device_map_dry_run_writes_its_comparison(tmp_path):
    """#24's script on the tiny preset, its explicit map all on the CPU: not a split over devices (that needs
    two GPUs), but the same steps (random model, save, from_pretrained(device_map=...), every row's logits,
    kept tokens and decoded ids) and the same file."""
    module, threads = script("device_map_logits"), torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # on a shared CPU, 2 threads can be 10x slower than 1
        assert module.main(["--cpu-check", "--frames", "2", "--new-tokens", "2", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "device_map_logits.json").read_text())
    assert record["devices"] == ["cpu"] and record["split"] == "explicit" and record["frames"] == 2
    assert list(record["rows"]) == list(module.ROWS)
    for row in record["rows"].values():
        assert row["ok"] and row["same_kept_tokens"] and row["same_decoded_ids"] and row["relative_diff"] < 1e-5
    aim = record["rows"]["AIM: merge 25% + PageRank 14/22"]["visual_tokens_per_layer"]
    assert aim[0] > aim[-1]  # the AIM row really pruned


def test_device_map_comparison_flags_a_row_that_differs():
    module = script("device_map_logits")
    logits = torch.linspace(-1, 1, 50)
    row = {"logits": logits, "kept": {1: torch.arange(4)}, "ids": [1, 2], "visual_tokens_per_layer": [4, 4]}
    moved = {**row, "logits": logits + 0.5}
    other_kept = {**row, "kept": {1: torch.tensor([0, 1, 2, 5])}}
    other_ids = {**row, "ids": [1, 3]}
    result = module.compare({"a": row, "b": row, "c": row, "d": row},
                            {"a": row, "b": moved, "c": other_kept, "d": other_ids}, tolerance=1e-2)
    assert [result[k]["ok"] for k in "abcd"] == [True, False, False, False]
