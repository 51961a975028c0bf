"""Classification: single-label (letter choices or a label from a list) and multi-label.

Styles (``style=``):

* ``"choice"`` (Med-MAT): up to 4 options ``A: Stone\\nB: Cyst ...`` shuffled with the seed; answer the letter ``B``.
* ``"choice_text"`` (Med-MIM): the same options; answer ``"C: cataract"``.
* ``"list"`` (MedRegA's diagnosis prompts): the possible labels listed; answer the label.
* ``"multi_label"``: the candidate labels listed; answer every label that applies, in list order, joined
  by ``", "`` (``"、"`` in Chinese).

Parsers return the letter (choice styles), the label, or the list of labels, and ``None`` when
nothing is recognised. Letters (``A``-``P``) and option text are read by :mod:`medrega.answers`, as
the classification metrics read them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from medrega.answers import LETTERS, map_to_option, named_options, parse_choice
from medrega.data.records import Record
from medrega.grounding import RegionCodec
from medrega.tasks.base import Rng, Task, as_rng, check_one_of, clean_answer, image_noun, join_phrases, tidy

__all__ = ["ClassificationTask", "LETTERS", "STYLES"]

STYLES = ("choice", "choice_text", "list", "multi_label")
_SPLIT = re.compile(r"\s*(?:[,，、;；\n]|\band\b|和)\s*", re.I)


class ClassificationTask(Task):
    """Single- and multi-label classification with option lists."""

    name = "classification"
    TEMPLATES = {
        "question": {
            "en": (
                "What is the diagnosis for this {image}?",
                "Which condition does this {image} show?",
                "Review this {image} and determine the possible condition it represents.",
            ),
            "zh": ("这张{image}的诊断是什么？", "这张{image}显示了哪种情况？", "请查看这张{image}并判断其可能的情况。"),
        },
        "choice": {
            "en": (
                "{question}\n{options}\nAnswer with the option's letter from the given choices directly.",
                "{question}\n{options}\nAnswer with the letter of the correct option.",
            ),
            "zh": ("{question}\n{options}\n请直接回答正确选项的字母。", "{question}\n{options}\n请用选项字母作答。"),
        },
        "choice_text": {
            "en": ("{question}\n{options}\n", "{question}\n{options}\nAnswer with the option's letter and text."),
            "zh": ("{question}\n{options}\n", "{question}\n{options}\n请回答选项字母及其内容。"),
        },
        "list": {
            "en": ("The possible diagnoses are:\n{labels}\n{question}", "{question} Choose one of: {inline}."),
            "zh": ("可能的诊断有：\n{labels}\n{question}", "{question}请从以下选项中选择一个：{inline}。"),
        },
        "multi_label": {
            "en": (
                "{question}\nThe candidate findings are:\n{labels}\nList all that apply.",
                "{question} Select all that apply from: {inline}.",
            ),
            "zh": (
                "{question}\n候选结果：\n{labels}\n请列出所有符合的选项。",
                "{question}请从以下选项中选出所有符合的：{inline}。",
            ),
        },
    }
    PREAMBLES = {
        "en": "You are a helpful medical assistant. Your task is disease diagnosis. You are required to classify the "
        "medical image.",
        "zh": "你是一个医疗助手，你的任务是疾病诊断。你需要对医学图像进行分类。",
    }

    @staticmethod
    def _style(style: str) -> str:
        return check_one_of(style, STYLES, "style")

    def choose_options(
        self, answer: str, candidates: Sequence[str], rng: Rng = None, max_options: int = 4
    ) -> list[str]:
        """``answer`` plus up to ``max_options - 1`` distractors from ``candidates``, shuffled with ``rng``."""
        if not 2 <= max_options <= len(LETTERS):
            raise ValueError(f"max_options must lie in 2..{len(LETTERS)}, got {max_options}")
        rng = as_rng(rng)
        distractors = [c for c in dict.fromkeys(candidates) if c != answer]
        options = [answer, *rng.sample(distractors, min(max_options - 1, len(distractors)))]
        rng.shuffle(options)
        return options

    def build_prompt(
        self,
        options: Sequence[str],
        lang: str = "en",
        rng: Rng = None,
        *,
        style: str = "choice",
        question: str | None = None,
        modality: str | None = None,
        preamble: bool = False,
    ) -> str:
        """The user turn with the question and the options (in the given order).

        Args:
            options: the labels offered, in order (letters follow this order).
            lang, rng, modality, preamble: as for every task (see :mod:`medrega.tasks.base`).
            style: one of ``STYLES``.
            question: the question (default: a seeded generic diagnosis question).
        """
        options = list(options)
        if not options or len(options) > len(LETTERS):
            raise ValueError(f"need 1..{len(LETTERS)} options, got {len(options)}")
        rng = as_rng(rng)
        question = question.strip() if question else self.pick("question", lang, rng, image=image_noun(modality, lang))
        fields = {
            "question": question,
            "options": "\n".join(f"{LETTERS[i]}: {o}" for i, o in enumerate(options)),
            "labels": "\n".join(options),
            "inline": join_phrases(options, lang),
        }
        return self.user_turn(self.pick(self._style(style), lang, rng, **fields), lang, preamble=preamble)

    def format_answer(
        self, labels: str | Sequence[str], options: Sequence[str], *, style: str = "choice", lang: str = "en"
    ) -> str:
        """The answer: ``"B"``, ``"B: Cyst"``, ``"Cyst"`` or ``"Cyst, Stone"`` by ``style``.

        Args:
            labels: the true label (a list of labels for ``"multi_label"``).
            options: the options as offered in the prompt.
            style: one of ``STYLES``; lang: joins multi-label answers.
        """
        options = list(options)
        wanted = [labels] if isinstance(labels, str) else list(labels)
        missing = [lab for lab in wanted if lab not in options]
        if missing or not wanted:
            raise ValueError(f"answer labels {wanted!r} must be among the options {options!r}")
        if self._style(style) == "multi_label":
            return join_phrases([o for o in options if o in wanted], lang)
        if len(wanted) != 1:
            raise ValueError(f"style {style!r} takes one label, got {wanted!r}")
        letter = LETTERS[options.index(wanted[0])]
        return {"choice": letter, "choice_text": f"{letter}: {wanted[0]}", "list": wanted[0]}[style]

    def parse_answer(
        self,
        text: str,
        image_size: tuple[int, int] | None = None,
        *,
        options: Sequence[str] | None = None,
        style: str = "choice",
        codec: RegionCodec | None = None,
    ) -> str | list[str] | None:
        """The chosen letter (choice styles), label (``"list"``, by its text or letter) or labels (``"multi_label"``,
        the options named); ``None`` if unreadable.

        Args:
            text: model output.
            image_size: unused (kept for a uniform call).
            options: the options offered; letters beyond them are refused, and option text maps to its letter.
            style: one of ``STYLES``.
            codec: used to strip region markup.
        """
        self._style(style)
        answer = tidy(text, codec)
        options = list(options) if options is not None else None
        if style in ("choice", "choice_text"):
            return parse_choice(answer, options)
        if style == "list":
            return map_to_option(answer, options) if options is not None else clean_answer(answer) or None
        if options is None:
            return [p for p in _SPLIT.split(clean_answer(answer)) if p] or None
        return [options[i] for i in named_options(answer, options)] or None

    def make_record(
        self,
        id: str,
        image: str,
        image_size: tuple[int, int],
        answer: str | Sequence[str],
        candidates: Sequence[str],
        lang: str = "en",
        rng: Rng = None,
        *,
        style: str = "choice",
        question: str | None = None,
        max_options: int = 4,
        modality: str | None = None,
        preamble: bool = False,
        source: str | None = None,
        meta: dict | None = None,
    ) -> Record:
        """A classification record; ``meta`` keeps ``style``, ``options`` (as offered) and ``labels``.

        Args:
            id: record id; image: image path; image_size: ``(width, height)``.
            answer: the true label (a list for ``"multi_label"``).
            candidates: every label of the task; single-label styles offer ``answer`` and up to
                ``max_options - 1`` of them, shuffled; ``"multi_label"`` offers all, in order.
            lang, rng, style, question, modality, preamble: as in :meth:`build_prompt`; source, meta: as every record.
        """
        rng = as_rng(rng)
        if self._style(style) == "multi_label":
            options = list(dict.fromkeys(candidates))
        else:
            if not isinstance(answer, str):
                raise ValueError(f"style {style!r} takes one label as answer, got {answer!r}")
            options = self.choose_options(answer, candidates, rng, max_options)
        prompt = self.build_prompt(
            options, lang, rng, style=style, question=question, modality=modality, preamble=preamble
        )
        turns = [("user", prompt), ("assistant", self.format_answer(answer, options, style=style, lang=lang))]
        labels = [answer] if isinstance(answer, str) else list(answer)
        meta = {"style": style, "options": options, "labels": labels, **(meta or {})}
        return self._record(id, [image], [image_size], turns, lang, (), source, meta)
