"""Multiple choice: accuracy of Med-MAT letter answers and Med-MIM ``"A: option text"`` answers.

Letters are read by :func:`medrega.answers.parse_choice` (re-exported here with ``LETTERS``,
``match_option`` and ``parse_options``; the rules are in :mod:`medrega.answers`). An unreadable
answer, or a letter beyond the options, is ``None`` and scored as wrong; it never raises.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medrega.answers import LETTERS, match_option, parse_choice, parse_options

__all__ = ["LETTERS", "parse_choice", "match_option", "parse_options", "choice_accuracy"]


def choice_accuracy(
    predictions: Sequence[str | None], answers: Sequence[str], options: Sequence[Sequence[str] | None] | None = None
) -> float:
    """Accuracy of multiple-choice answers (Med-MAT letters or Med-MIM ``"A: text"``); unreadable is wrong.

    Args:
        predictions: model answers.
        answers: reference answers (a letter, ``"C: cataract"``, or the option text when options are given).
        options: per sample, the option texts (or ``None``); with them, free text maps to a letter.

    Raises:
        ValueError: a reference answer names no letter.
    """
    if len(predictions) != len(answers):
        raise ValueError(f"got {len(predictions)} predictions but {len(answers)} answers")
    opts = list(options) if options is not None else [None] * len(answers)
    if len(opts) != len(answers):
        raise ValueError(f"got {len(opts)} option lists for {len(answers)} answers")
    correct = []
    for i, (pred, gold, op) in enumerate(zip(predictions, answers, opts)):
        letter = parse_choice(gold, op)
        if letter is None:
            raise ValueError(f"reference answer {i} names no option letter: {gold!r}")
        correct.append(parse_choice(pred, op) == letter)
    return float(np.mean(correct)) if correct else 0.0
