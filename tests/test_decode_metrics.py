"""What decoding costs, unreduced vs reduced: generated records and aim.bench carry the time to first token,
the decode rate and the KV-cache bytes, and a pruned prefill's cache is smaller by exactly the tokens
each pruned layer dropped."""
import pytest
from hydra import compose, initialize_config_dir

from aim.config import validate
from aim.data import VideoMCQDataset
from aim.eval import evaluate
from aim.merging import NoMerge
from aim.paths import CONF_DIR
from aim.pruning import PRUNERS, NoPrune
from aim.pruning.hooks import TokenPruner
from aim.tracking.records import SampleRecords
from aim.tracking.results import summarize


def kv_bytes_per_token(adapter) -> int:
    """One token's keys and values in one layer: 2 x KV heads x head dim x bytes per element."""
    cfg = adapter.text_config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    dtype = next(adapter.model.parameters()).dtype
    return 2 * cfg.num_key_value_heads * head_dim * dtype.itemsize


def test_decoding_reports_its_costs_and_a_pruned_prefill_caches_fewer_tokens(tiny_adapter, small_benchmark):
    sample = next(iter(VideoMCQDataset(small_benchmark, num_frames=2, limit=1)))
    frames, question = sample.load()
    inputs = tiny_adapter.prepare(frames, question, sample.options, NoMerge())
    n, per_token = len(inputs.token_roles), kv_bytes_per_token(tiny_adapter)
    costs = {}
    for name, pruner in (("none", NoPrune()), ("aim", PRUNERS.build("aim", l1=2, l2=4))):
        stats = {}
        with TokenPruner(tiny_adapter.decoder_layers, pruner).attached(inputs.token_roles) as trace:
            ids = tiny_adapter.generate_ids(inputs, 3, stats, stop_at_eos=False)
        assert len(ids) == 3 and stats["decode_tokens"] == 2
        assert stats["ttft_ms"] > 0 and stats["decode_tokens_per_s"] > 0
        costs[name] = stats["kv_cache_bytes"], trace.visual_tokens_per_layer
    assert costs["none"][0] == 4 * n * per_token  # every layer caches every prompt token
    visual = inputs.visual_tokens
    assert costs["aim"][1] == [visual, visual, visual // 2, 0]  # layer 2 keeps half the visual tokens, layer 3 none
    dropped = sum(visual - v for v in costs["aim"][1])
    assert costs["aim"][0] == costs["none"][0] - dropped * per_token


def test_generated_records_carry_decoding_costs(tiny_adapter, small_benchmark, tmp_path):
    records = SampleRecords(tmp_path / "s.jsonl")
    evaluate(tiny_adapter, VideoMCQDataset(small_benchmark, num_frames=2, limit=1), NoMerge(),
             PRUNERS.build("aim", l1=2, l2=4), records, mode="generate", max_new_tokens=3, progress=False)
    r = records.records[0]
    assert r["ttft_ms"] > 0 and 0 <= r["decode_tokens"] <= 2  # greedy decoding stops at EOS
    assert (r["decode_tokens_per_s"] > 0) if r["decode_tokens"] else r["decode_tokens_per_s"] is None
    # the cache the pruned prefill leaves: each layer's own tokens
    assert r["kv_cache_bytes"] == sum(r["tokens_per_layer"]) * kv_bytes_per_token(tiny_adapter)
    summary = summarize(records.records, {"merger": "none", "pruner": "aim"}, {})
    assert (summary["ttft_ms"], summary["kv_cache_bytes"]) == (r["ttft_ms"], r["kv_cache_bytes"])
    scored = [{k: v for k, v in r.items() if k not in ("ttft_ms", "decode_tokens_per_s", "kv_cache_bytes")}]
    assert summarize(scored, {"merger": "none", "pruner": "aim"}, {})["ttft_ms"] is None  # letter mode: none


@pytest.mark.slow  # end to end: aim.bench's timed prefills and decodes
def test_bench_reports_decoding_unreduced_vs_reduced():
    from aim.bench import bench

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=["merger=none", "pruner=aim_toy", "bench.frames=2", "bench.repeats=1",
                                                      "bench.warmup=0", "bench.text_tokens=20", "bench.new_tokens=4"]))
    result = bench(valid)
    assert result["new_tokens"] == 4
    for suffix in ("", "_full"):
        assert result[f"ttft_ms{suffix}"] > 0 and result[f"decode_tokens_per_s{suffix}"] > 0
    text, per_layer = result["text_tokens"], result["visual_tokens_per_layer"]
    assert per_layer == [98, 98, 49, 0]  # aim_toy: half the visual tokens at layer 2, none at layer 3
    per_token, rest = divmod(result["kv_cache_bytes_full"], len(per_layer) * (result["visual_tokens"] + text))
    assert rest == 0 and per_token > 0  # every layer holds every token
    assert result["kv_cache_bytes"] == sum(v + text for v in per_layer) * per_token
    assert result["kv_cache_ratio"] > 1
    assert 0 < result["overhead_pct"] < 100 and result["speedup_with_overhead"] > 0


def test_bench_new_tokens_is_validated():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        assert validate(compose("config", overrides=["bench.new_tokens=0"])).bench.new_tokens == 0  # no decoding
        with pytest.raises(ValueError, match="new_tokens"):
            validate(compose("config", overrides=["bench.new_tokens=-1"]))
