"""Token pruners inside the LLM: a retention schedule plus an importance score, applied by the one hook
in `aim.pruning.hooks` that physically removes tokens.

A pruner exposes `retention_schedule(num_layers) -> list[float]` (the fraction of the original visual
tokens each decoder layer sees) and `importance(q, k, valid) -> [B, n]` (from the queries and keys of
the layer before a drop; higher is kept first; `valid` [B, n] is False at the pad tokens of a padded
batch, None when nothing is padded). Text tokens are never pruned. A pruner that can be configured to prune
nothing on a given LLM also names, in `pruning_values(num_layers) -> (field, values)`, the field and the
values that would prune there: a run whose pruner removes nothing fails validation (`check_removes_tokens`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from aim.checks import ConfigError, check_range
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
    retention schedule falls below 1 somewhere. The one test of "does this setting prune at all"."""
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


@dataclass
class NoPruneConfig:
    name: str = "none"


@PRUNERS.register("none", config=NoPruneConfig)
class NoPrune:
    """Every decoder layer sees every visual token."""

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
    block_mib: int = 1024  # memory for one block of heads' fp32 N x N attention when scoring (two exist at once)

    def __post_init__(self):
        check_range("l1", self.l1, 1)
        if self.l2 <= self.l1:
            raise ValueError(f"l2: must be greater than l1 ({self.l1}), got {self.l2}")
        check_range("tau", self.tau, 0, low_open=True)
        check_range("iters", self.iters, 1)
        check_range("block_mib", self.block_mib, 1)


@PRUNERS.register("aim", config=AimPrunerConfig)
class AimPruner:
    """AIM: PageRank importance over the layer's attention, linear retention from l1 down to 0 at l2."""

    def __init__(self, l1=14, l2=22, tau=0.1, iters=5, block_mib=1024, name="aim"):
        self.l1, self.l2, self.tau, self.iters, self.block_mib = l1, l2, tau, iters, block_mib

    def retention_schedule(self, num_layers):
        return sched.aim_schedule(num_layers, self.l1, self.l2)

    def pruning_values(self, num_layers):
        return "l1", f"l1 in 1..{num_layers - 1} (layers >= l1 lose visual tokens) and l2 > l1"

    def importance(self, q, k, valid):
        return imp.pagerank_from_qk(q, k, self.tau, self.iters, self.block_mib, valid=valid)


@dataclass
class FastVConfig:
    name: str = "fastv"
    k: int = 2  # prune before layer k, from layer k-1's attention
    keep: float = 0.5  # fraction of visual tokens kept from layer k on

    def __post_init__(self):
        check_range("k", self.k, 1)
        check_range("keep", self.keep, 0, 1)


@PRUNERS.register("fastv", config=FastVConfig)
class FastVPruner:
    """FastV: at layer k keep the visual tokens the last token attends to most."""

    def __init__(self, k=2, keep=0.5, name="fastv"):
        self.k, self.keep = k, keep

    def retention_schedule(self, num_layers):
        return sched.fastv_schedule(num_layers, self.k, self.keep)

    def pruning_values(self, num_layers):
        return ("keep", "keep < 1") if self.keep >= 1 else ("k", f"k in 1..{num_layers - 1}")

    def importance(self, q, k, valid):
        return imp.query_attention(q, k, -1, valid=valid)


@dataclass
class DartConfig:
    name: str = "dart"
    k: int = 2  # prune before layer k, from layer k-1's keys and the hidden states layer k receives
    keep: float = 0.222  # fraction of visual tokens kept from layer k on (the paper: 128 of 576)
    pivot_image: int = 4  # visual pivots: the largest key L1 norms
    pivot_text: int = 4  # question-token pivots: the largest key L1 norms

    def __post_init__(self):
        check_range("k", self.k, 1)
        check_range("keep", self.keep, 0, 1)
        check_range("pivot_image", self.pivot_image, 1)
        check_range("pivot_text", self.pivot_text, 0)


@PRUNERS.register("dart", config=DartConfig)
class DartPruner:
    """DART: at layer k keep the visual tokens least duplicated with a few pivot tokens (cosine similarity
    of hidden states), no attention weights needed (aim.pruning.duplication)."""

    needs = ("roles", "count", "hidden")

    def __init__(self, k=2, keep=0.222, pivot_image=4, pivot_text=4, name="dart"):
        self.k, self.keep, self.pivot_image, self.pivot_text = k, keep, pivot_image, pivot_text

    def retention_schedule(self, num_layers):
        return sched.fastv_schedule(num_layers, self.k, self.keep)

    def pruning_values(self, num_layers):
        return ("keep", "keep < 1") if self.keep >= 1 else ("k", f"k in 1..{num_layers - 1}")

    def importance(self, q, k, valid, roles, count, hidden):
        return dart_scores(hidden, k, roles, count, self.pivot_image, self.pivot_text)


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
    prompt token in these prompts)."""

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
class VTWPruner:
    def __init__(self, k=14, name="vtw"):
        self.k = k

    def retention_schedule(self, num_layers):
        return sched.vtw_schedule(num_layers, self.k)

    def pruning_values(self, num_layers):
        return "k", f"k in 1..{num_layers - 1}"

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
    """The AIM schedule with uniformly random choices: the control for the importance score."""

    # its draws depend on how many rows and tokens a prefill holds: the evaluation loop prefills its samples
    # one at a time (eval.batch_size does not batch them), so a run's choices do not depend on batching
    batch_invariant = False

    def __init__(self, l1=14, l2=22, seed=0, name="random"):
        self.l1, self.l2 = l1, l2
        self.generator = torch.Generator().manual_seed(seed)

    def retention_schedule(self, num_layers):
        return sched.aim_schedule(num_layers, self.l1, self.l2)

    def pruning_values(self, num_layers):
        return "l1", f"l1 in 1..{num_layers - 1} (layers >= l1 lose visual tokens) and l2 > l1"

    def importance(self, q, k, valid):
        return torch.rand(q.shape[0], q.shape[2], generator=self.generator).to(q.device)
