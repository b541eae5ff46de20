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
    config's `dataset.num_frames` (`frames_note`).

    Every per-sample measurement (TFLOPs, ms, tokens, frames; `measured_means`) is the mean over all
    `num_samples` answered records, or None: where none carries it (no sample answered; a mode or version that
    does not record it), and where only some do (a run resumed across versions, its older records written
    before the field was), with the reason in `means_left_out`: never a mean over fewer samples."""
    done = [r for r in records if not r.get("skipped")]
    skipped = [r for r in records if r.get("skipped")]
    scored = [r for r in done if r.get("correct") is not None]
    by_type: dict[str, list[bool]] = defaultdict(list)
    by_category: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in scored:
        by_type[r.get("question_type") or "all"].append(bool(r["correct"]))
        for key, value in (r.get("categories") or {}).items():
            by_category[key][value].append(bool(r["correct"]))

    def mean_of(key):  # fidelity: over the `fidelity_samples` records that carry it
        values = [r[key] for r in done if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    means, left_out = measured_means(done)

    accuracy_by_type = {k: float(np.mean(v)) for k, v in sorted(by_type.items())}
    metric = (config.get("dataset") or {}).get("metric") or "accuracy"
    score, details = headline(metric, scored, accuracy_by_type)
    return {
        "metric": metric,
        "score": score,
        "metric_details": details,
        "accuracy": float(np.mean([bool(r["correct"]) for r in scored])) if scored else float("nan"),
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
        "tflops": means["tflops"],
        "tflops_source": TFLOPS_SOURCE,
        "tflops_analytic": means["tflops_analytic"],
        "tflops_fastv": means["tflops_fastv"],  # None for records written before it was counted
        "tflops_breakdown": {k.removesuffix("_tflops"): means[k] for k in BREAKDOWN},  # fvcore; the LLM prefill is `tflops`
        "prefill_ms": means["prefill_ms"],
        "prefill_ms_median": means["prefill_ms_median"],
        # eval.mode=generate: what decoding cost, per sample (None in the scoring modes)
        "ttft_ms": means["ttft_ms"],
        "decode_tokens_per_s": means["decode_tokens_per_s"],
        "kv_cache_bytes": means["kv_cache_bytes"],
        # samples per prefill (eval.batch_size): above 1, prefill_ms is each sample's share of a batch's time
        # (records from before batching were prefilled one at a time)
        "prefill_batch_size": float(np.mean([r.get("batch_size", 1) for r in done])) if done else None,
        "visual_tokens": means["visual_tokens"],
        "visual_tokens_per_frame": per_frame_mean(done),
        "text_tokens": means["text_tokens"],
        "num_frames": means["num_frames"],  # the mean frames sampled per sample: fewer when videos are shorter
        "num_frames_asked": (config.get("dataset") or {}).get("num_frames"),
        "means_left_out": left_out,
        "method": method,
        "config": config,
    }


BREAKDOWN = ("vision_tower_tflops", "projector_tflops", "merge_tflops", "importance_tflops", "lm_head_tflops")
MEASUREMENTS = ("tflops", "tflops_analytic", "tflops_fastv", *BREAKDOWN, "prefill_ms", "ttft_ms", "decode_tokens_per_s",
                "kv_cache_bytes", "visual_tokens", "text_tokens", "num_frames")  # per sample, in the records


def measured_means(done: list[dict]) -> tuple[dict, dict[str, str]]:
    """({field: mean over the answered records}, {field: why it has none}) for each of `MEASUREMENTS` (and
    `prefill_ms_median`). A field that every answered record carries gets the mean of its values (a None value is
    measured but undefined, e.g. decode_tokens_per_s of an answer that ended at its first token, and left out as it
    always was); one that none carries, None (no answered record, or an eval mode or version that does not measure
    it); one that only some carry (a run resumed across versions: its older records lack the key), None and the
    reason, since the mean over the others would be over fewer samples than num_samples with nothing to say so."""
    means, left_out = {}, {}
    for key in MEASUREMENTS:
        carrying = [r for r in done if key in r]
        # a record may carry None: measured and undefined (decode_tokens_per_s when the first token ended the
        # answer), left out of the mean as before; a record without the key was written before it was measured
        values = [r[key] for r in carrying if r[key] is not None]
        means[key] = float(np.mean(values)) if values and len(carrying) == len(done) else None
        if carrying and len(carrying) < len(done):
            left_out[key] = (f"{len(done) - len(carrying)} of {len(done)} answered records lack {key} (written by an "
                             f"aim.run that did not record it, then resumed): no mean over the other {len(carrying)}; "
                             "a new run dir measures every sample")
    means["prefill_ms_median"] = (None if means["prefill_ms"] is None
                                  else float(np.median([r["prefill_ms"] for r in done])))
    return means, left_out


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


def _shown(value: float | None, spec: str) -> str:
    """A mean as the summary prints it; "-" where it has none (`measured_means`)."""
    return "-" if value is None else format(value, spec)


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
        str(summary["num_skipped"]), _shown(summary["visual_tokens"], ".1f"), _shown(summary["tflops"], ".3e"),
        _shown(summary["prefill_ms"], ".2f"),
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
    parts = "  ".join(f"{k} {_shown(v, '.2e')}" for k, v in summary["tflops_breakdown"].items())
    console.print(f"TFLOPs per sample besides the LLM prefill: {parts}")
    for key, why in (summary.get("means_left_out") or {}).items():
        console.print(f"no {key}: {why}")
    console.print(f"results: {out_dir / 'results.json'}")
