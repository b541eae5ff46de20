"""samples.jsonl is append-only and survives a kill: a torn last line is dropped, ids never repeat."""
import json

import pytest

from aim.tracking.records import SampleRecords


def test_records_are_flushed_and_reloaded(tmp_path):
    path = tmp_path / "samples.jsonl"
    recs = SampleRecords(path)
    recs.append({"id": "a", "correct": True})
    recs.append({"id": "b", "correct": False})
    # flushed line by line: readable before close
    assert [json.loads(l)["id"] for l in path.read_text().splitlines()] == ["a", "b"]
    recs.close()
    again = SampleRecords(path)
    assert len(again) == 2 and "a" in again and "c" not in again


def test_a_sample_cannot_be_recorded_twice(tmp_path):
    recs = SampleRecords(tmp_path / "s.jsonl")
    recs.append({"id": "a"})
    with pytest.raises(ValueError, match="already recorded"):
        recs.append({"id": "a"})


def test_a_torn_last_line_is_cut_and_appends_continue_cleanly(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "corr')
    recs = SampleRecords(path)
    assert [r["id"] for r in recs.records] == ["a", "b"]
    recs.append({"id": "c"})
    recs.close()
    assert [json.loads(l)["id"] for l in path.read_text().splitlines()] == ["a", "b", "c"]
