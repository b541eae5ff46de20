"""The end-of-run summary as a user reads it: in a terminal, or in a redirected / SLURM log."""
from pathlib import Path

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
