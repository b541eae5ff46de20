"""The pruning hook removes tokens physically and changes nothing else: the same logits as a masked
reference, the same greedy decoding as recomputation, token counts exactly as scheduled."""
import pytest
import torch

from aim.data import synthetic as syn
from aim.merging import NoMerge
from aim.models import VISUAL
from aim.pruning import PRUNERS
from aim.pruning.hooks import TokenPruner

from tests.pruning_reference import masked_logits
from tests.tiny_models import ATTENTION, toy_adapter


@pytest.fixture(scope="module", params=ATTENTION)
def adapter(request):
    return toy_adapter(text_layers=6, attn=request.param)


def sample_inputs(adapter, frames=2):
    scene, q = syn.sample_item(0, 1)
    return adapter.prepare(syn.render(scene)[:frames], q.question, q.options, NoMerge())


def test_a_schedule_that_keeps_everything_changes_nothing(adapter):
    inputs = sample_inputs(adapter)
    plain = adapter.prefill_logits(inputs)
    keep_all = PRUNERS.build("aim", l1=6, l2=8)  # l1 >= L: no layer prunes
    with TokenPruner(adapter.decoder_layers, keep_all).attached(inputs.token_roles):
        hooked = adapter.prefill_logits(inputs)
    assert torch.equal(plain, hooked)


@pytest.mark.parametrize("pruner", [
    dict(name="aim", l1=2, l2=5), dict(name="fastv", k=2, keep=0.3), dict(name="pdrop", lam=0.5),
    dict(name="vtw", k=3), dict(name="random", l1=1, l2=4),
])
def test_physical_pruning_equals_the_masked_reference(adapter, pruner):
    inputs = sample_inputs(adapter)
    pruner = dict(pruner)
    p = PRUNERS.build(pruner.pop("name"), **pruner)
    with TokenPruner(adapter.decoder_layers, p).attached(inputs.token_roles) as trace:
        pruned = adapter.prefill_logits(inputs)
    ref = masked_logits(adapter, inputs.inputs_embeds, inputs.position_ids, trace.kept_indices, len(inputs.token_roles))
    torch.testing.assert_close(pruned, ref, atol=1e-4, rtol=1e-4)
    assert min(trace.visual_tokens_per_layer) < inputs.visual_tokens  # tokens really went
    assert (pruned - adapter.prefill_logits(inputs)).abs().max() > 1e-3  # and that changed the answer


def test_token_counts_follow_the_schedule_and_text_survives(adapter):
    inputs = sample_inputs(adapter)
    visual = inputs.visual_tokens  # 98
    p = PRUNERS.build("aim", l1=2, l2=5)
    with TokenPruner(adapter.decoder_layers, p).attached(inputs.token_roles) as trace:
        adapter.prefill_logits(inputs)
    expected = [int(visual * r + 1e-9) for r in p.retention_schedule(6)]
    assert trace.visual_tokens_per_layer == expected == [98, 98, 65, 32, 0, 0]
    text = (inputs.token_roles != VISUAL).nonzero().flatten()
    for kept in trace.kept_indices.values():
        assert set(text.tolist()) <= set(kept[0].tolist())
        assert (kept[0].diff() > 0).all()  # causal order kept


def test_greedy_decoding_after_a_pruned_prefill_equals_recomputation(adapter):
    inputs = sample_inputs(adapter)
    p = PRUNERS.build("aim", l1=2, l2=5)
    with TokenPruner(adapter.decoder_layers, p).attached(inputs.token_roles) as trace:
        ids = adapter.generate_ids(inputs, max_new_tokens=4)
    kept = dict(trace.kept_indices)
    embeds, positions = inputs.inputs_embeds, inputs.position_ids
    for step, token in enumerate(ids):
        logits = masked_logits(adapter, embeds, positions, kept, len(inputs.token_roles))
        assert int(logits.argmax()) == token, f"step {step}"
        embeds = torch.cat([embeds, adapter.embed_tokens([token])[None]], 1)
        positions = torch.cat([positions, positions[:, -1:] + 1], 1)


def left_padded_batch(adapter, samples):
    """Samples of equal visual length but different text lengths, left-padded into one batch as
    `generate` would see them: pad positions masked out and marked PADDING in the roles. The pads are
    many and loud (random embeddings): the model never attends to them, and the scores must not either."""
    from aim.models import PADDING

    n = max(s.inputs_embeds.shape[1] for s in samples) + 16
    g = torch.Generator().manual_seed(0)
    embeds, positions, masks, roles = [], [], [], []
    for s in samples:
        pad = n - s.inputs_embeds.shape[1]
        noise = 3 * torch.randn(1, pad, s.inputs_embeds.shape[2], generator=g)
        embeds.append(torch.cat([noise, s.inputs_embeds], 1))
        positions.append(torch.cat([torch.zeros(1, pad, dtype=torch.long), s.position_ids], 1))
        masks.append(torch.cat([torch.zeros(1, pad, dtype=torch.long), torch.ones(1, n - pad, dtype=torch.long)], 1))
        roles.append(torch.cat([torch.full((pad,), PADDING, dtype=s.token_roles.dtype), s.token_roles]))
    return torch.cat(embeds), torch.cat(positions), torch.cat(masks), torch.stack(roles)


@pytest.mark.parametrize("pruner", [dict(name="aim", l1=2, l2=5), dict(name="aim", l1=2, l2=5, backend="blockwise"),
                                    dict(name="fastv", k=2, keep=0.3), dict(name="dart", k=2, keep=0.3)])
def test_a_padded_batch_prunes_each_row_as_it_would_alone(adapter, pruner):
    samples = [adapter.prepare(syn.render(scene)[:2], q.question, q.options, NoMerge())
               for scene, q in (syn.sample_item(0, i) for i in (0, 1))]
    assert samples[0].inputs_embeds.shape[1] != samples[1].inputs_embeds.shape[1]  # really padded
    pruner = dict(pruner)
    p = PRUNERS.build(pruner.pop("name"), **pruner)
    alone, alone_kept = [], []
    for s in samples:
        with TokenPruner(adapter.decoder_layers, p).attached(s.token_roles) as trace:
            alone.append(adapter.prefill_logits(s))
        alone_kept.append(trace.kept_indices)
    embeds, positions, mask, roles = left_padded_batch(adapter, samples)
    with TokenPruner(adapter.decoder_layers, p).attached(roles) as trace, torch.no_grad():
        out = adapter.language_model(inputs_embeds=embeds, position_ids=positions, attention_mask=mask, use_cache=False)
    batched = adapter.model.lm_head(out.last_hidden_state[:, -1])
    for row, s in enumerate(samples):
        torch.testing.assert_close(batched[row], alone[row], atol=1e-4, rtol=1e-4)
        pad = embeds.shape[1] - s.inputs_embeds.shape[1]
        for layer, kept in alone_kept[row].items():  # the same tokens kept, shifted by the padding
            real = trace.kept_indices[layer][row]
            assert torch.equal(real[real >= pad] - pad, kept[0])


def test_rows_with_different_visual_counts_are_refused(adapter):
    from aim.models import PADDING

    s = sample_inputs(adapter)
    roles = torch.stack([s.token_roles, torch.where(s.token_roles == VISUAL, PADDING, s.token_roles)])
    embeds = s.inputs_embeds.expand(2, -1, -1)
    with TokenPruner(adapter.decoder_layers, PRUNERS.build("aim", l1=2, l2=5)).attached(roles):
        with pytest.raises(ValueError, match="different numbers of visual tokens"):
            adapter.language_model(inputs_embeds=embeds, position_ids=s.position_ids.expand(2, -1), use_cache=False)


@pytest.mark.parametrize("adapter", ["eager"], indirect=True)
def test_the_kept_visual_tokens_are_the_top_scored_by_the_papers_pagerank(adapter):
    """At AIM's first drop (layer l1 = 2, scored from layer 1's attention, which no pruning has touched
    yet) the kept visual tokens are exactly the top ones by the paper's PageRank at tau = 0.1, computed
    independently (tests/pruning_reference.py) from the attention weights of an unpruned forward: the
    log of a row's softmax is its logits up to a constant per row, which the softmax at any tau ignores."""
    from tests.pruning_reference import reference_pagerank

    inputs = sample_inputs(adapter)
    with torch.no_grad():
        out = adapter.language_model(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids,
                                     use_cache=False, output_attentions=True)
    scores = reference_pagerank(out.attentions[1].double().log(), tau=0.1)[0]
    p = PRUNERS.build("aim", l1=2, l2=5)  # the configured tau, 0.1
    with TokenPruner(adapter.decoder_layers, p).attached(inputs.token_roles) as trace:
        adapter.prefill_logits(inputs)
    visual = (inputs.token_roles == VISUAL).nonzero().flatten()
    kept = set(trace.kept_indices[2][0].tolist()) & set(visual.tolist())
    n = trace.visual_tokens_per_layer[2]
    assert len(kept) == n == 65
    ranked = visual[scores[visual].argsort(descending=True)]
    gap = scores[ranked[n - 1]] - scores[ranked[n]]
    assert gap > 1e-4 * scores[ranked[n - 1]]  # the cut is clear of float noise
    assert kept == set(ranked[:n].tolist())


@pytest.mark.parametrize("shape", [(1, 7, 5), (3, 7, 5), (2, 7, 4, 3)])
def test_take_tokens_copies_each_rows_tokens_like_gather(shape):
    """The hook's row copy (index_select) holds exactly what torch.gather along the token axis gives."""
    from aim.pruning.hooks import take_tokens

    x = torch.randn(shape)
    index = torch.stack([torch.randperm(shape[1])[:4] for _ in range(shape[0])])
    expected = x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *shape[2:]))
    assert torch.equal(take_tokens(x, index), expected)


def test_the_scored_layers_compute_their_q_and_k_projections_once(adapter):
    """The importance takes the projections the attention computes anyway: each layer's q_proj and k_proj run
    once per pruned prefill (a recomputation would cost 2n x d x (d + d_kv) FLOPs per scored layer)."""
    inputs = sample_inputs(adapter)
    calls = []
    handles = [getattr(layer.self_attn, f"{name}_proj").register_forward_hook(lambda *_a, i=i, name=name: calls.append((i, name)))
               for i, layer in enumerate(adapter.decoder_layers) for name in ("q", "k")]
    try:
        with TokenPruner(adapter.decoder_layers, PRUNERS.build("aim", l1=2, l2=5)).attached(inputs.token_roles):
            adapter.prefill_logits(inputs)
    finally:
        for h in handles:
            h.remove()
    assert sorted(calls) == sorted((i, name) for i in range(adapter.num_layers) for name in ("q", "k"))
