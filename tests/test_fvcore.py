"""fvcore counts of real forwards agree with the analytic model, with attention counted under SDPA too."""
import pytest
import torch

from aim.efficiency.analytic import llm_prefill_flops
from aim.efficiency.fvcore_count import count_llm_prefill
from aim.merging import NoMerge
from aim.pruning import PRUNERS
from tests.test_pruning_hook import sample_inputs
from tests.tiny_models import ATTENTION, toy_adapter


@pytest.fixture(scope="module", params=ATTENTION)
def adapter(request):
    return toy_adapter(text_layers=6, attn=request.param)


@pytest.mark.parametrize("pruner", [dict(name="none"), dict(name="aim", l1=2, l2=5), dict(name="fastv", k=3, keep=0.25),
                                    dict(name="dart", k=3, keep=0.25), dict(name="holitom", k=3, keep=0.25)])
def test_fvcore_agrees_with_the_analytic_count(adapter, pruner):
    pruner = dict(pruner)
    p = PRUNERS.build(pruner.pop("name"), **pruner)
    inputs = sample_inputs(adapter)
    counted = count_llm_prefill(adapter, inputs, p)
    per_layer = [inputs.text_tokens + v for v in (counted["visual_tokens_per_layer"] or [inputs.visual_tokens] * 6)]
    analytic = llm_prefill_flops(adapter.text_config, per_layer)
    assert counted["llm_prefill_flops"] == pytest.approx(analytic, rel=0.01)


def test_without_the_sdpa_handle_attention_would_vanish(adapter):
    """The reason for the handle: fvcore alone counts only the linear layers under SDPA."""
    from fvcore.nn import FlopCountAnalysis

    if adapter.cfg.attn_implementation != "sdpa":
        pytest.skip("eager attention is made of matmuls fvcore already counts")
    inputs = sample_inputs(adapter)
    from aim.efficiency.fvcore_count import _Prefill

    raw = FlopCountAnalysis(_Prefill(adapter), (inputs.inputs_embeds, inputs.position_ids))
    raw.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    counted = count_llm_prefill(adapter, inputs, PRUNERS.build("none"))["llm_prefill_flops"]
    assert 2 * raw.total() < counted * 0.99


def test_breakdown_counts_tower_projector_merging_and_importance(adapter):
    from aim.efficiency.fvcore_count import count_visual
    from aim.merging import MERGERS

    inputs = sample_inputs(adapter)
    frames = torch.zeros(2, 112, 112, 3, dtype=torch.uint8).numpy()
    none = count_visual(adapter, frames, NoMerge())
    aim = count_visual(adapter, frames, MERGERS.build("aim", ratio=0.25))
    # SigLIP, 2 frames x 196 patches, width 64, 3 layers: the linear layers alone are 2*392*3*(4*64^2+2*64*256)
    assert none["vision_tower_flops"] > 2 * 392 * 3 * (4 * 64**2 + 2 * 64 * 256)
    assert none["projector_flops"] == pytest.approx(2 * 392 * (64 * 128 + 128 * 128), rel=0.01)
    assert none["merge_flops"] == 0 and aim["merge_flops"] > 0
    scored = count_llm_prefill(adapter, inputs, PRUNERS.build("aim", l1=2, l2=5))
    n, heads, head_dim = inputs.inputs_embeds.shape[1], 4, 32
    assert scored["importance_flops"] >= 2 * n * n * heads * head_dim  # at least the logits of layer 1
    assert count_llm_prefill(adapter, inputs, PRUNERS.build("none"))["importance_flops"] == 0


class _BareLM:
    """The parts of a model adapter that FLOP counting uses, around a bare decoder stack."""

    def __init__(self, llm, head):
        self.language_model, self.decoder_layers = llm, llm.layers
        self.model = torch.nn.Module()
        self.model.lm_head = head

    def run_llm(self, embeds, positions):
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        return self.language_model(inputs_embeds=embeds, position_ids=positions, attention_mask=mask, use_cache=False)

    def prefill_logits(self, inputs):
        with torch.no_grad():
            return self.model.lm_head(self.run_llm(inputs.inputs_embeds, inputs.position_ids).last_hidden_state[0, -1])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["llama", "qwen2_vl"])
@pytest.mark.parametrize("pruned", [False, True])
def test_fvcore_agrees_with_the_analytic_count_on_llama_and_qwen2_vl(kind, attn, pruned):
    from aim.models import PreparedInputs
    from tests.test_pruning_models import layout, tiny_llm

    llm, head = tiny_llm(kind, attn)
    roles, positions = layout(kind)
    inputs = PreparedInputs(torch.randn(1, len(roles), 64), positions, roles)
    pruner = PRUNERS.build("aim", l1=2, l2=5) if pruned else PRUNERS.build("none")
    counted = count_llm_prefill(_BareLM(llm, head), inputs, pruner)
    visual = counted["visual_tokens_per_layer"] or [inputs.visual_tokens] * 6
    analytic = llm_prefill_flops(llm.config, [inputs.text_tokens + v for v in visual])
    assert counted["llm_prefill_flops"] == pytest.approx(analytic, rel=0.01)
