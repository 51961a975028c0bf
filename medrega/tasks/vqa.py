"""Visual question answering, open (a word or phrase) and closed (yes / no).

Closed answers are ``yes`` / ``no`` in English and ``是`` / ``否`` in Chinese; the parser maps either
language (and common variants: "Yes, ...", "No.", "negative", "是的", "不是", "有", "没有", "无") to
``"yes"`` / ``"no"`` with :func:`medrega.answers.yes_no`, as the VQA metrics do.
"""

from __future__ import annotations

from medrega.answers import yes_no
from medrega.data.records import Record
from medrega.grounding import RegionCodec
from medrega.tasks.base import Rng, Task, as_rng, check_lang, clean_answer

__all__ = ["VQATask"]

_YES_NO = {"en": ("yes", "no"), "zh": ("是", "否")}


class VQATask(Task):
    """Open and closed VQA."""

    name = "vqa"
    TEMPLATES = {
        "open": {
            "en": (
                "{question} Answer the question using a single word or phrase.",
                "{question}",
                "Question: {question} Answer briefly.",
            ),
            "zh": ("{question}请用词或短语回答问题。", "{question}", "问题：{question}请简要回答。"),
        },
        "closed": {
            "en": ("{question} Please answer yes or no.", "{question} Answer with yes or no.", "{question}"),
            "zh": ("{question}请回答是或否。", "{question}请用“是”或“否”回答。", "{question}"),
        },
    }
    PREAMBLES = {
        "en": "You are a helpful medical assistant. You are required to answer the question based on the medical image.",
        "zh": "你是一个医疗助手，你需要根据医学图像回答问题。",
    }

    def build_prompt(
        self, question: str, lang: str = "en", rng: Rng = None, *, closed: bool = False, preamble: bool = False
    ) -> str:
        """The user turn with ``question`` wrapped in an open or closed template.

        Args:
            question: the question text.
            lang, rng, preamble: as for every task (see :mod:`medrega.tasks.base`).
            closed: a yes/no question.
        """
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"a VQA prompt needs a question, got {question!r}")
        question = self.pick("closed" if closed else "open", lang, rng, question=question.strip())
        return self.user_turn(question, lang, preamble=preamble)

    def format_answer(self, answer: str | bool, lang: str = "en") -> str:
        """The answer text; a bool becomes ``yes``/``no`` (``是``/``否``)."""
        if isinstance(answer, bool):
            return _YES_NO[check_lang(lang)][0 if answer else 1]
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"a VQA answer must be non-empty text or a bool, got {answer!r}")
        return answer.strip()

    def parse_answer(
        self,
        text: str,
        image_size: tuple[int, int] | None = None,
        *,
        closed: bool = False,
        codec: RegionCodec | None = None,
    ) -> str | None:
        """The answer: ``"yes"``/``"no"`` for a closed question, else the trimmed text; ``None`` when unreadable.

        Args:
            text: model output.
            image_size: unused (kept for a uniform call).
            closed: read a yes/no answer.
            codec: used to strip region markup.
        """
        answer = clean_answer(text, codec)
        if closed:
            return yes_no(answer)
        return answer or None

    def make_record(
        self,
        id: str,
        image: str,
        image_size: tuple[int, int],
        question: str,
        answer: str | bool,
        lang: str = "en",
        rng: Rng = None,
        *,
        closed: bool | None = None,
        preamble: bool = False,
        source: str | None = None,
        meta: dict | None = None,
    ) -> Record:
        """A VQA record; a bool ``answer`` makes it closed unless ``closed`` says otherwise.

        Args:
            id: record id; image: image path; image_size: ``(width, height)``.
            question, answer: the pair; lang, rng, preamble: as in :meth:`build_prompt`.
            closed: open or closed (default: closed when ``answer`` is a bool).
            source, meta: as every record.
        """
        closed = isinstance(answer, bool) if closed is None else closed
        prompt = self.build_prompt(question, lang, as_rng(rng), closed=closed, preamble=preamble)
        turns = [("user", prompt), ("assistant", self.format_answer(answer, lang))]
        meta = {"answer_type": "closed" if closed else "open", **(meta or {})}
        return self._record(id, [image], [image_size], turns, lang, (), source, meta)
