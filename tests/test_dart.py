"""DART as a specification: the pivot rule and "drop the duplicates of a pivot first" decided by hand, then
through the one pruning hook: counts as configured, positions kept, physical removal equal to the masked
reference, and the choice made on the hidden states that reach layer k."""
import pytest
import torch

from aim.models import VISUAL
from aim.pruning import PRUNERS
from aim.pruning.duplication import dart_keep, dart_scores
from aim.pruning.hooks import TokenPruner, layer_qk
from aim.tokens import PREFIX_TEXT, QUESTION_TEXT

from tests.pruning_reference import masked_logits
from tests.test_pruning_hook import adapter, sample_inputs  # noqa: F401  (the tiny LLaVA-OneVision fixture)


def layout(prefix=2, visual=8, question=3):
    roles = torch.tensor([PREFIX_TEXT] * prefix + [VISUAL] * visual + [QUESTION_TEXT] * question)
    return roles == VISUAL, roles == QUESTION_TEXT


def test_the_visual_pivot_is_the_largest_key_norm_and_its_exact_duplicates_go_first():
    visual, question = layout()
    torch.manual_seed(0)
    hidden = torch.randn(13, 16)
    hidden[3] = hidden[2]  # visual tokens 3 and 4 duplicate visual token 2 exactly
    hidden[4] = 2.0 * hidden[2]
    norms = torch.ones(13)
    norms[2] = 10.0  # token 2: the visual pivot
    keep = dart_keep(hidden, norms, visual, question, count=6, pivot_image=1, pivot_text=0)
    assert keep[0] == 2 and len(keep) == 6
    assert set(keep.tolist()) == {2, 5, 6, 7, 8, 9}  # all but the two duplicates


def test_each_pivot_keeps_its_quota_of_least_similar_tokens_text_pivots_included():
    """Two pivots (visual 2, question 11) share 4 - 1 = 3 kept tokens: 2 for the first in sequence order,
    1 for the second. Visual token j is at angle 20 j degrees; the question pivot points at token 9's angle."""
    visual, question = layout()
    angles = torch.arange(13, dtype=torch.float64) * 20
    angles[11] = 20 * 9  # the text pivot is a copy of visual token 9's direction
    hidden = torch.stack([angles.deg2rad().cos(), angles.deg2rad().sin()], -1)
    norms = torch.ones(13)
    norms[2], norms[11] = 10.0, 10.0
    keep = dart_keep(hidden, norms, visual, question, count=4, pivot_image=1, pivot_text=1).tolist()
    # pivot 2 (40 deg) keeps the two tokens farthest in angle: 9 (180 deg) and 8 (160 deg)
    # pivot 11 (180 deg) then keeps, among 3..7, the farthest from 180 degrees: 3 (60)
    assert keep == [2, 9, 8, 3]


def test_scores_rank_exactly_the_count_kept_per_row_and_leave_text_at_zero():
    roles = torch.tensor([PREFIX_TEXT] * 2 + [VISUAL] * 20 + [QUESTION_TEXT] * 4).expand(2, -1)
    hidden, k = torch.randn(2, 26, 8), torch.randn(2, 2, 26, 4)
    scores = dart_scores(hidden, k, roles, count=7, pivot_image=2, pivot_text=2)
    assert ((scores > 0).sum(1) == 7).all()
    assert (scores[roles != VISUAL] == 0).all()


@pytest.mark.parametrize("keep,k", [(0.3, 2), (0.15, 1)])
def test_dart_prunes_physically_as_the_masked_reference_keeping_the_configured_count(adapter, keep, k):  # noqa: F811
    inputs = sample_inputs(adapter)
    p = PRUNERS.build("dart", k=k, keep=keep)
    with TokenPruner(adapter.decoder_layers, p).attached(inputs.token_roles) as trace:
        pruned = adapter.prefill_logits(inputs)
    visual = inputs.visual_tokens
    assert trace.visual_tokens_per_layer == [visual] * k + [int(visual * keep + 1e-9)] * (6 - k)
    text = (inputs.token_roles != VISUAL).nonzero().flatten()
    for kept in trace.kept_indices.values():
        assert set(text.tolist()) <= set(kept[0].tolist()) and (kept[0].diff() > 0).all()
    ref = masked_logits(adapter, inputs.inputs_embeds, inputs.position_ids, trace.kept_indices, len(inputs.token_roles))
    torch.testing.assert_close(pruned, ref, atol=1e-4, rtol=1e-4)


def test_dart_chooses_on_the_hidden_states_reaching_layer_k_and_the_keys_of_layer_k_minus_1(adapter):  # noqa: F811
    inputs = sample_inputs(adapter)
    k_layer, keep = 2, 0.3
    captured = {}

    def grab(attn, args, kwargs):
        captured["k"] = layer_qk(attn, args[0] if args else kwargs["hidden_states"], kwargs["position_embeddings"])[1]

    handle = adapter.decoder_layers[k_layer - 1].self_attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            out = adapter.language_model(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids,
                                         use_cache=False, output_hidden_states=True)
    finally:
        handle.remove()
    roles = inputs.token_roles
    count = int(inputs.visual_tokens * keep + 1e-9)
    expected = dart_keep(out.hidden_states[k_layer][0], captured["k"].float().abs().sum(dim=(1, 3))[0],
                         roles == VISUAL, roles == QUESTION_TEXT, count, 4, 4)
    with TokenPruner(adapter.decoder_layers, PRUNERS.build("dart", k=k_layer, keep=keep)).attached(roles) as trace:
        adapter.prefill_logits(inputs)
    kept_visual = set(trace.kept_indices[k_layer][0].tolist()) & set((roles == VISUAL).nonzero().flatten().tolist())
    assert kept_visual == set(expected.tolist())


def test_darts_own_scoring_is_counted_as_importance_flops(adapter):  # noqa: F811
    from aim.efficiency.fvcore_count import count_llm_prefill

    inputs = sample_inputs(adapter)
    counted = count_llm_prefill(adapter, inputs, PRUNERS.build("dart", k=2, keep=0.3))
    visual, kept, width = inputs.visual_tokens, int(inputs.visual_tokens * 0.3 + 1e-9), inputs.inputs_embeds.shape[2]
    # eight pivots, each a cosine row over the visual tokens not yet chosen (more than visual - kept of them)
    assert counted["importance_flops"] >= 2 * 8 * (visual - kept) * width
