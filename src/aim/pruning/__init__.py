"""Token pruners inside the LLM: a retention schedule plus an importance score, applied by the one hook
in `aim.pruning.hooks` that physically removes tokens.

A pruner exposes `retention_schedule(num_layers) -> list[float]` (the fraction of the original visual
tokens each decoder layer sees) and `importance(q, k, valid) -> [B, n]` (from the queries and keys of
the layer before a drop; higher is kept first; `valid` [B, n] is False at the pad tokens of a padded
batch, None when nothing is padded). Text tokens are never pruned. A pruner that can be configured to prune
nothing on a given LLM also names, in `pruning_values(num_layers) -> (field, values)`, the field and the
values that would prune there: a run whose pruner removes nothing fails validation (`check_removes_tokens`).
The pruners that prune once, before one layer k to a fraction kept (FastV, DART, HoliTom, PruneVid, VTW),
share that schedule and its checks (`PruneOnce`, `PruneOnceConfig`) and differ only in their score.

Budget mode (aim.budget) tunes a pruner only through what its class declares: `budget_knobs`, the config
fields it may set, and the classmethod `budget_candidates(fields, num_layers) -> BudgetMoves` (knob values that
prune nothing, the policy's path from mild to strong pruning, the whole grid), `fields` being the configured
ones (knobs it does not move keep their values). Budget mode costs the LLM prefill only (aim.efficiency.cost:
the tokens each layer sees under `retention_schedule`), so a knob is one that moves that schedule: PruneVid's
`layer` and `alpha` are (its merger's `ratio` is budgeted as every merger's; segment_share, threshold and k do
not change the count the cost model sees). A pruner that acts only while decoding (`acts_while = "decoding"`,
DyCoke: its prefill keeps every visual token) is refused by budget mode, saying so, whatever it declares; a
pruner without knobs (a plugin's that declares none) is refused with its name; a plugin pruner that declares
them is tuned like AIM.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from aim.checks import ConfigError, check_choice, check_range
from aim.pruning import importance as imp
from aim.pruning.duplication import dart_scores
from aim.pruning import schedule as sched
from aim.registry import Registry

PRUNERS = Registry("pruner")


def first_pruned_layer(pruner, num_layers: int) -> int | None:
    """The first decoder layer at which a pruner's schedule removes visual tokens (None: it removes none)."""
    return next((i for i, r in enumerate(pruner.retention_schedule(num_layers)) if r < 1.0), None)


def removes_tokens(pruner, num_layers: int) -> bool:
    """Whether a pruner removes visual tokens at some decoder layer of an LLM of `num_layers` layers: its
    retention schedule falls below 1 somewhere, or it removes visual KV entries while decoding
    (`decode_removes`, DyCoke). The one test of "does this setting prune at all"."""
    if hasattr(pruner, "decode_removes") and pruner.decode_removes(num_layers):
        return True
    return first_pruned_layer(pruner, num_layers) is not None


def check_removes_tokens(name: str, fields: dict, num_layers: int, model: str) -> None:
    """ConfigError for a configured pruner that removes no visual token on this LLM (e.g. the paper's
    l1=14, l2=22 on a 4-layer model), naming the field, the layer count and the values that would prune.
    `pruner=none` is how to prune nothing on purpose."""
    if name == "none":
        return
    pruner = PRUNERS.build(name, **fields)
    if removes_tokens(pruner, num_layers):
        return
    field_name, prunes = (pruner.pruning_values(num_layers) if hasattr(pruner, "pruning_values")
                          else ("name", "a retention schedule below 1 at some layer"))
    values = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "name")
    raise ConfigError(f"pruner.{field_name}: pruner {name} ({values}) removes no visual token on {model}, whose LLM "
                      f"has {num_layers} decoder layers (0..{num_layers - 1}); it prunes with {prunes}; "
                      "pruner=none prunes nothing on purpose")


def check_prunes_from(name: str, fields: dict, num_layers: int, first: int, why: str, model: str) -> None:
    """ConfigError for a pruner whose schedule removes visual tokens before decoder layer `first`, the first a
    model can prune at (`why` says why: Qwen3-VL's DeepStack adds to the visual tokens after its first
    layers), naming the field and the layers."""
    if name == "none":
        return
    pruner = PRUNERS.build(name, **fields)
    pruned = first_pruned_layer(pruner, num_layers)
    if pruned is None or pruned >= first:
        return
    field_name = pruner.pruning_values(num_layers)[0] if hasattr(pruner, "pruning_values") else "name"
    values = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "name")
    raise ConfigError(f"pruner.{field_name}: pruner {name} ({values}) prunes from decoder layer {pruned}, and {model} "
                      f"can prune from layer {first} on: {why}; start pruning at layer {first} or later, or use pruner=none")


class BudgetMoves(NamedTuple):
    """A pruner's candidate knob values for budget mode (`budget_candidates`), each a dict of its `budget_knobs`."""

    no_pruning: dict  # values that remove nothing: the policy's merge-only stage (budget mode labels it pruner none)
    path: list[dict]  # the policy's pruning path, mildest first: each step removes tokens and adds none
    grid: list[dict]  # every value the fallback search costs when no step of the policy fits


def budget_window(num_layers: int) -> int:
    """The budget policy's pruning window l2 - l1 of the linear schedule: the paper's 8 of 28 layers, scaled
    (w = ceil(2L/7); 4 layers: 2)."""
    return max(1, math.ceil(2 * num_layers / 7))


def window_moves(num_layers: int) -> BudgetMoves:
    """The linear schedule's (l1, l2) candidates (AIM, random): no pruning is l1 = L (layers >= l1 are pruned;
    there are none); the path slides a window of w = `budget_window(L)` layers earlier, l1 = L-1 ... 1, then
    narrows it at l1 = 1 down to l2 = 2; the grid is every 1 <= l1 < l2 <= L + w."""
    L, w = num_layers, budget_window(num_layers)
    path = [{"l1": l1, "l2": l1 + w} for l1 in range(L - 1, 0, -1)]
    path += [{"l1": 1, "l2": l2} for l2 in range(w, 1, -1)]
    grid = [{"l1": L, "l2": L + 1}] + [{"l1": l1, "l2": l2} for l1 in range(1, L) for l2 in range(l1 + 1, L + w + 1)]
    return BudgetMoves({"l1": L, "l2": L + 1}, path, grid)


@dataclass
class NoPruneConfig:
    name: str = "none"


@PRUNERS.register("none", config=NoPruneConfig)
class NoPrune:
    """Every decoder layer sees every visual token."""

    budget_knobs = ()

    @classmethod
    def budget_candidates(cls, fields: dict, num_layers: int) -> BudgetMoves:
        return BudgetMoves({}, [], [{}])

    def __init__(self, name: str = "none"):
        self.name = name

    def retention_schedule(self, num_layers: int) -> list[float]:
        return [1.0] * num_layers


@dataclass
class AimPrunerConfig:
    name: str = "aim"
    l1: int = 14  # layers 0..l1-1 see every visual token
    l2: int = 22  # layers >= l2 see none
    tau: float = 0.1  # softmax temperature of the PageRank transition matrix
    iters: int = 5
    block_mib: int = 1024  # memory for one block of fp32 logits when scoring on the PyTorch paths
    # how PageRank is computed (the same scores): auto = on CUDA the Triton kernel (blockwise without triton),
    # on a CPU dense where one head's N x N fits in block_mib, else blockwise; or triton | blockwise | dense
    backend: str = "auto"

    def __post_init__(self):
        check_range("l1", self.l1, 1)
        if self.l2 <= self.l1:
            raise ValueError(f"l2: must be greater than l1 ({self.l1}), got {self.l2}")
        check_range("tau", self.tau, 0, low_open=True)
        check_range("iters", self.iters, 1)
        check_range("block_mib", self.block_mib, 1)
        check_choice("backend", self.backend, imp.PAGERANK_BACKENDS)
        if self.backend == "triton" and not imp.triton_available():
            raise ConfigError("pruner.backend: triton needs the `triton` package (pip install triton, with a CUDA "
                              "GPU); backend=auto uses it where it is installed, else the PyTorch paths")


@PRUNERS.register("aim", config=AimPrunerConfig)
class AimPruner:
    """AIM: PageRank importance over the layer's attention, linear retention from l1 down to 0 at l2.
    Budget mode moves l1 and l2 (`window_moves`)."""

    budget_knobs = ("l1", "l2")

    @classmethod
    def budget_candidates(cls, fields: dict, num_layers: int) -> BudgetMoves:
        return window_moves(num_layers)

    def __init__(self, l1=14, l2=22, tau=0.1, iters=5, block_mib=1024, backend="auto", name="aim"):
        self.l1, self.l2, self.tau, self.iters, self.block_mib = l1, l2, tau, iters, block_mib
        self.backend = backend

    def retention_schedule(self, num_layers):
        return sched.aim_schedule(num_layers, self.l1, self.l2)

    def pruning_values(self, num_layers):
        return "l1", f"l1 in 1..{num_layers - 1} (layers >= l1 lose visual tokens) and l2 > l1"

    def importance(self, q, k, valid):
        return imp.pagerank_from_qk(q, k, self.tau, self.iters, self.block_mib, valid=valid, backend=self.backend)


@dataclass
class PruneOnceConfig:
    """The fields of a pruner that prunes once (`PruneOnce`): the layer k it prunes before, the fraction kept."""
    name: str
    k: int  # prune before layer k, chosen from layer k-1
    keep: float  # fraction of visual tokens kept from layer k on

    def __post_init__(self):
        check_range("k", self.k, 1)
        check_range("keep", self.keep, 0, 1)


class PruneOnce:
    """Prune once, before layer k, to a fraction `keep`: layers 0..k-1 see every visual token, layers >= k the
    floor(keep V) chosen by the importance computed in layer k - 1 (schedule.fastv_schedule). FastV, DART,
    HoliTom, PruneVid and VTW (nothing kept) are this with their own score (`importance`). A subclass whose
    config names the two values otherwise (PruneVid: `layer`, the layer that selects, and `alpha`) says so in
    `layer_field`, `keep_field` and `layer_offset` (the first pruned layer = its layer field + layer_offset),
    so that `pruning_values` and `budget_candidates` name its own fields."""

    layer_field, keep_field, layer_offset = "k", "keep", 0
    # the fractions kept that budget mode tries (a subclass that declares `budget_knobs` = (layer, keep) fields)
    budget_keeps = (1.0, 0.75, 0.5, 0.375, 0.25, 0.2, 0.15, 0.1, 0.05, 0.0)

    @classmethod
    def budget_candidates(cls, fields: dict, num_layers: int) -> BudgetMoves:
        """The first pruned layer f and the fraction kept, written as the config's fields (the layer field is
        f - `layer_offset`: FastV's k = f, PruneVid's layer = f - 1): no pruning is f = L; the path moves f
        earlier at the configured keep, L-1 ... 1, then lowers keep at f = 1 through `budget_keeps`; the grid is
        every f in 1..L with every keep (and the configured one)."""
        L, at, kept, off = num_layers, cls.layer_field, cls.keep_field, cls.layer_offset
        keep = fields[kept]
        path = [{at: f - off, kept: keep} for f in range(L - 1, 0, -1)]
        path += [{at: 1 - off, kept: x} for x in cls.budget_keeps if x < keep]
        keeps = sorted(set(cls.budget_keeps) | {keep}, reverse=True)
        grid = [{at: f - off, kept: x} for f in range(1, L + 1) for x in keeps]
        return BudgetMoves({at: L - off, kept: keep}, path, grid)

    def retention_schedule(self, num_layers):
        first = getattr(self, self.layer_field) + self.layer_offset
        return sched.fastv_schedule(num_layers, first, getattr(self, self.keep_field))

    def pruning_values(self, num_layers):
        if getattr(self, self.keep_field) >= 1:
            return self.keep_field, f"{self.keep_field} < 1"
        low, high = 1 - self.layer_offset, num_layers - 1 - self.layer_offset  # the first pruned layer in 1..L-1
        return self.layer_field, f"{self.layer_field} in {low}..{high}"


@dataclass
class FastVConfig(PruneOnceConfig):
    name: str = "fastv"
    k: int = 2  # prune before layer k, from layer k-1's attention
    keep: float = 0.5  # fraction of visual tokens kept from layer k on


@PRUNERS.register("fastv", config=FastVConfig)
class FastVPruner(PruneOnce):
    """FastV: at layer k keep the visual tokens the last token attends to most. Budget mode moves k and keep
    (`PruneOnce.budget_candidates`)."""

    budget_knobs = ("k", "keep")

    def __init__(self, k=2, keep=0.5, name="fastv"):
        self.k, self.keep = k, keep

    def importance(self, q, k, valid):
        return imp.query_attention(q, k, -1, valid=valid)


@dataclass
class DartConfig(PruneOnceConfig):
    name: str = "dart"
    k: int = 2  # prune before layer k, from layer k-1's keys and the hidden states layer k receives
    keep: float = 0.222  # fraction of visual tokens kept from layer k on (the paper: 128 of 576)
    pivot_image: int = 4  # visual pivots: the largest key L1 norms
    pivot_text: int = 4  # question-token pivots: the largest key L1 norms

    def __post_init__(self):
        super().__post_init__()
        check_range("pivot_image", self.pivot_image, 1)
        check_range("pivot_text", self.pivot_text, 0)


@PRUNERS.register("dart", config=DartConfig)
class DartPruner(PruneOnce):
    """DART: at layer k keep the visual tokens least duplicated with a few pivot tokens (cosine similarity
    of hidden states), no attention weights needed (aim.pruning.duplication). Budget mode moves k and keep."""

    budget_knobs = ("k", "keep")

    needs = ("roles", "count", "hidden")

    def __init__(self, k=2, keep=0.222, pivot_image=4, pivot_text=4, name="dart"):
        self.k, self.keep, self.pivot_image, self.pivot_text = k, keep, pivot_image, pivot_text

    def importance(self, q, k, valid, roles, count, hidden):
        return dart_scores(hidden, k, roles, count, self.pivot_image, self.pivot_text)


@dataclass
class HoliTomPrunerConfig(FastVConfig):
    name: str = "holitom"
    k: int = 18  # merge before layer k, ranked by the last token's attention in layer k-1 (the paper: K = 18)
    keep: float = 0.5  # fraction of visual tokens kept from layer k on, 1 - R (the paper: R = 0.5)


@PRUNERS.register("holitom", config=HoliTomPrunerConfig)
class HoliTomPruner(FastVPruner):
    """HoliTom's inner-LLM merging (Shao et al., NeurIPS 2025): at layer K the visual tokens the last
    token attends to most in layer K - 1 (head-averaged, as FastV) are kept, floor(keep N) of the N visual
    tokens; each of the others is merged into the kept visual token whose hidden state (entering layer K) is
    the most cosine-similar, a kept token with n of them becoming the mean of the n + 1 hidden states
    (the hook's `merge_dropped`). The merged tokens keep their own positions. The official scripts' values on
    LLaVA-OneVision-7B (28 layers): K = 18, R = 0.5 (keep = 1 - R); the official code keeps round(N (1 - R))
    and merges in sequence, h_kept <- (h_kept + h_dropped) / 2 per dropped token, which weights later tokens
    more than the paper's average. Its cost beyond FastV's: the cosines of the dropped and kept visual tokens,
    (N - K) K D multiply-adds (counted by fvcore as importance FLOPs)."""

    merge_dropped = True  # FastV's schedule and choice; the hook merges what FastV would drop

    def __init__(self, k=18, keep=0.5, name="holitom"):
        super().__init__(k, keep, name)


@dataclass
class PDropConfig:
    name: str = "pdrop"
    boundaries: list[int] | None = None  # default: four equal stages of the LLM
    lam: float = 0.5  # visual tokens shrink by this factor at each boundary

    def __post_init__(self):
        check_range("lam", self.lam, 0, 1)
        if self.boundaries is not None and (not self.boundaries or min(self.boundaries) < 1):
            raise ValueError(f"boundaries: layer indices >= 1, got {self.boundaries}")


@PRUNERS.register("pdrop", config=PDropConfig)
class PDropPruner:
    """PyramidDrop: stage-wise shrinking, ranked by the last instruction token's attention (the last
    prompt token in these prompts). Budget mode moves lam and the boundaries (`budget_candidates`)."""

    budget_knobs = ("boundaries", "lam")
    budget_lams = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)  # the shrink factors budget mode tries
    budget_stages = (2, 3, 4, 5, 6, 7, 8)  # and equal stages of the LLM, as PDrop's default 4

    @classmethod
    def budget_candidates(cls, fields: dict, num_layers: int) -> BudgetMoves:
        """No pruning is lam 1; the path lowers lam at the configured boundaries; the grid is the configured
        and 2..8 equal stages (distinct, non-empty) with every lam of `budget_lams`."""
        L, b = num_layers, fields["boundaries"]
        path = [{"boundaries": b, "lam": lam} for lam in cls.budget_lams if lam < 1.0]
        splits = [b] + [sorted({L * s // n for s in range(1, n)} - {0}) for n in cls.budget_stages]
        splits = [s for i, s in enumerate(splits) if s not in splits[:i] and s != []]
        grid = [{"boundaries": s, "lam": lam} for s in splits for lam in cls.budget_lams]
        return BudgetMoves({"boundaries": b, "lam": 1.0}, path, grid)

    def __init__(self, boundaries=None, lam=0.5, name="pdrop"):
        self.boundaries, self.lam = boundaries, lam

    def retention_schedule(self, num_layers):
        return sched.pdrop_schedule(num_layers, self.boundaries, self.lam)

    def pruning_values(self, num_layers):
        return ("lam", "lam < 1") if self.lam >= 1 else ("boundaries", f"a boundary in 1..{num_layers - 1}")

    def importance(self, q, k, valid):
        return imp.query_attention(q, k, -1, valid=valid)


@dataclass
class VTWConfig:
    name: str = "vtw"
    k: int = 14  # every visual token withdrawn from layer k on

    def __post_init__(self):
        check_range("k", self.k, 1)


@PRUNERS.register("vtw", config=VTWConfig)
class VTWPruner(PruneOnce):
    """Visual Tokens Withdrawal: pruning once at layer k with nothing kept. Budget mode moves k: no pruning is
    k = L, the path k = L-1 ... 1, the grid k in 1..L."""

    keep = 0.0  # every visual token withdrawn from layer k on
    budget_knobs = ("k",)

    @classmethod
    def budget_candidates(cls, fields: dict, num_layers: int) -> BudgetMoves:
        L = num_layers
        return BudgetMoves({"k": L}, [{"k": k} for k in range(L - 1, 0, -1)], [{"k": k} for k in range(1, L + 1)])

    def __init__(self, k=14, name="vtw"):
        self.k = k

    def importance(self, q, k, valid):  # all visual tokens go at once: any score will do
        return torch.zeros(q.shape[0], q.shape[2], device=q.device)


@dataclass
class RandomPrunerConfig:
    name: str = "random"
    l1: int = 14
    l2: int = 22
    seed: int = 0

    def __post_init__(self):
        check_range("l1", self.l1, 1)
        if self.l2 <= self.l1:
            raise ValueError(f"l2: must be greater than l1 ({self.l1}), got {self.l2}")


@PRUNERS.register("random", config=RandomPrunerConfig)
class RandomPruner:
    """The AIM schedule with uniformly random choices: the control for the importance score. Budget mode
    moves l1 and l2 as for AIM (`window_moves`)."""

    budget_knobs = ("l1", "l2")

    @classmethod
    def budget_candidates(cls, fields: dict, num_layers: int) -> BudgetMoves:
        return window_moves(num_layers)

    # its draws depend on how many rows and tokens a prefill holds: the evaluation loop prefills its samples
    # one at a time (eval.batch_size does not batch them; aim.run refuses eval.batch_size > 1 beside it, as
    # unread: aim.config.UNREAD_KNOBS), so a run's choices do not depend on batching
    batch_invariant = False

    def __init__(self, l1=14, l2=22, seed=0, name="random"):
        self.l1, self.l2 = l1, l2
        self.generator = torch.Generator().manual_seed(seed)

    def retention_schedule(self, num_layers):
        return sched.aim_schedule(num_layers, self.l1, self.l2)

    def pruning_values(self, num_layers):
        return "l1", f"l1 in 1..{num_layers - 1} (layers >= l1 lose visual tokens) and l2 > l1"

    def importance(self, q, k, valid):
        # drawn on the host's generator (the same draws on any device), then moved to the layer's
        return torch.rand(q.shape[0], q.shape[2], generator=self.generator, device=self.generator.device).to(q.device)


@dataclass
class DycokePrunerConfig:
    name: str = "dycoke"
    layer: int = 3  # layers >= layer attend to the kept visual KV entries, chosen by layer - 1's attention
    p: float = 0.7  # fraction of the visual KV entries left out at each pruned decoding step
    similarity: float = 0.9  # re-select when cos(a_s, a_{s-1}) < similarity; else the step attends to all (official)

    def __post_init__(self):
        check_range("layer", self.layer, 1)
        check_range("p", self.p, 0, 1, high_open=True)
        check_range("similarity", self.similarity, -1)


@PRUNERS.register("dycoke", config=DycokePrunerConfig)
class DycokePruner:
    """DyCoke's dynamic KV-cache pruning while decoding (aim.pruning.decoding): at each decoding step the
    token's attention in layer `layer` - 1 keeps the top (1 - p) visual KV entries for layers >= `layer`,
    re-decided per step. The prefill is unchanged (its schedule keeps everything); needs eval.mode=generate.
    Budget mode refuses it (aim.budget.settings.budgeted_pruner): its knobs move decoding's KV reads, which the
    prefill cost model does not count, so no value of them changes a budget's cost."""

    acts_while = "decoding"

    def __init__(self, layer=3, p=0.7, similarity=0.9, name="dycoke"):
        self.layer, self.p, self.similarity = layer, p, similarity

    def retention_schedule(self, num_layers):
        return [1.0] * num_layers

    def decode_removes(self, num_layers):
        return self.p > 0 and self.layer < num_layers

    def pruning_values(self, num_layers):
        return ("p", "p > 0") if self.p <= 0 else ("layer", f"layer in 1..{num_layers - 1}")

    def decoding(self, decoder_layers):
        from aim.pruning.decoding import DecodeKVPruning

        return DecodeKVPruning(decoder_layers, self.layer, self.p, self.similarity)


@dataclass
class PruneVidPrunerConfig:
    name: str = "prunevid"
    layer: int = 10  # the layer whose question-to-video attention selects; layers > layer see the kept tokens
    alpha: float = 0.4  # fraction of the visual tokens kept

    def __post_init__(self):
        check_range("layer", self.layer, 0)
        check_range("alpha", self.alpha, 0, 1)


@PRUNERS.register("prunevid", config=PruneVidPrunerConfig)
class PruneVidPruner(PruneOnce):
    """PruneVid's question-guided selection inside the LLM (Huang et al., ACL Findings 2025, Sec. 3.2; details
    from the official code, Visual-AI/PruneVid, models/pllava/elastic_cache.py and llama.py). In layer
    `layer` (official selected_layer = 10 of PLLaVA-7B's 32), with A_h the causal attention of head h,

        s_j = max_h max_{t in question} A_h[t, j]        for every visual token j,

    the floor(alpha V) visual tokens of highest s_j are kept (alpha = 0.4, the official evaluation scripts;
    its config's default is 0.1), and the rest leave the sequence from layer `layer` + 1 on and the KV caches
    of layers 0..`layer` too (`prunes_cache_before`): decoding attends to the kept video tokens at every layer,
    as the official code slices the caches of the layers up to the selected one. The question tokens are
    the prompt after the visual tokens (QUESTION_TEXT), as the official code takes every token after the video.
    One deviation: the official code keeps floor(alpha n) in each of its merged groups (a segment's static
    tokens, each frame's dynamic ones), which the LLM's token roles do not carry; here the top floor(alpha V)
    of the whole clip. `merger=prunevid pruner=prunevid` is the whole method.

    Budget mode moves `layer` and `alpha` (`PruneOnce.budget_candidates`, the first pruned layer being
    `layer` + 1): selecting earlier or keeping less leaves fewer tokens in the layers after `layer`. Slicing
    the caches of layers 0..`layer` saves only decoding's reads, which the prefill cost does not count."""

    needs = ("roles",)
    prunes_cache_before = True
    layer_field, keep_field, layer_offset = "layer", "alpha", 1  # layers > `layer` see floor(alpha V)
    budget_knobs = ("layer", "alpha")

    def __init__(self, layer=10, alpha=0.4, name="prunevid"):
        self.layer, self.alpha = layer, alpha

    def importance(self, q, k, valid, roles):
        return imp.question_attention_max(q, k, roles, valid)
