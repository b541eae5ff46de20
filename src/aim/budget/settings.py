"""The settings budget mode chooses among (aim.budget): the knobs of the configured merger and pruner, one
candidate `Setting`, and their enumeration, the policy's order (`policy_order`) and the whole grid (`candidates`).
A merger's knob is its `ratio` (tried at MERGE_RATIOS, then FURTHER_RATIOS); a pruner's knobs and candidate
values are what its registered class declares (`budget_knobs`, `budget_candidates`: aim.pruning), so a plugin
pruner is enumerated like a built-in one.
"""
from __future__ import annotations

from dataclasses import dataclass

from aim.config import ConfigError

# The merge ratios budget mode tries on a merger with `ratio`: the policy's first stage, then its last. A
# pruner's knobs and candidates are declared by its class (`budget_knobs`, `budget_candidates`: aim.pruning).
MERGE_RATIOS = (1.0, 0.75, 0.5, 0.375, 0.25)
FURTHER_RATIOS = (0.2, 0.15, 0.125, 0.1, 0.075, 0.05)


def merger_knobs(merger: dict) -> tuple[str, ...]:
    """("ratio",) for a merger with a ratio, () for one without (none: its count is fixed); a merger whose class
    says its count is adaptive (`adaptive_count`, PruMerge) cannot be budgeted."""
    from aim.merging import MERGERS

    name = merger["name"]
    adaptive = getattr(MERGERS.get(name), "adaptive_count", None)
    if adaptive:
        raise ConfigError(f"merger.name: budget mode needs a merger with a known token count; {name} keeps an "
                          f"adaptive number of tokens per frame ({adaptive})")
    return ("ratio",) if "ratio" in merger else ()


def budgeted_pruner(name: str):
    """The registered class of a pruner budget mode can tune: one that declares `budget_knobs` and
    `budget_candidates` (aim.pruning) and prunes in the prefill; ConfigError naming it, and the pruners that can
    be tuned, otherwise. A pruner that acts only while decoding (`acts_while`, DyCoke) is refused whatever it
    declares: budget mode costs the LLM prefill (aim.efficiency.cost), where such a pruner keeps every token."""
    from aim.pruning import PRUNERS

    def decoding_only(cls) -> bool:
        return getattr(cls, "acts_while", None) == "decoding"

    def tunable(cls) -> bool:
        return (getattr(cls, "budget_knobs", None) is not None and hasattr(cls, "budget_candidates")
                and not decoding_only(cls))

    cls = PRUNERS.get(name)
    if tunable(cls):
        return cls
    known = ", ".join(n for n in PRUNERS.names() if tunable(PRUNERS.get(n)))
    if decoding_only(cls):
        raise ConfigError(f"pruner.name: budget mode cannot tune pruner {name!r}: it removes visual KV entries while "
                          "decoding only, and budget mode costs the LLM prefill (aim.efficiency.cost), in which it keeps "
                          "every visual token, so no value of its knobs changes the cost a budget limits; use "
                          f"pruner=none to plan for the merger alone, or a pruner it knows: {known}")
    raise ConfigError(f"pruner.name: budget mode does not know the knobs of pruner {name!r} (its class declares no "
                      f"budget_knobs and budget_candidates(fields, num_layers)); it knows: {known}")


def pruner_knobs(pruner: dict) -> tuple[str, ...]:
    return tuple(budgeted_pruner(pruner["name"]).budget_knobs)


# --- one setting -------------------------------------------------------------------------------------
def _frozen(d: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


@dataclass(frozen=True)
class Setting:
    """One candidate: the full merger and pruner config fields (the configured ones with knobs replaced)."""

    merger_items: tuple
    pruner_items: tuple

    @classmethod
    def of(cls, merger: dict, pruner: dict) -> "Setting":
        return cls(_frozen(merger), _frozen(pruner))

    @property
    def merger(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.merger_items}

    @property
    def pruner(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.pruner_items}

    def knobs(self) -> dict:
        """The part budget mode chooses: each family's name and knob values."""
        m, p = self.merger, self.pruner
        return {"merger": {"name": m["name"], **{k: m[k] for k in merger_knobs(m)}},
                "pruner": {"name": p["name"], **{k: p[k] for k in pruner_knobs(p)}}}

    def label(self) -> str:
        return knobs_label(self.knobs())


# --- candidates: the grid and the policy order ---------------------------------------------------------
def pruner_moves(pruner: dict, num_layers: int) -> tuple[dict, list[dict], list[dict]]:
    """(no pruning, the policy's path from mild to strong, the grid) as knob values of the pruner's family, as its
    class declares them (`budget_candidates`, aim.pruning). Knobs the path does not move keep their configured
    values (FastV's keep, PDrop's boundaries). Knob values that remove nothing (no pruning, FastV's keep 1, ...)
    become pruner none in the settings (`_settings`)."""
    no_pruning, path, grid = budgeted_pruner(pruner["name"]).budget_candidates(dict(pruner), num_layers)
    return dict(no_pruning), list(path), list(grid)


def pruning_or_none(pruner: dict, num_layers: int) -> dict:
    """The pruner's fields, or pruner `none` where they remove no visual token on this LLM (l1 >= L, FastV's
    keep 1, ...): budget mode never labels a setting that prunes nothing as a pruned one."""
    from aim.pruning import PRUNERS, removes_tokens

    if pruner["name"] == "none" or removes_tokens(PRUNERS.build(pruner["name"], **pruner), num_layers):
        return pruner
    return {"name": "none"}


def prunes_before(pruner: dict, num_layers: int, first: int) -> bool:
    """Whether a pruner's schedule removes visual tokens before decoder layer `first`, the first the model can
    prune at (`Adapter.prunable_from`: Qwen3-VL's DeepStack); budget mode never chooses such a setting."""
    from aim.pruning import PRUNERS, first_pruned_layer

    if pruner["name"] == "none":
        return False
    pruned = first_pruned_layer(PRUNERS.build(pruner["name"], **pruner), num_layers)
    return pruned is not None and pruned < first


def _settings(merger: dict, pruner: dict, pairs, num_layers: int, first: int = 1) -> list[Setting]:
    """Settings of (merge ratio or None, pruner knobs) pairs, without repeats, in order; pruner knobs that
    remove nothing on this LLM become pruner none (`pruning_or_none`); those that prune before layer `first`
    are left out."""
    out, seen, mergers, pruners = [], set(), {}, {}
    for ratio, knobs in pairs:
        if ratio not in mergers:
            mergers[ratio] = _frozen({**merger, **({} if ratio is None else {"ratio": ratio})})
        key = _frozen(knobs)
        if key not in pruners:
            fields = pruning_or_none({**pruner, **knobs}, num_layers)
            pruners[key] = None if prunes_before(fields, num_layers, first) else _frozen(fields)
        if pruners[key] is None:
            continue
        s = Setting(mergers[ratio], pruners[key])
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def policy_order(merger: dict, pruner: dict, num_layers: int, first: int = 1) -> list[Setting]:
    """The default policy's candidates, mildest first: merge to 25%, prune from the deepest layers
    earlier, merge further (module docstring)."""
    ratios = MERGE_RATIOS if merger_knobs(merger) else (None,)
    no_prune, path, _ = pruner_moves(pruner, num_layers)
    # the strongest pruning the model allows ends the path (and is kept while merging further)
    path = [p for p in path if not prunes_before(pruning_or_none({**pruner, **p}, num_layers), num_layers, first)]
    pairs = [(r, no_prune) for r in ratios]
    pairs += [(ratios[-1], p) for p in path]
    if merger_knobs(merger):
        pairs += [(r, path[-1] if path else no_prune) for r in FURTHER_RATIOS]
    return _settings(merger, pruner, pairs, num_layers, first)


def candidates(merger: dict, pruner: dict, num_layers: int, first: int = 1) -> list[Setting]:
    """The whole grid of the families' knobs: every merge ratio of the policy with every point of the pruner's
    declared grid (`budget_candidates`: e.g. aim/random all 1 <= l1 < l2 <= L + w and no pruning; fastv k in 1..L
    x keep in `budget_keeps`; pdrop the configured and 2..8 equal stages x lam; vtw k in 1..L)."""
    ratios = MERGE_RATIOS + FURTHER_RATIOS if merger_knobs(merger) else (None,)
    _, _, grid = pruner_moves(pruner, num_layers)
    return _settings(merger, pruner, [(r, p) for r in ratios for p in grid], num_layers, first)


# --- a recorded trade-off's point as a setting (the points: aim.tradeoff.load_tradeoff) ----------------
def point_setting(point: dict, merger: dict, pruner: dict, index: int, where: str, num_layers: int) -> Setting:
    """The configured fields with the point's own (those of the schema) on top, validated; a pruner that
    removes nothing on this LLM becomes pruner none."""
    from aim.merging import MERGERS
    from aim.pruning import PRUNERS

    out = []
    for group, base, registry in (("merger", merger, MERGERS), ("pruner", pruner, PRUNERS)):
        fields = {**base, **{k: v for k, v in point[group].items() if k in base}}
        schema = registry.config_schema(base["name"])
        try:
            if schema is not None:
                schema(**fields)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: points[{index}].{group}.{exc}") from None
        out.append(fields)
    return Setting.of(out[0], pruning_or_none(out[1], num_layers))


def knobs_label(knobs: dict) -> str:
    """`Setting.knobs()` as one line: "merger aim ratio=0.25, pruner aim l1=14 l2=22"."""
    return ", ".join(" ".join([f"{g} {v['name']}"] + [f"{k}={x}" for k, x in v.items() if k != "name"])
                     for g, v in knobs.items())
