"""XSum ROUGE, accuracy, WikiSQL logical-form accuracy and the `evaluate` wrapper of the E2E metrics."""
from __future__ import annotations

from pathlib import Path

import pytest

from peft_repro.metrics.classification import accuracy
from peft_repro.metrics.rouge import score_rouge
from peft_repro.metrics.wikisql import logical_form_accuracy

METRICS_DIR = Path(__file__).resolve().parents[1] / "peft_repro" / "metrics"


# ---- ROUGE ----

def test_rouge_identical_summary_scores_one():
    assert score_rouge(["A man was arrested."], ["A man was arrested."]) == {"rouge1": 1.0, "rouge2": 1.0,
                                                                             "rougeL": 1.0}


def test_rouge_stems_and_ignores_case_and_punctuation():
    assert score_rouge(["Cats were RUNNING!"], ["the cat was running"])["rouge1"] == pytest.approx(2 * 2 / 7)


def test_rouge_l_is_one_lcs_over_the_summary_not_per_sentence():
    # rougeLsum with newline-split sentences would match both sentences (1.0); rougeL finds one 3-word LCS
    scores = score_rouge(["the dog ran.\nthe cat sat."], ["the cat sat.\nthe dog ran."])
    assert scores["rouge1"] == 1.0 and scores["rougeL"] == pytest.approx(0.5)


def test_rouge_is_the_mean_over_examples():
    scores = score_rouge(["a b", "x y"], ["a b", "c d"])
    assert scores == {"rouge1": 0.5, "rouge2": 0.5, "rougeL": 0.5}


def test_rouge_mismatched_counts():
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        score_rouge(["a", "b"], ["a"])


# ---- accuracy ----

def test_accuracy():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75


def test_accuracy_mismatched_counts():
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])


# ---- WikiSQL ----

GOLD = "SELECT Notes FROM table WHERE Current slogan = SOUTH AUSTRALIA AND Year > 1990"


@pytest.mark.parametrize("pred", [
    GOLD,
    "select notes from table where current slogan = south australia and year > 1990",  # case
    "SELECT  Notes\nFROM table WHERE Current slogan=SOUTH AUSTRALIA AND Year>1990",  # whitespace
    "SELECT \"Notes\" FROM table WHERE `Current slogan` = 'SOUTH AUSTRALIA' AND Year > \u20181990\u2019",  # quotes
    GOLD + ";",  # trailing punctuation
    "SELECT Notes FROM table WHERE Year > 1990 AND Current slogan = SOUTH AUSTRALIA",  # condition order
])
def test_wikisql_equivalent_queries_match(pred):
    assert logical_form_accuracy([pred], [GOLD]) == 1.0


@pytest.mark.parametrize("pred", [
    "SELECT COUNT(Notes) FROM table WHERE Current slogan = SOUTH AUSTRALIA AND Year > 1990",  # aggregation
    "SELECT Notes FROM table WHERE Current slogan = SOUTH AUSTRALIA AND Year < 1990",  # operator
    "SELECT Notes FROM table WHERE Current slogan = SOUTH AUSTRALIA",  # missing condition
    "SELECT Notes FROM table WHERE Current slogan = SOUTH AUSTRALIA AND Year > 1990 AND Year > 1990",  # extra
    "Notes of South Australia after 1990",  # no SQL at all
])
def test_wikisql_different_queries_do_not_match(pred):
    assert logical_form_accuracy([pred], [GOLD]) == 0.0


def test_wikisql_and_inside_a_value_is_not_a_conjunction():
    gold = "SELECT Title FROM table WHERE Artist = Tom and Jerry AND Year = 1950"
    assert logical_form_accuracy(["SELECT Title FROM table WHERE Year = 1950 AND Artist = 'Tom and Jerry'"],
                                 [gold]) == 1.0
    assert logical_form_accuracy(["SELECT Title FROM table WHERE Year = 1950 AND Artist = Tom"], [gold]) == 0.0


def test_wikisql_accuracy_is_a_fraction_and_checks_counts():
    assert logical_form_accuracy([GOLD, "SELECT x FROM table"], [GOLD, GOLD]) == 0.5
    with pytest.raises(ValueError):
        logical_form_accuracy([GOLD], [GOLD, GOLD])


# ---- evaluate ----

def test_evaluate_module_loads_offline(monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    metric = evaluate.load(str(METRICS_DIR / "evaluate_e2e" / "e2e_metric.py"))
    scores = metric.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat", "a cat"]],
                            nist_mode="perl", metrics=["BLEU"])
    assert scores == {"BLEU": 1.0}
