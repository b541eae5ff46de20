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



# --- FastV's convention -------------------------------------------------------------------------------------
# FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024, Sec. 4.1) and most token-
# reduction papers after it count one decoder layer with n tokens, hidden size d and FFN size m as
#     4nd^2 + 2n^2d + 2ndm
# (the q, k, v, o projections as four d x d matrices, the attention scores and weighted sum, and a two-matrix
# FFN): no grouped-query attention, no gated third FFN matrix, no lm_head. A layer after the pruning layer
# K counts with its reduced token count n^ ("K x (4nd^2 + 2n^2d + 2ndm) + (T - K) x (4n^d^2 + 2n^^2d +
# 2n^dm)"). It is about 0.4x the real count (`llm_prefill_flops`) for Qwen2-7B: the figures of such papers
# are comparable with each other, not with AIM's.
CONVENTIONS = ("real", "fastv")


def fastv_layer_flops(n: int, hidden: int, intermediate: int) -> float:
    """FastV's FLOPs of one decoder layer with n tokens: 4nd^2 + 2n^2d + 2ndm."""
    n, d, m = float(n), float(hidden), float(intermediate)
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def fastv_prefill_flops(text_config, tokens_per_layer: list[int]) -> float:
    """FastV's FLOPs of the decoder layers when layer i processes tokens_per_layer[i] tokens (each layer at
    its own, possibly reduced, count)."""
    return sum(fastv_layer_flops(n, text_config.hidden_size, text_config.intermediate_size) for n in tokens_per_layer)
