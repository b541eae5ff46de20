"""The one hook that removes visual tokens between decoder layers, for every pruner and supported model.

Hugging Face decoder stacks (Qwen2, Llama, Qwen2-VL's text model in transformers 5) compute the RoPE
(cos, sin), the position ids and the attention mask once for the full sequence and hand the same
objects to every layer. Forward pre-hooks therefore:
- at a layer whose retention drops, gather the kept tokens of the hidden states (all text tokens, the
  top visual tokens by the importance computed in the layer before), so this layer and all later ones
  run on fewer tokens: pruned tokens leave the computation;
- at every layer from the first pruned one on, slice (cos, sin), position ids and a tensor attention
  mask to the tokens that layer sees: queries by the kept tokens, keys by what the layer's KV cache
  holds (its kept prefill tokens, then every decoded token). Kept tokens keep their original positions.
The attention module of each layer that feeds a pruning step hands its own q/k projections (forward hooks
on q_proj and k_proj) to a forward hook that applies RoPE and the GQA repeat and recomputes that layer's
attention logits for the importance score, so the model itself keeps SDPA/FlashAttention everywhere (an
attention whose forward was replaced, model.compile, gets a pre-hook that recomputes the projections).

A pruner whose `merge_dropped` is True has its dropped visual tokens merged instead of discarded (HoliTom's
inner-LLM merging): before the gather, each dropped visual token joins the kept visual token whose hidden
state is the most cosine-similar to its own (ties: the higher scored kept token), and a kept token with n such
tokens becomes the mean of the n + 1 (`merge_dropped`). The merged hidden states are what the layer sees and
caches; every other pruner drops as before, bit for bit.

Each layer's KV cache receives exactly the tokens the layer saw (DynamicCache layers concatenate), so
decoding after a pruned prefill attends to the right keys. Layer 0 is never pruned: its cache length
drives positions and masks while decoding. A pruner with `prunes_cache_before` (PruneVid) also removes the
dropped tokens from the KV caches of the layers before the drop, once the prefill reaches it, so decoding
attends to the kept tokens only at every layer; decoding masks then index layer 0's cache as it is.

Devices and dtypes (`model.device_map`): the layers may sit on several GPUs, and accelerate's hooks move each
layer's inputs to its device inside its forward, after these pre-hooks run. So every index is moved to the
tensor it indexes (hidden states, cos/sin, position ids, masks, each layer's cache) at the moment it is
used, the bookkeeping (kept indices, token roles) follows the hidden states from layer to layer, and every
tensor the hooks create takes the device (and, when it is floating, the dtype) of what it is combined with.

Batches: token roles are one row [N] shared by the batch (equal layouts), or one row per sample [B, N]
for a padded batch, with pad positions marked PADDING. Each row keeps its own top visual tokens, so the
rows must hold equally many visual tokens (then every row keeps equally many tokens and the batch stays
a rectangle); pad tokens are kept like text and the importance scores ignore them as keys, so each
row is pruned exactly as it would be on its own.
"""
from __future__ import annotations

import importlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from aim.pruning.schedule import kept_per_layer
from aim.tokens import PADDING, VISUAL


@dataclass
class PruningTrace:
    """What one prefill did: visual tokens each layer saw, and the kept original indices per layer."""

    visual_tokens_per_layer: list[int] = field(default_factory=list)  # one entry per decoder layer
    kept_indices: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, n_i] original indices
    decoding: object = None  # a pruner acting while decoding (DyCoke): its own trace of the decoding steps


class _State:
    def __init__(self, roles: torch.Tensor):
        self.given = roles  # [N] or [B, N]: roles of the prefill sequence, as the caller gave them
        self.roles = roles  # [B, N] from the start of a prefill
        self.kept = None  # [B, n] original indices of the tokens currently in the hidden states
        self.prefill_len = 0
        self.layer_kept: dict[int, torch.Tensor] = {}  # each layer's kept prefill indices (for decoding)
        self.cache0 = None  # [B, m] prefill indices layer 0's cache holds when not all (`prunes_cache_before`)
        self.scores = None  # importance of the current tokens, from the layer before a pruning step
        self.pending = None  # (q, k, valid) of that layer, for a pruner scored on the hidden states it hands on
        self.projections: dict[str, torch.Tensor] = {}  # the scored layer's q_proj / k_proj outputs (`_score_after`)
        # host-side counts, so the prefill never waits on the device between layers
        self.visual_now = self.text_now = 0
        self.visual_per_layer: list[int] = []  # the schedule's counts for this prefill (kept_per_layer)
        self.padded = False
        self.decoding = False
        self.trace = PruningTrace()

    def follow(self, device: torch.device) -> None:
        """The kept indices and token roles onto `device` (the hidden states'), where a device_map moved them."""
        if self.kept is not None and self.kept.device != device:
            self.kept, self.roles = self.kept.to(device), self.roles.to(device)


def rope_module(attn):
    """The modeling module of an attention class (for its own apply_rotary_pos_emb and repeat_kv)."""
    return importlib.import_module(type(attn).__module__)


def layer_qk(attn, hidden: torch.Tensor, position_embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys [B, H, n, d] of one attention module, after QK-norm where the module has one (Qwen3's
    per-head RMSNorm of q and k), RoPE and the GQA repeat."""
    return qk_from_projections(attn, attn.q_proj(hidden), attn.k_proj(hidden), position_embeddings)


def qk_from_projections(attn, q_lin: torch.Tensor, k_lin: torch.Tensor, position_embeddings):
    """`layer_qk` from the outputs [B, n, H * d] of the module's own q_proj and k_proj."""
    mod = rope_module(attn)
    b, n, _ = q_lin.shape
    q = q_lin.view(b, n, -1, attn.head_dim)
    k = k_lin.view(b, n, -1, attn.head_dim)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    cos, sin = position_embeddings
    q, k = mod.apply_rotary_pos_emb(q, k, cos, sin)
    return q, mod.repeat_kv(k, attn.num_key_value_groups)


def take_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, n, ...], index [B, k] -> [B, k, ...]: each row's tokens at its indices, whole rows copied (one
    index_select over the flattened batch). The same values as `x.gather(1, index[..., None].expand(...))`,
    whose element-wise CPU kernel takes milliseconds per gathered hidden state (about 6 ms for 443 x 896
    floats on two cores), against tens of microseconds here."""
    b, n = x.shape[:2]
    if b == 1:
        return x.index_select(1, index[0])
    flat = (index + torch.arange(b, device=index.device).unsqueeze(1) * n).reshape(-1)
    return x.reshape(b * n, *x.shape[2:]).index_select(0, flat).view(b, index.shape[1], *x.shape[2:])


def merge_dropped(hidden: torch.Tensor, kept: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """hidden [B, n, D]; kept [B, k], dropped [B, m]: indices into the n tokens. Each dropped token is assigned
    to the kept token of the highest cosine similarity of hidden states (ties: the first in `kept`); a kept
    token with tokens j_1..j_a assigned becomes (h_kept + sum h_j) / (1 + a). Returns the new hidden states
    (dropped rows as they were; computed in float32, returned in the input's dtype)."""
    if kept.shape[1] == 0 or dropped.shape[1] == 0:
        return hidden
    d = hidden.shape[-1]
    h = hidden.to(torch.promote_types(hidden.dtype, torch.float32))  # float32, or float64 layers' own
    h_kept = h.gather(1, kept.unsqueeze(-1).expand(-1, -1, d))
    h_drop = h.gather(1, dropped.unsqueeze(-1).expand(-1, -1, d))
    sim = F.normalize(h_drop, dim=-1) @ F.normalize(h_kept, dim=-1).transpose(1, 2)  # [B, m, k]
    target = kept.gather(1, sim.argmax(dim=-1))  # [B, m]: the kept token each dropped one joins
    total = h.scatter_add(1, target.unsqueeze(-1).expand(-1, -1, d), h_drop)
    count = torch.ones(h.shape[:2], dtype=h.dtype, device=h.device).scatter_add(
        1, target, torch.ones(target.shape, dtype=h.dtype, device=h.device))
    return (total / count.unsqueeze(-1)).to(hidden.dtype)


class TokenPruner:
    """Attach with `with TokenPruner(adapter, pruner).attached(token_roles) as trace: ...`.

    `pruner` supplies `retention_schedule(num_layers)` and `importance(q, k, valid) -> [B, n]` (higher
    is kept first); `valid` [B, n] is False at the current pad tokens, None when nothing is padded. A pruner
    whose `needs` names "roles", "count" or "hidden" gets them as keyword arguments too (`_signals`); one whose
    `merge_dropped` is True has its dropped visual tokens averaged into their most similar kept ones. A pruner
    with a `decoding(decoder_layers)` method also acts while decoding: what it returns is attached beside
    these hooks (`attached(token_roles)`, a context manager yielding its trace, `PruningTrace.decoding`).
    Token counts are kept on the host: apart from the start of a prefill, the hooks never wait on the
    device, so the CPU can queue later (cheap, pruned) layers while the GPU runs earlier ones.
    """

    def __init__(self, decoder_layers, pruner):
        self.layers = list(decoder_layers)
        self.pruner = pruner
        self.retention = pruner.retention_schedule(len(self.layers))
        if self.retention[0] < 1.0:
            raise ValueError("layer 0 cannot prune: importance comes from the layer before")
        self.first_pruned = next((i for i, r in enumerate(self.retention) if r < 1.0), None)
        self.needs = tuple(getattr(pruner, "needs", ()))  # signals beyond (q, k, valid): see `_signals`
        self.merges = bool(getattr(pruner, "merge_dropped", False))  # dropped visual tokens merged, not discarded

    @contextmanager
    def attached(self, token_roles: torch.Tensor):
        state = _State(token_roles)
        handles = []
        if self.first_pruned is not None:
            stack = self.layers[0]
            handles.append(stack.register_forward_pre_hook(self._start_call(state), with_kwargs=True))
            for i, layer in enumerate(self.layers):
                if i >= self.first_pruned:
                    handles.append(layer.register_forward_pre_hook(self._before_layer(state, i), with_kwargs=True))
                if i + 1 < len(self.layers) and self._drops_at(i + 1):
                    attn = layer.self_attn
                    if self._reuses_projections(attn):
                        handles += [getattr(attn, f"{name}_proj").register_forward_hook(self._keep_projection(state, name))
                                    for name in ("q", "k")]
                        handles.append(attn.register_forward_hook(self._score_after(state, i), with_kwargs=True))
                    else:
                        handles.append(attn.register_forward_pre_hook(self._score(state, i), with_kwargs=True))
        try:
            with ExitStack() as stack:
                if hasattr(self.pruner, "decoding"):
                    state.trace.decoding = stack.enter_context(self.pruner.decoding(self.layers).attached(token_roles))
                yield state.trace
        finally:
            for h in handles:
                h.remove()

    def _drops_at(self, i: int) -> bool:
        return self.retention[i] < self.retention[i - 1]

    # --- hooks ----------------------------------------------------------------------------------
    def _start_call(self, state: _State):
        """Before layer 0 of every forward call: a prefill (re)starts the bookkeeping."""

        def hook(_module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            cache = kwargs.get("cache")
            past = cache.get_seq_length() if cache is not None else 0
            b, n, _ = hidden.shape
            if past == 0:  # a prefill
                given = state.given
                if given.shape[-1] != n or (given.dim() == 2 and given.shape[0] != b):
                    raise ValueError(f"token roles of shape {tuple(given.shape)} do not describe a prefill of {b} x {n} tokens")
                per_row = (given.expand(b, n) == VISUAL).sum(1).tolist()  # the caller's roles, often on the host
                if len(set(per_row)) > 1:
                    raise ValueError(
                        f"the rows of a padded batch hold different numbers of visual tokens ({per_row}); "
                        "prune such samples in separate batches"
                    )
                visual = per_row[0]
                state.padded = bool((given == PADDING).any())
                state.roles = given.to(hidden.device).expand(b, n)
                state.decoding, state.prefill_len = False, n
                state.kept = torch.arange(n, device=hidden.device).expand(b, n)
                state.layer_kept.clear()
                state.cache0 = None
                state.visual_now, state.text_now = visual, n - visual
                state.visual_per_layer = kept_per_layer(visual, self.retention)
                state.trace.visual_tokens_per_layer = [visual] * self.first_pruned
                state.trace.kept_indices = {}
            else:
                state.decoding = True
            return None

        return hook

    def _reuses_projections(self, attn) -> bool:
        """Whether layer i's importance can take the q/k projections the attention computes anyway (forward
        hooks on its q_proj and k_proj) instead of recomputing them: not when the pruner needs no q/k, nor when
        the attention's forward was replaced (model.compile: hooks inside a compiled body would be traced)."""
        return (getattr(self.pruner, "needs_qk", True) and "forward" not in vars(attn)
                and all(isinstance(getattr(attn, f"{name}_proj", None), torch.nn.Module) for name in ("q", "k")))

    def _set_scores(self, state: _State, i: int, q, k) -> None:
        """Importance of layer i's tokens (q, k: its queries and keys), or, for a pruner that `needs`
        "hidden", its inputs kept for the start of layer i + 1 (`_before_layer`)."""
        with torch.no_grad():
            valid = state.roles.gather(1, state.kept) != PADDING if state.padded else None
            if "hidden" in self.needs:
                state.pending = (q, k, valid)
            else:
                state.scores = self.pruner.importance(q, k, valid, **self._signals(state, i + 1))

    def _score(self, state: _State, i: int):
        """Before the attention of layer i (which feeds a drop at i + 1): importance of its tokens, its q/k
        recomputed from the attention's input (`layer_qk`). A pruner that `needs` "hidden" is scored at the
        start of layer i + 1 instead, on the hidden states layer i hands on (`_before_layer`); its q/k are
        those of layer i, computed here."""

        def hook(attn, args, kwargs):
            if state.decoding:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            with torch.no_grad():
                state.follow(hidden.device)  # the attention runs where accelerate moved this layer's inputs
                if getattr(self.pruner, "needs_qk", True):
                    q, k = layer_qk(attn, hidden, kwargs["position_embeddings"])
                else:  # a pruner that scores without attention (FLOP counting replays choices)
                    q = k = None
            self._set_scores(state, i, q, k)
            return None

        return hook

    @staticmethod
    def _keep_projection(state: _State, name: str):
        """After layer i's q_proj or k_proj in a prefill: its output, for `_score_after`."""

        def hook(_module, _args, output):
            if not state.decoding:
                state.projections[name] = output
            return None

        return hook

    def _score_after(self, state: _State, i: int):
        """After the attention of layer i: `_score`'s importance from the q/k projections the attention
        computed (the same values, without computing them twice: 2n x d x (d + d_kv) FLOPs per scored layer)."""

        def hook(attn, _args, kwargs, _output):
            if state.decoding:
                return None
            q_lin, k_lin = state.projections.pop("q"), state.projections.pop("k")
            state.follow(q_lin.device)  # the attention ran where accelerate moved this layer's inputs
            with torch.no_grad():
                q, k = qk_from_projections(attn, q_lin, k_lin, kwargs["position_embeddings"])
            self._set_scores(state, i, q, k)
            return None

        return hook

    def _signals(self, state: _State, i: int, hidden=None) -> dict:
        """What a pruner `needs` besides q, k and valid, for a drop before layer i: "roles" [B, n] of the
        current tokens, "count" (the visual tokens layer i keeps), "hidden" [B, n, D] (the hidden states
        layer i receives)."""
        signals = {}
        if "roles" in self.needs:
            signals["roles"] = state.roles.gather(1, state.kept)
        if "count" in self.needs:
            signals["count"] = state.visual_per_layer[i]
        if "hidden" in self.needs:
            signals["hidden"] = hidden
        return signals

    def _before_layer(self, state: _State, i: int):
        def hook(_layer, args, kwargs):
            hidden = args[0] if args else kwargs.pop("hidden_states")
            if not state.decoding:
                state.follow(hidden.device)
                if self._drops_at(i):
                    if state.pending is not None:  # a pruner scored on the hidden states entering this layer
                        with torch.no_grad():
                            state.scores = self.pruner.importance(*state.pending, **self._signals(state, i, hidden))
                        state.pending = None
                    hidden = self._gather(state, hidden, i)
                    if getattr(self.pruner, "prunes_cache_before", False) and kwargs.get("cache") is not None:
                        self._prune_caches_before(state, kwargs["cache"], i)
                state.layer_kept[i] = state.kept
                state.trace.visual_tokens_per_layer.append(state.visual_now)
                state.trace.kept_indices[i] = state.kept
                queries, keys = state.kept, state.kept
            else:
                queries = None  # decoding: the step's own tokens, no gather
                keys = self._decode_keys(state, i, kwargs)
            kwargs = self._slice_kwargs(kwargs, queries, keys)
            return (hidden,), kwargs

        return hook

    def _gather(self, state: _State, hidden: torch.Tensor, i: int) -> torch.Tensor:
        roles = state.roles.gather(1, state.kept)  # [B, n]
        is_visual = roles == VISUAL
        target = state.visual_per_layer[i]
        scores = state.scores.to(hidden.device, torch.float32).masked_fill(~is_visual, float("-inf"))
        top_visual = scores.topk(target, dim=1).indices if target else scores[:, :0].long()
        # each row's non-visual tokens (equally many in every row)
        text = is_visual.to(torch.uint8).sort(dim=1, stable=True).indices[:, : state.text_now]
        sel = torch.cat([text, top_visual], 1).sort(dim=1).values  # keep causal order
        if self.merges:
            ones = torch.ones_like(top_visual, dtype=torch.uint8)  # a tensor source: fvcore's trace has no bool scalar scatter
            kept = torch.zeros_like(roles, dtype=torch.uint8).scatter(1, top_visual, ones)
            dropped = (is_visual & (kept == 0)).to(torch.uint8).sort(dim=1, descending=True, stable=True).indices
            hidden = merge_dropped(hidden, top_visual, dropped[:, : state.visual_now - target])
        state.kept = state.kept.gather(1, sel)
        state.visual_now = target
        state.scores = None
        return take_tokens(hidden, sel)

    def _prune_caches_before(self, state: _State, cache, i: int) -> None:
        """Keep only the tokens now kept (`state.kept`) in the KV caches of layers 0..i-1."""
        for j in range(i):
            held = state.layer_kept.get(j)  # None: the layer saw (and cached) every prefill token
            pos = state.kept if held is None else torch.searchsorted(held.to(state.kept.device).contiguous(),
                                                                     state.kept.contiguous())
            layer = cache.layers[j]
            idx = pos[:, None, :, None].to(layer.keys.device)
            layer.keys = layer.keys.gather(2, idx.expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3]))
            layer.values = layer.values.gather(2, idx.expand(-1, layer.values.shape[1], -1, layer.values.shape[3]))
            if held is not None:
                state.layer_kept[j] = state.kept
        state.cache0 = state.kept

    def _decode_keys(self, state: _State, i: int, kwargs) -> torch.Tensor:
        """The keys layer i holds after this step, as columns of the decoding mask (which indexes layer 0's
        cache): its kept prefill tokens, then every token decoded since (all layers keep those)."""
        mask = kwargs.get("attention_mask")
        if not isinstance(mask, torch.Tensor):
            return None
        total = mask.shape[-1]  # = layer 0's prefill entries + decoded tokens
        kept = state.layer_kept[i]
        start = state.prefill_len
        if state.cache0 is not None:  # layer 0 holds fewer prefill tokens: the mask's columns are its entries
            kept, start = (torch.searchsorted(state.cache0.to(kept.device).contiguous(), kept.contiguous()),
                           state.cache0.shape[1])
        decoded = torch.arange(start, total, device=kept.device).expand(kept.shape[0], -1)
        return torch.cat([kept, decoded], 1)

    @staticmethod
    def _slice_kwargs(kwargs, queries, keys):
        if queries is not None:
            cos, sin = kwargs["position_embeddings"]
            b = queries.shape[0]
            idx = queries.to(cos.device)
            kwargs["position_embeddings"] = (take_tokens(cos.expand(b, -1, -1), idx),
                                             take_tokens(sin.expand(b, -1, -1), idx))
            pos = kwargs.get("position_ids")
            if isinstance(pos, torch.Tensor):
                q = queries.to(pos.device)
                if pos.dim() == 3:  # Qwen2-VL multi-axis positions [axes, B, N]
                    kwargs["position_ids"] = pos.expand(-1, q.shape[0], -1).gather(2, q.unsqueeze(0).expand(pos.shape[0], -1, -1))
                else:
                    kwargs["position_ids"] = pos.expand(q.shape[0], -1).gather(1, q)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and keys is not None:
            keys = keys.to(mask.device)
            queries = queries.to(mask.device) if queries is not None else None
            b = keys.shape[0]
            mask = mask.expand(b, -1, -1, -1)
            if queries is not None:
                mask = mask.gather(2, queries[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[3]))
            mask = mask.gather(3, keys[:, None, None, :].expand(-1, mask.shape[1], mask.shape[2], -1))
            kwargs["attention_mask"] = mask
        return kwargs
