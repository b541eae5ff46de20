"""Per-sample records in `samples.jsonl`: appended and flushed one line at a time, so a run that is killed
loses at most the sample in flight and a rerun in the same directory resumes without duplicates."""
from __future__ import annotations

import json
import os
from pathlib import Path


class SampleRecords:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: list[dict] = self._load()
        self._ids = {r["id"] for r in self.records}
        self._file = None

    def _load(self) -> list[dict]:
        """Read complete lines; a torn last line (no newline, or not JSON) is cut off the file."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records, kept = [], 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            kept += len(line)
        if kept != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(kept)
        seen, unique = set(), []
        for r in records:  # keep the first record of an id, should a file ever hold two
            if r["id"] not in seen:
                seen.add(r["id"])
                unique.append(r)
        return unique

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._ids

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict) -> None:
        if record["id"] in self._ids:
            raise ValueError(f"sample {record['id']!r} is already recorded")
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records.append(record)
        self._ids.add(record["id"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

