"""Decoder layers run compiled (`torch.compile`) or as captured CUDA graphs, static shapes per input layout
(`model.compile`, issue #23's launch-bound tail).

After pruning, every decoder layer sees a fixed number of tokens for a given input layout (frames, tokens per
frame, prompt length, merger, pruner), so each layer's shapes are fixed per layout: a graph compiled or
captured for them is reused by every later sample of that layout. The pruning hook (aim.pruning.hooks) works
through forward pre-hooks on the decoder layers and on their attention modules; a hook traced into a
compiled graph would be frozen there (the hooks are new closures for every prefill). So what is compiled is
the `forward` of each *child* of every decoder layer (attention, MLP, the two RMSNorms): `module.__call__`
stays eager and runs the hooks (the token selection, the importance scoring) as before, then calls the
compiled body. The residual additions between the children stay eager.

Modes (`COMPILE_MODES`):
- `none`: eager, as before.
- `default`: `torch.compile(forward, dynamic=False)` (inductor): one graph per distinct input shape,
  cached by dynamo; a second prefill of the same layout compiles nothing. CPU and GPU.
- `reduce-overhead`: the same with `mode="reduce-overhead"`: inductor's graphs replayed as CUDA graphs
  (cudagraph trees). CUDA only.
- `cuda_graphs`: no compiler: each child's eager forward captured once per input signature (shapes,
  dtypes, strides of its tensor arguments, the values of the others) in a `torch.cuda.CUDAGraph`,
  then replayed after copying the call's tensors into the captured inputs. CUDA only.
A call with a KV cache (`cache` / `past_key_values` given: the attention in the prefill of `generate` and in
every decoding step, whose cache grows) runs eagerly in every mode, as does any call under `torch.jit.trace`
(fvcore's FLOP count): the attention runs compiled in cache-free prefills (`prefill_logits`, aim.bench, letter
and likelihood scoring); the norms and MLPs, which hold no cache, in every call (a decoding step's [B, 1, D]
is one more static shape).
"""
from __future__ import annotations

import time

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

COMPILE_MODES = ("none", "default", "reduce-overhead", "cuda_graphs")
CUDA_ONLY = ("reduce-overhead", "cuda_graphs")
# dynamo keeps one cache entry per input shape and code object (every layer's attention shares one code
# object): a layout pruned over 8 layers alone needs ~10 shapes, several layouts more than the default 8
RECOMPILE_LIMIT = 1024


def check_compile(mode: str, device: str) -> None:
    """ValueError naming the field unless `mode` is one of COMPILE_MODES and runs on `device`."""
    from aim.checks import check_choice

    check_choice("compile", mode, COMPILE_MODES)
    if mode in CUDA_ONLY and not str(device).startswith("cuda"):
        raise ValueError(f"compile: {mode!r} replays CUDA graphs and needs a CUDA device (model.device=cuda), got "
                         f"device {device!r}; on a CPU choose one of: none, default")


def _uses_cache(kwargs) -> bool:
    return kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None


class CompiledForward:
    """A module's forward, compiled per input shape (`default`, `reduce-overhead`); eager with a KV cache or
    under tracing. Dynamo's own cache holds the graphs (per code object and shapes, guarded)."""

    def __init__(self, forward, mode: str, backend: str = "inductor"):
        self.eager = forward
        options = {} if mode == "default" else {"mode": mode}
        self.compiled = torch.compile(forward, dynamic=False, backend=backend, **options)

    def __call__(self, *args, **kwargs):
        if _uses_cache(kwargs) or torch.jit.is_tracing():
            return self.eager(*args, **kwargs)
        return self.compiled(*args, **kwargs)


def _signature(args, kwargs):
    """(hashable key, tensor leaves, tree spec) of a call: each tensor by shape, dtype, device and strides,
    every other leaf by its value (its repr when unhashable)."""
    leaves, spec = tree_flatten((args, kwargs))
    key, tensors = [], []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            tensors.append(leaf)
            key.append(("tensor", tuple(leaf.shape), leaf.dtype, str(leaf.device), leaf.stride()))
        else:
            try:
                hash(leaf)
                key.append(leaf)
            except TypeError:
                key.append(repr(leaf))
    return (str(spec), tuple(key)), tensors, (leaves, spec)


class GraphedForward:
    """A module's eager forward captured as one CUDA graph per input signature and replayed (`cuda_graphs`).

    Capture (first call of a signature): the call's tensors are copied into static inputs, the forward runs
    twice on a side stream (warm-up: lazy initialisations, cuBLAS workspaces), then once under
    `torch.cuda.graph`; all graphs of a model share one memory pool (they run one after another on one
    stream). Replay: the call's tensors are copied into the static inputs, the graph replays, and its static
    outputs are returned. They are overwritten by the next replay of the same graph (the same child at the
    same shapes), so a caller must use them before then: the decoder layers do (the residual addition, or
    the next child's input copy, comes right after).
    """

    def __init__(self, forward, pool=None):
        self.eager = forward
        self.pool = pool
        self.graphs: dict = {}
        self.capture_s = 0.0

    def __call__(self, *args, **kwargs):
        if _uses_cache(kwargs) or torch.jit.is_tracing() or torch.is_grad_enabled():
            return self.eager(*args, **kwargs)
        key, tensors, (leaves, spec) = _signature(args, kwargs)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(leaves, spec)
        static_in, graph, static_out = entry
        for dst, src in zip(static_in, tensors):
            dst.copy_(src)
        graph.replay()
        return static_out

    def _capture(self, leaves, spec):
        start = time.perf_counter()
        static_in = [t.clone() if isinstance(t, torch.Tensor) else t for t in leaves]
        args, kwargs = tree_unflatten(static_in, spec)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.eager(*args, **kwargs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.eager(*args, **kwargs)
        torch.cuda.synchronize()
        self.capture_s += time.perf_counter() - start
        return [t for t in static_in if isinstance(t, torch.Tensor)], graph, out


def compile_decoder_layers(decoder_layers, mode: str, backend: str = "inductor") -> list:
    """Replace the forward of every child of every decoder layer by its compiled (`CompiledForward`) or
    graphed (`GraphedForward`) version; returns the wrappers. `backend`: torch.compile's (tests use
    "aot_eager", which traces like inductor without generating code). Idempotent per module: a child
    already wrapped is left as it is."""
    if mode == "none":
        return []
    if mode not in COMPILE_MODES:
        check_compile(mode, "cuda")  # raises, naming the allowed modes
    import torch._dynamo

    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, RECOMPILE_LIMIT)
    cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, RECOMPILE_LIMIT)
    pool = torch.cuda.graph_pool_handle() if mode == "cuda_graphs" else None
    wrappers = []
    for layer in decoder_layers:
        for child in layer.children():
            if isinstance(child.forward, (CompiledForward, GraphedForward)):
                continue
            wrapped = GraphedForward(child.forward, pool) if mode == "cuda_graphs" else \
                CompiledForward(child.forward, mode, backend)
            child.forward = wrapped  # an instance attribute: nn.Module.__call__ runs the hooks, then this
            wrappers.append(wrapped)
    return wrappers


def restore_decoder_layers(decoder_layers) -> int:
    """Undo `compile_decoder_layers`: every child's own forward again (dynamo's caches cleared). Returns how many
    children were restored."""
    restored = 0
    for layer in decoder_layers:
        for child in layer.children():
            if isinstance(child.__dict__.get("forward"), (CompiledForward, GraphedForward)):
                del child.forward
                restored += 1
    if restored:
        import torch._dynamo

        torch._dynamo.reset()
    return restored
