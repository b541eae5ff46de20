"""Fidelity to the unreduced model, measured without labels: how far a reduced run's answers are from the
answers the same model gives with every visual token kept.

Per sample, a reduced run records
- `agreement`: whether its prediction is the unreduced model's prediction (the option letter; generated
  answers as their answer format reads them, e.g. the normalised VQA answer);
- `kl`: KL(full || reduced) in nats between the two answer-option distributions, the softmax over the
  option letters' logits at the answer position (eval.mode=letter) or over the options' own next-token
  logits (eval.mode=likelihood); None when answers are generated (eval.mode=generate);
- `reference_prediction`: the unreduced model's prediction.

The unreduced answers are computed once per model, dataset (all its settings but `limit`; frames
included), eval mode and seed, and cached under `fidelity.cache_dir` in one append-only JSONL file per
such key, shared by every run, sweep job and resume. A run needing a sample the cache lacks computes it
on the spot with the model already loaded (no merger, no pruner), appends it, and goes on; while it does,
it holds that sample's claim, so a concurrent run that needs the same sample waits for the entry instead
of computing it again (`ReferenceCache.claim`). A run with
merger=none and pruner=none is the reference itself: it appends its own answers and records agreement
True and KL 0 exactly.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

FORMAT = 1  # bump when what an entry means changes: old caches are then not read

__all__ = ["Fidelity", "ReferenceCache", "build_fidelity", "checkpoint_fingerprint", "compare", "kl_divergence",
           "option_log_probs", "reference_key", "reference_spec"]


# ------------------------------------------------------------------------------------------ the key

def _plain(node) -> dict:
    return asdict(node) if is_dataclass(node) else dict(node)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SAMPLED = 1 << 20  # bytes read from each end of a weight file for its fingerprint


def checkpoint_fingerprint(model: dict) -> dict | None:
    """What identifies the weights behind `model.pretrained` beyond its name, so that weights retrained in
    the same place get new reference answers: for a local checkpoint, each weight file's size and a hash of
    its first and last MiB (cheap for any size; a copy keeps it, retraining changes it); for a hub id, the
    commit of its cached snapshot. None with random weights (the seed decides them) or nothing to read."""
    if model.get("random_init") or not model.get("pretrained"):
        return None
    from aim.models.base import checkpoint_file, resolve_pretrained

    path = Path(resolve_pretrained(model["pretrained"]))
    if path.is_dir():
        out = {}
        for f in sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES):
            size = f.stat().st_size
            with open(f, "rb") as fh:
                head = fh.read(_SAMPLED)
                fh.seek(max(size - _SAMPLED, 0))
                tail = fh.read(_SAMPLED)
            out[f.name] = f"{size}:{hashlib.sha256(head + tail).hexdigest()[:16]}"
        return out or None
    config = checkpoint_file(str(path), "config.json", local_only=True)  # .../snapshots/<commit>/config.json
    return {"snapshot": Path(config).parent.name} if config else None


def reference_spec(valid) -> dict:
    """Everything that determines the unreduced model's answer to a sample: the model config and its
    weights' fingerprint, the dataset config but `limit` (frames included), the eval mode (and
    max_new_tokens when generating), the seed. Not the merger, pruner, logger or anything about progress
    and timing."""
    model = _plain(valid.model)
    dataset = {k: v for k, v in _plain(valid.dataset).items() if k != "limit"}
    evaluation = {"mode": valid.eval.mode}
    if valid.eval.mode == "generate":
        evaluation["max_new_tokens"] = valid.eval.max_new_tokens
    return {"format": FORMAT, "model": model, "checkpoint": checkpoint_fingerprint(model), "dataset": dataset,
            "eval": evaluation, "seed": valid.seed}


def reference_key(spec: dict) -> str:
    """A stable hash of a reference spec: the cache file's name."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------ the cache

class ReferenceCache:
    """The unreduced answers of one key: `<key>.jsonl`, one JSON object per line ({"id", "prediction",
    "log_probs", ["response"]}), and `<key>.json`, the spec it was made from (for people; never read back).

    Several jobs may append at once (a sweep on one machine, or SLURM jobs sharing a home directory): each
    entry is one write() of one whole line on a descriptor opened with O_APPEND, under an exclusive
    flock. A line torn by a killed job is ended before the next one is written, and a reader skips any
    line that is not a complete JSON object; the first entry of an id wins. A sample whose entry is lost
    is only computed again.

    A job about to compute an entry claims its sample first (`claim`): a byte-range lock (lockf) on
    `<key>.claims` at an offset given by the id's hash, one file however many samples, released by the
    kernel should the job die. A job that finds the claim taken waits for it and then reads the entry."""

    def __init__(self, path: str | Path, spec: dict | None = None):
        self.path = Path(path)
        self._entries: dict[str, dict] = {}
        self._offset = 0  # bytes of the file already read
        self._claims_fd: int | None = None  # kept open: closing any descriptor of the file drops our locks
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if spec is not None:
            self._write_spec(spec)
        self.refresh()

    def _write_spec(self, spec: dict) -> None:
        path = self.path.with_suffix(".json")
        if not path.exists():
            tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(spec, indent=2, sort_keys=True, default=str))
            tmp.replace(path)

    def refresh(self) -> None:
        """Read the complete lines appended since the last read (by this job or any other)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a last line without its newline is being written or was torn
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # the remains of a torn line
            if isinstance(entry, dict) and "id" in entry and "prediction" in entry:
                self._entries.setdefault(str(entry["id"]), entry)
        self._offset += end

    def get(self, sample_id: str) -> dict | None:
        if sample_id not in self._entries:
            self.refresh()  # another job may have computed it meanwhile
        return self._entries.get(sample_id)

    def add(self, entry: dict) -> None:
        line = (json.dumps(entry) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # end a line torn by a killed job; readers skip it
            os.write(fd, line)
        finally:
            os.close(fd)  # releases the lock
        self._entries.setdefault(str(entry["id"]), entry)

    @contextmanager
    def claim(self, sample_id: str):
        """Hold the claim on computing `sample_id`'s entry; waits while another job holds it."""
        if self._claims_fd is None:
            self._claims_fd = os.open(self.path.with_suffix(".claims"), os.O_RDWR | os.O_CREAT, 0o644)
        offset = int(hashlib.sha256(str(sample_id).encode()).hexdigest()[:12], 16)  # beyond the (empty) file's end
        fcntl.lockf(self._claims_fd, fcntl.LOCK_EX, 1, offset)
        try:
            yield
        finally:
            fcntl.lockf(self._claims_fd, fcntl.LOCK_UN, 1, offset)

    def __contains__(self, sample_id: str) -> bool:
        return self.get(sample_id) is not None

    def __len__(self) -> int:
        self.refresh()
        return len(self._entries)


# ------------------------------------------------------------------------------------------ comparing

def option_log_probs(option_logits: torch.Tensor) -> list[float]:
    """The answer-option distribution as log-probabilities (log-softmax over the options' logits, float64)."""
    return torch.log_softmax(option_logits.detach().double().cpu(), dim=-1).tolist()


def kl_divergence(log_p, log_q) -> float:
    """KL(P || Q) = sum_i p_i (log p_i - log q_i) in nats, from log-probabilities; terms where p_i = 0 count 0.
    Rounding can make a tiny negative sum: the result is clamped at 0."""
    lp, lq = np.asarray(log_p, dtype=np.float64), np.asarray(log_q, dtype=np.float64)
    p = np.exp(lp)
    support = p > 0
    return max(float(np.sum(p[support] * (lp[support] - lq[support]))), 0.0)


def compare(reference: dict, answer: dict) -> dict:
    """The fidelity fields of a record: `agreement`, `kl` (None without both distributions) and the
    unreduced model's prediction."""
    p, q = reference.get("log_probs"), answer.get("log_probs")
    kl = None
    if p is not None and q is not None:
        if len(p) != len(q):
            raise ValueError(f"the cached unreduced answer has {len(p)} options, this run {len(q)}: the cache "
                             "does not belong to this dataset; clear fidelity.cache_dir")
        kl = kl_divergence(p, q)
    return {"agreement": answer["prediction"] == reference["prediction"], "kl": kl,
            "reference_prediction": reference["prediction"]}


class Fidelity:
    """Fidelity of one run against its cached reference. `is_reference`: the run is unreduced (merger and
    pruner `none`), so its own answers are the reference."""

    def __init__(self, cache: ReferenceCache, is_reference: bool = False):
        self.cache = cache
        self.is_reference = is_reference
        self.computed = 0  # unreduced answers this run had to compute (cache misses)

    def measure(self, sample_id: str, answer: dict, compute_reference: Callable[[], dict]) -> dict:
        """`answer`: this run's {"prediction", "log_probs" (None when generated)[, "response"]};
        `compute_reference()` returns the same for the unreduced model, called only on a cache miss."""
        if self.is_reference:
            if self.cache.get(sample_id) is None:
                self.cache.add({"id": sample_id, **answer})
            return {"agreement": True, "kl": 0.0 if answer.get("log_probs") is not None else None,
                    "reference_prediction": answer["prediction"]}
        reference = self.cache.get(sample_id)
        if reference is None:
            with self.cache.claim(sample_id):
                reference = self.cache.get(sample_id)  # computed by the job that held the claim, if any
                if reference is None:
                    reference = {"id": sample_id, **compute_reference()}
                    self.cache.add(reference)
                    self.computed += 1
        return compare(reference, answer)


def build_fidelity(valid) -> Fidelity | None:
    """The run's Fidelity from its validated config (None when `fidelity.enabled` is false)."""
    if not valid.fidelity.enabled:
        return None
    spec = reference_spec(valid)
    key = reference_key(spec)
    name = f"{_plain(valid.dataset).get('name', 'dataset')}-{key}.jsonl"
    cache = ReferenceCache(Path(os.path.expanduser(valid.fidelity.cache_dir)) / name, spec)
    unreduced = _plain(valid.merger).get("name") == "none" and _plain(valid.pruner).get("name") == "none"
    return Fidelity(cache, is_reference=unreduced)
