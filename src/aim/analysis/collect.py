"""One tidy table of results: one row per job, whatever state it is in.

Sources:
- a sweep dir (`sweep.json`, written by the `aim` sweeper before launch): one row per EXPECTED job, its
  state from `aim.sweep.status` (done / running / queued / failed / missing), so a failed or missing job is
  a row with its state and error, not an absent one. A job that did not finish still shows what its
  `run_spec.json` says (its merger and pruner parameters, frames, model, dataset).
- any other dir: every run dir under it (one run dir, or a sweep made before sweep.json existed): done with
  its results.json, or running / failed without one (a run still going, or killed), as `aim.sweep.status`
  tells a job's state; none is missing, since nothing says which jobs were expected. A sharded run is one
  row (its merged results.json); its shards' own (`<run>/shards/<i>/`) are not rows.
- a W&B project (and group), through the public API (`wandb_rows`): one row per run that W&B knows
  of (job runs only; a sweep's summary run is skipped); state from the run's state. It needs network and
  an API key; without a manifest it cannot know which jobs are missing.

Columns (metrics named as in results.json, nested ones as the W&B summary names them):
  sweep, job, run, status, detail, overrides, method, merger, pruner, params, label, series, unreduced,
  merger.<field>, pruner.<field> (the configs' parameters), frames, model, dataset, eval_mode,
  metric, score, accuracy, agreement and kl (fidelity to the unreduced model: the fraction of samples
  answered as it answers, mean KL(full || reduced) over the answer options; aim.eval.fidelity),
  accuracy_by_type/<type>, accuracy_by_category/<key>/<value>,
  num_samples, num_skipped, tflops (fvcore, LLM prefill per sample), tflops_analytic, tflops_fastv (FastV's
  convention, 4nd^2 + 2n^2d + 2ndm per layer at each sample's tokens per layer), prefill_ms
  (measured, mean), prefill_ms_median, roofline_tflops, roofline_prefill_ms, roofline_hardware (the
  roofline of `aim.efficiency.roofline` at each sample's own tokens per layer, on the job's
  `flops.hardware`; the figure comparable to published tables), tflops_unreduced_analytic (the same
  analytic count with every visual token kept: the unreduced model's cost, known without running it),
  tflops_unreduced_fastv (the same in FastV's convention), visual_tokens, text_tokens, visual_tokens_per_frame (the
  mean over samples of each frame's kept tokens, a list; ragged under a clip reducer), frames_without_tokens (mean
  frames per sample keeping none), pareto_tflops, pareto_prefill_ms, sweep_dir.
The roofline, tflops_fastv (else results.json's own) and the tokens per frame come from samples.jsonl: only
where its answered records are the num_samples results.json counts and every one carries the field (else
left empty, warned and said in `detail`), as is a mean that results.json itself left out (`means_left_out`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from aim.sweep import MANIFEST, RESULTS, read_manifest, status as sweep_status
from aim.tracking.rundir import read_json

RUN_SPEC = "run_spec.json"  # aim.run.RUN_SPEC (not imported: aim.run pulls in the model stack)
SAMPLES = "samples.jsonl"
STATUSES = ("done", "running", "queued", "failed", "missing")
SUMMARY_JOB_TYPE = "sweep-summary"  # the W&B summary run of a sweep (aim.analysis.wandb_summary)

# the leading columns, in this order; the rest (parameters, per-type accuracies) follow
LEADING = ["sweep", "job", "run", "status", "method", "params", "label", "series", "unreduced", "merger", "pruner",
           "frames", "model", "dataset", "eval_mode", "metric", "score", "accuracy", "agreement", "kl", "num_samples",
           "num_skipped", "tflops", "tflops_analytic", "tflops_fastv", "roofline_tflops", "prefill_ms", "prefill_ms_median",
           "roofline_prefill_ms", "roofline_hardware", "tflops_unreduced_analytic", "tflops_unreduced_fastv",
           "visual_tokens", "text_tokens", "visual_tokens_per_frame", "frames_without_tokens",
           "pareto_tflops", "pareto_prefill_ms", "detail", "overrides"]


# ------------------------------------------------------------------------------------------ one run

def config_fields(config: dict) -> dict:
    """What a job's (resolved) config says about the method and setting."""
    config = config or {}
    merger, pruner = config.get("merger") or {}, config.get("pruner") or {}
    dataset, model = config.get("dataset") or {}, config.get("model") or {}
    row = {"merger": merger.get("name"), "pruner": pruner.get("name"), "frames": dataset.get("num_frames"),
           "model": model.get("pretrained"), "dataset": dataset.get("name"),
           "eval_mode": (config.get("eval") or {}).get("mode")}
    for group, node in (("merger", merger), ("pruner", pruner)):
        for key, value in node.items():
            if key != "name":
                row[f"{group}.{key}"] = value
    return row


CONFIG_KEYS = frozenset(config_fields({}))  # besides merger.* / pruner.*: what a job's config alone says


def results_fields(results: dict) -> dict:
    """The metrics of a results.json (older files lack score/metric/accuracy_by_category: tolerated)."""
    row = {
        "metric": results.get("metric", "accuracy"),
        "score": results.get("score", results.get("accuracy")),
        "accuracy": results.get("accuracy"),
    }
    for key in ("agreement", "kl", "num_samples", "num_skipped", "tflops", "tflops_analytic", "tflops_fastv",
                "prefill_ms", "prefill_ms_median", "visual_tokens", "text_tokens"):
        row[key] = results.get(key)
    for qtype, acc in (results.get("accuracy_by_type") or {}).items():
        row[f"accuracy_by_type/{qtype}"] = acc
    for key, values in (results.get("accuracy_by_category") or {}).items():
        for value, acc in values.items():
            row[f"accuracy_by_category/{key}/{value}"] = acc
    return row


@functools.lru_cache(maxsize=32)
def _model_geometry(model_json: str):
    """(LLMShape, HF config, adapter class, validated model config) of a job's model config, no weights; or
    the exception that prevented it (cached too: one warning, one attempt per model, not one per job)."""
    try:
        return _read_model_geometry(model_json)
    except Exception as exc:  # an unknown model name, a checkpoint whose config.json is not here, ...
        warnings.warn(f"aim.analysis: no roofline for model {json.loads(model_json).get('pretrained')!r}: "
                      f"{type(exc).__name__}: {exc}", stacklevel=3)
        return exc


def _read_model_geometry(model_json: str):
    from aim.checks import to_schema
    from aim.efficiency.cost import model_configs
    from aim.efficiency.roofline import LLMShape
    from aim.models import MODELS

    node = json.loads(model_json)
    schema = MODELS.config_schema(node["name"])
    known = {f.name for f in dataclasses.fields(schema)}  # a results.json of an older version may hold more
    model_cfg = to_schema(schema, {k: v for k, v in node.items() if k in known}, "model")
    hf_config, adapter = model_configs(model_cfg)
    return LLMShape.from_text_config(hf_config.text_config), hf_config, adapter, model_cfg


@functools.lru_cache(maxsize=65536)
def _roofline_one(shape, tokens_per_layer: tuple, hardware, fused: bool) -> tuple[float, float]:
    """(TFLOPs, ms) of one prefill; samples with the same tokens per layer share it."""
    from aim.efficiency.roofline import prefill_estimate

    est = prefill_estimate(shape, list(tokens_per_layer), hardware, fused)
    return est.tflops, est.prefill_ms


def efficiency_fields(config: dict, per_sample: list[list[int]], text_tokens: float | None) -> dict:
    """Roofline TFLOPs and prefill ms at each sample's own tokens per layer (`per_sample`: every answered
    sample's `tokens_per_layer`, averaged over them), on the job's `flops.hardware`; and the analytic TFLOPs of
    the unreduced prefill (every visual token of the sampled frames, the job's mean text tokens), both also in
    FastV's convention (`tflops_fastv`, computed here for runs recorded before they carried it;
    `tflops_unreduced_fastv`). Empty where the model's config cannot be read."""
    from aim.efficiency.analytic import fastv_prefill_flops, llm_prefill_flops
    from aim.efficiency.roofline import hardware_profile

    out: dict = {}
    geometry = _model_geometry(json.dumps(config["model"], sort_keys=True))
    if isinstance(geometry, Exception):
        return out
    shape, hf_config, adapter, model_cfg = geometry
    flops_cfg = config.get("flops") or {}
    hw = hardware_profile(flops_cfg.get("hardware", "a100_40gb"), flops_cfg.get("peak_tflops"),
                          flops_cfg.get("bandwidth_gbs"))
    fused = bool(flops_cfg.get("fused_attention", False))
    per_sample = [tuple(t) for t in per_sample]
    if per_sample:
        estimates = [_roofline_one(shape, t, hw, fused) for t in per_sample]
        out["roofline_tflops"] = float(np.mean([e[0] for e in estimates]))
        out["roofline_prefill_ms"] = float(np.mean([e[1] for e in estimates]))
        out["roofline_hardware"] = hw.name + (" fused" if fused else "")
        out["tflops_fastv"] = float(np.mean([fastv_prefill_flops(hf_config.text_config, t) for t in per_sample])) / 1e12
    frames = (config.get("dataset") or {}).get("num_frames")
    if frames and text_tokens is not None and not (isinstance(text_tokens, float) and math.isnan(text_tokens)):
        groups, rows, cols = adapter.feature_grid(hf_config, model_cfg, int(frames))
        full = int(round(text_tokens)) + groups * rows * cols
        out["tflops_unreduced_analytic"] = llm_prefill_flops(hf_config.text_config, [full] * shape.num_layers) / 1e12
        out["tflops_unreduced_fastv"] = fastv_prefill_flops(hf_config.text_config, [full] * shape.num_layers) / 1e12
    return out


def answered_values(records: list[dict], key: str) -> tuple[list, str | None]:
    """`key` (a list) of every answered (not skipped) record, for a column averaged over the samples: ([], None)
    where no record carries it (written before the field was), ([], why) where only some do (a run resumed
    across versions), since a mean over those would be over fewer samples than the run's."""
    answered = [r for r in records if not r.get("skipped")]
    values = [r[key] for r in answered if isinstance(r.get(key), list)]
    if values and len(values) < len(answered):
        return [], f"{len(answered) - len(values)} of {len(answered)} answered records in {SAMPLES} lack {key}"
    return values, None


def frame_fields(counts: list[list[int]]) -> dict:
    """How a run's kept visual tokens fall over the frames (`counts`: every answered record's
    `visual_tokens_per_frame`, one count per merger group): each frame's mean over the answered samples, and the
    mean number of frames keeping no token. Samples of different frame counts give no per-frame list."""
    if not counts:
        return {}
    out = {"frames_without_tokens": float(np.mean([sum(1 for c in per if c == 0) for per in counts]))}
    if len({len(per) for per in counts}) == 1:
        out["visual_tokens_per_frame"] = [round(float(v), 2) for v in np.mean(np.asarray(counts, dtype=float), axis=0)]
    return out


def run_fields(run_dir: Path, roofline: bool = True, done: bool = True) -> dict:
    """Everything a run dir says: results.json (with its config) if written, else its run_spec.json. For a
    done run also the columns derived from its samples.jsonl (roofline, tflops_fastv, tokens per frame), where
    its records are the samples results.json counts and each carries the field; otherwise those are left
    empty, warned, and said in `detail`."""
    results, damaged = read_json(run_dir / RESULTS)
    if damaged:  # the job's row says so (status failed, this detail); its config still comes from run_spec.json
        warnings.warn(f"aim.analysis: {run_dir}: {damaged}; its row has no results", stacklevel=2)
    if results is not None:
        config = results.get("config") or {}
        row = {**config_fields(config), **results_fields(results)}
        method = results.get("method") or {}
        row["merger"] = method.get("merger", row["merger"])
        row["pruner"] = method.get("pruner", row["pruner"])
        if done:
            row.update(sample_fields(run_dir, results, roofline))
        return row
    spec, _ = read_json(run_dir / RUN_SPEC)
    return config_fields(spec) if spec is not None else {}


def sample_fields(run_dir: Path, results: dict, roofline: bool) -> dict:
    """The columns a done run's samples.jsonl gives (see `run_fields`), and `detail` saying which were left out
    and why, with the means results.json itself left out (`means_left_out`: only some records carry the field)."""
    from aim.tracking.records import summarized_records

    left_out = [f"results.json has no {key}: {why}" for key, why in (results.get("means_left_out") or {}).items()]
    records, mismatch = summarized_records(run_dir / SAMPLES, results)
    if mismatch:
        left_out.append(mismatch + ": no roofline, tflops_fastv or tokens per frame from it")
        row = {}
    else:
        counts, no_counts = answered_values(records, "visual_tokens_per_frame")
        row = frame_fields(counts)
        config = results.get("config") or {}
        if roofline and config.get("model"):
            per_sample, no_tokens = answered_values(records, "tokens_per_layer")
            row.update(efficiency_fields(config, per_sample, results.get("text_tokens")))
        else:
            no_tokens = None
        left_out += [f"{no_counts}: no tokens per frame" if no_counts else None,
                     f"{no_tokens}: no roofline or tflops_fastv from them" if no_tokens else None]
    left_out = [why for why in left_out if why]
    if left_out:
        warnings.warn(f"aim.analysis: {run_dir}: " + "; ".join(left_out), stacklevel=3)
        row["detail"] = "; ".join(left_out)
    return row


# ------------------------------------------------------------------------------------------ sources

def collect_sweep(sweep_dir: Path, roofline: bool = True, query_scheduler: bool = False) -> list[dict]:
    """One row per job of sweep.json, in any state."""
    sweep_dir = Path(sweep_dir)
    manifest = read_manifest(sweep_dir)
    jobs = {j["num"]: j for j in manifest["jobs"]}
    rows = []
    for st in sweep_status(sweep_dir, query_scheduler=query_scheduler):
        job = jobs[st["num"]]
        row = {"sweep": sweep_dir.name, "sweep_dir": str(sweep_dir.resolve()), "job": st["num"], "run": st["subdir"],
               "status": st["state"], "detail": st["detail"], "overrides": " ".join(job["overrides"]),
               "method": job.get("method"), "merger": job.get("merger"), "pruner": job.get("pruner")}
        done = st["state"] == "done"
        fields = run_fields(sweep_dir / st["subdir"], roofline, done) if st["state"] != "missing" else {}
        if not done:  # a partial results.json of a still-running job is not a result yet
            fields = {k: v for k, v in fields.items() if k in CONFIG_KEYS or "." in k}
        row["detail"] = "; ".join(d for d in (row["detail"], fields.pop("detail", "")) if d)
        row.update({k: v for k, v in fields.items() if v is not None or k not in row})
        rows.append(row)
    return rows


def collect_runs(root: Path, roofline: bool = True) -> list[dict]:
    """Every run dir under `root` (a dir holding results.json, run_spec.json or job.json), in its state as
    `aim.sweep.run_state` tells it: done, or running / failed without a results.json (no manifest says which
    runs were expected, so none is missing)."""
    from aim.sweep import JOB_STATE, run_state
    from aim.tracking.shards import is_shard_dir

    root = Path(root)
    found = {p.parent for name in (RESULTS, RUN_SPEC, JOB_STATE) for p in root.rglob(name)}
    run_dirs = sorted(d for d in found if not is_shard_dir(d))  # a shard is part of its run's row
    rows = []
    for i, run_dir in enumerate(run_dirs):
        spec = read_json(run_dir / RUN_SPEC)[0] or (read_json(run_dir / RESULTS)[0] or {}).get("config") or {}
        state, detail, _ = run_state(run_dir, int((spec.get("dataset") or {}).get("shards") or 1))
        fields = run_fields(run_dir, roofline, done=state == "done")
        if state != "done":  # a results.json it has not finished (or failed after) is not a result
            fields = {k: v for k, v in fields.items() if k in CONFIG_KEYS or "." in k}
        detail = "; ".join(d for d in (detail, fields.pop("detail", "")) if d)
        rows.append({"sweep": root.name, "sweep_dir": str(root.resolve()), "job": i,
                     "run": str(run_dir.relative_to(root)) if run_dir != root else ".",
                     "status": state, "detail": detail,
                     "overrides": "", "method": f"{fields.get('merger')}+{fields.get('pruner')}", **fields})
    return rows


def collect(sources: Iterable[str | Path] = (), roofline: bool = True, query_scheduler: bool = False,
            wandb: str | None = None, wandb_group: str | None = None, api=None) -> pd.DataFrame:
    """The tidy table of sweep dirs / run dirs and, with `wandb="entity/project"`, of that W&B project's runs
    (optionally one group; see `wandb_rows`)."""
    rows = []
    for source in sources:
        source = Path(source)
        if (source / MANIFEST).exists():
            rows += collect_sweep(source, roofline, query_scheduler)
        elif source.is_dir():
            found = collect_runs(source, roofline)
            if not found:
                raise FileNotFoundError(f"{source}: no {MANIFEST} and no run dir ({RESULTS}, {RUN_SPEC}) under it")
            rows += found
        else:
            raise FileNotFoundError(f"{source}: not a directory")
    if wandb:
        rows += wandb_rows(wandb, wandb_group, api)
    if not rows:
        raise ValueError("nothing to collect: give sweep dirs or a W&B project")
    return tidy(_unique_sweep_names(rows))


def _unique_sweep_names(rows: list[dict]) -> list[dict]:
    """Sweeps are named by their dir's name; two dirs of one name (a/sweep, b/sweep) get longer names."""
    dirs_by_name: dict[str, set] = {}
    for row in rows:
        dirs_by_name.setdefault(row["sweep"], set()).add(row["sweep_dir"])
    rename = {}
    for name, dirs in dirs_by_name.items():
        if len(dirs) > 1 and not any(str(d).startswith("wandb:") for d in dirs):
            parts = {d: Path(d).parts for d in dirs}
            depth = 2
            while len({"/".join(p[-depth:]) for p in parts.values()}) < len(dirs):
                depth += 1
            rename.update({d: "/".join(p[-depth:]) for d, p in parts.items()})
    return [{**row, "sweep": rename.get(row["sweep_dir"], row["sweep"])} for row in rows]


def _unwrap(config: dict) -> dict:
    """W&B's API gives config values either plain or as {"value": ..., "desc": ...}."""
    return {k: (v["value"] if isinstance(v, dict) and set(v) <= {"value", "desc"} and "value" in v else v)
            for k, v in config.items() if not k.startswith("_")}


WANDB_STATES = {"finished": "done", "running": "running", "pending": "queued", "crashed": "failed",
                "failed": "failed", "killed": "failed", "preempted": "failed", "preempting": "running"}


def wandb_rows(path: str, group: str | None = None, api=None) -> list[dict]:
    """The runs of a W&B project (`entity/project`), optionally one group (a sweep's group is its dir's
    name), through the public API. Needs network and an API key (`wandb login`); not exercised offline
    here except against a stand-in API object. The summary holds results.json's keys (aim.tracking.
    wandb_logger.flat_summary) and the config the run's resolved config, so the rows are the same as
    from local files, less the roofline (no per-sample tokens per layer on W&B)."""
    if api is None:
        import wandb

        api = wandb.Api()
    filters = {"group": group} if group else {}
    rows = []
    for i, run in enumerate(api.runs(path, filters=filters)):
        if getattr(run, "job_type", None) == SUMMARY_JOB_TYPE:
            continue
        summary = getattr(run.summary, "_json_dict", None) or dict(run.summary)
        results = {k: v for k, v in summary.items() if not k.startswith("_") and "/" not in k}
        config = _unwrap(dict(run.config))
        fields = {**config_fields(config), **results_fields(results)}
        method = results.get("method") if isinstance(results.get("method"), dict) else {}
        fields["merger"] = method.get("merger", fields["merger"])
        fields["pruner"] = method.get("pruner", fields["pruner"])
        state = WANDB_STATES.get(getattr(run, "state", ""), getattr(run, "state", "unknown"))
        if state != "done":
            fields = {k: v for k, v in fields.items() if k in CONFIG_KEYS or "." in k}
        rows.append({"sweep": getattr(run, "group", None) or path, "sweep_dir": f"wandb:{path}", "job": i,
                     "run": run.name, "status": state, "detail": f"wandb run {run.id} ({run.state})", "overrides": "",
                     "method": f"{fields.get('merger')}+{fields.get('pruner')}", **fields})
    if not rows:
        raise LookupError(f"no runs in W&B project {path}" + (f", group {group}" if group else ""))
    return rows


# ------------------------------------------------------------------------------------------ the table

def pareto_front(x, y) -> np.ndarray:
    """Boolean mask of the points no other point beats: none has x <= and y >= with one strict (lower cost,
    higher accuracy). NaN points are never on it."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    mask = np.zeros(len(x), dtype=bool)
    valid = np.flatnonzero(~(np.isnan(x) | np.isnan(y)))
    order = valid[np.lexsort((-y[valid], x[valid]))]  # by cost, then best accuracy first
    best = -np.inf
    for i in order:
        if y[i] > best:
            mask[i] = True
            best = y[i]
    return mask


def _jsonable(value):
    return json.dumps(value) if isinstance(value, (list, dict, tuple)) else value


def panels(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The (title, rows) groups that share one plot and one frontier: one benchmark on one model."""
    done = df[df["status"] == "done"]
    several_models = done["model"].nunique() > 1
    out = []
    for (dataset, model), rows in done.groupby(["dataset", "model"], dropna=False, sort=True):
        title = f"{dataset}" + (f" ({model})" if several_models else "")
        out.append((title, rows))
    return out


def tidy(rows: list[dict]) -> pd.DataFrame:
    """Rows -> DataFrame with the derived columns (params, label, series, unreduced, Pareto flags)."""
    df = pd.DataFrame(rows)
    for col in LEADING + ["sweep_dir"]:
        if col not in df:
            df[col] = np.nan
    for col in df.columns:  # lists (pdrop's boundaries) and dicts would not fit a Parquet column
        if df[col].dtype == object:
            df[col] = df[col].map(_jsonable)
    param_cols = sorted(c for c in df.columns if c.startswith(("merger.", "pruner.")))

    # params: the merger/pruner fields that vary between the jobs of one method
    varying: dict[str, list[str]] = {}
    for method, rows_m in df.groupby("method", dropna=False):
        # (a job whose config is unknown, a missing one, does not make a field vary)
        varying[method] = [c for c in param_cols if rows_m[c].dropna().astype(str).nunique() > 1]

    def params_of(row):
        return " ".join(f"{c.split('.', 1)[1]}={_fmt_param(row[c])}" for c in varying.get(row["method"], [])
                        if not _isnan(row[c]))

    df["params"] = df.apply(params_of, axis=1) if len(df) else []
    df["label"] = [m if not p else f"{m} {p}" for m, p in zip(df["method"], df["params"])]
    df["unreduced"] = (df["merger"] == "none") & (df["pruner"] == "none")
    # a line per method; the sweep's name joins it where one method comes from several sweeps
    by_method = df.groupby(["dataset", "model", "method"], dropna=False)["sweep"].transform("nunique")
    df["series"] = [f"{m} ({s})" if n > 1 else m for m, s, n in zip(df["method"], df["sweep"], by_method)]

    df["pareto_tflops"] = False
    df["pareto_prefill_ms"] = False
    for _, rows_p in panels(df):
        for cost in ("tflops", "prefill_ms"):
            mask = pareto_front(rows_p[cost], rows_p["score"])
            df.loc[rows_p.index[mask], f"pareto_{cost}"] = True
    for col in ("score", "accuracy", "agreement", "kl", "tflops", "tflops_analytic", "tflops_fastv", "prefill_ms",
                "prefill_ms_median", "roofline_tflops", "roofline_prefill_ms", "tflops_unreduced_analytic",
                "tflops_unreduced_fastv", "visual_tokens", "text_tokens", "frames_without_tokens"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["status"] = pd.Categorical(df["status"], categories=list(STATUSES) + sorted(set(df["status"]) - set(STATUSES)))
    rest = sorted(c for c in df.columns if c not in LEADING and c not in param_cols)
    df = df[LEADING + param_cols + rest]
    return df.sort_values(["sweep", "job"], kind="stable").reset_index(drop=True)


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt_param(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def save_table(df: pd.DataFrame, stem: Path) -> tuple[Path, Path]:
    """`<stem>.parquet` and `<stem>.csv`."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    out["status"] = out["status"].astype(str)
    for col in out.columns:  # Parquet wants one type per column: a field that is a number in one job's
        if out[col].dtype == object:  # config and a string in another's is stored as text
            kinds = {type(v) for v in out[col] if not _isnan(v)}
            if len(kinds) > 1 and not kinds <= {int, float}:
                out[col] = [v if _isnan(v) else str(v) for v in out[col]]
    parquet, csv = stem.with_suffix(".parquet"), stem.with_suffix(".csv")
    out.to_parquet(parquet, index=False)
    out.to_csv(csv, index=False)
    return parquet, csv


def status_counts(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{sweep: {state: count}} over the states that occur."""
    out: dict[str, dict[str, int]] = {}
    for sweep, rows in df.groupby("sweep", sort=True):
        counts = rows["status"].astype(str).value_counts()
        out[sweep] = {s: int(counts[s]) for s in list(STATUSES) + sorted(set(counts.index) - set(STATUSES)) if s in counts}
    return out
