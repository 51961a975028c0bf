"""Classification metrics: accuracy, macro-F1, multi-label F1, and mapping answers onto options.

Labels are compared after :func:`~medrega.answers.normalize_answer`; answers map onto options with
:func:`~medrega.answers.map_to_option` (re-exported here). Per-class F1 is 0 when it is
undefined (no prediction and no reference of the class), and macro-F1 averages over the classes that
occur in the references or the predictions (scikit-learn's ``f1_score(average="macro", zero_division=0)``).
A ``None`` prediction (an unreadable answer) is wrong and adds no class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from medrega.answers import map_to_option, normalize_answer

__all__ = ["map_to_option", "accuracy", "macro_f1", "multilabel_f1"]


def _check(predictions: Sequence, labels: Sequence) -> None:
    if len(predictions) != len(labels):
        raise ValueError(f"got {len(predictions)} predictions but {len(labels)} labels")


def accuracy(predictions: Sequence[str | None], labels: Sequence[str]) -> float:
    """Share of predictions equal to their label after normalisation (``None`` is wrong).

    Args:
        predictions: predicted labels.
        labels: reference labels.
    """
    _check(predictions, labels)
    hits = [p is not None and normalize_answer(p) == normalize_answer(y) for p, y in zip(predictions, labels)]
    return float(np.mean(hits)) if hits else 0.0


def _f1(tp: np.ndarray, n_pred: np.ndarray, n_gold: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2 tp / (predicted + reference), 0 where undefined."""
    denom = n_pred + n_gold
    return np.divide(2.0 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)


def macro_f1(predictions: Sequence[str | None], labels: Sequence[str]) -> float:
    """Macro-averaged F1 of single-label predictions.

    Args:
        predictions: predicted labels (``None`` for an unreadable answer).
        labels: reference labels.
    """
    _check(predictions, labels)
    gold = [normalize_answer(y) for y in labels]
    pred = [normalize_answer(p) if p is not None else None for p in predictions]
    classes = sorted(set(gold) | {p for p in pred if p is not None})
    if not classes:
        return 0.0
    index = {c: i for i, c in enumerate(classes)}
    g = np.array([index[y] for y in gold], dtype=np.int64)
    p = np.array([index[x] if x is not None else -1 for x in pred], dtype=np.int64)
    k = len(classes)
    tp = np.bincount(g[p == g], minlength=k)
    return float(_f1(tp, np.bincount(p[p >= 0], minlength=k), np.bincount(g, minlength=k)).mean())


def multilabel_f1(
    predictions: Sequence[Iterable[str] | None], labels: Sequence[Iterable[str]], average: str = "macro"
) -> float:
    """F1 of multi-label predictions (sets of labels per sample).

    Args:
        predictions: predicted label sets (``None`` = nothing predicted).
        labels: reference label sets.
        average: ``"macro"`` (mean per-class F1 over classes seen in references or predictions),
            ``"micro"`` (pooled counts) or ``"samples"`` (mean per-sample F1; 1.0 when both sets are empty).
    """
    _check(predictions, labels)
    if average not in ("macro", "micro", "samples"):
        raise ValueError(f"average must be 'macro', 'micro' or 'samples', got {average!r}")
    gold = [{normalize_answer(y) for y in ys} for ys in labels]
    pred = [{normalize_answer(p) for p in ps} if ps is not None else set() for ps in predictions]
    classes = sorted(set().union(*gold, *pred))
    if not classes:
        return 0.0 if average != "samples" or not gold else 1.0
    index = {c: i for i, c in enumerate(classes)}
    g = np.zeros((len(gold), len(classes)), dtype=bool)  # (samples, classes)
    p = np.zeros_like(g)
    for i, (gs, ps) in enumerate(zip(gold, pred)):
        g[i, [index[c] for c in gs]] = True
        p[i, [index[c] for c in ps]] = True
    tp = g & p
    if average == "micro":
        return float(_f1(np.array([tp.sum()]), np.array([p.sum()]), np.array([g.sum()]))[0])
    if average == "macro":
        return float(_f1(tp.sum(0), p.sum(0), g.sum(0)).mean())
    per_sample = _f1(tp.sum(1), p.sum(1), g.sum(1))
    per_sample[(p.sum(1) + g.sum(1)) == 0] = 1.0
    return float(per_sample.mean())
