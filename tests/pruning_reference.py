"""The reference that physical pruning is checked against, shared by the pruning tests: every token stays
in the sequence, and from the layer a prefill token is pruned at on, it is masked out as a key (so nothing
attends to it). Tokens after the prefill (decoded ones) are never pruned.

Also AIM's token importance written out from the paper's definition (Sec. 3.2), independently of
`aim.pruning.importance`, so the tests can check the module against it."""
from __future__ import annotations

import math

import torch


def reference_pagerank(attn_logits: torch.Tensor, tau: float, iters: int = 5) -> torch.Tensor:
    """AIM's importance, in plain float64 loops: [B, H, N, N] pre-softmax attention logits -> [B, N].

    Per head, the attention is a Markov chain over tokens: M[q][k] = exp(l[q][k] / tau) / sum over k' <= q
    of exp(l[q][k'] / tau) for keys k <= q (causal), 0 for later keys. A uniform start (1/N each) takes
    `iters` steps s[k] <- sum over q of s[q] M[q][k]; the heads combine as sqrt(mean over heads of s[k]^2)."""
    b, h, n, _ = attn_logits.shape
    logits = attn_logits.double().tolist()
    out = torch.zeros(b, n, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            m = [[0.0] * n for _ in range(n)]
            for q in range(n):
                row = [logits[bi][hi][q][k] / tau for k in range(q + 1)]
                top = max(row)
                e = [math.exp(x - top) for x in row]
                total = sum(e)
                for k in range(q + 1):
                    m[q][k] = e[k] / total
            s = [1.0 / n] * n
            for _ in range(iters):
                s = [sum(s[q] * m[q][k] for q in range(n)) for k in range(n)]
            for k in range(n):
                out[bi, k] += s[k] ** 2 / h
    return out.sqrt()


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


def hidden_under_masks(adapter, embeds, positions, masks, edits=None, **llm_kwargs) -> torch.Tensor:
    """The adapter's LLM on the whole sequence, decoder layer i under the additive attention mask `masks[i]`:
    the last hidden states [1, n, D]. `edits` {i: fn}: the hidden states entering layer i are replaced by
    fn(row [n, D]) (a reference merge). `llm_kwargs`: the prefill's further inputs (Qwen3-VL's DeepStack)."""
    edits = edits or {}
    handles = []
    for i, (layer, mask) in enumerate(zip(adapter.decoder_layers, masks)):

        def hook(_layer, args, kwargs, m=mask, edit=edits.get(i)):
            kwargs["attention_mask"] = m
            if edit is not None:
                hidden = args[0] if args else kwargs.pop("hidden_states")
                return (edit(hidden[0])[None],) + tuple(args[1:]), kwargs
            return args, kwargs

        handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            out = adapter.language_model(inputs_embeds=embeds, position_ids=positions, use_cache=False, **llm_kwargs)
    finally:
        for h in handles:
            h.remove()
    return out.last_hidden_state


def masked_logits(adapter, embeds, positions, kept_indices, prefill_len: int, **llm_kwargs) -> torch.Tensor:
    """The adapter's LLM on the whole sequence under `reference_masks`: the last position's logits.
    `llm_kwargs`: the prefill's further inputs (`PreparedInputs.llm_kwargs`, Qwen3-VL's DeepStack)."""
    masks = reference_masks(embeds.shape[1], kept_indices, prefill_len, len(adapter.decoder_layers))
    return adapter.model.lm_head(hidden_under_masks(adapter, embeds, positions, masks, **llm_kwargs)[0, -1])


def masked_greedy_ids(adapter, inputs, kept_indices, steps: int, llm_kwargs_for=None) -> list[int]:
    """Greedy decoding recomputed from scratch under the masked reference: each step runs the whole sequence
    (prefill + tokens decoded so far) through `masked_logits`, a decoded token at one past the last position.
    `llm_kwargs_for(length)`: the further LLM inputs for a sequence of that length (Qwen3-VL's DeepStack)."""
    embeds, positions, ids = inputs.inputs_embeds, inputs.position_ids, []
    for _ in range(steps):
        extra = llm_kwargs_for(embeds.shape[1]) if llm_kwargs_for else {}
        nxt = int(masked_logits(adapter, embeds, positions, kept_indices, len(inputs.token_roles), **extra).argmax())
        ids.append(nxt)
        embeds = torch.cat([embeds, adapter.embed_tokens([nxt])[None]], 1)
        positions = torch.cat([positions, positions[..., -1:] + 1], -1)
    return ids


def decode_pruned_masks(n: int, prefill_len: int, num_layers: int, from_layer: int, kept_visual: list,
                        visual: torch.Tensor) -> list[torch.Tensor]:
    """The masked reference of a pruner that acts while decoding (DyCoke): one additive [1, 1, n, n] mask per
    layer, causal, and at layers >= `from_layer` the row of the token fed at decoding step s (position
    prefill_len + s) masks the visual tokens (`visual`, original indices) not in `kept_visual[s]` (None: it
    attended to every token). Prefill rows are never masked: the prefill is unchanged."""
    masks = []
    for i in range(num_layers):
        mask = torch.full((n, n), float("-inf")).triu(1)
        if i >= from_layer:
            for s, kept in enumerate(kept_visual[: n - prefill_len]):
                if kept is None:
                    continue
                dropped = torch.zeros(n, dtype=torch.bool)
                dropped[visual] = True
                dropped[kept] = False
                mask[prefill_len + s, dropped] = float("-inf")
        masks.append(mask[None, None])
    return masks


def logits_under_masks(adapter, embeds, positions, masks) -> torch.Tensor:
    """The adapter's LLM on the whole sequence, layer i under `masks[i]`: the logits of every position [n, V]."""
    return adapter.model.lm_head(hidden_under_masks(adapter, embeds, positions, masks)[0])
