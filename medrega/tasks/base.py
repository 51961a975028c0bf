"""The task base: templates, seeded choice, the user-turn layout and record building.

Conventions every task follows:

* Region markup in prompts and answers is the InternVL text form written by ``TextBoxCodec(1000)``
  relative to the original image (a record's ``box_scale`` is 1000); the processor rewrites it into
  the model's codec. Parsers of model output take ``codec`` (default ``TextBoxCodec(1000)``), so they
  read the native :class:`~medrega.grounding.LocTokenCodec` output too, and never raise.
* Template choice is seeded: ``rng`` is a ``random.Random`` or an int seed (``None`` means seed 0),
  so the same seed gives the same text.
* The user turn is ``[preamble + " "] + image placeholders + question``. One image: ``"<image>\\n"``;
  several: ordinal tags ``"Image 1: <image>\\nImage 2: <image>\\n"`` (``"图1：<image>\\n图2：<image>\\n"``),
  or bare ``"<image><image>"`` (Med-MIM's layout) with ``tagged=False``.
* Preambles (MedRegA's system-style task descriptions) are off by default: long prompts cost
  training time on a CPU.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import ClassVar

from medrega import boxes as B
from medrega.answers import trim_answer
from medrega.data.records import Record, Turn
from medrega.grounding import (
    DEFAULT_BOX_SCALE,
    IMAGE_TOKEN,
    REF_END,
    REF_START,
    Grounding,
    RegionCodec,
    TextBoxCodec,
    grounding_spans,
)

__all__ = [
    "LANGS",
    "RECORD_SCALE",
    "Rng",
    "Task",
    "as_rng",
    "check_lang",
    "check_one_of",
    "clean_answer",
    "image_noun",
    "image_slots",
    "join_phrases",
    "ordinal",
    "prose",
    "record_codec",
    "refs",
    "tidy",
]

LANGS = ("en", "zh")
RECORD_SCALE = DEFAULT_BOX_SCALE  # tasks write their records on the default scale
Rng = random.Random | int | None

_ORDINALS_EN = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_DIGITS_ZH = "一二三四五六七八九十"


def as_rng(rng: Rng) -> random.Random:
    """A ``random.Random`` from a generator (returned as is), an int seed, or ``None`` (seed 0)."""
    if isinstance(rng, random.Random):
        return rng
    if rng is None:
        return random.Random(0)
    if isinstance(rng, int) and not isinstance(rng, bool):
        return random.Random(rng)
    raise TypeError(f"rng must be a random.Random, an int seed or None, got {type(rng).__name__}")


def check_one_of(value: str, allowed: Sequence[str], name: str) -> str:
    """Return ``value`` when it is one of ``allowed``; raise ``ValueError`` naming ``name`` otherwise."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def check_lang(lang: str) -> str:
    """Return ``lang`` when it is ``"en"`` or ``"zh"``; raise ``ValueError`` otherwise."""
    return check_one_of(lang, LANGS, "lang")


def record_codec() -> TextBoxCodec:
    """The codec of region markup inside records: ``TextBoxCodec(RECORD_SCALE)``."""
    return TextBoxCodec(RECORD_SCALE)


def ordinal(index: int, lang: str = "en") -> str:
    """The ordinal of a 0-based image index: ``1 -> "second"`` / ``"第二张"``.

    Args:
        index: 0-based image index (at most 9).
        lang: ``"en"`` or ``"zh"``.
    """
    check_lang(lang)
    if not 0 <= index < len(_ORDINALS_EN):
        raise ValueError(f"ordinal index must lie in 0..{len(_ORDINALS_EN) - 1}, got {index}")
    return _ORDINALS_EN[index] if lang == "en" else f"第{_DIGITS_ZH[index]}张"


def image_noun(modality: str | None, lang: str) -> str:
    """How prompts name the image: ``"image"`` / ``"CT scan"``, ``"医学影像"`` / ``"CT影像"``."""
    check_lang(lang)
    if lang == "en":
        return f"{modality} scan" if modality else "image"
    return f"{modality}影像" if modality else "医学影像"


def image_slots(n_images: int, lang: str, tagged: bool = True) -> str:
    """The image placeholders that open a user turn (see the module docstring)."""
    if n_images < 1:
        raise ValueError(f"a prompt needs at least one image, got n_images={n_images}")
    if n_images == 1:
        return f"{IMAGE_TOKEN}\n"
    if not tagged:
        return IMAGE_TOKEN * n_images + "\n"
    label = "Image {k}: " if check_lang(lang) == "en" else "图{k}："
    return "".join(label.format(k=k) + f"{IMAGE_TOKEN}\n" for k in range(1, n_images + 1))


def join_phrases(phrases: Sequence[str], lang: str) -> str:
    """Join phrases: ``"a, b"`` in English, ``"a、b"`` in Chinese."""
    return (", " if check_lang(lang) == "en" else "、").join(phrases)


def refs(phrases: str | Sequence[str], lang: str) -> str:
    """Phrases wrapped in ``<ref>...</ref>`` and joined, as detection prompts name their objects."""
    phrases = [phrases] if isinstance(phrases, str) else list(phrases)
    if not phrases or not all(isinstance(p, str) and p.strip() for p in phrases):
        raise ValueError(f"need at least one non-empty phrase, got {phrases!r}")
    return join_phrases([f"{REF_START}{p.strip()}{REF_END}" for p in phrases], lang)


def tidy(text: object, codec: RegionCodec | None = None) -> str:
    """Model text without region markup, runs of whitespace collapsed and trimmed ("" for non-text)."""
    if not isinstance(text, str):
        return ""
    return re.sub(r"\s+", " ", (codec or record_codec()).strip(text)).strip()


def prose(text: object, codec: RegionCodec | None = None) -> str:
    """Model text with whole groundings (``<ref>phrase</ref><box>..</box>``, phrase included) removed, then
    :func:`tidy`, without leading separators: ``"<ref>nodule</ref><box>..</box>: It grew."`` -> ``"It grew."``."""
    if not isinstance(text, str):
        return ""
    kept, pos = [], 0
    for start, end in grounding_spans(text):
        kept.append(text[pos:start])
        pos = end
    return tidy("".join(kept) + text[pos:], codec).lstrip(" :：,，")


def clean_answer(text: object, codec: RegionCodec | None = None) -> str:
    """A short answer: :func:`tidy` text, then :func:`medrega.answers.trim_answer` (``"Right lung."`` -> ``"Right lung"``)."""
    return trim_answer(tidy(text, codec))


class Task:
    """One task of the library: templates, prompt and answer formats, a parser and a record builder.

    Subclasses set ``name``, ``TEMPLATES`` (``kind -> {"en": (...), "zh": (...)}``, each template a
    ``str.format`` pattern) and ``PREAMBLES`` (``lang -> text``), and define ``build_prompt``,
    ``format_answer``, ``parse_answer`` and ``make_record``.
    """

    name: ClassVar[str]
    TEMPLATES: ClassVar[dict[str, dict[str, tuple[str, ...]]]]
    PREAMBLES: ClassVar[dict[str, str]]

    def templates(self, kind: str, lang: str) -> tuple[str, ...]:
        """The templates of one kind in one language."""
        check_lang(lang)
        if kind not in self.TEMPLATES:
            raise ValueError(f"task {self.name!r} has no template kind {kind!r}; kinds: {sorted(self.TEMPLATES)}")
        return self.TEMPLATES[kind][lang]

    def pick(self, kind: str, lang: str, rng: Rng, **fields: str) -> str:
        """A seeded choice among the templates of ``kind``, filled with ``fields``."""
        return as_rng(rng).choice(self.templates(kind, lang)).format(**fields)

    def user_turn(
        self, question: str, lang: str, n_images: int = 1, preamble: bool = False, tagged: bool = True
    ) -> str:
        """``[preamble + " "] + image placeholders + question``."""
        head = self.PREAMBLES[check_lang(lang)] + " " if preamble else ""
        return head + image_slots(n_images, lang, tagged) + question

    def _record(
        self,
        id: str,
        images: Sequence[str],
        image_sizes: Sequence[tuple[int, int]],
        turns: Sequence[tuple[str, str]],
        lang: str,
        groundings: Sequence[Grounding] = (),
        source: str | None = None,
        meta: dict | None = None,
    ) -> Record:
        """A validated :class:`Record` of this task; ``turns`` are ``(role, content)`` pairs."""
        sizes = [(int(w), int(h)) for w, h in image_sizes]
        for g in groundings:
            for box in g.boxes:
                B.validate_box(box, sizes[g.image_index])
        record = Record(
            id=str(id),
            images=[str(p) for p in images],
            conversation=[Turn(role, content) for role, content in turns],
            groundings=list(groundings),
            image_sizes=sizes,
            box_scale=RECORD_SCALE,
            lang=check_lang(lang),
            task=self.name,
            source=source,
            meta=dict(meta or {}),
        )
        return record.validate(f"<{self.name} record {id}>")
