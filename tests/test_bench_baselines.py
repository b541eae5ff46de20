"""aim.bench times the new baselines too: DART's hidden-state scoring goes through the timed pruner,
CDPruner gets the prompt's text embeddings as `prepare` gives them, and the mergers that need the vision
tower's keys or attention (VisionZip, PruMerge+, HoliTom) get random stand-ins of the real shapes: their
cost and kept counts are real."""
import pytest
from hydra import compose, initialize_config_dir

from aim.config import validate
from aim.paths import CONF_DIR


@pytest.mark.parametrize("method,merged,per_layer", [
    (["merger=none", "pruner=dart", "pruner.k=1", "pruner.keep=0.25"], 98, [98, 24, 24, 24]),
    (["merger=cdpruner", "merger.ratio=0.25", "pruner=none"], 24, None),
    (["merger=divprune", "merger.ratio=0.25", "pruner=none"], 24, None),
    (["merger=holitom", "merger.ratio=0.25", "pruner=none"], 24, None),  # floor(0.25 x 2 frames x 49)
    (["merger=visionzip", "merger.ratio=0.25", "pruner=none"], 24, None),
])
def test_bench_times_the_new_baselines_on_the_bundled_model(method, merged, per_layer):
    from aim.bench import bench

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=[*method, "bench.frames=2", "bench.repeats=1", "bench.warmup=0",
                                                      "bench.text_tokens=20"]))
    result = bench(valid)
    assert (result["visual_tokens"], result["visual_tokens_merged"]) == (98, merged)
    if per_layer:
        assert result["visual_tokens_per_layer"] == per_layer and result["importance_ms"] > 0
    assert result["prefill_ms"] > 0 and result["flops_ratio"] > 1
