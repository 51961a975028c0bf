"""VQA metrics: closed accuracy, open recall and token F1 (English and Chinese).

* Answers are compared through :func:`medrega.answers.normalize_answer` and closed answers through
  :func:`medrega.answers.yes_no` (the rules are in :mod:`medrega.answers`). Closed answers that are not
  yes/no (``left`` / ``right``) need a normalised exact match.
* Open answers are scored on tokens: English words, and for Chinese single CJK characters (Chinese
  short answers segment inconsistently, character overlap is the usual Chinese QA measure), with
  Latin words and numbers inside Chinese text kept whole. Open recall is LLaVA-Med's: the fraction of
  the answer's tokens found in the prediction; token F1 is SQuAD's (multiset overlap).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from medrega.answers import CJK, normalize_answer, yes_no

__all__ = [
    "normalize_answer",
    "answer_tokens",
    "yes_no",
    "closed_correct",
    "open_recall_score",
    "token_f1_score",
    "closed_accuracy",
    "open_recall",
    "token_f1",
    "vqa_scores",
]

_TOKEN = re.compile(rf"[{CJK}]|[^\s{CJK}]+")


def answer_tokens(text: str | None) -> list[str]:
    """Tokens of a normalised answer: English words, single CJK characters, Latin words inside Chinese."""
    return _TOKEN.findall(normalize_answer(text))


def closed_correct(prediction: str | None, answer: str) -> bool:
    """A closed answer is right: same yes/no, or (non yes/no answers) the same normalised text."""
    gold = yes_no(answer)
    if gold is not None:
        return yes_no(prediction) == gold
    return normalize_answer(prediction) == normalize_answer(answer) != ""


def open_recall_score(prediction: str | None, answer: str) -> float:
    """Fraction of the answer's distinct tokens that the prediction contains (0.0 for an empty answer)."""
    gold = set(answer_tokens(answer))
    return len(gold & set(answer_tokens(prediction))) / len(gold) if gold else 0.0


def token_f1_score(prediction: str | None, answer: str) -> float:
    """SQuAD token F1 between a prediction and an answer (1.0 when both are empty)."""
    pred, gold = answer_tokens(prediction), answer_tokens(answer)
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _pairs(predictions: Sequence[str | None], answers: Sequence[str]):
    if len(predictions) != len(answers):
        raise ValueError(f"got {len(predictions)} predictions but {len(answers)} answers")
    return zip(predictions, answers)


def closed_accuracy(predictions: Sequence[str | None], answers: Sequence[str]) -> float:
    """Accuracy of closed (yes/no) answers; an unreadable prediction is wrong.

    Args:
        predictions: model answers (``None`` allowed).
        answers: reference answers.
    """
    return _mean([float(closed_correct(p, a)) for p, a in _pairs(predictions, answers)])


def open_recall(predictions: Sequence[str | None], answers: Sequence[str]) -> float:
    """Mean open-answer recall (LLaVA-Med): fraction of reference tokens found in the prediction.

    Args:
        predictions: model answers (``None`` allowed).
        answers: reference answers.
    """
    return _mean([open_recall_score(p, a) for p, a in _pairs(predictions, answers)])


def token_f1(predictions: Sequence[str | None], answers: Sequence[str]) -> float:
    """Mean SQuAD token F1.

    Args:
        predictions: model answers (``None`` allowed).
        answers: reference answers.
    """
    return _mean([token_f1_score(p, a) for p, a in _pairs(predictions, answers)])


def vqa_scores(prediction: str | None, answer: str, closed: bool) -> dict[str, float]:
    """Per-sample VQA metrics, ready for :func:`medrega.metrics.summarize`.

    Args:
        prediction: the model answer.
        answer: the reference answer.
        closed: a closed (yes/no) question.

    Returns:
        ``{"closed_accuracy"}`` for closed questions, ``{"open_recall", "token_f1", "exact_match"}`` otherwise.
    """
    if closed:
        return {"closed_accuracy": float(closed_correct(prediction, answer))}
    return {
        "open_recall": open_recall_score(prediction, answer),
        "token_f1": token_f1_score(prediction, answer),
        "exact_match": float(normalize_answer(prediction) == normalize_answer(answer)),
    }
