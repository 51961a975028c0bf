"""Report generation: findings and/or impression.

Answers: ``Findings: ... Impression: ...`` in English, ``影像诊断：...影像结论：...`` in Chinese
(MedRegA's headings); a one-section report keeps its heading. The parser accepts either
language's headings (and ``影像所见`` / ``诊断意见``), in any case, with ``:`` or ``：``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medrega.data.records import Record
from medrega.grounding import RegionCodec
from medrega.tasks.base import Rng, Task, as_rng, check_lang, image_noun, tidy

__all__ = ["Report", "ReportTask", "split_sections", "HEADINGS"]

SECTIONS = ("both", "findings", "impression")
HEADINGS = {"en": ("Findings: ", "Impression: "), "zh": ("影像诊断：", "影像结论：")}
_HEADING = re.compile(r"(findings|impressions?|影像诊断|影像所见|影像结论|诊断意见|诊断结论)\s*[:：]", re.I)
_FINDINGS_WORDS = ("findings", "影像诊断", "影像所见")


@dataclass
class Report:
    """A parsed report: each section's text, or ``None`` when absent."""

    findings: str | None = None
    impression: str | None = None


def split_sections(text: str) -> tuple[str, str | None, str | None]:
    """Split ``text`` at its report headings.

    Returns:
        ``(before, findings, impression)``: the text before the first heading and the raw text of each
        section (``None`` when that heading is missing; the last one wins when repeated).
    """
    if not isinstance(text, str):
        return "", None, None
    marks = list(_HEADING.finditer(text))
    if not marks:
        return text, None, None
    sections: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        key = "findings" if m.group(1).lower() in _FINDINGS_WORDS else "impression"
        sections[key] = text[m.end() : end]
    return text[: marks[0].start()], sections.get("findings"), sections.get("impression")


class ReportTask(Task):
    """Report generation (findings / impression)."""

    name = "report"
    TEMPLATES = {
        "both": {
            "en": (
                "Please write a radiology report for this {image}, with findings and impression.",
                "Generate a medical report consisting of findings and impressions based on this {image}.",
                "Describe this {image} in a report with Findings and Impression sections.",
            ),
            "zh": (
                "请为这张{image}撰写诊断报告，需包括影像诊断和影像结论两部分。",
                "请根据这张{image}生成包含影像诊断和影像结论的报告。",
                "请描述这张{image}，按影像诊断和影像结论两部分书写报告。",
            ),
        },
        "findings": {
            "en": (
                "Please describe the findings of this {image}.",
                "Write the findings section of a report for this {image}.",
            ),
            "zh": ("请描述这张{image}的影像诊断。", "请为这张{image}书写报告的影像诊断部分。"),
        },
        "impression": {
            "en": (
                "What is the impression of this {image}?",
                "Write the impression section of a report for this {image}.",
            ),
            "zh": ("这张{image}的影像结论是什么？", "请为这张{image}书写报告的影像结论部分。"),
        },
    }
    PREAMBLES = {
        "en": "You are a helpful medical assistant. Your task is report generation. You are required to generate "
        "a medical report based on the image.",
        "zh": "你是一个医疗助手，你的任务是生成诊断报告。影像诊断描述可见信息，影像结论列举最终的诊断结果。",
    }

    def build_prompt(
        self,
        lang: str = "en",
        rng: Rng = None,
        *,
        section: str = "both",
        modality: str | None = None,
        preamble: bool = False,
    ) -> str:
        """The user turn asking for a report.

        Args:
            lang, rng, modality, preamble: as for every task (see :mod:`medrega.tasks.base`).
            section: ``"both"``, ``"findings"`` or ``"impression"``.
        """
        question = self.pick(self._section(section), lang, rng, image=image_noun(modality, lang))
        return self.user_turn(question, lang, preamble=preamble)

    @staticmethod
    def _section(section: str) -> str:
        if section not in SECTIONS:
            raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
        return section

    def format_answer(
        self, findings: str | None = None, impression: str | None = None, lang: str = "en", *, section: str = "both"
    ) -> str:
        """The report with its headings; ``section`` picks which parts are written (each must be given)."""
        head_f, head_i = HEADINGS[check_lang(lang)]
        parts = []
        for name, head, body in (("findings", head_f, findings), ("impression", head_i, impression)):
            if self._section(section) in ("both", name):
                if not body or not body.strip():
                    raise ValueError(f"a {section!r} report needs a non-empty {name}")
                parts.append(head + body.strip())
        return (" " if lang == "en" else "").join(parts)

    def parse_answer(
        self, text: str, image_size: tuple[int, int] | None = None, *, codec: RegionCodec | None = None
    ) -> Report:
        """The sections of a report; text with no heading counts as findings.

        Args:
            text: model output.
            image_size: unused (kept for a uniform call).
            codec: used to strip region markup from the sections.
        """
        before, findings, impression = split_sections(text)
        if findings is None and impression is None:
            findings = before
        return Report(tidy(findings, codec) or None, tidy(impression, codec) or None)

    def make_record(
        self,
        id: str,
        image: str,
        image_size: tuple[int, int],
        findings: str | None,
        impression: str | None,
        lang: str = "en",
        rng: Rng = None,
        *,
        section: str = "both",
        modality: str | None = None,
        preamble: bool = False,
        source: str | None = None,
        meta: dict | None = None,
    ) -> Record:
        """A report record.

        Args:
            id: record id; image: image path; image_size: ``(width, height)``.
            findings, impression: the report text (those ``section`` needs).
            lang, rng, section, modality, preamble: as in :meth:`build_prompt`; source, meta: as every record.
        """
        prompt = self.build_prompt(lang, as_rng(rng), section=section, modality=modality, preamble=preamble)
        turns = [("user", prompt), ("assistant", self.format_answer(findings, impression, lang, section=section))]
        return self._record(id, [image], [image_size], turns, lang, (), source, {"section": section, **(meta or {})})
