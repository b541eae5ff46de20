"""Weights & Biases mirror of a run: config, running accuracy, the summary and the per-sample table.

The run id is derived from the output directory, so a resumed run continues the same W&B run."""
from __future__ import annotations

import hashlib
from pathlib import Path


class NullLogger:
    def log_progress(self, records: list[dict]) -> None: ...

    def finish(self, summary: dict, records: list[dict]) -> None: ...


class WandbLogger:
    def __init__(self, cfg, out_dir: Path, config: dict):
        import wandb

        self.wandb = wandb
        self.every = cfg.log_every
        run_id = hashlib.sha1(str(Path(out_dir).resolve()).encode()).hexdigest()[:12]
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(out_dir), config=config,
            tags=list(cfg.tags), name=Path(out_dir).name, id=run_id, resume="allow",
        )

    def log_progress(self, records: list[dict]) -> None:
        done = [r for r in records if not r.get("skipped")]
        if done and len(records) % self.every == 0:
            acc = sum(r["correct"] for r in done) / len(done)
            self.run.log({"progress/accuracy": acc, "progress/samples": len(records)})

    def finish(self, summary: dict, records: list[dict]) -> None:
        self.run.summary.update({k: v for k, v in summary.items() if k != "config"})
        cols = ["id", "question_type", "answer", "prediction", "correct", "visual_tokens", "tflops", "prefill_ms"]
        rows = [[r.get(c) for c in cols] for r in records if not r.get("skipped")]
        self.run.log({"samples": self.wandb.Table(columns=cols, data=rows)})
        self.run.finish()


def make_logger(cfg, out_dir: Path, config: dict):
    return WandbLogger(cfg, out_dir, config) if cfg.name == "wandb" else NullLogger()
