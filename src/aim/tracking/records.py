"""Per-sample records in `samples.jsonl`: appended and flushed one line at a time, so a run that is killed
loses at most the sample in flight and a rerun in the same directory resumes without duplicates.

`read_samples` is the one reader of the file (the resume, the analysis, the sweep status): every line that
is a JSON object with a string `id` is a record, wherever it stands; any other line (torn by a kill, not
UTF-8, not JSON, no `id`, an id already recorded above it) is dropped and reported, never the lines after
it. A resume (`SampleRecords`) moves the dropped lines to `samples.jsonl.dropped`, so nothing is lost, and
rewrites the file with the records alone. `summarized_records` gives the analysis the records of a finished
run only where they are the samples its results.json counts."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

DROPPED_SUFFIX = ".dropped"


@dataclass
class SamplesFile:
    """What `read_samples` found: the records (the first of each id, in file order) and the dropped lines
    as (line number from 1, raw bytes without the newline, why)."""

    records: list[dict] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)  # each record's line as read
    dropped: list[tuple[int, bytes, str]] = field(default_factory=list)
    clean_end: bool = True  # the file is empty or ends with a newline


def _why_unreadable(line: bytes, seen: set) -> tuple[dict | None, str]:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError:
        return None, "not JSON (torn or corrupt)"
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None, "no string `id`"
    if record["id"] in seen:
        return None, f"id {record['id']!r} already recorded above"
    return record, ""


def read_samples(path: str | Path) -> SamplesFile:
    """Read samples.jsonl without changing it (a missing file has no records)."""
    path = Path(path)
    if not path.exists():
        return SamplesFile()
    data = path.read_bytes()
    out = SamplesFile(clean_end=not data or data.endswith(b"\n"))
    seen: set[str] = set()
    for number, line in enumerate(data.split(b"\n")[:-1] if out.clean_end else data.split(b"\n"), start=1):
        if not line.strip():
            continue  # a blank line carries nothing to lose
        record, why = _why_unreadable(line, seen)
        if record is None:
            out.dropped.append((number, line, why))
        else:
            out.records.append(record)
            out.lines.append(line)
            seen.add(record["id"])
    return out


def summarized_records(path: str | Path, summary: dict) -> tuple[list[dict] | None, str | None]:
    """The records of samples.jsonl that a run's summary (its results.json) was computed from, as (records, None),
    for what the analysis derives from them; (None, why) when the file's answered records are not as many as
    the summary's `num_samples`: fewer (a torn or partly copied file) or more (a later invocation of the run,
    unfinished, or with another dataset.limit), so that a mean over them would be over other samples."""
    found = read_samples(path)
    answered = sum(not r.get("skipped") for r in found.records)
    if answered == summary.get("num_samples"):
        return found.records, None
    unreadable = (f" and {len(found.dropped)} unreadable line(s) (line {found.dropped[0][0]}: {found.dropped[0][2]})"
                  if found.dropped else "")
    return None, (f"{Path(path).name} holds {answered} answered record(s){unreadable}, results.json counts "
                  f"num_samples={summary.get('num_samples')!r}")


def count_dropped(path: str | Path) -> int:
    """How many lines of this samples.jsonl have been moved to its `.dropped` file, over all resumes."""
    dropped = Path(str(path) + DROPPED_SUFFIX)
    return dropped.read_bytes().count(b"\n") if dropped.exists() else 0


class SampleRecords:
    """The records of one run dir, opened for appending. Opening repairs the file (see the module doc) and
    says on stderr how many lines it dropped; `dropped` counts every line ever dropped from it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        found = read_samples(self.path)
        if found.dropped or not found.clean_end:
            self._repair(found)
        self.records: list[dict] = found.records
        self.dropped = count_dropped(self.path)
        self._ids = {r["id"] for r in self.records}
        self._file = None

    def _repair(self, found: SamplesFile) -> None:
        """Append the dropped lines to the .dropped file (synced first: killed in between, they are only
        dropped again), then replace samples.jsonl by its records, atomically."""
        if found.dropped:
            with open(str(self.path) + DROPPED_SUFFIX, "ab") as f:
                f.write(b"".join(line + b"\n" for _, line, _ in found.dropped))
                f.flush()
                os.fsync(f.fileno())
            lines = ", ".join(f"{n} ({why})" for n, _, why in found.dropped[:10])
            more = f" and {len(found.dropped) - 10} more" if len(found.dropped) > 10 else ""
            print(f"aim: {self.path}: dropped {len(found.dropped)} unreadable line(s), moved to "
                  f"{self.path.name}{DROPPED_SUFFIX}: line {lines}{more}; samples left without a record are evaluated again",
                  file=sys.stderr)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in found.lines))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

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
