"""The trade-off between an objective and the LLM-prefill TFLOPs, as the search and the analysis read it: what
each job of a search returns to its sweeper (`task_return`: [objective, tflops]), and a sweep's trade-off,
`tradeoff.json` (`tradeoff`, `write_tradeoff`): every evaluated (done) job in job order, `pareto` marking those
that no other point beats on (objective max, tflops min), with its tables (`pareto_rows`, `compare`).

A library module: aim.run (the task's return), the search sweeper and its CLI (aim.search) and the analysis
import it; it imports no entry point.

tradeoff.json: {"model": <model config name>, "pretrained", "dataset", "num_frames", "objective", "source":
<sweep dir>, "points": [{"merger": {...}, "pruner": {...}, "tflops", "accuracy", "agreement", "kl",
"num_samples", "pareto", "run", "tflops_analytic"}, ...], "left_out": [{"num", "run", "state", "why"}, ...]
(each job that is no point), "eval_mode", "dataset_limit", "created"}; `pareto`
by `aim.analysis.collect.pareto_front` (of two equal points only the first is marked). Budget mode reads one
(`load_tradeoff`: the fields it needs are `objective` and each point's `merger` and `pruner` objects with a `name`,
`tflops` and the objectives), given by `budget.tradeoff` or bundled under src/aim/assets/tradeoffs/
(`find_tradeoff`).
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aim.checks import ConfigError, check_choice, to_schema
from aim.config import OBJECTIVES
from aim.tracking.rundir import read_json

TRADEOFF = "tradeoff.json"
TRADEOFF_DIR = Path(__file__).resolve().parent / "assets" / "tradeoffs"  # the bundled ones
COST = "tflops"


class SearchError(ValueError):
    """A search that cannot run as asked; the message says why."""



# ------------------------------------------------------------------------------------- the task's return

@dataclass
class SearchConfig:
    """The `search` node of a search experiment (conf/exp/search_tradeoff.yaml). `objective` is maximized and
    `tflops` minimized; `layers`, `l2_gap`, `ratio` and `keep` are the bounds its sweeper params read."""

    objective: str = "accuracy"
    layers: list[float] = field(default_factory=lambda: [1, 3])
    l2_gap: list[float] = field(default_factory=lambda: [1, 4])
    ratio: list[float] = field(default_factory=lambda: [0.02, 1.0])
    keep: list[float] = field(default_factory=lambda: [0.05, 0.9])

    def __post_init__(self):
        check_choice("objective", self.objective, OBJECTIVES)
        for name in ("layers", "l2_gap", "ratio", "keep"):
            bounds = getattr(self, name)
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError(f"{name}: must be [low, high] with low <= high, got {list(bounds)}")


def search_config(cfg: DictConfig) -> SearchConfig | None:
    """The validated `search` node, or None where the config has none."""
    node = cfg.get("search") if isinstance(cfg, DictConfig) else None
    return None if node is None else to_schema(SearchConfig, node, "search")


def metric(summary: dict, name: str) -> float | None:
    """A results.json metric (fidelity's `agreement` / `kl` may sit in a `fidelity` block); None where it is no
    finite number (null, or NaN: no sample scored), so that no NaN is ranked or compared as a score."""
    value = summary.get(name)
    if value is None and isinstance(summary.get("fidelity"), dict):
        value = summary["fidelity"].get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def task_return(cfg: DictConfig, summary: dict):
    """What `aim.run`'s task function returns to a Hydra sweeper: `[objective, tflops]` for a search config
    (hydra-optuna-sweeper casts each element with float() and needs as many as the study has directions),
    else the accuracy (a single-objective sweeper's float)."""
    search = search_config(cfg)
    if search is None:
        return summary["accuracy"]
    values = []
    for name in (search.objective, COST):
        value = metric(summary, name)
        if value is None:
            hint = " (fidelity to the unreduced model: is fidelity.enabled true?)" if name == "agreement" else ""
            raise ValueError(f"search: results.json has no finite {name!r} to optimise, got {summary.get(name)!r}{hint}")
        values.append(float(value))
    return values



# ------------------------------------------------------------------------------------- tradeoff.json

def _model_choice(sweep_dir: Path, manifest: dict) -> str | None:
    """The model's config name (`model=<name>`) the sweep was composed with."""
    search = manifest.get("search") or {}
    if search.get("model"):
        return search["model"]
    multirun = Path(sweep_dir) / "multirun.yaml"
    if multirun.exists():
        return OmegaConf.select(OmegaConf.load(multirun), "hydra.runtime.choices.model", default=None)
    return None


def tradeoff(sweep_dir: str | Path, objective: str | None = None) -> dict:
    """The trade-off of a sweep dir: every done job as a point, the non-dominated ones on (objective max,
    tflops min) marked `pareto`, and every other job in `left_out` with its state and why (its status detail;
    a done job whose results.json cannot be read now, damaged or removed since its status was read, is
    `failed` with the reason). `objective` defaults to the jobs' `search.objective` (else accuracy)."""
    from aim.analysis.collect import pareto_front
    from aim.sweep import RESULTS, read_manifest, status

    sweep_dir = Path(sweep_dir)
    manifest = read_manifest(sweep_dir)
    rows = {row["num"]: row for row in status(sweep_dir, query_scheduler=False)}
    points, configs, left_out = [], [], []
    for job in manifest["jobs"]:
        row = rows[job["num"]]
        if row["state"] != "done":
            left_out.append({"num": job["num"], "run": job["subdir"], "state": row["state"], "why": row["detail"]})
            continue
        results, unreadable = read_json(sweep_dir / job["subdir"] / RESULTS)
        if results is None:
            why = unreadable or f"{RESULTS} removed since its status was read"
            left_out.append({"num": job["num"], "run": job["subdir"], "state": "failed", "why": why})
            continue
        config = results.get("config") or {}
        configs.append(config)
        points.append({
            "merger": config.get("merger") or {"name": (results.get("method") or {}).get("merger")},
            "pruner": config.get("pruner") or {"name": (results.get("method") or {}).get("pruner")},
            "tflops": metric(results, "tflops"), "accuracy": metric(results, "accuracy"),
            "agreement": metric(results, "agreement"), "kl": metric(results, "kl"),
            "num_samples": results.get("num_samples"), "pareto": False,
            "run": job["subdir"], "tflops_analytic": results.get("tflops_analytic"),
        })
    if objective is None:
        chosen = {((c.get("search") or {}).get("objective")) for c in configs} - {None}
        objective = chosen.pop() if len(chosen) == 1 else (manifest.get("search") or {}).get("objective", "accuracy")
    if objective not in OBJECTIVES:
        raise SearchError(f"objective: {objective!r} is not allowed; choose one of: {', '.join(OBJECTIVES)}")
    settings = {(json.dumps((c.get("model") or {}).get("pretrained")), (c.get("dataset") or {}).get("name"),
                 (c.get("dataset") or {}).get("num_frames")) for c in configs}
    if len(settings) > 1:
        raise SearchError(f"{sweep_dir}: the jobs differ in model, dataset or frames ({sorted(map(str, settings))}); "
                          "a trade-off holds one (model, dataset, num_frames)")
    first = configs[0] if configs else {}

    def value(p, key):  # None (no finite value) is never on the front
        return float("nan") if p.get(key) is None else float(p[key])

    mask = pareto_front([value(p, COST) for p in points], [value(p, objective) for p in points])
    for p, on in zip(points, mask):
        p["pareto"] = bool(on)
    return {
        "model": _model_choice(sweep_dir, manifest) or (first.get("model") or {}).get("name"),
        "pretrained": (first.get("model") or {}).get("pretrained"),
        "dataset": (first.get("dataset") or {}).get("name"),
        "num_frames": (first.get("dataset") or {}).get("num_frames"),
        "objective": objective,
        "source": str(sweep_dir.resolve()),
        "eval_mode": (first.get("eval") or {}).get("mode"),
        "dataset_limit": (first.get("dataset") or {}).get("limit"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "points": points,
        "left_out": left_out,
    }


def write_tradeoff(sweep_dir: str | Path, objective: str | None = None) -> Path:
    sweep_dir = Path(sweep_dir)
    data = tradeoff(sweep_dir, objective)
    path = sweep_dir / TRADEOFF
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def knobs(group: str, node: dict) -> list[str]:
    """The fields of a point's merger or pruner (`group`) that a search or budget mode moves, as the method
    declares them: a merger's `ratio`; a pruner's `budget_knobs` (aim.pruning: AIM's l1/l2, FastV's k/keep, a
    plugin's own), none for one that declares none or is not installed here. What the Pareto tables show."""
    if group == "merger":
        return ["ratio"] if "ratio" in node else []
    from aim.pruning import PRUNERS

    name = node.get("name")
    declared = getattr(PRUNERS.get(name), "budget_knobs", ()) if name in PRUNERS else ()
    return [k for k in declared if k in node]


METRIC_COLUMNS = ("tflops", "accuracy", "agreement", "kl", "num_samples", "run")


def pareto_rows(data: dict) -> list[dict]:
    """The Pareto points of a tradeoff.json as flat rows, cheapest first: the merger and pruner with the
    parameters the search varies (`knobs`), then the metrics."""
    rows = []
    for p in sorted((p for p in data["points"] if p["pareto"]), key=lambda p: p["tflops"]):
        row = {}
        for group in ("merger", "pruner"):
            row[group] = p[group].get("name")
            row.update({f"{group}.{k}": p[group][k] for k in knobs(group, p[group])})
        row.update({k: p.get(k) for k in METRIC_COLUMNS})
        rows.append(row)
    return rows


def row_columns(rows: list[dict]) -> list[str]:
    """The columns of `pareto_rows`: the merger, its knobs, the pruner, its knobs (each in the order the rows first
    show them), then the metrics, whatever the first row holds."""
    seen = list(dict.fromkeys(k for r in rows for k in r))
    order = [c for group in ("merger", "pruner") for c in [group] + [k for k in seen if k.startswith(f"{group}.")]]
    present = set(seen)
    return [c for c in order + list(METRIC_COLUMNS) if c in present]


def format_rows(rows: list[dict]) -> str:
    if not rows:
        return "(no Pareto point: no job is done, or none has the objective)"
    cols = row_columns(rows)

    def fmt(v):
        return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)



def setting_text(point: dict) -> str:
    """`aim ratio=0.25 + aim l1=2 l2=4`: a point's merger and pruner with the parameters a search varies."""
    parts = []
    for group in ("merger", "pruner"):
        node = point[group]
        shown = " ".join(f"{k}={node[k]:.3g}" if isinstance(node[k], float) else f"{k}={node[k]}"
                         for k in knobs(group, node))
        parts.append(f"{node.get('name')} {shown}".strip())
    return " + ".join(parts)


def compare(search: dict, other: dict) -> tuple[list[dict], int]:
    """For each point of `other` (e.g. a hand-written grid's trade-off), the search's best point at no more
    TFLOPs, and whether it matches or beats it on the search's objective. Returns (rows, points matched)."""
    objective = search["objective"]
    scored = [p for p in search["points"] if p.get(objective) is not None and p.get("tflops") is not None]
    rows, matched = [], 0
    for q in sorted(other["points"], key=lambda p: (p["tflops"] is None, p["tflops"] or 0)):
        if q.get(objective) is None or q.get("tflops") is None:
            continue
        cheaper = [p for p in scored if p["tflops"] <= q["tflops"] * (1 + 1e-9)]
        best = max(cheaper, key=lambda p: (p[objective], -p["tflops"])) if cheaper else None
        ok = best is not None and best[objective] >= q[objective]
        matched += ok
        rows.append({"other": setting_text(q), "other_tflops": q["tflops"], f"other_{objective}": q[objective],
                     "search": setting_text(best) if best else None, "search_tflops": best and best["tflops"],
                     f"search_{objective}": best and best[objective], "matched": ok})
    return rows, matched


def compare_markdown(rows: list[dict], objective: str) -> str:
    def fmt(v):
        return "" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = [f"| setting | TFLOPs | {objective} | best search setting at <= TFLOPs | TFLOPs | {objective} | search >= |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['other']} | {fmt(r['other_tflops'])} | {fmt(r[f'other_{objective}'])} | {fmt(r['search'])} | "
                     f"{fmt(r['search_tflops'])} | {fmt(r[f'search_{objective}'])} | {'yes' if r['matched'] else 'no'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- reading one (budget mode)

@dataclass
class Tradeoff:
    path: Path
    data: dict

    @property
    def points(self) -> list[dict]:
        return self.data["points"]


def load_tradeoff(path: str | Path) -> Tradeoff:
    """Read and check a trade-off file for budget mode (format in the module docstring); problems raise
    ConfigError naming budget.tradeoff."""
    path = Path(path).expanduser()
    where = f"budget.tradeoff: {path}"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise ConfigError(f"{where}: expected an object with a `points` list")
    if data.get("objective", "accuracy") not in OBJECTIVES:
        raise ConfigError(f"{where}: objective {data.get('objective')!r}; one of {', '.join(OBJECTIVES)}")
    for i, p in enumerate(data["points"]):
        if not (isinstance(p, dict) and isinstance(p.get("merger"), dict) and isinstance(p.get("pruner"), dict)
                and "name" in p["merger"] and "name" in p["pruner"]):
            raise ConfigError(f"{where}: points[{i}] needs `merger` and `pruner` objects with a `name`")
    return Tradeoff(path, data)


def find_tradeoff(pretrained: str, dataset: str, num_frames: int | None, directory: Path = TRADEOFF_DIR) -> Path | None:
    """A bundled trade-off recorded for this checkpoint and dataset: the one at the same frame count,
    else the nearest; None if there is none. A file that cannot be read is left out with a warning naming it."""
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        data, unreadable = read_json(path)
        if unreadable:  # a damaged file of the install: the others still serve
            warnings.warn(f"{directory}: {unreadable}; budget mode leaves this bundled trade-off out")
            continue
        if data is not None and data.get("pretrained") == pretrained and data.get("dataset") == dataset:
            frames = data.get("num_frames")
            distance = abs(frames - num_frames) if isinstance(frames, int) and num_frames else 0
            found.append((distance, str(path)))
    return Path(min(found)[1]) if found else None
