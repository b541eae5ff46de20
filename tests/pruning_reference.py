"""The reference that physical pruning is checked against, shared by the pruning tests: every token stays
in the sequence, and from the layer a prefill token is pruned at on, it is masked out as a key (so nothing
attends to it). Tokens after the prefill (decoded ones) are never pruned."""
from __future__ import annotations

import torch


def reference_masks(n: int, kept_indices: dict, prefill_len: int, num_layers: int) -> list[torch.Tensor]:
    """One additive [1, 1, n, n] mask per decoder layer: causal, plus the prefill tokens not in that layer's
    kept indices ([1, k] original indices, as `PruningTrace.kept_indices` holds them)."""
    masks = []
    for i in range(num_layers):
        mask = torch.full((n, n), float("-inf")).triu(1)
        if i in kept_indices:
            dropped = torch.ones(n, dtype=torch.bool)
            dropped[kept_indices[i][0]] = False
            dropped[prefill_len:] = False
            mask[:, dropped] = float("-inf")
        masks.append(mask[None, None])
    return masks


def masked_logits(adapter, embeds, positions, kept_indices, prefill_len: int) -> torch.Tensor:
    """The adapter's LLM on the whole sequence under `reference_masks`: the last position's logits."""
    masks = reference_masks(embeds.shape[1], kept_indices, prefill_len, len(adapter.decoder_layers))
    handles = []
    for layer, mask in zip(adapter.decoder_layers, masks):

        def set_mask(_layer, args, kwargs, m=mask):
            kwargs["attention_mask"] = m
            return args, kwargs

        handles.append(layer.register_forward_pre_hook(set_mask, with_kwargs=True))
    try:
        with torch.no_grad():
            out = adapter.language_model(inputs_embeds=embeds, position_ids=positions, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return adapter.model.lm_head(out.last_hidden_state[0, -1])
