"""The run summary (`results.json`) computed from the per-sample records, and its console table."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from aim.eval import scoring

TFLOPS_SOURCE = ("fvcore: traced LLM prefill, decoder layers, 2 FLOPs per multiply-add, SDPA counted "
                 "(aim.efficiency.fvcore_count); tflops_analytic: aim.efficiency.analytic at the same counts; "
                 "tflops_fastv: FastV's convention, 4nd^2 + 2n^2d + 2ndm per layer at the same counts (no GQA, "
                 "no lm_head), the figure FastV-style papers report")


def headline(metric: str, records: list[dict], accuracy_by_type: dict[str, float]) -> tuple[float, dict]:
    """(score, details) of the benchmark's headline metric over the answered records:
    - `accuracy`: the fraction answered correctly;
    - `mean_over_types`: the mean of the per-type accuracies, so every question type weighs the same however
      many questions it has (MLVU's m-avg, MVBench's average over its tasks);
    - `vqa_accuracy`: the mean per-sample soft score (`score`; VQA-v2, TextVQA), also per type;
    - `mme_score`: MME's perception + cognition score (acc*100 + acc+*100 per subtask; the records' `group`
      pairs an image's two questions), with perception, cognition and every subtask's acc and acc+;
    - `pope_f1`: POPE's F1 ("yes" positive), the mean over its splits (the question types), per split;
    - `circular_accuracy`: MMBench's CircularEval over the records' `group`s (all shifts right);
    - `mvbench_accuracy`: MVBench as lmms-eval aggregates it: per task over the questions with a non-empty
      response (an empty generated answer leaves the denominator), then the mean over the tasks."""
    if not records:
        return float("nan"), {}
    if metric == "accuracy":
        return float(np.mean([bool(r["correct"]) for r in records])), {}
    if metric == "mean_over_types":
        return float(np.mean(list(accuracy_by_type.values()))), {}
    if metric == "vqa_accuracy":
        details = scoring.vqa_accuracy(records)
        return details.pop("vqa_accuracy"), details
    if metric == "mme_score":
        details = scoring.mme_scores(records)
        return details["total"], details
    if metric == "pope_f1":
        details = scoring.pope_scores(records)
        return details["f1"], details
    if metric == "circular_accuracy":
        details = scoring.circular_accuracy(records)
        return details.pop("circular_accuracy"), details
    if metric == "mvbench_accuracy":
        details = scoring.mvbench_accuracy(records)
        return details.pop("mvbench_accuracy"), details
    raise ValueError(f"dataset.metric: {metric!r} is not a metric this summary computes")


def summarize(records: list[dict], method: dict, config: dict) -> dict:
    """`score` is the benchmark's headline metric, named by `metric` (the dataset config's, else plain
    accuracy; see `headline`), with what it is made of in `metric_details`. `accuracy` and its breakdowns
    count the records' `correct` (for VQA scores: full credit); records without one (VQA-v2 test-dev,
    unlabeled data) are answered but not scored. Fidelity to the unreduced model (aim.eval.fidelity), which
    needs no labels: `agreement` (the fraction of samples answered as the unreduced model answers) and `kl`
    (mean KL(full || reduced) over the answer options, nats) over the `fidelity_samples` records that carry
    them; None where none does (fidelity off; `kl` also when answers are generated). `num_frames`: the mean
    number of frames sampled per sample (records before it was recorded: None), `num_frames_asked` the
    config's `dataset.num_frames` (`frames_note`)."""
    done = [r for r in records if not r.get("skipped")]
    skipped = [r for r in records if r.get("skipped")]
    scored = [r for r in done if r.get("correct") is not None]
    by_type: dict[str, list[bool]] = defaultdict(list)
    by_category: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in scored:
        by_type[r.get("question_type") or "all"].append(bool(r["correct"]))
        for key, value in (r.get("categories") or {}).items():
            by_category[key][value].append(bool(r["correct"]))

    def mean(key, among=done):
        return float(np.mean([r[key] for r in among])) if among else float("nan")

    def mean_of(key):
        values = [r[key] for r in done if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    accuracy_by_type = {k: float(np.mean(v)) for k, v in sorted(by_type.items())}
    metric = (config.get("dataset") or {}).get("metric") or "accuracy"
    score, details = headline(metric, scored, accuracy_by_type)
    return {
        "metric": metric,
        "score": score,
        "metric_details": details,
        "accuracy": mean("correct", scored),
        "agreement": mean_of("agreement"),
        "kl": mean_of("kl"),
        "fidelity_samples": sum(r.get("agreement") is not None for r in done),
        "accuracy_by_type": accuracy_by_type,
        "accuracy_by_category": {
            key: {value: float(np.mean(hits)) for value, hits in sorted(values.items())}
            for key, values in sorted(by_category.items())
        },
        "num_samples": len(done),
        "num_skipped": len(skipped),
        "skipped_ids": [r["id"] for r in skipped],
        "tflops": mean("tflops"),
        "tflops_source": TFLOPS_SOURCE,
        "tflops_analytic": mean("tflops_analytic"),
        "tflops_fastv": mean_of("tflops_fastv"),  # None for records written before it was counted
        "tflops_breakdown": {  # per sample, fvcore; the LLM prefill is `tflops`
            k.removesuffix("_tflops"): mean(k)
            for k in ("vision_tower_tflops", "projector_tflops", "merge_tflops", "importance_tflops", "lm_head_tflops")
        },
        "prefill_ms": mean("prefill_ms"),
        "prefill_ms_median": float(np.median([r["prefill_ms"] for r in done])) if done else float("nan"),
        # eval.mode=generate: what decoding cost, per sample (None in the scoring modes)
        "ttft_ms": mean_of("ttft_ms"),
        "decode_tokens_per_s": mean_of("decode_tokens_per_s"),
        "kv_cache_bytes": mean_of("kv_cache_bytes"),
        # samples per prefill (eval.batch_size): above 1, prefill_ms is each sample's share of a batch's time
        "prefill_batch_size": float(np.mean([r.get("batch_size", 1) for r in done])) if done else float("nan"),
        "visual_tokens": mean("visual_tokens"),
        "visual_tokens_per_frame": per_frame_mean(done),
        "text_tokens": mean("text_tokens"),
        "num_frames": mean_of("num_frames"),  # the mean frames sampled per sample: fewer when videos are shorter
        "num_frames_asked": (config.get("dataset") or {}).get("num_frames"),
        "method": method,
        "config": config,
    }


def throughput(samples: int, seconds: float) -> dict:
    """An evaluation's speed: samples recorded (skipped ones included) over the wall time of the evaluation
    loop (decoding, prefill, scoring; not the model's loading). aim.run gives what this invocation evaluated (a
    resumed run counts only its own); a sharded run adds up its shards'. None per second when nothing was
    evaluated."""
    return {"samples": samples, "wall_s": seconds, "samples_per_s": samples / seconds if samples else None}


def per_frame_mean(done: list[dict]) -> list[float] | None:
    """The mean kept visual tokens of each frame (merger group) over the samples, frame by frame (a clip reducer
    keeps different counts per frame); None where the samples have different numbers of groups (videos
    shorter than dataset.num_frames) or records from before this field."""
    lists = [r.get("visual_tokens_per_frame") for r in done]
    if not lists or any(not x for x in lists) or len({len(x) for x in lists}) != 1:
        return None
    return np.mean(np.array(lists, dtype=float), 0).tolist()


def frames_note(summary: dict) -> str | None:
    """A line for the summary when the videos had fewer frames than dataset.num_frames asked for."""
    sampled, asked = summary.get("num_frames"), summary.get("num_frames_asked")
    if sampled is None or asked is None or sampled >= asked:
        return None
    return (f"frames: {sampled:.1f} sampled per sample on average, fewer than the {asked} asked for "
            "(dataset.num_frames): some videos have fewer frames, and each of their frames was used once")


def write_results(path: Path, summary: dict) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(path)


LOG_WIDTH = 1000  # columns of a non-terminal output: wide enough that no table cell or line is cut or wrapped


def print_summary(summary: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"aim run: merger={summary['method']['merger']} pruner={summary['method']['pruner']}")
    fidelity = {"agreement": summary.get("agreement"), "KL": summary.get("kl")}
    fidelity = {k: v for k, v in fidelity.items() if v is not None}
    for col in ("accuracy", *fidelity, "samples", "skipped", "visual tokens", "TFLOPs", "prefill ms"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{summary['accuracy']:.3f}", *(f"{v:.4g}" for v in fidelity.values()), str(summary["num_samples"]),
        str(summary["num_skipped"]), f"{summary['visual_tokens']:.1f}", f"{summary['tflops']:.3e}",
        f"{summary['prefill_ms']:.2f}",
    )
    console = Console()
    if not console.is_terminal:  # a log file or SLURM output: rich would cut the table at 80 columns
        console = Console(width=LOG_WIDTH)
    console.print(table)
    if frames_note(summary):
        console.print(frames_note(summary))
    speed = summary.get("throughput") or {}
    if speed.get("samples_per_s"):
        console.print(f"throughput: {speed['samples']} samples evaluated by this run in {speed['wall_s']:.1f} s = "
                      f"{speed['samples_per_s']:.2f} samples/s (decoding, prefill, scoring; not the model's loading)")
    if summary.get("metric", "accuracy") != "accuracy":
        console.print(f"{summary['metric']}: {summary['score']:.3f}")
    details = summary.get("metric_details") or {}
    for key in ("perception", "cognition"):  # MME's two scores
        if key in details:
            console.print(f"{key}: {details[key]:.2f}")
    for split, values in (details.get("splits") or {}).items():  # POPE's splits
        console.print(f"{split}: accuracy {values['accuracy']:.3f}  F1 {values['f1']:.3f}  yes {values['yes_ratio']:.3f}")
    by_type = "  ".join(f"{k} {v:.3f}" for k, v in summary["accuracy_by_type"].items())
    console.print(f"by question type: {by_type}")
    for key, values in summary.get("accuracy_by_category", {}).items():
        console.print(f"by {key}: " + "  ".join(f"{k} {v:.3f}" for k, v in values.items()))
    parts = "  ".join(f"{k} {v:.2e}" for k, v in summary["tflops_breakdown"].items())
    console.print(f"TFLOPs per sample besides the LLM prefill: {parts}")
    console.print(f"results: {out_dir / 'results.json'}")
