"""Region-to-text identification: name the structure or lesion inside a given box.

Prompt: ``<image>\\nWhat is <ref>this</ref><box>[[120, 300, 410, 720]]</box> in this image?``;
answer: the name (``right lung``).
"""

from __future__ import annotations

from collections.abc import Sequence

from medrega import boxes as B
from medrega.data.records import Record
from medrega.grounding import RegionCodec
from medrega.tasks.base import Rng, Task, as_rng, clean_answer, image_noun, record_codec

__all__ = ["IdentificationTask"]


def _as_boxes(region: B.Box | Sequence[B.Box]) -> list[B.Box]:
    if len(region) == 4 and all(isinstance(v, (int, float)) for v in region):
        return [tuple(float(v) for v in region)]  # type: ignore[list-item]
    return [tuple(float(v) for v in box) for box in region]  # type: ignore[union-attr]


class IdentificationTask(Task):
    """Region-to-text identification (MedRegA's "What is <ref>this</ref><box>...</box>?")."""

    name = "identification"
    TEMPLATES = {
        "region": {
            "en": (
                "What is <ref>this</ref>{box} in this {image}?",
                "Identify the structure in the region {box} of this {image}.",
                "Which organ or lesion lies inside {box}?",
                "Name the object in {box}.",
            ),
            "zh": (
                "这张{image}中<ref>这个区域</ref>{box}是什么？",
                "请识别这张{image}中{box}区域内的结构。",
                "{box}区域内是什么器官或病灶？",
                "请说出{box}中目标的名称。",
            ),
        },
    }
    PREAMBLES = {
        "en": "You are a helpful medical assistant. Your task is object recognition. You are required to recognize "
        "the object in the given region, a bounding box [x1, y1, x2, y2]: its top-left and bottom-right corners "
        "relative to the image.",
        "zh": "你是一个医疗助手，你的任务是目标识别。你需要识别给定区域中的目标。区域用边界框[x1, y1, x2, y2]表示，"
        "分别为相对于图像的左上角和右下角坐标。",
    }

    def build_prompt(
        self,
        region: B.Box | Sequence[B.Box],
        image_size: tuple[int, int],
        lang: str = "en",
        rng: Rng = None,
        *,
        modality: str | None = None,
        preamble: bool = False,
        codec: RegionCodec | None = None,
    ) -> str:
        """The user turn asking what lies inside ``region``.

        Args:
            region: one pixel box ``(x1, y1, x2, y2)`` or several boxes of one object.
            image_size: ``(width, height)`` of the original image.
            lang, rng, modality, preamble: as for every task (see :mod:`medrega.tasks.base`).
            codec: the codec to write the box in (default: the record codec; a model's own codec
                avoids a lossy round trip).
        """
        box = (codec or record_codec()).format_box(_as_boxes(region), image_size)
        return self.user_turn(
            self.pick("region", lang, rng, box=box, image=image_noun(modality, lang)), lang, preamble=preamble
        )

    def format_answer(self, label: str) -> str:
        """The name of the structure."""
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"an identification answer needs a non-empty label, got {label!r}")
        return label.strip()

    def parse_answer(
        self,
        text: str,
        image_size: tuple[int, int] | None = None,
        *,
        codec: RegionCodec | None = None,
        vocabulary: Sequence[str] | None = None,
    ) -> str | None:
        """The named structure, or ``None``.

        Args:
            text: model output.
            image_size: unused by this task's answers (kept for a uniform call).
            codec: used to strip any region markup from the answer.
            vocabulary: known names; when given, the longest one found in the text (case-insensitive)
                is returned, or ``None`` when none is found.
        """
        answer = clean_answer(text, codec)
        if vocabulary is None:
            return answer or None
        low = answer.lower()
        found = [v for v in vocabulary if v and v.lower() in low]
        return max(found, key=len) if found else None

    def make_record(
        self,
        id: str,
        image: str,
        image_size: tuple[int, int],
        region: B.Box | Sequence[B.Box],
        label: str,
        lang: str = "en",
        rng: Rng = None,
        *,
        modality: str | None = None,
        preamble: bool = False,
        source: str | None = None,
        meta: dict | None = None,
    ) -> Record:
        """An identification record; ``meta["region"]`` keeps the queried boxes in pixels.

        Args:
            id: record id; image: image path; image_size: ``(width, height)``.
            region: the queried box(es) in pixels; label: the answer.
            lang, rng, modality, preamble: as in :meth:`build_prompt`; source, meta: as every record.
        """
        boxes = _as_boxes(region)
        prompt = self.build_prompt(boxes, image_size, lang, as_rng(rng), modality=modality, preamble=preamble)
        turns = [("user", prompt), ("assistant", self.format_answer(label))]
        return self._record(
            id, [image], [image_size], turns, lang, (), source, {"region": [list(b) for b in boxes], **(meta or {})}
        )
