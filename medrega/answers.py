"""Reading answers, one rule per kind, shared by the task parsers and the metrics (English and Chinese).

Inputs are markup-free text (strip region markup with the codec first).

* **CJK**: a character is Chinese when it lies in ``CJK`` (CJK Unified Ideographs, Extension A and
  the Compatibility Ideographs); :func:`has_cjk` tells Chinese text.
* **Text**: :func:`trim_answer` is the answer as shown (edge whitespace and punctuation trimmed,
  case kept); :func:`normalize_answer` is the comparison key: lowercase, English and Chinese
  punctuation dropped (a point between digits is kept: ``2.5 cm``), English articles dropped, no
  spaces next to CJK characters. Trimming never changes the key.
* **Yes / no** (:func:`yes_no`): the normalised answer's first word decides; negations are tested
  first (so ``不是`` and ``没有`` are no). No: ``no``, ``not``, ``none``, ``false``, ``incorrect``,
  ``negative``, or a start ``否``, ``不``, ``没``, ``无``, ``未``, ``非`` (but ``非常``, "very", is no
  negation). Yes: ``yes``, ``yeah``, ``true``, ``correct``, ``positive``, or a start ``是``, ``有``,
  ``存在``, ``对``, ``正确``, ``可见``. Anything else is ``None``.
* **Choice letters** (:func:`parse_choice`): ``LETTERS`` are ``A``-``P`` (16 options, room for the
  longest lettered lists of Med-MAT / Med-MIM style benchmarks); tried in order:

  1. a bare letter: ``"B"``, ``"B."``, ``"(B)"``, ``"[b]"``;
  2. a leading letter with a delimiter: ``"B: Cyst"``, ``"B. Cyst"``, ``"(B) Cyst"`` (the letter wins
     over the text after it);
  3. a stated answer: ``"The answer is B"``, ``"Answer: (C)"``, ``"答案是B"``, ``"选项C"``;
  4. with options, the option text itself (:func:`match_option`): an exact normalised match, else the
     one option the answer names (:func:`named_options`; two different options named is no answer).

  A letter beyond the options is refused (``None``).
* **Not found** (:func:`not_found`): a detection answer says a structure is absent with the fixed form
  ``<phrase>: not found`` (English) or ``<phrase>：未发现`` (Chinese), ``NOT_FOUND`` holding the two
  words; the reader takes either colon, any case and spaces around the colon, and returns the phrases in
  order. A phrase runs back to the previous ``,`` ``，`` ``、`` ``;`` ``；`` ``:`` ``：`` ``.`` ``。`` or line break,
  so phrases holding those are not read.
* **Named options** (:func:`named_options`): options found in the normalised answer, longest first;
  an occurrence inside a longer option already found does not count (``"pulmonary nodule"`` names
  ``pulmonary nodule``, not ``nodule``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "CJK",
    "LETTERS",
    "has_cjk",
    "map_to_option",
    "match_option",
    "NOT_FOUND",
    "named_options",
    "normalize_answer",
    "not_found",
    "parse_choice",
    "parse_options",
    "trim_answer",
    "yes_no",
]

CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
LETTERS = "ABCDEFGHIJKLMNOP"
NOT_FOUND = {"en": "not found", "zh": "未发现"}  # the words after "<phrase>: " / "<phrase>：" of an absent structure

_HAS_CJK = re.compile(f"[{CJK}]")
_EDGE_PUNCT = " \t\r\n.,;:!?。，；：！？、\"'“”‘’()（）"
_PUNCT = re.compile(r"\.(?!\d)|(?<!\d)\.|[^\w\s.]|_")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_CJK_GAP = re.compile(rf"(?<=[{CJK}])\s+|\s+(?=[{CJK}])")
_NO = re.compile(r"^(?:(?:no|not|none|false|incorrect|negative)\b|否|不|没|无|未|非(?!常))")
_YES = re.compile(r"^(?:(?:yes|yeah|true|correct|positive)\b|是|有|存在|对|正确|可见)")

_NOT_FOUND = re.compile(r"([^,，、;；:：.。\n]*?)\s*[:：]\s*(?:(?i:not\s+found)|未发现)")

_OPEN, _CLOSE = r"[\(\[（【]", r"[\)\]）】]"
_ONLY = re.compile(rf"^\s*{_OPEN}?\s*([A-Pa-p])\s*{_CLOSE}?\s*[.。:：]?\s*$")
_LEAD = re.compile(rf"^\s*(?:{_OPEN}\s*([A-P])\s*{_CLOSE}|([A-P])\s*(?:{_CLOSE}|[.。:：、,，](?!\d)))")
_SAID = re.compile(
    rf"(?:(?i:answer|option|choice)\s*(?:(?i:is|would be|should be))?|答案|选项|选择|选)\s*(?:是|为|应为|应该是)?\s*[:：]?\s*{_OPEN}?\s*([A-P])(?![A-Za-z])"
)
_OPTION_LINE = re.compile(rf"^\s*{_OPEN}?([A-P])(?:{_CLOSE}|[.:：])\s*(.+?)\s*$", re.M)


def has_cjk(text: str) -> bool:
    """Whether ``text`` holds a CJK character."""
    return _HAS_CJK.search(text) is not None


def trim_answer(text: str) -> str:
    """The answer as shown: edge whitespace and punctuation trimmed, case kept (``"Right lung."`` -> ``"Right lung"``)."""
    return text.strip(_EDGE_PUNCT)


def normalize_answer(text: str | None) -> str:
    """The comparison key of an answer (see the module docstring; ``None`` gives ``""``)."""
    if text is None:
        return ""
    text = _PUNCT.sub(" ", str(text).lower())
    text = _ARTICLES.sub(" ", text)
    return _CJK_GAP.sub("", " ".join(text.split()))


def yes_no(text: str | None) -> str | None:
    """``"yes"``, ``"no"``, or ``None`` when the answer does not start with a yes/no word (either language)."""
    norm = normalize_answer(text)
    if _NO.match(norm):
        return "no"
    if _YES.match(norm):
        return "yes"
    return None


def not_found(text: str | None) -> list[str]:
    """The phrases a markup-free answer says are absent (``"nodule: not found."`` -> ``["nodule"]``,
    ``"结节：未发现。"`` -> ``["结节"]``), in order; see the module docstring.

    Args:
        text: the answer without region markup (``<ref>`` tags stripped, phrases kept).
    """
    if not text:
        return []
    return [m.group(1).strip() for m in _NOT_FOUND.finditer(str(text)) if m.group(1).strip()]


def named_options(text: str | None, options: Sequence[str]) -> list[int]:
    """Indices (in option order) of the options an answer names; see the module docstring.

    Args:
        text: the answer text.
        options: the option texts.
    """
    answer = normalize_answer(text)
    norms = [normalize_answer(o) for o in options]
    taken = [False] * len(answer)
    named = set()
    for norm in sorted({n for n in norms if n}, key=len, reverse=True):
        for m in re.finditer(re.escape(norm), answer):
            if not any(taken[m.start() : m.end()]):
                taken[m.start() : m.end()] = [True] * (m.end() - m.start())
                named.add(norm)
    return [i for i, n in enumerate(norms) if n in named]


def match_option(text: str | None, options: Sequence[str]) -> int | None:
    """Index of the option a free-text answer names: an exact normalised match, else the one named option.

    Args:
        text: the answer text.
        options: the option texts.
    """
    answer = normalize_answer(text)
    if not answer:
        return None
    norms = [normalize_answer(o) for o in options]
    picked = [i for i, n in enumerate(norms) if n == answer] or named_options(text, options)
    return picked[0] if len({norms[i] for i in picked}) == 1 else None


def parse_choice(text: str | None, options: Sequence[str] | None = None) -> str | None:
    """The letter an answer chooses, or ``None``.

    Args:
        text: the answer: ``"B"``, ``"(B)"``, ``"The answer is B"``, ``"C: cataract"``, or option text.
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
    index = match_option(text, options) if options else None
    return LETTERS[index] if index is not None else None


def map_to_option(text: str | None, options: Sequence[str]) -> str | None:
    """The option text an answer chooses (by letter or by its text, as :func:`parse_choice`), or ``None``.

    Args:
        text: the answer.
        options: the option texts.
    """
    letter = parse_choice(text, options)
    return options[LETTERS.index(letter)] if letter is not None else None


def parse_options(text: str) -> list[str]:
    """Option texts listed one per line as ``A: ...`` / ``A. ...`` / ``(A) ...``, starting at ``A``.

    Args:
        text: a question holding the options (Med-MIM and Med-MAT prompts).
    """
    options: list[str] = []
    for m in _OPTION_LINE.finditer(text):
        if len(options) < len(LETTERS) and m.group(1) == LETTERS[len(options)]:
            options.append(m.group(2))
    return options
