"""Grounded report generation: sentences, each tied to the regions of the organs or lesions it describes.

Two answer styles (English and Chinese):

* ``"cxr"`` (MedRegA's chest X-ray style): one line per sentence,
  ``<ref>right lung</ref><box>[[...]]</box>, <ref>left lung</ref><box>[[...]]</box>: No focal consolidation.``
  (``：`` in Chinese).
* ``"ct"`` (report with headings): ``Findings: <ref>liver</ref><box>[[...]]</box>: A low-density lesion. ...
  Impression: Liver lesion.``; in Chinese ``影像诊断：<ref>肝脏</ref><box>[[...]]</box>：...。影像结论：...``.

The parser finds runs of ``<ref>..</ref><box>..</box>`` joined only by commas (or "and"/"和"); each run
is one sentence's groundings, and the text up to the next run is that sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from medrega.data.records import Record
from medrega.grounding import Grounding, RegionCodec, grounding_spans
from medrega.tasks.base import Rng, Task, as_rng, check_lang, check_one_of, image_noun, record_codec, refs, tidy
from medrega.tasks.report import HEADINGS, split_sections

__all__ = ["GroundedSentence", "GroundedReport", "GroundedReportTask", "STYLES"]

STYLES = ("cxr", "ct")
_LINK = re.compile(r"[\s,，、;；]*(?:and|和|及)?[\s,，、]*", re.I)
_COLON = {"en": ": ", "zh": "："}


@dataclass
class GroundedSentence:
    """A sentence and the groundings (organ or lesion regions, pixels) it describes."""

    groundings: list[Grounding]
    text: str


@dataclass
class GroundedReport:
    """A parsed grounded report: its sentences and, for the ``"ct"`` style, the impression."""

    sentences: list[GroundedSentence] = field(default_factory=list)
    impression: str | None = None

    @property
    def groundings(self) -> list[Grounding]:
        """Every grounding of every sentence, in order."""
        return [g for s in self.sentences for g in s.groundings]


class GroundedReportTask(Task):
    """Grounded report generation (per-organ or per-lesion sentences with regions)."""

    name = "grounded_report"
    TEMPLATES = {
        "cxr": {
            "en": (
                "Write a grounded report for this {image}: describe each organ and finding and give its region.",
                "Describe the findings of this {image}, locating each described structure.",
                "Please generate a report for this {image} in which every sentence gives the region it describes.",
            ),
            "zh": (
                "请为这张{image}撰写带定位的报告：描述每个器官和病灶并给出其区域。",
                "请描述这张{image}的所见，并定位所描述的每个结构。",
                "请为这张{image}生成报告，每句话都给出其描述的区域。",
            ),
        },
        "ct": {
            "en": (
                "Write a report for this {image} with findings and impression, giving the region of each structure you describe.",
                "Please write the findings and impression of this {image}, locating every described organ or lesion.",
            ),
            "zh": (
                "请为这张{image}撰写诊断报告，包括影像诊断和影像结论两部分，并用边界框标出描述的每个结构或病灶。",
                "请书写这张{image}的影像诊断和影像结论，并定位所描述的每个器官或病灶。",
            ),
        },
        "cxr_given": {
            "en": (
                "Please locate the region and describe the condition of {objects}.",
                "Locate {objects} in this {image} and describe each of them.",
                "Describe {objects} in this {image}, giving the region of each.",
            ),
            "zh": (
                "请定位并描述这张{image}中的{objects}",
                "请在这张{image}中找出{objects}的位置并分别描述。",
                "请描述这张{image}中的{objects}，并给出各自的区域。",
            ),
        },
        "ct_given": {
            "en": (
                "Locate {objects} in this {image} and write a report with findings and impression.",
                "Please describe {objects} in this {image} with their regions, then give the impression.",
            ),
            "zh": (
                "请定位这张{image}中的{objects}，并撰写包括影像诊断和影像结论的报告。",
                "请描述这张{image}中的{objects}及其区域，并给出影像结论。",
            ),
        },
    }
    PREAMBLES = {
        "en": "You are a helpful medical assistant. Your task is report phrase grounding. You are required to locate "
        "the regions and generate a report for them. Each region is a bounding box [x1, y1, x2, y2]: its top-left "
        "and bottom-right corners relative to the image.",
        "zh": "你是一个医疗助手，你的任务是定位并描述病种。区域用边界框[x1, y1, x2, y2]表示，分别为相对于图像的左上角和右下角坐标。",
    }

    @staticmethod
    def _style(style: str) -> str:
        return check_one_of(style, STYLES, "style")

    def build_prompt(
        self,
        lang: str = "en",
        rng: Rng = None,
        *,
        phrases: Sequence[str] | None = None,
        style: str = "cxr",
        modality: str | None = None,
        preamble: bool = False,
    ) -> str:
        """The user turn asking for a grounded report.

        Args:
            lang, rng, modality, preamble: as for every task (see :mod:`medrega.tasks.base`).
            phrases: organs or lesions the prompt names (``None``: the model chooses).
            style: ``"cxr"`` or ``"ct"`` (the latter asks for findings and impression).
        """
        kind = self._style(style) + ("_given" if phrases else "")
        fields = {"image": image_noun(modality, lang), "objects": refs(phrases, lang) if phrases else ""}
        return self.user_turn(self.pick(kind, lang, rng, **fields), lang, preamble=preamble)

    def format_answer(
        self,
        sentences: Sequence[GroundedSentence],
        image_size: tuple[int, int],
        lang: str = "en",
        *,
        style: str = "cxr",
        impression: str | None = None,
    ) -> str:
        """The grounded report (see the module docstring for both layouts).

        Args:
            sentences: each with at least one grounding (pixels) and non-empty text.
            image_size: ``(width, height)`` of the original image.
            lang: ``"en"`` or ``"zh"``.
            style: ``"cxr"`` or ``"ct"``.
            impression: required by the ``"ct"`` style, refused by ``"cxr"``.
        """
        codec, colon = record_codec(), _COLON[check_lang(lang)]
        if not sentences:
            raise ValueError("a grounded report needs at least one sentence")
        parts = []
        for s in sentences:
            if not s.groundings or not s.text.strip():
                raise ValueError(f"every grounded sentence needs groundings and text, got {s!r}")
            parts.append(codec.format(s.groundings, image_size) + colon + s.text.strip())
        if self._style(style) == "cxr":
            if impression is not None:
                raise ValueError("the 'cxr' style has no impression; use style='ct'")
            return "\n".join(parts)
        if not impression or not impression.strip():
            raise ValueError("the 'ct' style needs an impression")
        head_f, head_i = HEADINGS[lang]
        sep = " " if lang == "en" else ""
        return head_f + sep.join(parts) + sep + head_i + impression.strip()

    def parse_answer(
        self, text: str, image_size: tuple[int, int], *, codec: RegionCodec | None = None
    ) -> GroundedReport:
        """Sentences with their groundings (pixels) and the impression, from either style; never raises.

        Args:
            text: model output.
            image_size: ``(width, height)`` of the original image.
            codec: the codec the model writes (default ``TextBoxCodec(1000)``).
        """
        codec = codec or record_codec()
        before, findings, impression = split_sections(text)
        body = before + (findings or "")
        runs: list[list[tuple[int, int]]] = []  # groundings linked by "and" / "、" form one sentence's run
        for span in grounding_spans(body):
            if runs and _LINK.fullmatch(body[runs[-1][-1][1] : span[0]]):
                runs[-1].append(span)
            else:
                runs.append([span])
        sentences = []
        lead = tidy(body[: runs[0][0][0]] if runs else body, codec)
        if lead:
            sentences.append(GroundedSentence([], lead))
        for i, run in enumerate(runs):
            end = runs[i + 1][0][0] if i + 1 < len(runs) else len(body)
            groundings = list(codec.parse(body[run[0][0] : run[-1][1]], image_size))
            sentences.append(GroundedSentence(groundings, tidy(body[run[-1][1] : end].lstrip(" :："), codec)))
        return GroundedReport(sentences, tidy(impression, codec) or None)

    def make_record(
        self,
        id: str,
        image: str,
        image_size: tuple[int, int],
        sentences: Sequence[GroundedSentence],
        lang: str = "en",
        rng: Rng = None,
        *,
        style: str = "cxr",
        impression: str | None = None,
        name_phrases: bool = False,
        modality: str | None = None,
        preamble: bool = False,
        source: str | None = None,
        meta: dict | None = None,
    ) -> Record:
        """A grounded report record.

        Args:
            id: record id; image: image path; image_size: ``(width, height)``.
            sentences, style, impression: as in :meth:`format_answer`.
            name_phrases: the prompt names the described phrases (MedRegA's "describe <ref>X</ref>").
            lang, rng, modality, preamble: as in :meth:`build_prompt`; source, meta: as every record.
        """
        groundings = [g for s in sentences for g in s.groundings]
        phrases = list(dict.fromkeys(g.phrase for g in groundings)) if name_phrases else None
        prompt = self.build_prompt(
            lang, as_rng(rng), phrases=phrases, style=style, modality=modality, preamble=preamble
        )
        answer = self.format_answer(sentences, image_size, lang, style=style, impression=impression)
        meta = {"style": style, **(meta or {})}
        return self._record(
            id, [image], [image_size], [("user", prompt), ("assistant", answer)], lang, groundings, source, meta
        )
