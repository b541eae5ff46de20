"""DyCoke's second stage (Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language
Models", CVPR 2025, Sec. 3.3): dynamic pruning of the visual KV cache while decoding. Written from the paper,
with the official code (KD-TAO/DyCoke, llava/model/language_model/modeling_qwen2.py, PrunableDynamicCache)
read to settle the details.

The prefill is unchanged: every layer's cache holds every token. At each decoding step s, at the layer l - 1
before the pruning layer l, the current (last, only) token's attention over the whole cache,

    A_s = mean over heads h of softmax(q_h K_h^T / sqrt(d))        (the step's one query row)

restricted to the V visual tokens, a_s in R^V, decides the visual entries layers l .. L-1 attend to in this
step: the top floor((1 - p) V) of a_s (the KV cache keeps all entries, so a token left out at one step can
return at the next: the selection is re-decided per step). The official code re-decides only when the
attention moved: with the previous step's a_{s-1} (none at the first decoding step),

    cos(a_s, a_{s-1}) < similarity   ->  layers >= l attend to the selected entries in step s;
    otherwise                        ->  layers >= l attend to the whole cache in step s

(the official behaviour: a step whose attention resembles the previous step's does not reuse the previous
selection, it prunes nothing; `similarity` > 1 re-selects at every step). Text and decoded tokens are always
attended. Defaults: l = 3, p = 0.7 (the official README's `dycoke_l=3, dycoke_p=0.7`; its code's default p
is 0.8), similarity = 0.9. Layers 0 .. l - 1 always attend to the whole cache.

Done as hooks around the Hugging Face cache, no forked modeling file: a forward hook on layer l - 1's
attention scores the step from the cache's keys (after that layer's update) and the step's query; a pre-hook
on each layer >= l hands its attention a thin wrapper of the cache whose `update` stores the step's key and
value as usual and returns only the kept entries (and slices a tensor attention mask to match), so attention
really runs over fewer keys. Batch 1 (what `Adapter.generate_ids` decodes).

Cost of a pruned step: the scoring (the step's query against layer l - 1's whole cache, H L d multiply-adds)
and, in each layer >= l, a copy of the kept K/V entries; attention then runs over the text, decoded and
floor((1 - p) V) visual keys. On a CPU at 0.5B scale the copies cost more than the attention they save
(decoding is bound by reading the weights); the prefill's cost is unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from aim.pruning.hooks import layer_qk, rope_module
from aim.tokens import VISUAL


def step_attention(q: torch.Tensor, keys: torch.Tensor, scaling: float) -> torch.Tensor:
    """The decoding step's attention, averaged over heads: q [B, H, 1, d] (after RoPE), keys [B, H, L, d] (the
    whole cache, the step's own key last, GQA repeated) -> [B, L] = mean_h softmax(q_h K_h^T * scaling)."""
    logits = (q.float() @ keys.float().transpose(-1, -2)) * scaling  # [B, H, 1, L]
    return logits.softmax(-1).mean(1)[:, 0]


def dycoke_keep(visual_attention: torch.Tensor, p: float) -> torch.Tensor:
    """[V] attention of the step to the visual tokens -> the indices (into the V) of the floor((1 - p) V) most
    attended ones, ascending."""
    keep = int(visual_attention.shape[-1] * (1 - p) + 1e-9)
    return visual_attention.topk(keep).indices.sort().values


@dataclass
class DecodeTrace:
    """Per decoding step: the kept visual tokens (original prefill indices, ascending), or None where the step
    attended to the whole cache (its attention resembled the previous step's)."""

    kept_visual: list = field(default_factory=list)


class _KeptEntries:
    """A cache as one layer's attention sees it in a pruned step: `update` stores the step's key/value in the
    real cache and returns the entries at `index` (everything else delegates to the real cache)."""

    def __init__(self, cache, index: torch.Tensor):
        self._cache, self._index = cache, index

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = self._cache.update(key_states, value_states, layer_idx, *args, **kwargs)
        index = self._index.to(keys.device)  # chosen on the scoring layer's device (a device_map may differ)
        return keys.index_select(2, index), values.index_select(2, index)

    def __getattr__(self, name):
        return getattr(self._cache, name)


class DecodeKVPruning:
    """The hooks of DyCoke's decoding stage on a decoder stack: `with DecodeKVPruning(layers, layer, p,
    similarity).attached(token_roles) as trace: adapter.generate_ids(...)`."""

    def __init__(self, decoder_layers, layer: int, p: float, similarity: float):
        self.layers = list(decoder_layers)
        if not 1 <= layer < len(self.layers):
            raise ValueError(f"layer: DyCoke prunes from a layer in 1..{len(self.layers) - 1}, got {layer}")
        self.layer, self.p, self.similarity = layer, p, similarity

    @contextmanager
    def attached(self, token_roles: torch.Tensor):
        trace = DecodeTrace()
        state = {"index": None, "previous": None}
        roles = token_roles.reshape(-1) if token_roles.dim() == 1 or token_roles.shape[0] == 1 else None
        if roles is None:
            raise ValueError("DyCoke's decoding-time KV pruning decodes one sequence at a time (batch 1)")
        visual = (roles == VISUAL).nonzero().flatten()

        def start(_layer, args, kwargs):
            cache = kwargs.get("cache")
            if cache is None or cache.get_seq_length() == 0:  # a prefill (or no cache): nothing pruned
                state["index"], state["previous"] = None, None
                trace.kept_visual.clear()
            return None

        def score(attn, args, kwargs, _output):
            cache = kwargs.get("cache")
            hidden = args[0] if args else kwargs["hidden_states"]
            state["index"] = None
            if cache is None or hidden.shape[1] != 1:  # prefill: unchanged
                return None
            with torch.no_grad():
                q, _ = layer_qk(attn, hidden, kwargs["position_embeddings"])
                keys = rope_module(attn).repeat_kv(cache.layers[attn.layer_idx].keys, attn.num_key_value_groups)
                a = step_attention(q, keys, attn.scaling)[0, visual.to(q.device)]  # [V]
                prev, state["previous"] = state["previous"], a
                if prev is not None and float(F.cosine_similarity(a, prev, dim=0)) >= self.similarity:
                    trace.kept_visual.append(None)  # the official rule: this step attends to the whole cache
                    return None
                kept = visual.to(q.device)[dycoke_keep(a, self.p)]
                dropped = torch.zeros(keys.shape[2], dtype=torch.bool, device=q.device)
                dropped[visual.to(q.device)] = True
                dropped[kept] = False
                state["index"] = (~dropped).nonzero().flatten()
                trace.kept_visual.append(kept)
            return None

        def prune(_layer, args, kwargs):
            index = state["index"]
            if index is None:
                return None
            kwargs["cache"] = _KeptEntries(kwargs["cache"], index)
            mask = kwargs.get("attention_mask")
            if isinstance(mask, torch.Tensor):
                kwargs["attention_mask"] = mask.index_select(-1, index.to(mask.device))
            return args, kwargs

        handles = [self.layers[0].register_forward_pre_hook(start, with_kwargs=True),
                   self.layers[self.layer - 1].self_attn.register_forward_hook(score, with_kwargs=True)]
        handles += [layer.register_forward_pre_hook(prune, with_kwargs=True) for layer in self.layers[self.layer:]]
        try:
            yield trace
        finally:
            for h in handles:
                h.remove()
