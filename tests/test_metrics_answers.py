"""VQA, multiple-choice and classification metrics."""

import pytest

from medrega.metrics import (
    accuracy,
    choice_accuracy,
    closed_accuracy,
    macro_f1,
    map_to_option,
    multilabel_f1,
    normalize_answer,
    open_recall,
    parse_choice,
    parse_options,
    token_f1,
    vqa_scores,
    yes_no,
)


def test_normalize_answer_english_and_chinese():
    assert normalize_answer("The Left Lung.") == "left lung"
    assert normalize_answer("A 2.5 cm nodule!") == "2.5 cm nodule"
    assert normalize_answer("左肺 上叶，结节。") == "左肺上叶结节"
    assert normalize_answer(None) == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"), ("yes, there is a mass.", "yes"), ("No.", "no"), ("not seen", "no"),
        ("是", "yes"), ("是的", "yes"), ("有", "yes"), ("存在", "yes"),
        ("否", "no"), ("不是", "no"), ("没有", "no"), ("不", "no"), ("无", "no"), ("未见", "no"),
        ("normal", None), ("左肺", None), ("", None),
    ],
)  # fmt: skip
def test_yes_no_synonyms(text, expected):
    assert yes_no(text) == expected


def test_closed_accuracy_across_languages_and_non_yes_no():
    preds = ["Yes, it is.", "没有", "是的", "left", None]
    answers = ["yes", "否", "no", "Left.", "yes"]
    assert closed_accuracy(preds, answers) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="2 predictions but 1 answers"):
        closed_accuracy(["yes", "no"], ["yes"])


def test_open_recall_and_token_f1():
    assert open_recall(["a nodule in the left upper lobe"], ["left lobe"]) == pytest.approx(1.0)
    assert open_recall(["right lobe"], ["left lobe"]) == pytest.approx(0.5)
    assert token_f1(["right lobe"], ["left lobe"]) == pytest.approx(0.5)
    # Chinese answers are compared by character: 左肺 vs 左肺上叶 -> P 1, R 1/2
    assert token_f1(["左肺"], ["左肺上叶"]) == pytest.approx(2 / 3)
    assert open_recall(["左肺"], ["左肺上叶"]) == pytest.approx(0.5)
    assert vqa_scores("Left lobe.", "left lobe", closed=False) == {"open_recall": 1.0, "token_f1": 1.0, "exact_match": 1.0}
    assert vqa_scores("没有", "否", closed=True) == {"closed_accuracy": 1.0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"), ("B.", "B"), ("(B)", "B"), ("b", "B"), ("B: Cyst", "B"), ("(C) cataract", "C"),
        ("The answer is B", "B"), ("Answer: (D)", "D"), ("答案是C", "C"), ("选项A", "A"),
        ("C: cataract", "C"), ("It is a cyst.", "B"), ("Normal fundus", "A"),
        ("A cyst is seen", "B"),  # a leading article is not a letter; the text names option B
        ("E", None), ("I don't know", None), ("cyst or tumor", None), (None, None),
    ],
)  # fmt: skip
def test_parse_choice(text, expected):
    assert parse_choice(text, ["Normal fundus", "Cyst", "Tumor", "Cataract"]) == expected


def test_med_mim_options_and_choice_accuracy():
    question = "<image><image>Which disease is shown?\nA: glaucoma\nB: cataract\nC: normal\n"
    options = parse_options(question)
    assert options == ["glaucoma", "cataract", "normal"]
    preds = ["B: cataract", "The answer is A", "cataract", "D", "glaucoma"]
    answers = ["B: cataract", "A: glaucoma", "B", "C: normal", "C: normal"]
    assert choice_accuracy(preds, answers, [options] * 5) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="names no option letter"):
        choice_accuracy(["A"], ["nothing"])


def test_map_to_option_and_accuracy():
    options = ["pneumonia", "normal", "pneumothorax"]
    assert map_to_option("C", options) == "pneumothorax"
    assert map_to_option("The image shows pneumonia.", options) == "pneumonia"
    assert map_to_option("Unclear", options) is None
    assert accuracy(["Pneumonia.", None, "normal"], ["pneumonia", "normal", "pneumothorax"]) == pytest.approx(1 / 3)


def test_macro_f1_hand_checked():
    labels = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", None, "d"]
    # a: tp1 pred1 gold2 -> 2/3; b: tp1 pred2 gold2 -> 1/2; c: 0; d (predicted only): 0
    assert macro_f1(preds, labels) == pytest.approx((2 / 3 + 1 / 2) / 4)
    assert macro_f1(labels, labels) == pytest.approx(1.0)


def test_multilabel_f1_averages():
    labels = [["effusion", "edema"], ["nodule"], []]
    preds = [["effusion"], ["nodule", "mass"], None]
    # per class: effusion 1, edema 0, nodule 1, mass 0 -> macro 0.5
    assert multilabel_f1(preds, labels, "macro") == pytest.approx(0.5)
    # pooled: tp 2, predicted 3, reference 3 -> 2/3
    assert multilabel_f1(preds, labels, "micro") == pytest.approx(2 / 3)
    # per sample: 2/3, 2/3, 1 (both empty)
    assert multilabel_f1(preds, labels, "samples") == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    with pytest.raises(ValueError, match="average"):
        multilabel_f1(preds, labels, "weighted")
