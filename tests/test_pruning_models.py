"""The pruning hook on the decoder stacks of the other supported families, with tiny random models of the
real classes: Llama (LLaVA-1.5's LLM) and Qwen2-VL's text model (multi-axis RoPE). Same specifications
as for Qwen2: physical removal equals masking, cached decoding equals recomputation."""
import pytest
import torch

from aim.models import QUESTION_TEXT, VISUAL
from aim.pruning import PRUNERS
from aim.pruning.hooks import TokenPruner

from tests.pruning_reference import reference_masks

LAYERS, PREFIX, VISUAL_TOKENS, TEXT = 6, 3, 40, 9


def tiny_llm(kind, attn):
    torch.manual_seed(0)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=50)
    if kind == "llama":
        from transformers import LlamaConfig, LlamaModel

        cfg, cls = LlamaConfig(**common), LlamaModel
    else:
        from transformers import Qwen2VLTextConfig, Qwen2VLTextModel

        cfg = Qwen2VLTextConfig(**common, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
        cls = Qwen2VLTextModel
    cfg._attn_implementation = attn
    return cls(cfg).eval(), torch.nn.Linear(64, 50, bias=False)


def layout(kind):
    n = PREFIX + VISUAL_TOKENS + TEXT
    roles = torch.tensor([0] * PREFIX + [VISUAL] * VISUAL_TOKENS + [QUESTION_TEXT] * TEXT, dtype=torch.int8)
    if kind == "llama":
        return roles, torch.arange(n)[None]
    # Qwen2-VL: text advances all three axes; a 2-frame 4x5 video gives (t, h, w) per visual token
    t = torch.arange(2).repeat_interleave(20)
    h = torch.arange(4).repeat_interleave(5).repeat(2)
    w = torch.arange(5).repeat(8)
    vis = torch.stack([t, h, w]) + PREFIX
    pre = torch.arange(PREFIX).expand(3, -1)
    post = torch.arange(TEXT).expand(3, -1) + int(vis.max()) + 1
    return roles, torch.cat([pre, vis, post], 1)[:, None, :]


def run(llm, head, embeds, positions, cache=None, masks=None):
    handles = []
    if masks is not None:
        for i, layer in enumerate(llm.layers):
            def hook(_l, args, kwargs, m=masks[i]):
                kwargs["attention_mask"] = m
                return args, kwargs
            handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
    past = cache.get_seq_length() if cache is not None else 0
    mask = None if masks is not None else torch.ones(1, past + embeds.shape[1], dtype=torch.long)
    try:
        with torch.no_grad():
            out = llm(inputs_embeds=embeds, position_ids=positions, attention_mask=mask, cache=cache,
                      use_cache=cache is not None)
    finally:
        for h in handles:
            h.remove()
    return head(out.last_hidden_state[0, -1]), out


def next_positions(positions):
    return positions[..., -1:] + 1


@pytest.mark.parametrize("pruner_cfg,per_layer", [(dict(name="aim", l1=2, l2=5), [40, 40, 26, 13, 0, 0]),
                                                  (dict(name="dart", k=2, keep=0.3), [40, 40, 12, 12, 12, 12])])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["llama", "qwen2_vl"])
def test_pruned_prefill_and_decoding_equal_the_masked_reference(kind, attn, pruner_cfg, per_layer):
    from transformers import DynamicCache

    llm, head = tiny_llm(kind, attn)
    roles, positions = layout(kind)
    n = len(roles)
    embeds = torch.randn(1, n, 64)
    pruner_cfg = dict(pruner_cfg)
    pruner = TokenPruner(llm.layers, PRUNERS.build(pruner_cfg.pop("name"), **pruner_cfg))
    with pruner.attached(roles) as trace:
        logits, out = run(llm, head, embeds, positions, cache=DynamicCache(config=llm.config))
        cache, ids, step_logits = out.cache, [int(logits.argmax())], [logits]
        # each layer's KV cache holds exactly the tokens that layer saw
        cached = [layer.keys.shape[-2] for layer in cache.layers]
        assert cached == [PREFIX + TEXT + v for v in trace.visual_tokens_per_layer]
        for _ in range(3):
            logits, out = run(llm, head, head.weight[ids[-1]][None, None], next_positions(positions), cache=cache)
            positions = torch.cat([positions, next_positions(positions)], -1)
            ids.append(int(logits.argmax()))
            step_logits.append(logits)
    assert trace.visual_tokens_per_layer == per_layer
    kept = dict(trace.kept_indices)
    roles_, ref_positions = layout(kind)
    ref_embeds = embeds
    for step, token in enumerate(ids):
        m = ref_embeds.shape[1]
        masks = reference_masks(m, kept, n, LAYERS)
        ref_logits, _ = run(llm, head, ref_embeds, ref_positions, masks=masks)
        torch.testing.assert_close(step_logits[step], ref_logits, atol=1e-4, rtol=1e-4)
        assert int(ref_logits.argmax()) == token, f"step {step}"
        ref_embeds = torch.cat([ref_embeds, head.weight[token][None, None]], 1)
        ref_positions = torch.cat([ref_positions, next_positions(ref_positions)], -1)
