"""Analytic FLOPs of a decoder-only LLM prefill (1 multiply-add = 2 FLOPs, the papers' convention).

Per layer with n tokens, hidden d, MLP width m, q heads h and KV heads h_kv of size d_h:
projections 2n(d*h*d_h + 2*d*h_kv*d_h + h*d_h*d), gated MLP 2n(3*d*m), attention scores and weighted
sum 2 * 2 * n^2 * h * d_h (the full square, as LLM-Viewer counts it). Norms, softmax and activations
are small; `aim.efficiency.roofline` counts them too (its matmul FLOPs equal this count) and turns the
per-operator FLOPs and memory traffic into a prefill time.
"""
from __future__ import annotations


def layer_flops(n: int, hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int) -> float:
    proj = 2 * n * (hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden)
    mlp = 2 * n * 3 * hidden * intermediate
    attention = 2 * 2 * n * n * heads * head_dim
    return float(proj + mlp + attention)


def llm_prefill_flops(text_config, tokens_per_layer: list[int]) -> float:
    """FLOPs of the decoder layers when layer i processes tokens_per_layer[i] tokens."""
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return sum(
        layer_flops(n, text_config.hidden_size, text_config.intermediate_size, heads, text_config.num_key_value_heads, head_dim)
        for n in tokens_per_layer
    )

