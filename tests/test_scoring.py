"""Answer scoring follows each benchmark's official definition, checked on worked examples: VQA's soft
accuracy over the 10-choose-9 annotator subsets and its answer normalisation, TextVQA's EvalAI processing,
GQA's exact match, MME's yes/no reading with acc / acc+ / score, POPE's yes/no reading and F1, and MMBench's
CircularEval."""
import pytest

from aim.eval.scoring import (
    mvbench_accuracy,
    binary_scores,
    circular_accuracy,
    evalai_normalize,
    exact_match_normalize,
    mme_scores,
    mme_yes_no,
    parse_letter,
    pope_scores,
    pope_official_yes_no,
    pope_yes_no,
    score_response,
    soft_accuracy,
    textvqa_score,
    vqa_accuracy,
    vqa_normalize,
    vqa_score,
)


# --- VQA accuracy -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_soft_accuracy_averages_min_humans_over_3_over_the_ten_leave_one_out_subsets(k, expected):
    """An answer k of 10 humans gave: in the k subsets that leave out one of them it matches k-1 humans,
    in the other 10-k it matches k, so acc = (k*min(1,(k-1)/3) + (10-k)*min(1,k/3)) / 10. Not min(k/3, 1):
    k=1 gives 0.3, not 0.33; k=3 gives 0.9, not 1."""
    answers = ["dog"] * k + ["cat"] * (10 - k)
    assert soft_accuracy("dog", answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    "raw,normalised",
    [
        ("Two dogs.", "2 dogs"),  # lower case, number words, period removed
        ("The Dog", "dog"),  # articles dropped
        ("an apple", "apple"),
        ("dont know", "don't know"),  # contractions get their apostrophe back
        ("couldnt've", "couldn't've"),
        ("3.5", "3.5"),  # a decimal point stays
        ("yes.", "yes"),
        ("black-and-white", "black and white"),  # punctuation not touching a space -> space
        ("black - white", "black white"),  # touching a space -> removed
        ("100,978", "100978"),  # digits around a comma: punctuation removed, not spaced
        ("none", "0"),
        ("ten\tpeople\n", "10 people"),
    ],
)
def test_vqa_normalisation_follows_the_official_rules(raw, normalised):
    assert vqa_normalize(raw) == normalised


def test_vqa_v2_official_rule_processes_the_human_answers_only_when_they_disagree():
    """The official vqaEval.py (GT-Vision-Lab/VQA a013f00): answers stripped; processed only if they are not
    all the same (released answers are already normalised, so this rarely matters)."""
    mixed = ["t-shirt"] * 9 + ["shirt"]
    assert vqa_score("T-shirt", mixed, "official") == ("t shirt", pytest.approx(1.0))
    assert vqa_score("T-shirt", ["t-shirt"] * 10, "official") == ("t shirt", 0.0)  # identical: used as released
    assert vqa_score("Two", ["2"] * 10, "official") == ("2", 1.0)
    assert vqa_score("two dogs", ["2"] * 10, "official")[1] == 0.0


def test_vqa_v2_lmms_eval_rule_normalises_every_human_answer():
    """lmms_eval/tasks/vqav2/utils.py: punctuation and digit / article processing on all ten answers,
    always; the default."""
    assert vqa_score("T-shirt", ["t-shirt"] * 10) == ("t shirt", 1.0)
    assert vqa_score("2", ["two"] * 10) == ("2", 1.0)
    assert vqa_score("2", ["two"] * 10, "official")[1] == 0.0  # where the two rules part


@pytest.mark.parametrize("rule", ["lmms_eval", "official"])
def test_vqa_v2_strips_the_human_answers_before_comparing(rule):
    """Four humans said "2" (two with a trailing space): full credit under both rules, not 0.6."""
    assert vqa_score("2", ["2 ", "2 ", "2", "2"] + ["3"] * 6, rule)[1] == pytest.approx(1.0)
    assert vqa_score("2", ["2\n"] * 10, rule)[1] == pytest.approx(1.0)


def test_vqa_v2_refuses_an_unknown_rule():
    with pytest.raises(ValueError, match="scorer: 'evalai' is not one of lmms_eval, official"):
        vqa_score("2", ["2"] * 10, "evalai")


def test_textvqa_processes_response_and_answers_with_the_evalai_processor():
    answers = ["copenhagen"] * 4 + ["thursday", "Copenhagen.", "COPENHAGEN"] + ["copenhagen"] * 3
    prediction, score = textvqa_score("Copenhagen", answers)
    assert prediction == "copenhagen" and score == pytest.approx(1.0)
    dakota = ["nous les gosses", "dakota", "clos culombu", "dakota digital", "dakota", "dakota", "dakota digital",
              "dakota digital", "dakota", "dakota"]
    assert textvqa_score("Dakota Digital", dakota)[1] == pytest.approx(0.9)  # 3 of 10 humans
    assert textvqa_score("dakota", dakota)[1] == pytest.approx(1.0)  # 5 of 10
    assert evalai_normalize("The man's hat?") == "man 's hat"  # "'s" split off, as mmf's processor does


def test_free_form_formats_give_prediction_correctness_and_score():
    assert score_response("vqa", "Yes.", "yes", ["yes"] * 3 + ["no"] * 7) == {
        "prediction": "yes", "correct": False, "score": pytest.approx(0.9)}
    assert score_response("vqa", "Yes", "", []) == {"prediction": "yes", "correct": None, "score": None}  # test-dev
    assert score_response("vqa", "two", "2", ["two"] * 10)["score"] == 1.0  # lmms-eval's rule
    assert score_response("vqa_official", "two", "2", ["two"] * 10)["score"] == 0.0  # the official one
    assert score_response("pope_yes_no", "No.", "no", [])["prediction"] == "other"
    assert score_response("pope_official", "No.", "no", [])["correct"] is True
    assert score_response("exact", "Yes.", "yes", []) == {"prediction": "yes", "correct": True, "score": 1.0}
    assert score_response("letter", "(B) red", "B", [], num_options=4)["correct"] is True
    with pytest.raises(ValueError, match="answer_format 'essay'"):
        score_response("essay", "x", "y", [])


# --- GQA ----------------------------------------------------------------------------------------------------
def test_gqa_exact_match_ignores_case_and_punctuation_but_not_articles():
    assert exact_match_normalize("Yes.") == exact_match_normalize("yes")
    assert exact_match_normalize(" T-Shirt ") == "tshirt"  # lmms-eval removes punctuation, no space
    assert exact_match_normalize("the girl") != exact_match_normalize("girl")


# --- MME ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "response,label",
    [("Yes", "yes"), ("No.", "no"), ("yes, there is a train", "yes"), ("There is a train", "other"),
     ("not sure", "no"), ("y", "yes"), ("N", "no"), ("n.", "no"), ("x", "other"), ("  NO  ", "no"),
     ("No.\n", "no")],
)
def test_mme_reads_yes_or_no_as_lmms_eval_does(response, label):
    """lmms_eval/tasks/mme/utils.py parse_pred_ans: lower case, stripped, periods removed; a lone y / n is
    yes / no; else "yes" / "no" within the first four characters."""
    assert mme_yes_no(response) == label


def mme_record(task, image, correct):
    return {"question_type": task, "group": f"{task}/{image}", "correct": correct}


def test_mme_score_is_acc_plus_acc_plus_per_subtask_summed_over_perception_and_cognition():
    """existence: image 1 both right, image 2 one right -> acc 3/4, acc+ 1/2 -> 75 + 50 = 125;
    code_reasoning: image 3 both wrong -> 0. Perception 125, cognition 0."""
    records = [mme_record("existence", 1, True), mme_record("existence", 1, True),
               mme_record("existence", 2, True), mme_record("existence", 2, False),
               mme_record("code_reasoning", 3, False), mme_record("code_reasoning", 3, False)]
    scores = mme_scores(records)
    assert scores["subtasks"]["existence"] == {"acc": 0.75, "acc_plus": 0.5, "score": 125.0, "images": 2, "questions": 4}
    assert scores["subtasks"]["code_reasoning"]["score"] == 0.0
    assert (scores["perception"], scores["cognition"], scores["total"]) == (125.0, 0.0, 125.0)


def test_a_perfect_mme_run_scores_2000_perception_and_800_cognition():
    from aim.eval.scoring import MME_COGNITION, MME_PERCEPTION

    records = [mme_record(t, i, True) for t in MME_PERCEPTION + MME_COGNITION for i in range(3) for _ in range(2)]
    scores = mme_scores(records)
    assert (scores["perception"], scores["cognition"], scores["total"]) == (2000.0, 800.0, 2800.0)


def test_mme_refuses_an_unknown_subtask():
    with pytest.raises(ValueError, match="neither perception nor cognition"):
        mme_scores([mme_record("astrology", 1, True)])


# --- POPE ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "response,label",
    [("Yes", "yes"), ("No", "no"), ("No, there is not.", "no"), ("There is no dog in the image.", "no"),
     ("Yes. No dog.", "yes"), ("It is not there", "no"), ("NO", "yes"), ("", "yes"), ("No\n", "no"),
     (" no ", "no")],
)
def test_pope_official_reader_reads_no_from_no_or_not_in_the_first_sentence(response, label):
    """POPE's evaluate.py on the stripped response: first sentence, commas dropped, words split on spaces;
    "No" / "no" / "not" -> no, anything else (even "NO" or nothing) -> yes."""
    assert pope_official_yes_no(response) == label


@pytest.mark.parametrize(
    "response,label",
    [("Yes", "yes"), ("No\n", "no"), ("NO", "no"), ("  yes ", "yes"), ("No.", "other"),
     ("No, there is not.", "other"), ("", "other")],
)
def test_pope_reads_yes_or_no_as_lmms_eval_does(response, label):
    """lmms_eval/tasks/pope/utils.py: the lower-cased, stripped response must be exactly yes or no."""
    assert pope_yes_no(response) == label


def test_pope_recall_does_not_count_an_unreadable_answer_as_a_false_negative():
    """lmms-eval's pope_aggregate_recall: FN = "no" on a "yes" label; an "other" answer on it is wrong (in
    accuracy) but no FN. Labels yes yes no, predictions yes other no: TP 1, FN 0 -> recall 1."""
    s = binary_scores(["yes", "other", "no"], ["yes", "yes", "no"])
    assert s["recall"] == 1.0 and s["accuracy"] == pytest.approx(2 / 3)
    assert binary_scores(["yes", "other", "no"], ["yes", "yes", "no"], negative=None)["recall"] == 0.5


def test_pope_f1_takes_yes_as_positive():
    """labels yes yes yes no no no, predictions yes yes no yes no no: TP 2, FN 1, FP 1, TN 2 ->
    precision 2/3, recall 2/3, F1 2/3, accuracy 4/6, yes-ratio 3/6."""
    s = binary_scores(["yes", "yes", "no", "yes", "no", "no"], ["yes", "yes", "yes", "no", "no", "no"])
    assert s == {"accuracy": pytest.approx(4 / 6), "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                 "f1": pytest.approx(2 / 3), "yes_ratio": 0.5, "num_samples": 6}
    always_no = binary_scores(["no"] * 4, ["yes", "yes", "no", "no"])
    assert always_no["f1"] == 0.0 and always_no["accuracy"] == 0.5  # F1 is not accuracy


def test_pope_headline_is_the_mean_f1_over_splits():
    records = [{"question_type": "random", "prediction": p, "answer": a} for p, a in [("yes", "yes"), ("no", "no")]]
    records += [{"question_type": "adversarial", "prediction": p, "answer": a} for p, a in [("yes", "yes"), ("yes", "no")]]
    s = pope_scores(records)
    assert s["splits"]["random"]["f1"] == 1.0 and s["splits"]["adversarial"]["f1"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert s["pooled"]["f1"] == pytest.approx(0.8)  # TP 2, FP 1, FN 0 over both splits


# --- MMBench CircularEval -----------------------------------------------------------------------------------
def test_circular_accuracy_counts_a_question_only_if_every_shift_is_right():
    records = [{"group": "0", "question_type": "ocr", "correct": c} for c in (True, True, True, False)]
    records += [{"group": "1", "question_type": "ocr", "correct": c} for c in (True, True)]
    records += [{"group": "2", "question_type": "emotion", "correct": c} for c in (True, True, True)]
    s = circular_accuracy(records)
    assert s["circular_accuracy"] == pytest.approx(2 / 3) and s["num_groups"] == 3
    assert s["by_type"] == {"emotion": 1.0, "ocr": 0.5}
    # the same answers scored per row (vanilla accuracy) would be 8/9
    assert sum(r["correct"] for r in records) / len(records) == pytest.approx(8 / 9)


def test_vqa_accuracy_is_the_mean_soft_score_of_the_scored_records():
    records = [{"question_type": "yes/no", "score": 1.0}, {"question_type": "number", "score": 0.3},
               {"question_type": "number", "score": None}]  # unscored (test-dev)
    s = vqa_accuracy(records)
    assert s["vqa_accuracy"] == pytest.approx(0.65) and s["num_scored"] == 2
    assert s["by_type"] == {"number": pytest.approx(0.3), "yes/no": 1.0}


def test_parse_letter_still_reads_option_letters():
    assert parse_letter("The answer is (C).", 4) == "C" and parse_letter("E", 4) is None


def test_mvbench_leaves_empty_answers_out_of_each_tasks_denominator_as_lmms_eval_does():
    """lmms_eval/tasks/mvbench/utils.py (mvbench_aggregate_results): per task, correct / answered, an empty response
    not answered (a task with none answered scores 0); the headline is the mean over the tasks."""
    from aim.tracking.results import headline

    def rec(task, response, correct):
        return {"id": f"{task}{response}{correct}", "question_type": task, "response": response, "correct": correct}

    records = [rec("antonym", "B", True), rec("antonym", "", False), rec("antonym", "(C)", False),  # 1 of 2 answered
               rec("count", "", False), rec("count", " \n", False),  # none answered: 0, as lmms-eval
               rec("pose", "A", True)]  # letter mode: the response is the best-scored letter
    details = mvbench_accuracy(records)
    assert details == {"mvbench_accuracy": (0.5 + 0.0 + 1.0) / 3, "by_type": {"antonym": 0.5, "count": 0.0, "pose": 1.0},
                       "num_excluded": 3, "excluded_by_type": {"antonym": 1, "count": 2}}
    score, about = headline("mvbench_accuracy", records, {})
    assert score == pytest.approx(0.5) and about["num_excluded"] == 3
    # counted as wrong instead (the per-type accuracies of every record), the mean would be (1/3 + 0 + 1) / 3
    assert headline("mean_over_types", records, {"antonym": 1 / 3, "count": 0.0, "pose": 1.0})[0] == pytest.approx(4 / 9)
