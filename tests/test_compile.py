"""`model.compile`: the decoder layers' bodies run compiled, static shapes per input layout, while the pruning
hooks stay eager: the same kept tokens and logits as the eager model, and a second prefill of a layout compiles
nothing (issue #23, the launch-bound tail)."""
import pytest
import torch
from torch._dynamo.testing import CompileCounter

from aim.data import synthetic as syn
from aim.merging import NoMerge
from aim.pruning import PRUNERS
from aim.pruning.hooks import TokenPruner


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def toy_adapter(layers):
    from transformers import LlavaOnevisionForConditionalGeneration

    from aim.models.llava_onevision import LlavaOnevisionAdapter, LlavaOnevisionConfig
    from aim.toy.tokenizer import build_tokenizer
    from aim.toy.train import toy_config

    torch.manual_seed(0)
    tok = build_tokenizer()
    model = LlavaOnevisionForConditionalGeneration(toy_config(tok, text_layers=layers))
    return LlavaOnevisionAdapter(model, tok, LlavaOnevisionConfig(pretrained="(random)"))


def sample_inputs(adapter, item=0, frames=2):
    scene, q = syn.sample_item(item, 1)
    return adapter.prepare(syn.render(scene)[:frames], q.question, q.options, NoMerge())


def pruned(adapter, pruner, inputs):
    with TokenPruner(adapter.decoder_layers, pruner).attached(inputs.token_roles) as trace:
        logits = adapter.prefill_logits(inputs)
    return logits, {i: k.clone() for i, k in trace.kept_indices.items()}, list(trace.visual_tokens_per_layer)


def test_compiled_layers_keep_the_same_tokens_and_a_layout_compiles_once():
    adapter = toy_adapter(layers=4)
    inputs = sample_inputs(adapter)
    # one layout (the schedule l1=1, l2=3), three choices of the kept tokens: AIM's, and two random draws
    pruners = {"aim": lambda: PRUNERS.build("aim", l1=1, l2=3),
               "random 1": lambda: PRUNERS.build("random", l1=1, l2=3, seed=1),
               "random 2": lambda: PRUNERS.build("random", l1=1, l2=3, seed=2)}
    eager = {name: pruned(adapter, build(), inputs) for name, build in pruners.items()}
    assert not torch.equal(eager["random 1"][1][1], eager["random 2"][1][1])  # the draws keep other tokens
    counter = CompileCounter()
    adapter.compile_layers("default", backend=counter)
    for name, build in pruners.items():
        logits, kept, per_layer = eager[name]
        c_logits, c_kept, c_per_layer = pruned(adapter, build(), inputs)
        assert c_per_layer == per_layer and c_kept.keys() == kept.keys()
        assert all(torch.equal(c_kept[i], kept[i]) for i in kept)  # each prefill's own hooks chose, eagerly
        torch.testing.assert_close(c_logits, logits, rtol=1e-5, atol=1e-5)
        if name == "aim":
            compiled = counter.frame_count
    assert compiled > 0 and counter.frame_count == compiled  # the later prefills of the layout compiled nothing


@pytest.mark.slow
def test_each_layout_compiles_once_across_pruners():
    adapter = toy_adapter(layers=4)
    runs = (PRUNERS.build("aim", l1=1, l2=3), PRUNERS.build("fastv", k=2, keep=0.5))  # other shapes after layer 1
    inputs = sample_inputs(adapter)
    eager = [pruned(adapter, p, inputs) for p in runs]
    counter = CompileCounter()
    adapter.compile_layers("default", backend=counter)
    for round_ in range(2):
        for p, (logits, kept, _) in zip(runs, eager):
            c_logits, c_kept, _ = pruned(adapter, p, inputs)
            assert all(torch.equal(c_kept[i], kept[i]) for i in kept)
            torch.testing.assert_close(c_logits, logits, rtol=1e-5, atol=1e-5)
        if round_ == 0:
            compiled = counter.frame_count
    assert counter.frame_count == compiled


def test_attention_with_a_kv_cache_runs_eagerly_and_decoding_gives_the_same_tokens():
    adapter = toy_adapter(layers=4)
    aim = PRUNERS.build("aim", l1=1, l2=3)
    inputs = sample_inputs(adapter)
    with TokenPruner(adapter.decoder_layers, aim).attached(inputs.token_roles):
        expected = adapter.generate_ids(inputs, 4, stop_at_eos=False)
    children = [name for layer in adapter.decoder_layers for name, _ in layer.named_children()]
    compiled_calls = []
    for name, wrapper in zip(children, adapter.compile_layers("default", backend=CompileCounter())):
        wrapper.compiled = lambda *a, _fn=wrapper.compiled, _name=name, **k: (compiled_calls.append(_name), _fn(*a, **k))[1]
    with TokenPruner(adapter.decoder_layers, aim).attached(inputs.token_roles):
        assert adapter.generate_ids(inputs, 4, stop_at_eos=False) == expected
    # the attention (its cache grows every step) ran eagerly; the cache-free norms and MLPs compiled
    assert "self_attn" not in compiled_calls and "mlp" in compiled_calls


def test_the_cuda_modes_are_refused_on_a_cpu_naming_the_field():
    adapter = toy_adapter(layers=2)
    for mode in ("reduce-overhead", "cuda_graphs"):
        with pytest.raises(ValueError, match=rf"compile: '{mode}' replays CUDA graphs and needs a CUDA device"):
            adapter.compile_layers(mode)
    with pytest.raises(ValueError, match="compile: 'max' is not allowed; choose one of: none, default"):
        adapter.compile_layers("max")


@pytest.mark.slow
def test_inductor_compiled_prefill_matches_eager_under_aim_pruning():
    """The real compiler (inductor generates C++ on a CPU): logits within float tolerance, the same tokens."""
    adapter = toy_adapter(layers=4)
    aim = PRUNERS.build("aim", l1=1, l2=3)
    inputs = sample_inputs(adapter)
    logits, kept, _ = pruned(adapter, aim, inputs)
    adapter.compile_layers("default")
    for _ in range(2):
        c_logits, c_kept, _ = pruned(adapter, aim, inputs)
        assert all(torch.equal(c_kept[i], kept[i]) for i in kept)
        torch.testing.assert_close(c_logits, logits, rtol=1e-4, atol=1e-4)


def test_switching_back_to_none_restores_every_layers_own_forward():
    adapter = toy_adapter(layers=2)
    children = [child for layer in adapter.decoder_layers for child in layer.children()]
    assert len(adapter.compile_layers("default", backend=CompileCounter())) == len(children)
    assert all("forward" in vars(child) for child in children) and adapter.compile_mode == "default"
    assert adapter.compile_layers("none") == [] and adapter.compile_mode == "none"
    assert not any("forward" in vars(child) for child in children)  # the classes' own forward again


@pytest.mark.slow  # end to end: aim.bench on the bundled model, its layers traced by dynamo
def test_bench_times_the_compiling_first_prefill_apart_from_the_steady_ones():
    from dataclasses import asdict

    from hydra import compose, initialize_config_dir

    from aim.bench import bench
    from aim.config import validate
    from aim.models import MODELS
    from aim.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=["merger=none", "pruner=aim_toy", "bench.frames=2", "bench.repeats=2",
                                                      "bench.warmup=1", "bench.text_tokens=20", "bench.new_tokens=0"]))
    adapter = MODELS.get(valid.model.name).from_config(**asdict(valid.model))
    counter = CompileCounter()
    adapter.compile_layers("default", backend=counter)
    result = bench(valid, adapter)
    assert result["compile"] == "default" and counter.frame_count > 0
    # dynamo traced every graph in the first prefill of each kind: the steady medians hold none of it
    assert result["warmup_ms"] > 0 and result["warmup_ms_full"] > 0
    assert result["first_prefill_ms"] == pytest.approx(result["prefill_ms"] + result["warmup_ms"])
