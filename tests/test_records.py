"""samples.jsonl is append-only and survives a kill: a torn last line is dropped, ids never repeat."""
import json

import pytest

from aim.tracking.records import SampleRecords, read_samples


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


def test_a_torn_line_in_the_middle_drops_only_that_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "corr\n{"id": "c"}\n{"id": "d"}\n')
    recs = SampleRecords(path)
    assert [r["id"] for r in recs.records] == ["a", "c", "d"]  # the records after the torn line are kept


def test_lines_without_an_id_or_not_utf8_are_dropped_on_every_resume_without_error(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"correct": true}\n\xff\xfe{"id": "x"}\n[1, 2]\n{"id": "b"}\n')
    for _ in range(2):
        recs = SampleRecords(path)
        assert [r["id"] for r in recs.records] == ["a", "b"]
        recs.close()


def test_dropped_lines_are_moved_to_the_dropped_file_counted_and_reported(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b", "corr\n\xff\n{"id": "a", "again": 1}\n{"id": "c"}\n')
    recs = SampleRecords(path)
    assert recs.dropped == 3
    assert "dropped 3 unreadable line(s)" in capsys.readouterr().err
    assert (tmp_path / "s.jsonl.dropped").read_bytes() == b'{"id": "b", "corr\n\xff\n{"id": "a", "again": 1}\n'
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "c"}\n'  # the records alone, as they were written
    recs.append({"id": "d"})
    recs.close()
    again = SampleRecords(path)
    assert [r["id"] for r in again.records] == ["a", "c", "d"]
    assert again.dropped == 3 and capsys.readouterr().err == ""  # counted over all resumes, reported once


def test_reading_for_analysis_keeps_every_valid_line_and_changes_nothing(tmp_path):
    from aim.tracking.records import summarized_records

    path = tmp_path / "s.jsonl"
    content = b'{"id": "a"}\n{"id": "b", "corr\n{"no": "id"}\n{"id": "c"}\n{"id": "d", "in fli'
    path.write_bytes(content)
    assert [r["id"] for r in read_samples(path).records] == ["a", "c"]
    records, mismatch = summarized_records(path, {"num_samples": 2})
    assert [r["id"] for r in records] == ["a", "c"] and mismatch is None
    assert summarized_records(path, {"num_samples": 3}) == (None, "s.jsonl holds 2 answered record(s) and 3 unreadable "
                                                            "line(s) (line 2: not JSON (torn or corrupt)), results.json "
                                                            "counts num_samples=3")
    assert path.read_bytes() == content and not (tmp_path / "s.jsonl.dropped").exists()
