"""Bad input to the datasets: a questions file that cannot be read is a config error naming the file and the
entry, found before any model loads; an entry that cannot be asked is skipped with its reason and the run
goes on; a selection without samples, or a run whose every sample is skipped, fails instead of scoring NaN;
the frames a record was given are the frames its video had; the bundled benchmark is generated only where
it belongs."""
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir

from aim.config import ConfigError, validate
from aim.data import build_dataset, default_synthetic_root
from aim.eval import evaluate
from aim.merging import NoMerge
from aim.pruning import NoPrune
from aim.paths import CONF_DIR
from aim.tracking.records import SampleRecords
from aim.tracking.results import frames_note, summarize
from tests.in_process import run_in_process


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def dataset_of(*overrides):
    """The dataset aim.run would evaluate: validated, then built (both before any model loads)."""
    return build_dataset(validate(composed(*overrides)).dataset)


@pytest.fixture
def bench(small_benchmark, tmp_path):
    """A copy of the small bundled benchmark whose questions.json a test may rewrite."""
    root = tmp_path / "bench"
    shutil.copytree(small_benchmark, root)
    return root


def questions(root):
    return json.loads((root / "questions.json").read_text())


def write_questions(root, rows_or_text):
    text = rows_or_text if isinstance(rows_or_text, str) else json.dumps(rows_or_text, indent=1)
    (root / "questions.json").write_text(text)


def config_error(*overrides) -> str:
    with pytest.raises(ConfigError) as err:
        dataset_of(*overrides)
    return str(err.value)


# --- a questions file that cannot be read: a config error, naming the file and the entry ---------------------
def test_malformed_json_names_the_field_the_file_and_the_line_and_column(bench):
    write_questions(bench, '[\n {"id": "a", "video": "v.mp4"\n {"id": "b"}\n]')
    message = config_error("dataset=video_mcq", f"dataset.root={bench}")
    assert message.startswith(f"dataset.questions_file: {bench / 'questions.json'} is not valid JSON")
    assert "line 3 column 2" in message


@pytest.mark.parametrize("content,expected", [
    ("[]", "holds no questions"),
    ('{"questions": []}', "must hold a JSON list of questions, not a dict"),
    ('[{"video": "v.mp4", "question": "q", "options": ["x"]}]', "questions.json[0] has no id"),
    ('[{"id": "a"}, "b"]', "questions.json[1] is a str, not an object"),
])
def test_a_questions_file_that_cannot_be_read_is_a_config_error(bench, content, expected):
    write_questions(bench, content)
    message = config_error("dataset=video_mcq", f"dataset.root={bench}")
    assert message.startswith("dataset.questions_file: ") and expected in message


def test_a_duplicate_id_is_a_config_error_naming_both_entries(bench):
    rows = questions(bench)
    rows[7]["id"] = rows[2]["id"]
    write_questions(bench, rows)
    message = config_error("dataset=video_mcq", f"dataset.root={bench}")
    path = bench / "questions.json"
    assert f"{path}[2] and {path}[7] have the same id 'q00002'" in message


def test_a_missing_questions_file_is_a_config_error_naming_the_root(tmp_path):
    message = config_error("dataset=image_mcq", f"dataset.root={tmp_path / 'nowhere'}")
    assert message.startswith("dataset.root: no questions file at ") and "no such folder" in message


def test_the_questions_file_is_read_before_the_model_loads(bench, monkeypatch, tmp_path):
    """aim.run builds the dataset before anything heavy: its config errors come first."""
    from aim import run as aim_run
    from aim.models import MODELS

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the questions file was checked")

    write_questions(bench, "[")
    cfg = composed("dataset=video_mcq", f"dataset.root={bench}", "logger=none")
    monkeypatch.setattr(MODELS.get(cfg.model.name), "from_config", no_model)
    with pytest.raises(ConfigError, match="dataset.questions_file: .* is not valid JSON"):
        aim_run.run(cfg, validate(cfg), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written for a run that was never valid


# --- entries that cannot be asked: skipped with their reason, the run goes on --------------------------------
BAD_ENTRIES = {  # question index -> (change, what the skip reason says)
    1: ({"options": []}, "'options' must be a list of 1 to 10 option texts, got []"),
    2: ({"answer": 7}, "'answer' 7 is not one of its option letters A, B, C, D"),
    3: ({"answer": "F"}, "'answer' 'F' is not one of its option letters A, B, C, D"),
    4: ({"video": None}, "no 'video'"),
}


def test_entries_that_cannot_be_asked_are_recorded_as_skipped_with_their_reason(tiny_adapter, bench, tmp_path):
    rows = questions(bench)
    for i, (change, _) in BAD_ENTRIES.items():
        rows[i].update(change)
    del rows[5]["question"]
    write_questions(bench, rows)
    dataset = dataset_of("dataset=video_mcq", f"dataset.root={bench}", "dataset.num_frames=2", "dataset.limit=7")
    records = SampleRecords(tmp_path / "samples.jsonl")
    evaluate(tiny_adapter, dataset, NoMerge(), NoPrune(), records, progress=False)
    by_id = {r["id"]: r for r in records.records}
    assert list(by_id) == [r["id"] for r in rows[:7]]  # every entry recorded once, in order
    for i, (_, reason) in BAD_ENTRIES.items():
        assert by_id[rows[i]["id"]]["skipped"] and reason in by_id[rows[i]["id"]]["error"]
    assert "no 'question' text" in by_id[rows[5]["id"]]["error"]
    summary = summarize(records.records, {"merger": "none", "pruner": "none"}, {})
    assert summary["num_skipped"] == 5 and summary["num_samples"] == 2
    assert summary["skipped_ids"] == [rows[i]["id"] for i in (1, 2, 3, 4, 5)]


def test_image_entries_that_cannot_be_asked_carry_their_skip_reason(tmp_path):
    (tmp_path / "images").mkdir()
    write_questions(tmp_path, [
        {"id": "ok", "image": "a.png", "question": "what ?", "options": ["x", "y"], "answer": "B"},
        {"id": "unlabeled", "image": "a.png", "question": "what ?", "options": ["x", "y"]},
        {"id": "no_image", "question": "what ?", "options": ["x", "y"], "answer": "A"},
        {"id": "int_answer", "image": "a.png", "question": "what ?", "options": ["x", "y"], "answer": 1},
        {"id": "no_options", "image": "a.png", "question": "what ?", "options": "x or y", "answer": "A"},
    ])
    reasons = {s.id: s.skip_reason for s in dataset_of("dataset=image_mcq", f"dataset.root={tmp_path}")}
    assert reasons["ok"] == reasons["unlabeled"] == ""
    assert reasons["no_image"].startswith("no 'image'")
    assert "'answer' 1 is not one of its option letters A, B" in reasons["int_answer"]
    assert "'options' must be a list" in reasons["no_options"]


# --- a selection without samples fails, naming the selection ------------------------------------------------
@pytest.mark.parametrize("limit", ["0", "-3"])
def test_a_limit_below_one_is_a_config_error(bench, limit):
    for dataset in ("video_mcq", "image_mcq"):
        with pytest.raises(ConfigError, match=rf"dataset.limit: must be >= 1 .* or null .*, got {limit}"):
            validate(composed(f"dataset={dataset}", f"dataset.root={bench}", f"dataset.limit={limit}"))
    with pytest.raises(ConfigError, match=r"dataset.limit: must be >= 1"):
        validate(composed(f"dataset.limit={limit}"))


def pope_root(tmp_path, categories):
    rows = [{"question_id": str(i), "question": "Is there a dog?", "answer": "no", "image": None, "category": c}
            for i, c in enumerate(categories)]
    (tmp_path / "data").mkdir(parents=True)
    schema = pa.schema([("question_id", pa.string()), ("question", pa.string()), ("answer", pa.string()),
                        ("image", pa.binary()), ("category", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema), tmp_path / "data" / "test-00000-of-00001.parquet")
    return tmp_path


def test_pope_rows_outside_its_splits_are_a_config_error_naming_the_categories(tmp_path):
    root = pope_root(tmp_path, ["adv", "pop"])
    message = config_error("dataset=pope", f"dataset.root={root}", "eval.mode=generate")
    assert message.startswith("dataset.splits: no row of data/test-*.parquet")
    assert "['adversarial', 'popular', 'random']" in message and "['adv', 'pop']" in message


def test_a_release_with_no_rows_is_a_config_error_naming_the_selection(tmp_path):
    root = pope_root(tmp_path, [])
    message = config_error("dataset=pope", f"dataset.root={root}", "eval.mode=generate", "dataset.splits=[random]")
    assert message.startswith(f"dataset: pope under {root} selects no samples")
    assert "questions_file='data/test-*.parquet'" in message and "splits=['random']" in message


@pytest.mark.slow
def test_a_run_whose_every_sample_is_skipped_fails_instead_of_scoring_nan(bench, tmp_path):
    rows = questions(bench)[:3]
    (bench / "videos" / rows[0]["video"]).write_bytes(b"not a video")  # skipped when decoded
    for r in rows[1:]:
        r["options"] = []  # skipped before
    write_questions(bench, rows)
    out = tmp_path / "run"
    proc = run_in_process("aim.run", f"hydra.run.dir={out}", "dataset=video_mcq", f"dataset.root={bench}",  # tests/in_process.py
                          "dataset.num_frames=2", "logger=none", "eval.progress=false")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "every one of the 3 samples was skipped, nothing was evaluated" in proc.stderr
    assert "'options' must be a list" in proc.stderr
    assert json.loads((out / "results.json").read_text())["num_skipped"] == 3  # what happened, for the record


# --- the frames a sample was given ----------------------------------------------------------------------------
def test_records_carry_the_frames_sampled_and_the_summary_says_when_videos_had_fewer(tiny_adapter, bench, tmp_path):
    dataset = dataset_of("dataset=video_mcq", f"dataset.root={bench}", "dataset.num_frames=64", "dataset.limit=1")
    records = SampleRecords(tmp_path / "samples.jsonl")
    evaluate(tiny_adapter, dataset, NoMerge(), NoPrune(), records, progress=False)
    assert records.records[0]["num_frames"] == 16  # the bundled videos have 16 frames
    assert records.records[0]["visual_tokens"] == 16 * 49
    summary = summarize(records.records, {"merger": "none", "pruner": "none"}, {"dataset": {"num_frames": 64}})
    assert summary["num_frames"] == 16 and summary["num_frames_asked"] == 64
    assert "16.0 sampled per sample on average, fewer than the 64 asked for" in frames_note(summary)
    assert frames_note({**summary, "num_frames_asked": 16}) is None


# --- the bundled benchmark: generated at its default root, or where asked -----------------------------------
def test_the_bundled_benchmarks_default_root_is_the_configs(monkeypatch, tmp_path):
    monkeypatch.setenv("AIM_DATA_DIR", str(tmp_path))
    valid = validate(composed("dataset.num_samples=3", "dataset.seed=5"))
    assert valid.dataset.root == str(default_synthetic_root(5, 3)) == str(tmp_path / "synthetic_video_s5_n3")


def test_a_mistyped_root_for_the_bundled_benchmark_fails_instead_of_generating_one(tmp_path):
    typo = tmp_path / "synthetic_vdieo"
    with pytest.raises(ConfigError, match=r"dataset.root: no questions.json under .*synthetic_vdieo: the bundled "
                                          r"benchmark is generated only at its default root .*dataset.generate=true"):
        validate(composed(f"dataset.root={typo}"))
    assert not typo.exists()


def test_the_bundled_benchmark_is_generated_elsewhere_when_asked(tmp_path):
    root = tmp_path / "elsewhere"
    dataset = dataset_of(f"dataset.root={root}", "dataset.generate=true", "dataset.num_samples=2")
    assert len(dataset) == 2 and (root / "COMPLETE").exists()


def test_an_existing_copy_of_the_bundled_benchmark_is_read_anywhere(small_benchmark):
    dataset = dataset_of(f"dataset.root={small_benchmark}", "dataset.num_samples=10", "dataset.seed=7")
    assert len(dataset) == 10
