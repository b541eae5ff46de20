"""FLOPs of a real LLM prefill counted by fvcore on the traced forward (pruning hook included).

fvcore counts one multiply-add as one "flop" and, out of the box, nothing for
`aten::scaled_dot_product_attention`, so under SDPA attention silently vanishes from its totals. The
handle below counts it (QK^T and the weighted sum of V, B * H * Nq * Nk * (d + dv) multiply-adds), and
the totals are reported as 2 x multiply-adds, the papers' convention. Elementwise work (norms, RoPE,
softmax, activations) is not counted, as in fvcore's defaults and the analytic model's main terms.

Counting replays the token choices of a real pruned prefill (the kept indices per layer), so the count
covers the LLM alone; the importance scores' own cost is reported apart by the benchmark's timing.
"""
from __future__ import annotations

import math
import warnings

import torch
from fvcore.nn import FlopCountAnalysis

from aim.merging import reduce_clip
from aim.pruning.hooks import TokenPruner


def sdpa_flop_jit(inputs, outputs) -> int:
    """Multiply-adds of scaled_dot_product_attention from its traced input shapes."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch_heads = math.prod(q[:-2])
    return batch_heads * q[-2] * k[-2] * (q[-1] + v[-1])


HANDLES = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::_scaled_dot_product_flash_attention": sdpa_flop_jit,
    "aten::_scaled_dot_product_efficient_attention": sdpa_flop_jit,
}
IGNORED = ["aten::add", "aten::mul", "aten::pow", "aten::mean", "aten::rsqrt", "aten::neg", "aten::silu",
           "aten::cos", "aten::sin", "aten::softmax", "aten::new_ones", "aten::le", "aten::gt", "aten::lt",
           "aten::sub", "aten::div", "aten::gelu", "aten::exp", "aten::where", "aten::topk", "aten::sort",
           "aten::masked_fill", "aten::scatter_add", "aten::ones_like", "aten::sum", "aten::eq",
           "aten::bitwise_not", "aten::cumsum", "aten::rand", "aten::fill_"]


class _Prefill(torch.nn.Module):
    def __init__(self, adapter):
        super().__init__()
        self.lm = adapter.language_model
        self.adapter = adapter

    def forward(self, embeds, positions):
        return self.adapter.run_llm(embeds, positions).last_hidden_state


class _Call(torch.nn.Module):
    """A callable as a module, so fvcore can trace it; `owner` holds the weights it uses (registered
    as a submodule so the tracer sees them as parameters, not constants)."""

    def __init__(self, fn, owner: torch.nn.Module):
        super().__init__()
        self.fn, self.owner = fn, owner

    def forward(self, *args):
        return self.fn(*args)


def count_flops(module: torch.nn.Module, inputs: tuple) -> float:
    """fvcore FLOPs (2 x multiply-adds) of one traced call, attention under SDPA included."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values: harmless for counting
        analysis = FlopCountAnalysis(module, inputs)
        analysis.set_op_handle(**HANDLES).set_op_handle(**{op: None for op in IGNORED})
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return 2.0 * analysis.total()


def count_llm_prefill(adapter, inputs, pruner) -> dict:
    """fvcore FLOPs of the decoder stack (the real pruned token choices, replayed without scoring), of
    the importance scoring (the same prefill with the pruner's own scoring, minus the replay), and of
    the lm_head at the last position, for one prepared sample."""
    hook = TokenPruner(adapter.decoder_layers, pruner)
    with hook.attached(inputs.token_roles) as trace:  # a real pass decides which tokens stay
        adapter.prefill_logits(inputs)
    args = (inputs.inputs_embeds, inputs.position_ids)
    replay = _ReplayScores(trace.kept_indices, hook.retention, len(inputs.token_roles))
    with TokenPruner(adapter.decoder_layers, replay).attached(inputs.token_roles):
        llm = count_flops(_Prefill(adapter), args)
    importance = 0.0
    if hook.first_pruned is not None:
        with hook.attached(inputs.token_roles):
            importance = max(0.0, count_flops(_Prefill(adapter), args) - llm)
    head = adapter.model.lm_head
    return {"llm_prefill_flops": llm, "importance_flops": importance,
            "lm_head_flops": 2.0 * head.in_features * head.out_features,
            "visual_tokens_per_layer": trace.visual_tokens_per_layer}


def count_visual(adapter, frames, merger, modality: str = "video", text: torch.Tensor | None = None) -> dict:
    """fvcore FLOPs of the vision tower, the projector (with the model's pooling) and the merger for one
    sample's frames, or its image (`modality="image"`; the tower signals a merger may ask for are counted
    with the tower). `text`: the prompt's text embeddings [M, D], for a merger that `needs` "text"."""
    with torch.no_grad():
        pixels = adapter.pixel_values(frames, modality)
        tower = count_flops(_Call(adapter.tower_features, adapter.model), (pixels,))
        hidden = adapter.tower_features(pixels)
        projector = count_flops(_Call(lambda h: adapter.project(h, modality), adapter.model), (hidden,))
        signals = adapter.encode_frames(pixels, needs=getattr(merger, "needs", ()), modality=modality)
        if "text" in getattr(merger, "needs", ()):
            signals["text"] = text
        feats = signals.pop("features")
        layout = {"grid": signals.pop("grid")} if "grid" in signals else {}  # not a tensor: not traced
        names = sorted(signals)
        merge = count_flops(_Call(lambda f, *sig: reduce_clip(merger, f, **dict(zip(names, sig)), **layout).features,
                                  adapter.model),
                            (feats, *[signals[n] for n in names]))
    return {"vision_tower_flops": tower, "projector_flops": projector, "merge_flops": merge}


class _ReplayScores:
    """Scores that rank, at each drop, exactly the tokens the real pass kept at that layer first."""

    needs_qk = False  # no q/k projections: they would be counted as LLM FLOPs

    def __init__(self, kept_indices, retention, n):
        self.retention = retention
        self.drops = sorted(i for i in kept_indices if i > 0 and retention[i] < retention[i - 1])
        self.kept, self.n, self.calls = kept_indices, n, 0
        self.current = torch.arange(n)[None]

    def retention_schedule(self, num_layers):
        return self.retention

    def importance(self, q, k, valid):
        layer = self.drops[self.calls]
        self.calls += 1
        kept_next = self.kept[layer]  # original indices kept at `layer`
        current = self.current
        scores = torch.isin(current.to(kept_next.device), kept_next).float()
        self.current = kept_next
        return scores
