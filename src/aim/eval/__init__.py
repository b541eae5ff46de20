"""The evaluation loop: answer scoring and resumable per-sample records."""
from aim.eval.loop import evaluate, parse_letter

__all__ = ["evaluate", "parse_letter"]
