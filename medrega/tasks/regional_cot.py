"""Regional chain-of-thought: detect the regions a question is about, then answer with those regions given.

A record is a two-round conversation::

    user:      <image>\\n{question} First locate the regions relevant to the question.
    assistant: <ref>nodule</ref><box>[[612, 240, 700, 330]]</box>, <ref>left lung</ref><box>[[560, 90, 880, 600]]</box>
    user:      Given the regions <ref>nodule</ref><box>[[612, 240, 700, 330]]</box>, <ref>left lung</ref><box>[[560, 90, 880, 600]]</box>, which lung holds the nodule?
    assistant: The left lung.

(templates vary the wording of both user turns; Chinese: "{question}请先定位与问题相关的区域。" /
"结合区域{regions}，{question}"). ``Record.groundings`` are the regions of the first answer. At
inference, run the first round, read the regions with :meth:`RegionalCoTTask.parse_regions`, and
build the second user turn from them with :meth:`RegionalCoTTask.build_followup`.
"""

from __future__ import annotations

from collections.abc import Sequence

from medrega.data.records import Record
from medrega.grounding import Grounding, ParseResult, RegionCodec
from medrega.tasks.base import Rng, Task, as_rng, check_lang, clean_answer, record_codec

__all__ = ["RegionalCoTTask"]


class RegionalCoTTask(Task):
    """Regional chain-of-thought: regions first, then the answer."""

    name = "regional_cot"
    TEMPLATES = {
        "locate": {
            "en": (
                "{question} First locate the regions relevant to the question.",
                "Before answering, find the regions that matter for this question: {question}",
                "{question} Start by detecting the relevant regions.",
            ),
            "zh": (
                "{question}请先定位与问题相关的区域。",
                "回答前，请先找出与该问题相关的区域：{question}",
                "{question}请先检测相关区域。",
            ),
        },
        "answer": {
            "en": (
                "Given the regions {regions}, {question_lc}",
                "Relevant regions: {regions}. {question}",
                "Using {regions}, answer: {question}",
            ),
            "zh": (
                "结合区域{regions}，{question}",
                "相关区域：{regions}。{question}",
                "请根据{regions}回答：{question}",
            ),
        },
    }
    PREAMBLES = {
        "en": "You are a helpful medical assistant. Answer the question step by step: first find the relevant "
        "regions of the image as bounding boxes, then answer using them.",
        "zh": "你是一个医疗助手。请逐步回答问题：先用边界框找出图像中的相关区域，再据此作答。",
    }

    @staticmethod
    def _question(question: str) -> str:
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"a regional chain-of-thought prompt needs a question, got {question!r}")
        return question.strip()

    def build_prompt(self, question: str, lang: str = "en", rng: Rng = None, *, preamble: bool = False) -> str:
        """The first user turn: the question and the request to locate the relevant regions first.

        Args:
            question: the question.
            lang, rng, preamble: as for every task (see :mod:`medrega.tasks.base`).
        """
        return self.user_turn(
            self.pick("locate", lang, rng, question=self._question(question)), lang, preamble=preamble
        )

    def format_regions(self, regions: Sequence[Grounding], image_size: tuple[int, int]) -> str:
        """The first answer: the relevant regions in the record codec."""
        if not regions:
            raise ValueError("a regional chain-of-thought record needs at least one region")
        return record_codec().format(regions, image_size)

    def parse_regions(self, text: str, image_size: tuple[int, int], *, codec: RegionCodec | None = None) -> ParseResult:
        """The regions of the first answer, in pixels; never raises.

        Args:
            text: model output of the first round.
            image_size: ``(width, height)`` of the original image.
            codec: the codec the model writes (default ``TextBoxCodec(1000)``).
        """
        if not isinstance(text, str):
            return ParseResult(problems=[f"expected text, got {type(text).__name__}"])
        return (codec or record_codec()).parse(text, image_size)

    def build_followup(
        self,
        question: str,
        regions: Sequence[Grounding],
        image_size: tuple[int, int],
        lang: str = "en",
        rng: Rng = None,
        *,
        codec: RegionCodec | None = None,
    ) -> str:
        """The second user turn: the regions and the question again.

        Args:
            question: the question of the first turn.
            regions: the regions found in the first round (pixels).
            image_size: ``(width, height)`` of the original image.
            lang, rng: as for every task.
            codec: the codec to write the regions in (default: the record codec).
        """
        question = self._question(question)
        fields = {
            "regions": (codec or record_codec()).format(regions, image_size, sep=", " if check_lang(lang) == "en" else "、"),
            "question": question,
            "question_lc": question[:1].lower() + question[1:],
        }
        return self.pick("answer", lang, rng, **fields)

    def format_answer(self, answer: str) -> str:
        """The final answer text."""
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"a regional chain-of-thought answer must be non-empty text, got {answer!r}")
        return answer.strip()

    def parse_answer(
        self, text: str, image_size: tuple[int, int] | None = None, *, codec: RegionCodec | None = None
    ) -> str | None:
        """The final answer without markup and edge punctuation, or ``None`` when empty.

        Args:
            text: model output of the second round.
            image_size: unused (kept for a uniform call).
            codec: used to strip region markup.
        """
        return clean_answer(text, codec) or None

    def make_record(
        self,
        id: str,
        image: str,
        image_size: tuple[int, int],
        question: str,
        regions: Sequence[Grounding],
        answer: str,
        lang: str = "en",
        rng: Rng = None,
        *,
        preamble: bool = False,
        source: str | None = None,
        meta: dict | None = None,
    ) -> Record:
        """A two-round record (see the module docstring); ``groundings`` are ``regions``.

        Args:
            id: record id; image: image path; image_size: ``(width, height)``.
            question, regions, answer: the question, its relevant regions (pixels) and the final answer.
            lang, rng, preamble: as in :meth:`build_prompt`; source, meta: as every record.
        """
        rng = as_rng(rng)
        turns = [
            ("user", self.build_prompt(question, lang, rng, preamble=preamble)),
            ("assistant", self.format_regions(regions, image_size)),
            ("user", self.build_followup(question, regions, image_size, lang, rng)),
            ("assistant", self.format_answer(answer)),
        ]
        return self._record(id, [image], [image_size], turns, lang, regions, source, meta)
