"""PruneVid's question-guided selection inside the LLM (pruner `prunevid`): in layer `layer` the question
tokens' attention, max over heads and question tokens, keeps the top alpha of the visual tokens; the rest
leave the sequence after that layer and the KV caches of the layers up to it."""
import pytest
import torch

from aim.checks import ConfigError
from aim.data import synthetic as syn
from aim.merging import NoMerge
from aim.models import QUESTION_TEXT, VISUAL
from aim.pruning import PRUNERS
from aim.pruning.hooks import TokenPruner
from aim.pruning.importance import question_attention_max

from tests.pruning_reference import logits_under_masks, masked_logits, reference_masks
from tests.tiny_models import toy_adapter

LAYERS, LAYER, ALPHA = 4, 1, 0.3  # layer 1's attention selects; layers 2, 3 see the kept tokens


@pytest.fixture(scope="module")
def eager():
    return toy_adapter(text_layers=LAYERS, attn="eager")


def sample_inputs(adapter):
    scene, q = syn.sample_item(0, 1)
    return adapter.prepare(syn.render(scene)[:2], q.question, q.options, NoMerge())


def test_the_most_attention_any_question_token_pays_in_any_head_scores_by_hand():
    # 6 tokens: 0 prefix text, 1-3 visual, 4 and 5 question; 2 heads, d = 1
    roles = torch.tensor([[0, 1, 1, 1, 2, 2]])
    k = torch.tensor([0.0, 1.0, 0.0, -1.0, 0.0, 0.0]).view(1, 1, 6, 1).expand(1, 2, 6, 1)
    q = torch.zeros(1, 2, 6, 1)
    q[0, 0, 4, 0] = 3.0  # head 0, question token 4: looks at key 1 (k = +1)
    q[0, 1, 5, 0] = -1.0  # head 1, question token 5: mildly at key 3 (k = -1)
    s = question_attention_max(q, k, roles)[0]
    e3, e1 = torch.exp(torch.tensor(3.0)), torch.exp(torch.tensor(1.0))
    # head 0 / token 4 over keys 0..4: [1, e3, 1, e^-3, 1]; head 1 / token 5 over keys 0..5: [1, e^-1, 1, e, 1, 1]
    row4 = torch.tensor([1, e3, 1, 1 / e3, 1]) / (3 + e3 + 1 / e3)
    row5 = torch.tensor([1, 1 / e1, 1, e1, 1, 1]) / (4 + e1 + 1 / e1)
    uniform4, uniform5 = torch.full((5,), 0.2), torch.full((6,), 1 / 6)  # the other head of each token
    expected = torch.stack([torch.cat([row4, torch.zeros(1)]), torch.cat([uniform4, torch.zeros(1)]), row5, uniform5]).amax(0)
    torch.testing.assert_close(s, expected)
    # the visual ranking: token 1 (head 0's favourite), then 3 (head 1's), then 2
    assert s[1:4].argsort(descending=True).tolist() == [0, 2, 1]


def test_question_attention_in_the_layer_decides_the_kept_tokens(eager):
    inputs = sample_inputs(eager)
    seen = []
    attn = eager.decoder_layers[LAYER].self_attn
    handle = attn.register_forward_hook(lambda _m, _a, out: seen.append(out[1]))
    pruner = PRUNERS.build("prunevid", layer=LAYER, alpha=ALPHA)
    try:
        with TokenPruner(eager.decoder_layers, pruner).attached(inputs.token_roles) as trace:
            pruned = eager.prefill_logits(inputs)
    finally:
        handle.remove()
    weights = seen[0][0]  # [H, N, N]: the model's own attention in that layer
    roles = inputs.token_roles
    score = weights[:, roles == QUESTION_TEXT].amax(dim=(0, 1))
    visual = (roles == VISUAL).nonzero().flatten()
    keep = int(len(visual) * ALPHA)
    expected = visual[score[visual].topk(keep).indices].sort().values
    kept = trace.kept_indices[LAYER + 1][0]
    assert torch.equal(kept[roles[kept] == VISUAL], expected)
    assert trace.visual_tokens_per_layer == [len(visual)] * (LAYER + 1) + [keep] * (LAYERS - LAYER - 1)
    ref = masked_logits(eager, inputs.inputs_embeds, inputs.position_ids, trace.kept_indices, len(roles))
    torch.testing.assert_close(pruned, ref, atol=1e-4, rtol=1e-4)


def test_decoding_attends_to_the_kept_video_tokens_at_every_layer(eager):
    inputs = sample_inputs(eager)
    pruner = PRUNERS.build("prunevid", layer=LAYER, alpha=ALPHA)
    with TokenPruner(eager.decoder_layers, pruner).attached(inputs.token_roles) as trace, torch.no_grad():
        out = eager.run_llm(inputs.inputs_embeds, inputs.position_ids, use_cache=True)
        token = int(eager.model.lm_head(out.last_hidden_state[0, -1]).argmax())
        kept = trace.kept_indices[LAYER + 1]
        assert [out.cache.layers[j].keys.shape[2] for j in range(LAYERS)] == [kept.shape[1]] * LAYERS
        step = eager.run_llm(eager.embed_tokens([token])[None], inputs.position_ids[..., -1:] + 1, out.cache, True)
    logits = eager.model.lm_head(step.last_hidden_state[0, -1])
    n = inputs.inputs_embeds.shape[1]
    embeds = torch.cat([inputs.inputs_embeds, eager.embed_tokens([token])[None]], 1)
    positions = torch.cat([inputs.position_ids, inputs.position_ids[..., -1:] + 1], -1)
    masks = reference_masks(n + 1, trace.kept_indices, n, LAYERS)
    later_layers_only = logits_under_masks(eager, embeds, positions, masks)[-1]
    dropped = torch.ones(n + 1, dtype=torch.bool)
    dropped[kept[0]] = False
    dropped[n:] = False
    for m in masks[: LAYER + 1]:  # the decoded token does not see the dropped tokens in the early layers either
        m[0, 0, n, dropped] = float("-inf")
    ref = logits_under_masks(eager, embeds, positions, masks)[-1]
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
    assert (ref - later_layers_only).abs().max() > 1e-3  # the early layers' caches matter


def test_config_defaults_and_a_layer_the_model_lacks():
    from aim.config import validate

    from tests.test_config import composed

    valid = validate(composed(["model=llava_onevision_7b", "merger=prunevid", "pruner=prunevid"]))
    assert (valid.pruner.layer, valid.pruner.alpha) == (10, 0.4)
    with pytest.raises(ConfigError, match=r"pruner.layer: .*layer in 0..2"):
        validate(composed(["model=llava_onevision_tiny", "pruner=prunevid"]))
    validate(composed(["model=llava_onevision_tiny", "merger=prunevid", "pruner=prunevid", "pruner.layer=1"]))
