"""Multiple choice: reading Med-MAT letter answers and Med-MIM ``"A: option text"`` answers.

``parse_choice`` tries, in order:

1. a bare letter: ``"B"``, ``"B."``, ``"(B)"``, ``"[b]"``;
2. a leading letter with a delimiter: ``"B: Cyst"``, ``"B. Cyst"``, ``"(B) Cyst"``, ``"C: cataract"``
   (the letter wins over the text after it);
3. a stated answer: ``"The answer is B"``, ``"Answer: (C)"``, ``"答案是B"``, ``"选项C"``;
4. the option text itself, by normalised match: an exact match, else the one option named in the
   answer (an option contained in another named option does not count; two unrelated options
   named means no answer).

It returns the letter, or ``None`` when nothing readable (or a letter beyond the options) is found;
``None`` is scored as wrong and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from medrega.metrics.vqa import normalize_answer

__all__ = ["LETTERS", "parse_choice", "match_option", "parse_options", "choice_accuracy"]

LETTERS = "ABCDEFGHIJKLMNOP"
_OPEN, _CLOSE = r"[\(\[（【]", r"[\)\]）】]"
_ONLY = re.compile(rf"^\s*{_OPEN}?\s*([A-Pa-p])\s*{_CLOSE}?\s*[.。:：]?\s*$")
_LEAD = re.compile(rf"^\s*(?:{_OPEN}\s*([A-P])\s*{_CLOSE}|([A-P])\s*(?:{_CLOSE}|[.。:：、,，](?!\d)))")
_SAID = re.compile(
    rf"(?:(?i:answer|option|choice)\s*(?:(?i:is|would be|should be))?|答案|选项|选择|选)\s*(?:是|为|应为|应该是)?\s*[:：]?\s*{_OPEN}?\s*([A-P])(?![A-Za-z])"
)
_OPTION_LINE = re.compile(rf"^\s*{_OPEN}?([A-P])(?:{_CLOSE}|[.:：])\s*(.+?)\s*$", re.M)


def match_option(text: str | None, options: Sequence[str]) -> int | None:
    """Index of the option that a free-text answer names (normalised match), or ``None``.

    Args:
        text: the answer text.
        options: the option texts.
    """
    answer = normalize_answer(text)
    norms = [normalize_answer(o) for o in options]
    if not answer:
        return None
    exact = [i for i, o in enumerate(norms) if o == answer]
    if len(set(norms[i] for i in exact)) == 1:
        return exact[0]
    found = [i for i, o in enumerate(norms) if o and o in answer]
    kept = {norms[i] for i in found if not any(norms[i] != norms[j] and norms[i] in norms[j] for j in found)}
    return next(i for i in found if norms[i] in kept) if len(kept) == 1 else None


def parse_choice(text: str | None, options: Sequence[str] | None = None) -> str | None:
    """The letter an answer chooses, or ``None``.

    Args:
        text: the model (or reference) answer: ``"B"``, ``"(B)"``, ``"The answer is B"``, ``"C: cataract"``, or option text.
        options: the option texts; letters beyond them are refused and option text maps to its letter.
    """
    if text is None:
        return None
    text = str(text)
    allowed = LETTERS[: len(options)] if options is not None else LETTERS
    for pattern in (_ONLY, _LEAD, _SAID):
        m = pattern.search(text)
        if m:
            letter = next(g for g in m.groups() if g).upper()
            return letter if letter in allowed else None
    if options:
        index = match_option(text, options)
        return LETTERS[index] if index is not None else None
    return None


def parse_options(text: str) -> list[str]:
    """Option texts listed one per line as ``A: ...`` / ``A. ...`` / ``(A) ...``, starting at ``A``.

    Args:
        text: a question holding the options (Med-MIM and Med-MAT prompts).
    """
    options: list[str] = []
    for m in _OPTION_LINE.finditer(text):
        if m.group(1) == LETTERS[len(options)]:
            options.append(m.group(2))
    return options


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
