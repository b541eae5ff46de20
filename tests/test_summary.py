"""The end-of-run summary as a user reads it: in a terminal, or in a redirected / SLURM log."""
from pathlib import Path

import pytest

from aim.tracking.results import print_summary


def a_summary():
    return {
        "method": {"merger": "prumerge_plus", "pruner": "fastv"}, "metric": "accuracy", "score": 0.93125,
        "accuracy": 0.93125, "agreement": 0.987654321, "kl": 0.11234567, "num_samples": 123456,
        "num_skipped": 12345, "visual_tokens": 123456.5, "tflops": 8.2451234e-05, "prefill_ms": 123456.78,
        "accuracy_by_type": {"colour": 0.9, "count": 0.95}, "metric_details": {},
        "tflops_breakdown": {"vision_tower": 1e-5, "projector": 2e-6, "merge": 3e-7, "importance": 0.0,
                             "lm_head": 1e-7},
    }


def test_the_summary_table_is_printed_in_full_when_output_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # a log file has no width; rich would assume 80 columns
    print_summary(a_summary(), Path("out"))
    out = capsys.readouterr().out
    assert "…" not in out
    for text in ("accuracy", "agreement", "KL", "samples", "skipped", "visual tokens", "TFLOPs", "prefill ms",
                 "0.931", "0.9877", "0.1123", "123456", "12345", "123456.5", "8.245e-05", "123456.78",
                 "merger=prumerge_plus pruner=fastv"):
        assert text in out, text
    header = next(line for line in out.splitlines() if "accuracy" in line and "TFLOPs" in line)
    assert len(header) > 80  # one line, wider than the 80 columns it used to be cut at


def measured(k: int, **fields) -> dict:
    """An answered record as aim.eval.loop writes it now, with `fields` replaced (None: left out)."""
    record = {"id": f"q{k}", "question_type": "colour", "correct": k % 2 == 0, "num_frames": 4, "visual_tokens": 40,
              "text_tokens": 30, "tflops": 1e-4 * (k + 1), "tflops_analytic": 1e-4, "tflops_fastv": 2e-4 * (k + 1),
              "vision_tower_tflops": 3e-4, "projector_tflops": 4e-5, "merge_tflops": 1e-6, "importance_tflops": 1e-5,
              "lm_head_tflops": 1e-8, "prefill_ms": 10.0 + k, "batch_size": 1}
    record.update(fields)
    return {k: v for k, v in record.items() if v is not None}


def test_no_measurement_is_a_mean_over_only_the_records_that_carry_it():
    """A run resumed across versions: `tflops_fastv` was the mean over the newer records alone (here 2 of 4), as if
    it were the run's, and a record without `tflops` or `tflops_analytic` stopped summarize with a KeyError."""
    from aim.tracking.results import summarize

    older = [measured(k, tflops_fastv=None) for k in range(2)]
    newer = [measured(k) for k in range(2, 4)]
    summary = summarize(older + newer, {}, {})
    assert summary["num_samples"] == 4
    assert summary["tflops_fastv"] is None
    assert summary["means_left_out"] == {"tflops_fastv": (
        "2 of 4 answered records lack tflops_fastv (written by an aim.run that did not record it, then resumed): no "
        "mean over the other 2; a new run dir measures every sample")}
    assert summary["tflops"] == pytest.approx(2.5e-4) and summary["prefill_ms"] == 11.5  # over all 4
    assert summarize(newer, {}, {})["tflops_fastv"] == pytest.approx(7e-4)  # every record has it: its mean

    no_tflops = summarize([measured(0, tflops=None, tflops_analytic=None, prefill_ms=None), measured(1)], {}, {})
    assert no_tflops["tflops"] is None and no_tflops["prefill_ms"] is None and no_tflops["prefill_ms_median"] is None
    assert set(no_tflops["means_left_out"]) == {"tflops", "tflops_analytic", "prefill_ms"}
    assert summarize([measured(0, ttft_ms=None)], {}, {})["means_left_out"] == {}  # none has it: not measured


def test_a_measured_but_undefined_value_is_left_out_of_its_mean_as_always():
    """A generated answer that ended at its first token has no decode rate: its record carries
    decode_tokens_per_s None. The run's rate is the mean over the answers that have one, with nothing left out."""
    from aim.tracking.results import summarize

    decoded = {"ttft_ms": 5.0, "kv_cache_bytes": 100, "decode_tokens": 3}
    records = [{**measured(0), **decoded, "decode_tokens_per_s": 30.0},
               {**measured(1), **decoded, "decode_tokens_per_s": None},
               {**measured(2), **decoded, "decode_tokens_per_s": 10.0}]
    summary = summarize(records, {}, {})
    assert summary["decode_tokens_per_s"] == 20.0 and summary["ttft_ms"] == 5.0
    assert summary["means_left_out"] == {}


def test_the_summary_prints_a_mean_left_out_as_a_dash_and_says_why(capsys, monkeypatch):
    from aim.tracking.results import summarize

    monkeypatch.delenv("COLUMNS", raising=False)
    summary = summarize([measured(0, tflops=None), measured(1)], {"merger": "none", "pruner": "none"}, {})
    print_summary(summary, Path("out"))
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "0.500" in line)
    assert row.split("│")[-3].strip() == "-"  # the TFLOPs cell
    assert "no tflops: 1 of 2 answered records lack tflops (written by an aim.run that did not record it" in out
