"""DyCoke's second stage, dynamic KV-cache pruning while decoding (aim.pruning.decoding): each decoding step's
attention in layer l - 1 picks the visual KV entries layers >= l attend to; the prefill is unchanged; the
left-out entries have no effect; decoding equals a masked recomputation; p = 0 is plain decoding."""
import functools

import pytest
import torch

from aim.checks import ConfigError
from aim.data import synthetic as syn
from aim.merging import NoMerge
from aim.models import VISUAL
from aim.pruning import PRUNERS, removes_tokens
from aim.pruning.decoding import dycoke_keep, step_attention
from aim.pruning.hooks import TokenPruner

from tests.pruning_reference import decode_pruned_masks, logits_under_masks
from tests.tiny_models import toy_adapter

LAYERS, LAYER = 4, 2  # the pruning layer: layers 2, 3 attend to the kept entries, chosen by layer 1's attention


@functools.cache
def build(attn_implementation):
    ad = toy_adapter(text_layers=LAYERS, attn=attn_implementation)
    ad.model.generation_config.eos_token_id = None  # random weights: decode every step asked for
    ad.tokenizer.eos_token_id = None
    return ad


@pytest.fixture(scope="module")
def adapter():
    return build("sdpa")


@pytest.fixture(scope="module")
def eager():
    """The eager attention: it hands the model's own attention weights to a hook."""
    return build("eager")


def sample_inputs(adapter):
    scene, q = syn.sample_item(0, 1)
    return adapter.prepare(syn.render(scene)[:2], q.question, q.options, NoMerge())


def decode(adapter, inputs, pruner, steps=5):
    """Greedy decoding (`generate_ids`) with the pruner attached: (ids, logits of every step [steps, V], trace)."""
    logits = []
    handle = adapter.model.lm_head.register_forward_hook(lambda _m, _a, out: logits.append(out.detach().clone()))
    try:
        if pruner is None:
            ids, trace = adapter.generate_ids(inputs, steps), None
        else:
            with TokenPruner(adapter.decoder_layers, pruner).attached(inputs.token_roles) as trace:
                ids = adapter.generate_ids(inputs, steps)
    finally:
        handle.remove()
    return ids, torch.stack([out.reshape(-1, out.shape[-1])[-1] for out in logits]), trace


def test_the_step_attention_averaged_over_heads_decides_by_hand():
    # one query, 2 heads, 4 keys; head 0 looks hard at key 1, head 1 mildly at keys 2 and 3
    q = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # [1, 2, 1, 2]
    keys = torch.tensor([[[[0.0, 0.0], [4.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
                          [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.5]]]])  # [1, 2, 4, 2]
    a = step_attention(q, keys, scaling=1.0)[0]
    e4, e1, e15 = torch.exp(torch.tensor([4.0, 1.0, 1.5]))
    head0 = torch.tensor([1, e4, 1, 1]) / (3 + e4)
    head1 = torch.tensor([1, 1, e1, e15]) / (2 + e1 + e15)
    torch.testing.assert_close(a, (head0 + head1) / 2)
    assert dycoke_keep(a, p=0.5).tolist() == [1, 3]  # the two most attended on average, ascending
    assert dycoke_keep(a, p=0.75).tolist() == [1]  # floor((1 - p) V) = 1


def test_prefill_is_unchanged(adapter):
    inputs = sample_inputs(adapter)
    plain = adapter.prefill_logits(inputs)
    pruner = PRUNERS.build("dycoke", layer=LAYER, p=0.7, similarity=2.0)
    with TokenPruner(adapter.decoder_layers, pruner).attached(inputs.token_roles) as trace:
        assert torch.equal(adapter.prefill_logits(inputs), plain)
    assert trace.decoding.kept_visual == []  # no decoding step: nothing chosen


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_p0_decodes_bit_exactly_as_plain_generation(attn):
    adapter = build(attn)
    inputs = sample_inputs(adapter)
    ids, logits, _ = decode(adapter, inputs, None)
    kept_all = PRUNERS.build("dycoke", layer=LAYER, p=0.0, similarity=2.0)  # re-selects (all V) at every step
    ids0, logits0, trace = decode(adapter, inputs, kept_all)
    assert ids0 == ids and torch.equal(logits0, logits)
    assert [len(k) for k in trace.decoding.kept_visual] == [inputs.visual_tokens] * (len(ids) - 1)


def test_the_decode_token_attention_in_the_layer_before_picks_the_kept_entries(eager):
    adapter = eager
    inputs = sample_inputs(adapter)
    seen = []
    attn = adapter.decoder_layers[LAYER - 1].self_attn
    handle = attn.register_forward_hook(lambda _m, _a, out: seen.append(out[1]) if out[1].shape[2] == 1 else None)
    try:
        _, _, trace = decode(adapter, inputs, PRUNERS.build("dycoke", layer=LAYER, p=0.7, similarity=2.0))
    finally:
        handle.remove()
    visual = (inputs.token_roles == VISUAL).nonzero().flatten()
    keep = int(len(visual) * 0.3)
    assert len(seen) == len(trace.decoding.kept_visual) == 4
    chosen = []
    for weights, kept in zip(seen, trace.decoding.kept_visual):  # weights [1, H, 1, L]: the model's own
        expected = visual[weights[0, :, 0].mean(0)[visual].topk(keep).indices].sort().values
        assert torch.equal(kept, expected)
        chosen.append(set(kept.tolist()))
    assert len({frozenset(c) for c in chosen}) > 1  # re-decided per step: the choice moves


def test_left_out_entries_have_no_effect_on_the_next_token(adapter):
    inputs = sample_inputs(adapter)
    pruner = PRUNERS.build("dycoke", layer=LAYER, p=0.7, similarity=2.0)
    visual = (inputs.token_roles == VISUAL).nonzero().flatten()

    def one_step(corrupt=None):
        """Prefill, then one decoding step; `corrupt(cache)` edits the cache before the step."""
        with TokenPruner(adapter.decoder_layers, pruner).attached(inputs.token_roles) as trace, torch.no_grad():
            out = adapter.run_llm(inputs.inputs_embeds, inputs.position_ids, use_cache=True)
            token = int(adapter.model.lm_head(out.last_hidden_state[0, -1]).argmax())
            if corrupt is not None:
                corrupt(out.cache)
            step = adapter.run_llm(adapter.embed_tokens([token])[None], inputs.position_ids[..., -1:] + 1, out.cache, True)
        return adapter.model.lm_head(step.last_hidden_state[0, -1]), trace.decoding.kept_visual[0]

    plain, kept = one_step()
    left_out = visual[~torch.isin(visual, kept)]

    def scramble(entries):
        def corrupt(cache):
            for i in range(LAYER, LAYERS):  # the layers that attend to the kept entries only
                cache.layers[i].keys[:, :, entries] = 50 * torch.randn_like(cache.layers[i].keys[:, :, entries])
                cache.layers[i].values[:, :, entries] = 50 * torch.randn_like(cache.layers[i].values[:, :, entries])
        return corrupt

    torch.manual_seed(1)
    scrambled, kept_again = one_step(scramble(left_out))
    assert torch.equal(kept_again, kept) and torch.equal(scrambled, plain)  # left-out entries: no effect at all
    changed, _ = one_step(scramble(kept[:3]))
    assert (changed - plain).abs().max() > 1e-3  # while the kept ones are attended


def test_decoding_equals_the_masked_recomputation(adapter):
    inputs = sample_inputs(adapter)
    ids, logits, trace = decode(adapter, inputs, PRUNERS.build("dycoke", layer=LAYER, p=0.7, similarity=2.0))
    plain_ids, plain_logits, _ = decode(adapter, inputs, None)
    visual = (inputs.token_roles == VISUAL).nonzero().flatten()
    n0 = inputs.inputs_embeds.shape[1]
    embeds = torch.cat([inputs.inputs_embeds, adapter.embed_tokens(ids[:-1])[None]], 1)
    positions = torch.cat([inputs.position_ids, inputs.position_ids[..., -1:] + torch.arange(1, len(ids))], -1)
    masks = decode_pruned_masks(embeds.shape[1], n0, LAYERS, LAYER, trace.decoding.kept_visual, visual)
    ref = logits_under_masks(adapter, embeds, positions, masks)[n0 - 1:]  # the prefill's last row, then each step's
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
    assert (logits[1:] - plain_logits[1:len(ids)]).abs().max() > 1e-3  # pruning changed the decoding steps
    torch.testing.assert_close(logits[0], plain_logits[0])  # the prefill's token: unchanged


def test_a_step_whose_attention_resembles_the_last_attends_to_everything(adapter):
    inputs = sample_inputs(adapter)
    # cos >= -1 always: after the first step (no previous attention) every step is "similar"
    ids, logits, trace = decode(adapter, inputs, PRUNERS.build("dycoke", layer=LAYER, p=0.7, similarity=-1.0))
    steps = trace.decoding.kept_visual
    assert steps[0] is not None and steps[1:] == [None] * (len(ids) - 2)
    visual = (inputs.token_roles == VISUAL).nonzero().flatten()
    n0 = inputs.inputs_embeds.shape[1]
    embeds = torch.cat([inputs.inputs_embeds, adapter.embed_tokens(ids[:-1])[None]], 1)
    positions = torch.cat([inputs.position_ids, inputs.position_ids[..., -1:] + torch.arange(1, len(ids))], -1)
    ref = logits_under_masks(adapter, embeds, positions, decode_pruned_masks(embeds.shape[1], n0, LAYERS, LAYER, steps, visual))
    torch.testing.assert_close(logits, ref[n0 - 1:], atol=1e-4, rtol=1e-4)


def test_the_pruner_counts_as_pruning_and_refuses_a_scored_prefill():
    assert removes_tokens(PRUNERS.build("dycoke"), 28)
    assert not removes_tokens(PRUNERS.build("dycoke", p=0.0), 28)
    assert not removes_tokens(PRUNERS.build("dycoke", layer=4), 4)
    from aim.config import validate

    from tests.test_config import composed

    with pytest.raises(ConfigError, match="eval.mode: pruner dycoke"):
        validate(composed(["model=llava_onevision_tiny", "merger=dycoke", "pruner=dycoke", "eval.mode=letter"]))
    with pytest.raises(ConfigError, match="pruner.p"):
        validate(composed(["model=llava_onevision_tiny", "pruner=dycoke", "eval.mode=generate", "pruner.p=0"]))
    valid = validate(composed(["model=llava_onevision_tiny", "merger=dycoke", "pruner=dycoke", "eval.mode=generate"]))
    assert (valid.pruner.layer, valid.pruner.p, valid.pruner.similarity) == (3, 0.7, 0.9)
