"""Read back what an offline W&B run wrote: its `.wandb` file, as `wandb sync` would upload it.

The file is a 7-byte header (":W&B", a 2-byte magic, a version byte) followed by LevelDB-log records
(32 KiB blocks; each record: crc32c (4 bytes), length (2, little-endian), type (1): FULL=1, FIRST=2,
MIDDLE=3, LAST=4; a block tail shorter than a record header is zero padding). Each assembled record is a
`wandb.proto.wandb_internal_pb2.Record` protobuf. Checksums are not verified: this is a test's reader.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def raw_records(path: str | Path):
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # zero padding at the end of a block
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:  # an unused block tail
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if kind == 1:
            yield payload
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            yield pending + payload
            pending = b""


def read_run(path: str | Path) -> dict:
    """{"group", "tags", "name", "job_type", "config": {key: value}, "summary": {key: value}} of one run file
    (later updates of a key win, as in the W&B UI; nested keys joined with '/', e.g. `_wandb/visualize/<chart>`)."""
    from wandb.proto import wandb_internal_pb2 as pb

    run = {"group": None, "tags": [], "name": None, "job_type": None, "config": {}, "summary": {}}
    for payload in raw_records(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(group=record.run.run_group, tags=list(record.run.tags), name=record.run.display_name,
                       job_type=record.run.job_type)
            for item in record.run.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                run["summary"][key] = json.loads(item.value_json)
    return run


def wait_until_complete(path: str | Path, timeout: float = 60) -> Path:
    """Wait for an offline run file's `exit` record. W&B's service process writes the file; `run.finish()`
    may return in the logging process before it has flushed (seen with wandb 0.31: a 7-byte file, complete
    a moment later), so a test that logs in-process reads the file only once it is whole."""
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.time() + timeout
    while True:
        try:
            for payload in raw_records(path):
                record = pb.Record()
                record.ParseFromString(payload)
                if record.WhichOneof("record_type") == "exit":
                    return Path(path)
        except Exception:  # a record still being written
            pass
        if time.time() > deadline:
            raise TimeoutError(f"{path}: no exit record after {timeout:.0f} s")
        time.sleep(0.2)
