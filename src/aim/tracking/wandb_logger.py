"""Weights & Biases mirror of a run: config, running accuracy, the summary and the per-sample table.

One W&B run per job. The run id is derived from the output directory, so a resumed or requeued job
continues the same W&B run. Jobs of a sweep share a group (the sweep dir's name, unless `logger.group`
says otherwise) and are tagged with their merger and pruner (`merger:aim`, `pruner:fastv`) besides
`logger.tags`. The summary holds every scalar of results.json, nested ones flattened
(`accuracy_by_type/colour`, `tflops_breakdown/vision_tower`), fidelity to the unreduced model (`agreement`,
`kl`) included; the per-sample table has both beside `correct`.

W&B is a mirror, never a dependency of the results: when `mode: online` cannot start (no API key, no
network, a server that does not answer within `logger.init_timeout_s`), the run is logged offline instead
and a line on stderr says so; `wandb sync <run dir>/wandb/offline-run-*` uploads it later."""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


class NullLogger:
    def log_progress(self, records: list[dict]) -> None: ...

    def finish(self, summary: dict, records: list[dict]) -> None: ...


def flat_summary(summary: dict) -> dict:
    """results.json without the config; nested dicts also as `key/subkey` scalars (W&B charts them)."""
    out = {}
    for key, value in summary.items():
        if key == "config":
            continue
        out[key] = value
        if isinstance(value, dict):
            stack = [(key, value)]
            while stack:
                prefix, node = stack.pop()
                for k, v in node.items():
                    if isinstance(v, dict):
                        stack.append((f"{prefix}/{k}", v))
                    else:
                        out[f"{prefix}/{k}"] = v
    return out


def run_id(out_dir: Path, suffix: str = "") -> str:
    """A W&B run id fixed by the output directory: a rerun there continues the same run."""
    return hashlib.sha1((str(Path(out_dir).resolve()) + suffix).encode()).hexdigest()[:12]


def init_run(mode: str, out_dir: Path, init_timeout_s: float = 90.0, **kwargs):
    """`wandb.init` writing under `out_dir`/wandb; `mode: online` that cannot start (no API key, no network, no
    answer within `init_timeout_s`) logs offline instead and says so on stderr."""
    import wandb

    kwargs = dict(dir=str(out_dir), settings=wandb.Settings(init_timeout=init_timeout_s), **kwargs)
    try:
        return wandb.init(mode=mode, **kwargs)
    except Exception as exc:
        if mode != "online":
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"aim: W&B online logging unavailable ({type(exc).__name__}: {reason}); logging offline to "
              f"{Path(out_dir) / 'wandb'} instead; upload later with `wandb sync {Path(out_dir) / 'wandb'}/offline-run-*`",
              file=sys.stderr)
        # the failed online attempt still holds its run id in W&B's service process; without tearing it
        # down the offline retry with the same id (a resume continues it) fails with "run ID ... is in use".
        # A service inherited from a parent process (WANDB_SERVICE, set by any process that ran W&B) outlives
        # this one's teardown: the retry starts a service of its own instead.
        wandb.teardown()
        os.environ.pop("WANDB_SERVICE", None)
        return wandb.init(mode="offline", **kwargs)


class WandbLogger:
    def __init__(self, cfg, out_dir: Path, config: dict, method: dict | None = None, group: str | None = None):
        import wandb

        self.wandb = wandb
        self.every = cfg.log_every
        tags = list(cfg.tags) + [f"{k}:{v}" for k, v in (method or {}).items()]
        self.run = init_run(cfg.mode, out_dir, cfg.init_timeout_s, project=cfg.project, entity=cfg.entity,
                            config=config, tags=tags, group=cfg.group or group, name=Path(out_dir).name,
                            id=run_id(out_dir), resume="allow")

    def log_progress(self, records: list[dict]) -> None:
        if not records or len(records) % self.every:
            return
        done = [r for r in records if not r.get("skipped") and r.get("correct") is not None]  # scored ones
        compared = [r for r in records if r.get("agreement") is not None]  # fidelity needs no label
        point = {"progress/samples": len(records)}
        if done:
            point["progress/accuracy"] = sum(r["correct"] for r in done) / len(done)
        if compared:
            point["progress/agreement"] = sum(r["agreement"] for r in compared) / len(compared)
        if len(point) > 1:
            self.run.log(point)

    def finish(self, summary: dict, records: list[dict]) -> None:
        self.run.summary.update(flat_summary(summary))
        cols = ["id", "question_type", "answer", "prediction", "correct", "reference_prediction", "agreement", "kl",
                "visual_tokens", "tflops", "prefill_ms"]
        rows = [[r.get(c) for c in cols] for r in records if not r.get("skipped")]
        self.run.log({"samples": self.wandb.Table(columns=cols, data=rows)})
        self.run.finish()


def make_logger(cfg, out_dir: Path, config: dict, method: dict | None = None, group: str | None = None):
    """`method`: {merger, pruner} names, tagged on the run; `group`: the sweep's name in a multirun."""
    return WandbLogger(cfg, out_dir, config, method, group) if cfg.name == "wandb" else NullLogger()
