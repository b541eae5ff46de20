"""The paper's image benchmarks, each read in the layout of the Hugging Face release that lmms-eval's task
definition loads (lmms_eval/tasks/<task>/*.yaml + utils.py), all under one `dataset.root`: parquet
question files with the image inside each row (`aim.data.image_source`).

| config         | release (Hugging Face dataset)  | question files under root                   | scored as   | metric            |
|----------------|---------------------------------|---------------------------------------------|-------------|-------------------|
| vqav2          | lmms-lab/VQAv2                  | data/validation-*.parquet (or testdev-*)    | vqa         | vqa_accuracy      |
| gqa            | lmms-lab/GQA                    | testdev_balanced_instructions/testdev-*     | exact       | accuracy          |
|                |                                 |   + testdev_balanced_images/testdev-*       |             |                   |
| mme            | lmms-lab/MME                    | data/test-*.parquet                         | mme_yes_no  | mme_score         |
| textvqa_val    | lmms-lab/textvqa                | data/validation-*.parquet                   | textvqa     | vqa_accuracy      |
| scienceqa_img  | lmms-lab/ScienceQA, ScienceQA-IMG | ScienceQA-IMG/test-*.parquet              | letter      | accuracy          |
| mmbench_en_dev | lmms-lab/MMBench, config en     | en/dev-*.parquet                            | letter      | circular_accuracy |
| pope           | lmms-lab/POPE                   | data/test-*.parquet (splits in `category`)  | pope_yes_no | pope_f1           |

("scored as": the answer format, aim.eval.scoring: lmms-eval's rules. `scorer: official` on vqav2 and pope
scores as the official vqaEval.py / POPE evaluate.py do instead: vqa_official, pope_official.)

Prompts are lmms-eval's (EvolvingLMMs-Lab/lmms-eval 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3, each task's yaml
defaults and utils.py `doc_to_text`), built by the dataset (aim.prompts.TaskPrompt, config fields `pre_prompt`
and `post_prompt`): free-form questions end with the task's post-prompt ("\\nAnswer the question using a
single word or phrase.") and need `eval.mode=generate`; the multiple-choice ones (ScienceQA, MMBench) lay out
their lettered options and "Answer with the option's letter from the given choices directly." as their tasks
do, and are scored by letter (or generated, read by the task's rule, `letter_reader`).
Every sample is one image (`num_frames` 1); one that is missing or cannot be decoded is skipped and counted.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from aim.checks import check_choice
from aim.data import DATASETS, METRICS, SampleList, check_limit
from aim.data.benchmarks import LETTERS, check_release, unreadable_row
from aim.data.image_source import ImageRef, ImageSample, MissingImage, ParquetImage, image_index, question_rows
from aim.prompts import FREE_FORM, MC_INSTRUCTION, TaskPrompt
from aim.prompts import SHORT_ANSWER as _SHORT_ANSWER

# whose rule scores VQA-v2 and POPE where lmms-eval and the benchmark's official scorer disagree
# (aim.eval.scoring): lmms-eval's by default, so numbers stand beside the published ones
SCORERS = ("lmms_eval", "official")

SHORT_ANSWER = "\n" + _SHORT_ANSWER  # lmms-eval's post_prompt of these tasks
UNREADABLE = "(unreadable)"  # the breakdown value of a question whose breakdown field cannot be read
log = logging.getLogger(__name__)


def _hf(repo: str, include: str, what: str) -> str:
    return (f"Download {what} of the Hugging Face dataset {repo} (`hf download {repo} --repo-type dataset "
            f"--include '{include}' --local-dir {{root}}`); or point dataset.root (or $AIM_DATA_DIR) at an "
            "existing copy.")


def _asked(value, field: str = "question") -> str:
    """A text a sample cannot do without (the question; an answer where every row has one): parquet's None or
    NaN would be asked, or scored, as the text "None" / "nan", so such a row is skipped (`sample_or_skip`)."""
    if not _text(value).strip():
        raise ValueError(f"{field}: {value!r} is not a text")
    return str(value)


def _text(value) -> str:
    """A text field that parquet may give as None (or NaN, or MMBench's "nan")."""
    if value is None or (isinstance(value, float) and value != value) or str(value) == "nan":
        return ""
    return str(value)


def breakdown_field(value) -> dict | None:
    """A field used only for a breakdown (GQA's `types`), as a dict: a struct as parquet gives it, or the
    same as a JSON string (some copies of the release store it so); None when it is neither (malformed
    JSON, a list, a number). Empty (None, "") reads as {}."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return dict(value) if isinstance(value, dict) else None


# --- the common shape of an image benchmark ----------------------------------------------------------------
@dataclass
class ImageBenchmarkConfig:
    """A benchmark in its release layout: `questions_file` is a glob under root. A root without it fails
    validation, before any model loads, saying what to download and where to put it."""

    name: str = ""
    root: str = "???"
    questions_file: str = ""
    num_frames: int = 1  # one image per sample (aim.flops reads the frame count from here)
    limit: int | None = None  # evaluate only the first `limit` questions
    metric: str = "accuracy"  # the headline metric of the summary: one of aim.data.METRICS
    # the text around the question (and its options), as the task's yaml sets them (lmms_eval_specific_kwargs)
    pre_prompt: str = ""
    post_prompt: str = "\n" + MC_INSTRUCTION
    download: ClassVar[str] = ""
    free_form: ClassVar[bool] = False  # answers are generated text, scored as the benchmark does: eval.mode=generate
    modality: ClassVar[str] = "image"  # what its samples hold (config-only tools read it)

    def __post_init__(self):
        if self.num_frames != 1:
            raise ValueError(f"num_frames: an image benchmark gives one image per sample; must be 1, "
                             f"got {self.num_frames}")
        check_limit(self.limit)
        check_choice("metric", self.metric, METRICS)
        check_release(self.name, Path(self.root), self.questions_file, (), self.download)


@dataclass
class FreeFormConfig(ImageBenchmarkConfig):
    post_prompt: str = SHORT_ANSWER  # after every question
    free_form: ClassVar[bool] = True


class ImageBenchmark(SampleList):
    """Samples of one release; subclasses turn the question-file rows into ImageSamples."""

    config: ClassVar[type[ImageBenchmarkConfig]]
    answer_format: ClassVar[str] = "letter"
    selects_rows: ClassVar[bool] = False  # make_samples drops rows: read them all before taking `limit` samples
    layout: ClassVar[TaskPrompt] = TaskPrompt()  # the task's prompt, with the config's pre / post prompts
    letter_reader: ClassVar[str] = "mcq"  # how a generated letter is read (multiple choice)

    def __init__(self, **cfg):
        self.cfg = self.config(**cfg)  # validates, and checks the release is under root, as config validation does
        self.prompt = replace(self.layout, pre_prompt=self.cfg.pre_prompt, post_prompt=self.cfg.post_prompt)
        self.root = Path(self.cfg.root)
        limit = self.cfg.limit
        rows = question_rows(self.root, self.cfg.questions_file, None if self.selects_rows else limit)
        self.samples = self.make_samples(rows)[:limit]  # `limit`: the first samples (MMBench: shifts included)
        ids = [s.id for s in self.samples]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"{self.cfg.name}: sample id {dup!r} occurs twice under {self.root}")

    def make_samples(self, rows: list[dict]) -> list[ImageSample]:
        return [self.sample_or_skip(row) for row in rows]

    def make_sample(self, row: dict) -> ImageSample:
        raise NotImplementedError

    def sample_or_skip(self, row: dict) -> ImageSample:
        """`make_sample`, or for a row that lacks a field or holds one it cannot read (a null question or answer,
        an answer that is no choice) a sample recorded as skipped naming the file, the row and why: one bad row
        of a release costs its own question, not the run."""
        try:
            return self.make_sample(row)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            return ImageSample(**unreadable_row(row, exc), question="", options=[], answer=None,
                               video=self.root / row["_file"], num_frames=1, answer_format=self.answer_format)

    def image(self, row: dict, column: str = "image") -> ParquetImage:
        return ParquetImage(row["_file"], row["_row"], column)

    def sample(self, *, id, question, answer, image: ImageRef, options=(), answers=(), question_type="",
               categories=None, group="") -> ImageSample:
        return ImageSample(
            id=str(id), question=str(question), options=list(options), answer=str(answer),
            video=getattr(image, "path", self.root), num_frames=1, question_type=str(question_type or ""),
            categories={k: str(v) for k, v in (categories or {}).items() if v not in (None, "")},
            answer_format=self.answer_format, answers=[str(a) for a in answers], group=str(group), image=image,
            prompt=self.prompt, letter_reader=self.letter_reader,
        )


# --- VQA-v2 -----------------------------------------------------------------------------------------------------
@dataclass
class VQAv2Config(FreeFormConfig):
    name: str = "vqav2"
    root: str = "data/vqav2"
    questions_file: str = "data/validation-*.parquet"  # data/testdev-*.parquet: the test-dev questions (no answers)
    metric: str = "vqa_accuracy"
    # lmms_eval: every human answer normalised (lmms-eval's vqav2); official: only when they disagree (vqaEval.py)
    scorer: str = "lmms_eval"
    download: ClassVar[str] = _hf("lmms-lab/VQAv2", "data/validation-*", "the validation split (or 'data/testdev-*')")

    def __post_init__(self):
        check_choice("scorer", self.scorer, SCORERS)
        super().__post_init__()


@DATASETS.register("vqav2", config=VQAv2Config)
class VQAv2(ImageBenchmark):
    """VQA-v2 (Goyal et al., CVPR 2017). Layout and prompt as lmms-eval's `vqav2_val` / `vqav2_test` tasks
    (lmms_eval/tasks/vqav2/_default_template_vqav2_yaml, utils.py): rows of data/<split>-*.parquet
    {question_type, multiple_choice_answer, answers [{answer, answer_confidence, answer_id}] x 10, image_id,
    answer_type, question_id, question, image}; prompt "<question>\\nAnswer the question using a single word
    or phrase.". The paper reports test-dev, which only EvalAI scores: the test-dev files read the same
    way (their answers are empty; records keep the normalised answer for a submission, {question_id:
    id, answer: prediction}, and no score). Local evaluation uses the validation split, which has the
    answers: VQA soft accuracy (aim.eval.scoring.vqa_score), per answer type (yes/no, number, other) as the
    question type; `scorer` lmms_eval (default) normalises every human answer as lmms-eval does, official
    only when the ten disagree, as the official vqaEval.py does."""

    config = VQAv2Config
    layout = FREE_FORM

    @property
    def answer_format(self) -> str:
        return "vqa_official" if self.cfg.scorer == "official" else "vqa"

    def make_sample(self, row):
        answers = [a["answer"] for a in row.get("answers") or [] if a and a.get("answer") is not None]
        return self.sample(
            id=row["question_id"], question=_asked(row["question"]),
            answer=_text(row.get("multiple_choice_answer")), answers=answers, image=self.image(row),
            question_type=_text(row.get("answer_type")),
        )


# --- GQA ------------------------------------------------------------------------------------------------------
@dataclass
class GQAConfig(FreeFormConfig):
    name: str = "gqa"
    root: str = "data/gqa"
    questions_file: str = "testdev_balanced_instructions/testdev-*.parquet"
    images_file: str = "testdev_balanced_images/testdev-*.parquet"  # {id, image}, joined on the question's imageId
    download: ClassVar[str] = _hf("lmms-lab/GQA", "testdev_balanced_*", "the testdev_balanced_instructions and "
                                  "testdev_balanced_images configs")

    def __post_init__(self):
        super().__post_init__()
        if not any(Path(self.root).glob(self.images_file)):
            raise ValueError(f"root: no {self.images_file} under {self.root}: the {self.name} images are missing. "
                             f"{self.download.format(root=self.root)}")


@DATASETS.register("gqa", config=GQAConfig)
class GQA(ImageBenchmark):
    """GQA, test-dev balanced (Hudson & Manning, CVPR 2019): 12,578 questions on 398 images. Layout and
    prompt as lmms-eval's `gqa` task (lmms_eval/tasks/gqa/gqa.yaml, utils.py): the questions in
    testdev_balanced_instructions/testdev-*.parquet {id, imageId, question, answer, fullAnswer, isBalanced,
    groups, entailed, equivalent, types {structural, semantic, detailed}, annotations, semantic,
    semanticStr}, the images in testdev_balanced_images/testdev-*.parquet {id, image}; prompt
    "<question>\\nAnswer the question using a single word or phrase.". Metric: accuracy of an exact match
    after lower-casing and removing punctuation (lmms-eval's exact_match with ignore_case and
    ignore_punctuation), reported per structural type (the question type) and semantic type, as GQA's
    eval.py breaks it down. `types` is read as a struct or as its JSON string; a question whose `types`
    cannot be read is still asked and scored, its types recorded as "(unreadable)" and the count logged.
    A question whose imageId has no image is skipped."""

    config = GQAConfig
    layout = FREE_FORM
    answer_format = "exact"

    def make_samples(self, rows):
        self.images = image_index(self.root, self.cfg.images_file)
        self.unreadable_types: list[str] = []
        samples = super().make_samples(rows)
        if self.unreadable_types:  # the breakdown only: accuracy does not need it, so the benchmark goes on
            log.warning("%s: the `types` field of %d question(s) cannot be read (first: %s); their structural and "
                        "semantic type is recorded as %r", self.cfg.name, len(self.unreadable_types),
                        self.unreadable_types[0], UNREADABLE)
        return samples

    def make_sample(self, row):
        types = breakdown_field(row.get("types"))
        if types is None:
            self.unreadable_types.append(str(row["id"]))
            types = {"structural": UNREADABLE, "semantic": UNREADABLE}
        image = self.images.get(str(row["imageId"])) or MissingImage(
            f"{row['imageId']} (no row in {self.cfg.images_file})")
        return self.sample(
            id=row["id"], question=_asked(row["question"]), answer=_asked(row["answer"], "answer"), image=image,
            question_type=_text(types.get("structural")), categories={"semantic": _text(types.get("semantic"))},
        )


# --- MME ------------------------------------------------------------------------------------------------------
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR")
MME_INSTRUCTION = " Please answer yes or no."  # in every released question; lmms-eval swaps it for its post-prompt


@dataclass
class MMEConfig(FreeFormConfig):
    name: str = "mme"
    root: str = "data/mme"
    questions_file: str = "data/test-*.parquet"
    metric: str = "mme_score"
    download: ClassVar[str] = _hf("lmms-lab/MME", "data/*", "the test split")


@DATASETS.register("mme", config=MMEConfig)
class MME(ImageBenchmark):
    """MME (Fu et al., 2023): 2,374 yes/no questions, two per image, in 10 perception and 4 cognition
    subtasks. Layout and prompt as lmms-eval's `mme` task (lmms_eval/tasks/mme/mme.yaml, utils.py): rows
    of data/test-*.parquet {question_id (the image's file name), image, question, answer "Yes"/"No",
    category (the subtask)}; the question with its " Please answer yes or no." replaced by the post-prompt
    (kept when `post_prompt` is empty). The two questions of an image share a group (<category>/
    <question_id>); record ids are <group>#0 and <group>#1. Answers are read as lmms-eval's mme task
    does (aim.eval.scoring.mme_yes_no: also a lone "y" / "n"); metric: perception + cognition score, each subtask acc*100 + acc+*100
    (aim.eval.scoring.mme_scores), with every subtask's acc and acc+ in the summary's metric_details."""

    config = MMEConfig
    layout = FREE_FORM
    answer_format = "mme_yes_no"

    def make_samples(self, rows):
        seen: Counter[str] = Counter()
        samples = []
        for row in rows:
            group = f"{row.get('category')}/{row.get('question_id')}"  # a row missing either is skipped
            samples.append(self.sample_or_skip({**row, "_group": group, "_n": seen[group]}))
            seen[group] += 1
        return samples

    def make_sample(self, row):
        question = _asked(row["question"]).strip()
        if self.cfg.pre_prompt or self.cfg.post_prompt:  # lmms-eval's mme_doc_to_text: swapped for either prompt
            question = question.replace(MME_INSTRUCTION, "")
        category = str(row["category"])
        return self.sample(
            id=f"{row['_group']}#{row['_n']}", question=question,
            answer=_asked(row["answer"], "answer").lower().strip().replace(".", ""),
            image=self.image(row), question_type=category, group=row["_group"],
            categories={"task": "perception" if category in MME_PERCEPTION else "cognition"},
        )


# --- TextVQA --------------------------------------------------------------------------------------------------
@dataclass
class TextVQAConfig(FreeFormConfig):
    name: str = "textvqa_val"
    root: str = "data/textvqa"
    questions_file: str = "data/validation-*.parquet"
    metric: str = "vqa_accuracy"
    # lmms-eval's `ocr` option (default off): add "\nReference OCR token: <the release's OCR tokens>" after
    # the question, as LLaVA-1.5's own TextVQA prompt does
    ocr_tokens: bool = False
    download: ClassVar[str] = _hf("lmms-lab/textvqa", "data/validation-*", "the validation split")


@DATASETS.register("textvqa_val", config=TextVQAConfig)
class TextVQA(ImageBenchmark):
    """TextVQA, validation (Singh et al., CVPR 2019): 5,000 questions about text in images. Layout and
    prompt as lmms-eval's `textvqa_val` task (lmms_eval/tasks/textvqa/_default_template_textvqa_yaml,
    utils.py): rows of data/validation-*.parquet {image_id, question_id, question, question_tokens, image,
    image_width, image_height, flickr_original_url, flickr_300k_url, answers [10], image_classes, set_name,
    ocr_tokens}; prompt "<Question capitalised>[\\nReference OCR token: a, b, ...]\\nAnswer the question using
    a single word or phrase." (`ocr_tokens`). Metric: VQA accuracy with the EvalAI answer processor on the
    response and on the ten answers (aim.eval.scoring.textvqa_score)."""

    config = TextVQAConfig
    layout = FREE_FORM
    answer_format = "textvqa"

    def make_sample(self, row):
        answers = [str(a) for a in row.get("answers") or []]
        ocr = f"\nReference OCR token: {', '.join(row.get('ocr_tokens') or [])}" if self.cfg.ocr_tokens else ""
        return self.sample(
            id=row["question_id"], question=f"{_asked(row['question']).capitalize()}{ocr}",
            answer=Counter(answers).most_common(1)[0][0] if answers else "", answers=answers, image=self.image(row),
        )


# --- ScienceQA-IMG --------------------------------------------------------------------------------------------
@dataclass
class ScienceQAConfig(ImageBenchmarkConfig):
    name: str = "scienceqa_img"
    root: str = "data/scienceqa"
    questions_file: str = "ScienceQA-IMG/test-*.parquet"
    download: ClassVar[str] = _hf("lmms-lab/ScienceQA", "ScienceQA-IMG/test-*", "the ScienceQA-IMG test split")


@DATASETS.register("scienceqa_img", config=ScienceQAConfig)
class ScienceQA(ImageBenchmark):
    """ScienceQA-IMG, test (Lu et al., NeurIPS 2022): the 2,017 test questions with an image, 2-5 options.
    Layout and prompt as lmms-eval's `scienceqa_img` task (lmms_eval/tasks/scienceqa/scienceqa_img.yaml,
    utils.py, format `default`): rows of ScienceQA-IMG/test-*.parquet {image, question, choices, answer
    (option index), hint, task, grade, subject, topic, category, skill, lecture, solution}; the question is
    "Context: <hint>\\n<question>" when there is a hint, the choices are the options. The release has no
    question id: a record's id is the question's position in the split. Metric: accuracy (letter scoring),
    reported per subject (the question type) and grade band (G1-6, G7-12), as ScienceQA's paper.
    Prompt (lmms_eval/tasks/scienceqa/utils.py, sqa_doc_to_text, format default): "[Context: <hint>\\n]<question>
    \\nA. ...\\nB. ...\\nAnswer with the option's letter from the given choices directly."; a generated answer is
    read as its sqa_process_results does (`scienceqa`: the letter alone, or "X." at the start)."""

    config = ScienceQAConfig
    letter_reader = "scienceqa"

    def make_samples(self, rows):
        return [self.sample_or_skip({**row, "_index": i}) for i, row in enumerate(rows)]

    def make_sample(self, row):
        options = [str(c) for c in row["choices"]]
        if not 0 <= int(row["answer"]) < len(options):  # a null one fails int(): skipped, as this
            raise ValueError(f"answer: {row['answer']!r} is no index of the {len(options)} choices")
        hint = _text(row.get("hint")).strip()
        grade = _text(row.get("grade"))
        digits = "".join(ch for ch in grade if ch.isdigit())
        return self.sample(
            id=row["_index"], question=f"Context: {hint}\n{_asked(row['question'])}" if hint else _asked(row["question"]),
            options=options, answer=LETTERS[int(row["answer"])], image=self.image(row),
            question_type=_text(row.get("subject")),
            categories={"grade": ("G1-6" if int(digits) <= 6 else "G7-12") if digits else ""},
        )


# --- MMBench --------------------------------------------------------------------------------------------------
CIRCULAR_OFFSET = 1_000_000  # MMBench numbers a question's k-th circular shift index + k * 1e6


MMBENCH_OPTIONS = "There are several options:"  # mmbench.yaml's metadata.sys_prompt
MMBENCH_PROMPT = TaskPrompt(layout="{context}{pre_prompt}{question} " + MMBENCH_OPTIONS + "\n{options}\n{post_prompt}")


@dataclass
class MMBenchConfig(ImageBenchmarkConfig):
    name: str = "mmbench_en_dev"
    root: str = "data/mmbench"
    questions_file: str = "en/dev-*.parquet"
    metric: str = "circular_accuracy"
    # CircularEval needs every circular shift of a question's options. The release stores them as rows
    # (index + k * 1e6); if it does not, they are made here (each shift rotates the options by one).
    make_shifts: bool = True
    download: ClassVar[str] = _hf("lmms-lab/MMBench", "en/dev-*", "the English dev split")


def circular_shift(options: list[str], answer: str, k: int) -> tuple[list[str], str]:
    """The options rotated left by k (shift k asks option k first) and the answer's letter there."""
    n = len(options)
    shifted = [options[(i + k) % n] for i in range(n)]
    return shifted, LETTERS[(LETTERS.index(answer) - k) % n]


@DATASETS.register("mmbench_en_dev", config=MMBenchConfig)
class MMBench(ImageBenchmark):
    """MMBench, English dev (Liu et al., ECCV 2024): 4,329 rows, every question once per circular shift of
    its 2-4 options. Layout and prompt as lmms-eval's `mmbench_en_dev` task
    (lmms_eval/tasks/mmbench/_default_template_mmbench_en_yaml, en_utils.py, mmbench_evals.py): rows of
    en/dev-*.parquet {index, question, hint, A, B, C, D, answer (letter), category, image, source,
    L2-category, comment, split}; the prompt is MMBENCH_PROMPT: "[<hint> ]<question> There are several
    options:\\nA. ...\\nB. ...\\n\\nAnswer with the option's letter from the given choices directly." (en_utils.py
    mmbench_doc_to_text; the blank line is its "\\n" before a post-prompt that starts with one). The shifts of a
    question share a group: index mod 1e6 (lmms-eval's and VLMEvalKit's CircularEval). Letter scoring;
    metric: circular accuracy (aim.eval.scoring.circular_accuracy), per category as the question type.
    Generated answers are read as lmms-eval's mmbench_en_dev_static reads them (`mmbench`: MMBench's
    can_infer, then the shared extractor), not with its GPT matcher."""

    config = MMBenchConfig
    layout = MMBENCH_PROMPT
    letter_reader = "mmbench"

    def make_samples(self, rows):
        samples = [self.sample_or_skip(row) for row in rows]
        asked = [s for s in samples if not s.skip_reason]
        if self.cfg.make_shifts and asked and all(int(s.id) < CIRCULAR_OFFSET for s in asked):
            samples = [shifted for s in samples for shifted in ([s] if s.skip_reason else self._shifts(s))]
        return samples

    def make_sample(self, row):
        index = int(float(row["index"]))
        options = []
        for letter in LETTERS[:5]:
            text = _text(row.get(letter))
            if not text:
                break
            options.append(text)
        hint = _text(row.get("hint"))
        question = f"{hint} {_asked(row['question'])}" if hint else _asked(row["question"])  # lmms-eval's "{hint} {question}"
        answer = _asked(row["answer"], "answer").strip()
        if answer not in LETTERS[:len(options)]:
            raise ValueError(f"answer: {answer!r} is not an option letter ({', '.join(LETTERS[:len(options)])})")
        return self.sample(
            id=index, question=question, options=options, answer=answer, image=self.image(row),
            question_type=_text(row.get("category")), group=index % CIRCULAR_OFFSET,
            categories={"l2_category": _text(row.get("L2-category") or row.get("l2-category"))},
        )

    def _shifts(self, s: ImageSample) -> list[ImageSample]:
        out = [s]
        for k in range(1, len(s.options)):
            options, answer = circular_shift(s.options, s.answer, k)
            out.append(ImageSample(**{**s.__dict__, "id": str(int(s.id) + k * CIRCULAR_OFFSET), "options": options,
                                      "answer": answer}))
        return out


# --- POPE -----------------------------------------------------------------------------------------------------
POPE_SPLITS = ("adversarial", "popular", "random")


@dataclass
class POPEConfig(FreeFormConfig):
    name: str = "pope"
    root: str = "data/pope"
    questions_file: str = "data/test-*.parquet"
    metric: str = "pope_f1"
    splits: list[str] = field(default_factory=lambda: list(POPE_SPLITS))  # which of the three to evaluate
    # lmms_eval: only an exact "yes" / "no" (any case) counts; official: POPE's evaluate.py ("no"/"not" -> no)
    scorer: str = "lmms_eval"
    download: ClassVar[str] = _hf("lmms-lab/POPE", "data/*", "the test split (its default config)")

    def __post_init__(self):
        check_choice("scorer", self.scorer, SCORERS)
        super().__post_init__()
        if not self.splits:
            raise ValueError(f"splits: empty; choose from {', '.join(POPE_SPLITS)}")
        for s in self.splits:
            check_choice("splits", s, POPE_SPLITS)


@DATASETS.register("pope", config=POPEConfig)
class POPE(ImageBenchmark):
    """POPE (Li et al., EMNLP 2023): 9,000 yes/no object-existence questions on 500 COCO val2014 images,
    3,000 in each of its adversarial, popular and random splits. Layout and prompt as lmms-eval's `pope`
    task (lmms_eval/tasks/pope/pope.yaml, utils.py): rows of data/test-*.parquet {id, question_id, question,
    answer "yes"/"no", image_source, image, category (the split)}; prompt "<question>\\nAnswer the question
    using a single word or phrase.". Answers are read as lmms-eval does (`scorer` lmms_eval, the default:
    the lower-cased, stripped response must be "yes" or "no"; aim.eval.scoring.pope_yes_no) or as POPE's
    evaluate.py does (`scorer` official: "no" / "not" in the first sentence; pope_official_yes_no). Metric: F1 with "yes" as positive, the mean over the splits, with each
    split's accuracy, precision, recall, F1 and yes-ratio in the summary's metric_details. A record's id is
    <split>_<question_id>."""

    config = POPEConfig
    layout = FREE_FORM
    selects_rows = True

    @property
    def answer_format(self) -> str:
        return "pope_official" if self.cfg.scorer == "official" else "pope_yes_no"

    def make_samples(self, rows):
        chosen = [r for r in rows if str(r.get("category")) in self.cfg.splits]
        if rows and not chosen:
            found = sorted({str(r["category"]) for r in rows})
            raise ValueError(f"splits: no row of {self.cfg.questions_file} under {self.root} is in the splits "
                             f"{list(self.cfg.splits)}; its `category` values are {found}")
        return [self.sample_or_skip(r) for r in chosen]

    def make_sample(self, row):
        return self.sample(
            id=f"{row['category']}_{row['question_id']}",
            question=_asked(row["question"]).strip(),
            answer=_asked(row["answer"], "answer").lower().strip(), image=self.image(row), question_type=row["category"],
        )
