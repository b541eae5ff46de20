"""Model parallel (`model.device_map`, `model.max_memory`, `model.gpus`; issue #24): the config fields are
checked before anything loads, a mapped model loads through accelerate's big-model path (a checkpoint, or
random weights) without being moved afterwards, and the pruning hook works on decoder layers that run in
different dtypes (and, by construction, devices): accelerate's hooks move each layer's inputs inside its
forward, after the pruning hook's pre-hooks have run, so the hook must follow the hidden states itself."""
from contextlib import contextmanager

import pytest
import torch

from aim.checks import ConfigError, to_schema
from aim.data import synthetic as syn
from aim.merging import NoMerge
from aim.models import MODELS
from aim.models.llava_onevision import LlavaOnevisionAdapter, LlavaOnevisionConfig
from aim.paths import CONF_DIR
from aim.pruning import PRUNERS
from aim.pruning import hooks as pruning_hooks
from aim.pruning.hooks import TokenPruner, merge_dropped

from tests.pruning_reference import masked_logits

TOY = dict(name="llava_onevision", pretrained="aim:toy_llava_ov", prompt_template="<s> user <video> {prompt} answer :",
           likelihood_template="<s> user <video> {prompt}", dtype="float32", device="cpu")
# every module of the bundled model's LLaVA-OneVision on its own map entry (all on the CPU here: what a
# two-GPU map looks like, with the loading and dispatching code paths of one)
SPLIT = {"model.vision_tower": "cpu", "model.multi_modal_projector": "cpu", "model.image_newline": "cpu",
         "model.language_model.embed_tokens": "cpu", "model.language_model.rotary_emb": "cpu",
         **{f"model.language_model.layers.{i}": "cpu" for i in range(4)},
         "model.language_model.norm": "cpu", "lm_head": "cpu"}


def model_schema(**fields):
    return to_schema(LlavaOnevisionConfig, {**TOY, **fields}, "model")


# --- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, message", [
    (dict(device_map="everywhere"), "model.device_map: 'everywhere' is not allowed; choose one of: null, auto, balanced"),
    (dict(device_map="auto"), "model.device_map: auto spreads the model over GPUs and needs model.device=cuda"),
    (dict(device_map={"lm_head": "disk"}, gpus=1), "model.device_map: 'lm_head': 'disk' is not allowed"),
    (dict(device_map={"model": 0, "lm_head": 1}, device="cuda"), "model.gpus: the device_map places modules on GPU 1"),
    (dict(device_map={"model": 0}, max_memory={0: "70GiB"}, device="cuda"), "model.max_memory: only with a device_map strategy"),
    (dict(max_memory={0: "70GiB"}), "model.max_memory: only with a device_map strategy"),
    (dict(device_map="auto", device="cuda", gpus=2, max_memory={0: "70GiB", 2: "70GiB"}),
     "model.max_memory: device 2 is not allowed; a GPU index in 0..1"),
    (dict(device_map="balanced", device="cuda", gpus=2, max_memory={0: "seventy"}), "model.max_memory: 0: 'seventy' is no size"),
    (dict(gpus=2), "model.gpus: 2 GPUs asked, but device_map is null"),
    (dict(gpus=0), "model.gpus: must be in [1, inf)"),
])
def test_device_map_fields_are_checked_naming_the_field(fields, message):
    with pytest.raises(ConfigError) as err:
        model_schema(**fields)
    assert message in str(err.value)


def test_valid_device_maps_pass_and_command_line_gpu_keys_become_indices():
    cfg = model_schema(device_map="balanced_low_0", device="cuda", gpus=2, max_memory={"0": "70GiB", "1": "78GB"})
    assert cfg.max_memory == {0: "70GiB", 1: "78GB"} and cfg.gpus == 2
    assert model_schema(device_map={"model": "cuda:1", "lm_head": 0}, device="cuda", gpus=2).device_map["lm_head"] == 0
    assert model_schema().device_map is None and model_schema().gpus == 1  # the default: today's one device


def test_the_72b_preset_spreads_over_the_gpus_it_asks_for():
    import yaml

    preset = yaml.safe_load((CONF_DIR / "model" / "llava_onevision_72b.yaml").read_text())
    cfg = to_schema(LlavaOnevisionConfig, preset, "model")
    assert cfg.device_map == "auto" and cfg.gpus >= 2 and cfg.device == "cuda"


def test_a_mapped_model_needs_its_gpus_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="gpus: model.device_map=auto needs 2 GPUs .* this process sees 1"):
        MODELS.get("llava_onevision").from_config(**{**TOY, "device": "cuda", "device_map": "auto", "gpus": 2})


# --- loading --------------------------------------------------------------------------------------
def sample_inputs(adapter, frames=2, item=0):
    scene, q = syn.sample_item(0, item)
    return adapter.prepare(syn.render(scene)[:frames], q.question, q.options, NoMerge())


def test_a_checkpoint_loads_through_the_device_map_with_the_same_weights_and_logits(monkeypatch):
    adapter_class = MODELS.get("llava_onevision")
    plain = adapter_class.from_config(**TOY)
    mapped = adapter_class.from_config(**TOY, device_map=SPLIT)
    moved = []
    original_to = torch.nn.Module.to
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append(a) or original_to(self, *a, **k))
    adapter_class(mapped.model, mapped.tokenizer, mapped.cfg)
    assert moved == []  # the adapter leaves a mapped model where accelerate dispatched it
    monkeypatch.undo()
    assert mapped.device == mapped.model.get_input_embeddings().weight.device
    ours, theirs = plain.model.state_dict(), mapped.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    torch.testing.assert_close(mapped.prefill_logits(sample_inputs(mapped)), plain.prefill_logits(sample_inputs(plain)),
                               atol=0, rtol=0)


def test_random_weights_are_built_on_the_map_without_a_whole_copy():
    adapter_class = MODELS.get("llava_onevision")
    torch.manual_seed(0)
    mapped = adapter_class.from_config(**{**TOY, "random_init": True}, device_map=SPLIT)
    plain = adapter_class.from_config(**{**TOY, "random_init": True})
    assert mapped.model.hf_device_map == SPLIT
    tensors = dict(mapped.model.named_parameters()) | dict(mapped.model.named_buffers())
    assert not any(t.is_meta for t in tensors.values())  # every tensor allocated
    for name, ref in (dict(plain.model.named_parameters()) | dict(plain.model.named_buffers())).items():
        t = tensors[name]
        assert t.dtype == ref.dtype and torch.isfinite(t).all(), name
        if name.endswith(("inv_freq", "position_ids")):  # computed buffers: exactly the plain build's
            assert torch.equal(t, ref), name
        elif ref.numel() > 1000:  # drawn weights: the model's own init (same spread), not zeros or garbage
            assert abs(t.float().std() - ref.float().std()) <= 0.1 * ref.float().std() + 1e-6, name
    assert mapped.model.lm_head.weight is not mapped.model.get_input_embeddings().weight  # untied stays untied
    logits = mapped.prefill_logits(sample_inputs(mapped))
    assert torch.isfinite(logits).all()


# --- the pruning hook across dtypes (and devices) -------------------------------------------------
@contextmanager
def layers_in_mixed_dtypes(adapter, boundary: int, dtype=torch.float64):
    """Decoder layers >= `boundary` converted to `dtype`, each behind an accelerate hook that casts the floating
    inputs of its forward to its dtype (as accelerate's AlignDevicesHook sends them to its device), and the
    final norm behind one casting back: a model split over two 'devices' that differ in dtype."""
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    class Cast(ModelHook):
        def __init__(self, to):
            self.to = to

        def cast(self, x):
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                return x.to(self.to)
            if isinstance(x, tuple):
                return tuple(self.cast(v) for v in x)
            return x

        def pre_forward(self, module, *args, **kwargs):
            return self.cast(args), {k: self.cast(v) for k, v in kwargs.items()}

    layers = adapter.decoder_layers
    late = [layers[i] for i in range(boundary, len(layers))]
    for layer in late:
        layer.to(dtype)
        add_hook_to_module(layer, Cast(dtype))
    add_hook_to_module(adapter.language_model.norm, Cast(torch.float32))
    try:
        yield
    finally:
        for module in (*late, adapter.language_model.norm):
            remove_hook_from_module(module)
            module.to(torch.float32)


@contextmanager
def hooks_watched(seen: list):
    """Runs every pruning hook with the default device set to `meta` (any tensor a hook creates without naming
    its device lands there and cannot meet the layer's tensors), recording for each hook call the dtype and
    device of the hidden states it gets and of every floating tensor it hands on."""
    originals = {name: getattr(TokenPruner, name) for name in ("_start_call", "_before_layer", "_score", "_score_after")}

    def wrap(name):
        def make(self, state, *a):
            inner = originals[name](self, state, *a)

            def hook(module, args, kwargs, *output):  # _score_after is a forward hook: the output follows
                hidden = args[0] if args else kwargs["hidden_states"]
                with torch.device("meta"):
                    out = inner(module, args, kwargs, *output)
                handed = [] if out is None else [out[0][0], *kwargs.get("position_embeddings", ())]
                seen.append((name, hidden.dtype, hidden.device, [(t.dtype, t.device) for t in handed]))
                return out

            return hook

        return make

    try:
        for name in originals:
            setattr(TokenPruner, name, wrap(name))
        yield
    finally:
        for name, fn in originals.items():
            setattr(TokenPruner, name, fn)


@pytest.fixture(scope="module")
def six_layers():
    from transformers import LlavaOnevisionForConditionalGeneration

    from aim.toy.tokenizer import build_tokenizer
    from aim.toy.train import toy_config

    torch.manual_seed(0)
    tok = build_tokenizer()
    model = LlavaOnevisionForConditionalGeneration(toy_config(tok, text_layers=6))
    return LlavaOnevisionAdapter(model, tok, LlavaOnevisionConfig(pretrained="(random)"))


PRUNED = [dict(name="aim", l1=2, l2=5), dict(name="fastv", k=4, keep=0.3), dict(name="pdrop", boundaries=[2, 4], lam=0.5),
          dict(name="holitom", k=4, keep=0.4), dict(name="random", l1=2, l2=5)]


def test_pruning_runs_on_layers_of_mixed_dtypes_as_the_masked_reference(six_layers):
    """Layers 0-2 in float32, 3-5 in float64: AIM, FastV, PDrop, HoliTom and random pruning at layers of both."""
    for pruner in PRUNED:
        check_mixed_dtype_pruning(six_layers, pruner)


def check_mixed_dtype_pruning(adapter, pruner):
    inputs = sample_inputs(adapter)
    fields = dict(pruner)
    p = PRUNERS.build(fields.pop("name"), **fields)
    seen = []
    with layers_in_mixed_dtypes(adapter, boundary=3):
        with hooks_watched(seen), TokenPruner(adapter.decoder_layers, p).attached(inputs.token_roles) as trace:
            pruned = adapter.prefill_logits(inputs)
        if pruner["name"] != "holitom":  # HoliTom changes hidden states: the masked reference has no merge
            ref = masked_logits(adapter, inputs.inputs_embeds, inputs.position_ids, trace.kept_indices,
                                len(inputs.token_roles))
            torch.testing.assert_close(pruned, ref.float(), atol=1e-4, rtol=1e-4)
    assert min(trace.visual_tokens_per_layer) < inputs.visual_tokens
    names = {name for name, *_ in seen}
    # scored before the attention (q/k recomputed) or after it (from the attention's own projections)
    assert names >= {"_start_call", "_before_layer"} and names & {"_score", "_score_after"}
    for name, dtype, device, handed in seen:
        # a layer's pre-hook hands on hidden states in the dtype and on the device it got them (the cast to the
        # layer's own is accelerate's, inside the forward) and cos/sin as the rotary embedding made them; nothing
        # the hooks made went to the default device
        assert handed == [] or handed == [(dtype, device), (torch.float32, device), (torch.float32, device)]
    assert {dtype for _, dtype, *_ in seen} == {torch.float32, torch.float64}  # both kinds of layer were pruned at


def test_merged_tokens_are_averaged_in_the_layer_dtype():
    torch.manual_seed(0)
    hidden = torch.randn(1, 12, 16, dtype=torch.float64)
    kept, dropped = torch.tensor([[0, 3, 7]]), torch.tensor([[1, 2, 4, 5, 6, 8, 9, 10, 11]])
    out = merge_dropped(hidden, kept, dropped)
    assert out.dtype == torch.float64
    h = hidden[0]
    unit = torch.nn.functional.normalize(h, dim=-1)
    target = kept[0][(unit[dropped[0]] @ unit[kept[0]].T).argmax(1)]
    for k in kept[0].tolist():  # the mean of a kept token and the tokens assigned to it, to float64 precision
        members = [k] + dropped[0][target == k].tolist()
        torch.testing.assert_close(out[0, k], h[members].mean(0), atol=1e-12, rtol=1e-12)


def test_the_random_pruner_draws_on_its_host_generator_wherever_the_layer_is():
    p = PRUNERS.build("random", l1=1, l2=2, seed=3)
    q = torch.zeros(1, 2, 5, 4, dtype=torch.float64)
    with torch.device("meta"):  # the default device is not where the draws are made
        scores = p.importance(q, q, None)
    assert scores.device == q.device
    assert torch.equal(scores, torch.rand(1, 5, generator=torch.Generator().manual_seed(3)))


def test_hook_bookkeeping_follows_the_hidden_states_device():
    state = pruning_hooks._State(torch.zeros(5, dtype=torch.int8))
    state.kept = torch.arange(5).expand(1, 5)
    state.roles = torch.zeros(1, 5, dtype=torch.int8)
    target = torch.empty(0, device="meta").device  # a device the bookkeeping is not on
    state.follow(target)
    assert state.kept.device == target and state.roles.device == target


# --- the SLURM launcher ---------------------------------------------------------------------------
def test_the_slurm_launcher_asks_for_the_gpus_the_model_needs():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    asked = {}
    cases = {"72b": ["model=llava_onevision_72b"], "72b on 4": ["model=llava_onevision_72b", "model.gpus=4"],
             "7b": ["model=llava_onevision_7b"], "default": []}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for case, overrides in cases.items():
            cfg = compose("config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
            # the launcher as Hydra builds it from its node (interpolations resolved against the whole config)
            asked[case] = instantiate(cfg.hydra.launcher).params["gpus_per_node"]
    assert asked == {"72b": 2, "72b on 4": 4, "7b": 1, "default": 1}


def test_a_strategy_that_offloads_to_the_cpu_is_refused_unless_asked():
    from aim.models.base import check_placement

    cfg = model_schema(device_map="auto", device="cuda", gpus=2)
    check_placement({"model": 0, "lm_head": 1}, cfg)  # all on GPUs
    with pytest.raises(ValueError, match="device_map: auto offloaded 1 modules \\(lm_head\\) to cpu: the model does not fit"):
        check_placement({"model": 0, "lm_head": "cpu"}, cfg)
    check_placement({"model": 0, "lm_head": "cpu"}, model_schema(device_map="auto", device="cuda", gpus=2,
                                                                 max_memory={0: "70GiB", "cpu": "200GiB"}))


# --- 72B on paper: the memory aim.flops states ----------------------------------------------------
def flops_memory(overrides):
    from hydra import compose, initialize_config_dir

    from aim.config import validate
    from aim.efficiency.cost import flops, memory_estimate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=list(overrides)))
    result = flops(valid)
    return result, memory_estimate(valid, result)


def test_parameters_are_counted_from_the_model_class_without_weights():
    from transformers import LlavaOnevisionForConditionalGeneration

    from aim.efficiency.cost import model_configs, parameter_count

    _, memory = flops_memory(["model=llava_onevision_tiny", "merger=none", "pruner=none"])
    hf_config, adapter = model_configs(model_schema(**{**__import__("yaml").safe_load(
        (CONF_DIR / "model" / "llava_onevision_tiny.yaml").read_text())}))
    built = LlavaOnevisionForConditionalGeneration(hf_config)
    assert memory["parameters"] == parameter_count(adapter, hf_config) == sum(p.numel() for p in built.parameters())


def test_the_72b_memory_follows_from_its_architecture_and_needs_two_80gb_gpus():
    full, memory = flops_memory(["model=llava_onevision_72b", "dataset.num_frames=32", "merger=none", "pruner=none",
                                 "flops.hardware=h100_sxm"])
    tokens = 32 * 196 + 100
    assert full["tokens_per_layer"] == [tokens] * 80
    assert memory["weights_gib"] == memory["parameters"] * 2 / 2**30  # bf16: 2 bytes per parameter
    assert 72e9 < memory["parameters"] < 74e9  # Qwen2-72B + SigLIP-so400m + projector
    # keys and values of 8 KV heads x 128 dims, bf16, in each of 80 layers, for every token
    assert memory["kv_cache_gib_full"] == 80 * tokens * 2 * 8 * 128 * 2 / 2**30
    assert memory["gpus_min"] == 2 and memory["headroom_gib"] > 10 and memory["model_gpus"] == 2
    _, on_a100_40 = flops_memory(["model=llava_onevision_72b", "dataset.num_frames=32", "merger=none", "pruner=none",
                                  "flops.hardware=a100_40gb"])
    assert on_a100_40["gpus_min"] == 4
    scaled, pruned = flops_memory(["model=llava_onevision_72b", "dataset.num_frames=32", "merger=aim", "merger.ratio=0.25",
                                   "pruner=aim", "pruner.l1=40", "pruner.l2=63", "flops.hardware=h100_sxm"])
    assert pruned["kv_cache_gib"] == sum(scaled["tokens_per_layer"]) * 2 * 8 * 128 * 2 / 2**30 < memory["kv_cache_gib_full"]


def test_timings_wait_for_every_gpu_of_a_spread_model(monkeypatch, tiny_adapter):
    from types import SimpleNamespace

    from aim.bench import elapsed_ms
    from aim.models.base import Adapter

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(str(device)))
    monkeypatch.setattr(torch.cuda, "Event", lambda **_: pytest.fail("CUDA events on one GPU miss the other's work"))
    spread = SimpleNamespace(device=torch.device("cuda:0"), cuda_devices=[torch.device("cuda:0"), torch.device("cuda:1")])
    spread.synchronize = lambda: Adapter.synchronize(spread)
    assert elapsed_ms(spread, lambda: None) >= 0
    assert waited == ["cuda:0", "cuda:1"] * 2  # before and after, on both GPUs
    assert tiny_adapter.cuda_devices == []  # a CPU model waits for nothing


def test_a_strategy_spreads_over_the_gpus_the_job_asked_for_only(monkeypatch):
    from aim.models.base import job_max_memory

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # an interactive node showing 4 GPUs
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (70 * 2**30 + i, 80 * 2**30))
    cfg = model_schema(device_map="auto", device="cuda", gpus=2)
    assert job_max_memory(cfg) == {0: 70 * 2**30, 1: 70 * 2**30 + 1}  # GPUs 2 and 3 left alone
    assert job_max_memory(model_schema(device_map="auto", device="cuda", gpus=4)) is None  # accelerate's default
    given = model_schema(device_map="auto", device="cuda", gpus=2, max_memory={0: "60GiB", 1: "70GiB"})
    assert job_max_memory(given) == {0: "60GiB", 1: "70GiB"}
