"""What a setting costs and whether it fits (aim.budget): `CostModel`, the analytic cost of any setting for one
model and one input (aim.efficiency.cost's token counts and `PrefillCost`); `Limit`, the budget in its unit; and
`choose`, the setting for a budget: a recorded trade-off's best fitting point, else the policy's first fitting
setting, else the grid's costliest fitting one (aim.budget's docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from aim.budget.settings import Setting, candidates, point_setting, policy_order, prunes_before
from aim.config import BUDGET_LIMITS, ConfigError
from aim.efficiency.cost import PrefillCost, kept_per_frame, kept_visual, tokens_per_layer
from aim.tradeoff import Tradeoff

POLICY = "policy"  # budget.tradeoff=policy: never use a recorded trade-off; a choice's chosen_by
REL_TOL = 1e-9  # a cost equal to the budget up to float rounding fits


@dataclass(frozen=True)
class Cost:
    tflops: float  # every operator of the roofline (aim.flops's `tflops`)
    tflops_analytic: float  # matmuls only (aim.efficiency.analytic; runs record it as tflops_analytic)
    prefill_ms: float  # roofline time on the budget's hardware
    visual_tokens: int  # after merging
    tokens_per_layer: tuple[int, ...]


class CostModel:
    """The analytic cost of any setting for one model and one input: `groups` merge groups (frames, or
    Qwen2-VL's temporal patches) of `per_group` tokens on a (rows, cols) `grid` (default: square), and
    `text_tokens` non-visual tokens."""

    def __init__(self, layers: PrefillCost, groups: int, per_group: int, text_tokens: int,
                 grid: tuple[int, int] | None = None, first_prunable: int = 1):
        self.layers, self.groups, self.per_group, self.text_tokens = layers, groups, per_group, text_tokens
        self.grid = grid
        self.first_prunable = first_prunable  # no setting may prune before this layer (Adapter.prunable_from)
        self.num_layers = layers.num_layers
        self._retention: dict[tuple, list[float]] = {}
        self._kept: dict[tuple, int] = {}

    def kept_per_group(self, setting: Setting) -> int:
        """Tokens a per-frame merger keeps of every group (a clip reducer's groups keep different counts: see
        `kept_visual`)."""
        from types import SimpleNamespace

        return kept_per_frame(SimpleNamespace(**{"ratio": None, **setting.merger}), self.per_group, self.grid)

    def kept_visual(self, setting: Setting) -> int:
        """The visual tokens the setting's merger keeps of all groups (a clip reducer: its kept total)."""
        from types import SimpleNamespace

        key = setting.merger_items
        if key not in self._kept:
            self._kept[key] = kept_visual(SimpleNamespace(**{"ratio": None, **setting.merger}), self.groups,
                                          self.per_group, self.grid)
        return self._kept[key]

    def retention(self, setting: Setting) -> list[float]:
        from aim.pruning import PRUNERS

        key = setting.pruner_items
        if key not in self._retention:
            pruner = setting.pruner
            self._retention[key] = PRUNERS.build(pruner["name"], **pruner).retention_schedule(self.num_layers)
        return self._retention[key]

    def tokens_per_layer(self, setting: Setting) -> tuple[int, list[int]]:
        visual = self.kept_visual(setting)
        return visual, tokens_per_layer(visual, self.text_tokens, self.retention(setting))[1]

    def cost(self, setting: Setting) -> Cost:
        visual, per_layer = self.tokens_per_layer(setting)
        return self._cost(visual, per_layer)

    def _cost(self, visual: int, per_layer: list[int]) -> Cost:
        tflops, ms, tflops_analytic = self.layers.total(per_layer)
        return Cost(tflops, tflops_analytic, ms, visual, tuple(per_layer))

    def amounts(self, settings: list[Setting], limit: "Limit") -> list[float]:
        """`limit.amount` of each setting, vectorized over a grid (the same numbers as `cost`)."""
        from aim.pruning.schedule import kept_counts

        visual = [self.kept_visual(s) for s in settings]
        tflops, ms = self.layers.totals(kept_counts(visual, [self.retention(s) for s in settings]) + self.text_tokens)
        if limit.unit == "tflops":
            return tflops.tolist()
        if limit.unit == "fraction":
            return (tflops / self.full.tflops).tolist()
        return ms.tolist()

    @cached_property
    def full(self) -> Cost:
        """The unreduced prefill of this input."""
        visual = self.groups * self.per_group
        return self._cost(visual, [visual + self.text_tokens] * self.num_layers)


# --- the budget ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limit:
    """A budget in one unit: `amount(cost)` is what it limits."""

    unit: str  # tflops | fraction | prefill_ms
    value: float

    @classmethod
    def of(cls, budget) -> "Limit | None":
        asked = [(k, getattr(budget, k)) for k in BUDGET_LIMITS if getattr(budget, k) is not None]
        return cls(*asked[0]) if asked else None

    def amount(self, cost: Cost, model: CostModel) -> float:
        if self.unit == "tflops":
            return cost.tflops
        if self.unit == "fraction":
            return cost.tflops / model.full.tflops
        return cost.prefill_ms

    def fits(self, cost: Cost, model: CostModel) -> bool:
        return self.amount(cost, model) <= self.value * (1 + REL_TOL)

    def describe(self, amount: float) -> str:
        return {"tflops": f"{amount:.4g} TFLOPs", "fraction": f"{amount:.4g} of the unreduced TFLOPs",
                "prefill_ms": f"{amount:.4g} ms"}[self.unit]


# --- choosing ----------------------------------------------------------------------------------------
@dataclass
class Choice:
    setting: Setting
    cost: Cost
    chosen_by: str  # "tradeoff <file>" or "policy"
    recorded: dict | None = None  # the trade-off point's measurements
    note: str | None = None
    within_budget: bool = True


def choose(limit: Limit, model: CostModel, merger: dict, pruner: dict, tradeoff: Tradeoff | None = None,
           objective: str | None = None, strict: bool = True) -> Choice:
    """The setting for this budget (module docstring). `strict`: a budget nothing meets raises ConfigError;
    else the cheapest setting, with `within_budget` False."""
    note = None
    if tradeoff is not None:
        objective = objective or tradeoff.data.get("objective") or "accuracy"
        where = f"budget.tradeoff: {tradeoff.path}"
        ranked = []
        for i, point in enumerate(tradeoff.points):
            if (point["merger"]["name"], point["pruner"]["name"]) != (merger["name"], pruner["name"]):
                continue
            value = point.get(objective)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            setting = point_setting(point, merger, pruner, i, where, model.num_layers)
            if prunes_before(setting.pruner, model.num_layers, model.first_prunable):
                continue
            cost = model.cost(setting)
            if limit.fits(cost, model):
                ranked.append((-value, cost.tflops, i, setting, cost, point))
        if ranked:
            *_, setting, cost, point = min(ranked, key=lambda t: t[:3])
            recorded = {k: point.get(k) for k in ("tflops", "accuracy", "agreement", "kl", "num_samples", "pareto")}
            recorded.update(objective=objective, num_frames=tradeoff.data.get("num_frames"))
            return Choice(setting, cost, f"tradeoff {tradeoff.path}", recorded)
        note = (f"tradeoff {tradeoff.path} has no {objective}-scored point of merger {merger['name']} + pruner "
                f"{pruner['name']} within the budget; chose by policy")
    for setting in policy_order(merger, pruner, model.num_layers, model.first_prunable):
        cost = model.cost(setting)
        if limit.fits(cost, model):
            return Choice(setting, cost, POLICY, note=note)
    grid = candidates(merger, pruner, model.num_layers, model.first_prunable)
    amounts = model.amounts(grid, limit)
    fitting = [i for i, a in enumerate(amounts) if a <= limit.value * (1 + REL_TOL)]
    if fitting:
        setting = grid[max(fitting, key=lambda i: (amounts[i], -i))]
        cost = model.cost(setting)
        extra = "no setting of the policy order fits; the costliest fitting setting of the grid"
        return Choice(setting, cost, POLICY, note=f"{note}; {extra}" if note else extra)
    setting = grid[min(range(len(grid)), key=amounts.__getitem__)]
    cost = model.cost(setting)
    if strict:
        raise ConfigError(
            f"budget.{limit.unit}: no setting of merger {merger['name']} + pruner {pruner['name']} meets "
            f"{limit.describe(limit.value)} ({model.groups} x {model.per_group} visual tokens, {model.text_tokens} "
            f"text tokens); the smallest achievable is {limit.describe(limit.amount(cost, model))} "
            f"({cost.tflops:.4g} TFLOPs, {cost.prefill_ms:.4g} ms on {model.layers.hw.name}) with {setting.label()}")
    return Choice(setting, cost, POLICY, note="nothing fits: the cheapest setting", within_budget=False)
