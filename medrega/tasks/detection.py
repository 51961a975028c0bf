"""Text-to-region detection: single or several objects, each with one or several regions.

Prompt: ``<image>\\nPlease locate <ref>left lung</ref> in this image.``; answer: the groundings,
``<ref>left lung</ref><box>[[520, 110, 880, 590]]</box>``, one ``<box>`` per object holding all of
its regions (``[[...], [...]]`` for several), objects joined by ``", "``.
"""

from __future__ import annotations

from collections.abc import Sequence

from medrega.data.records import Record
from medrega.grounding import Grounding, ParseResult, RegionCodec
from medrega.tasks.base import Rng, Task, as_rng, image_noun, record_codec, refs

__all__ = ["DetectionTask"]


class DetectionTask(Task):
    """Text-to-region detection (MedRegA's "Please locate <ref>X</ref> ...")."""

    name = "detection"
    TEMPLATES = {
        "single": {
            "en": (
                "Please locate {objects} in this {image}.",
                "Where is {objects} in this {image}?",
                "Detect {objects} in this {image}.",
                "Find all regions of {objects} in this {image}.",
            ),
            "zh": (
                "请在这张{image}中定位{objects}。",
                "{objects}位于这张{image}的什么位置？",
                "请检测这张{image}中的{objects}。",
                "请找出这张{image}中{objects}的所有区域。",
            ),
        },
        "multi": {
            "en": (
                "Please locate {objects} in this {image}.",
                "Find the regions of the following objects in this {image}: {objects}.",
                "Detect {objects} in this {image}, each with its own box.",
            ),
            "zh": (
                "请在这张{image}中定位{objects}。",
                "请找出这张{image}中以下目标的区域：{objects}。",
                "请检测这张{image}中的{objects}，并分别给出边界框。",
            ),
        },
    }
    PREAMBLES = {
        "en": "You are a helpful medical assistant. Your task is object detection. You are required to find all "
        "the regions of the given objects. Each region is a bounding box [x1, y1, x2, y2]: its top-left and "
        "bottom-right corners relative to the image.",
        "zh": "你是一个医疗助手，你的任务是目标检测。你需要找出给定目标的所有区域。区域用边界框[x1, y1, x2, y2]表示，"
        "分别为相对于图像的左上角和右下角坐标。",
    }

    def build_prompt(
        self,
        phrases: str | Sequence[str],
        lang: str = "en",
        rng: Rng = None,
        *,
        modality: str | None = None,
        preamble: bool = False,
    ) -> str:
        """The user turn asking for the regions of ``phrases``.

        Args:
            phrases: one object name or several.
            lang: ``"en"`` or ``"zh"``.
            rng: template choice (a ``random.Random`` or a seed).
            modality: names the image in the prompt (``"CT"`` -> "this CT scan").
            preamble: prepend the task description.
        """
        kind = "single" if isinstance(phrases, str) or len(phrases) == 1 else "multi"
        question = self.pick(kind, lang, rng, objects=refs(phrases, lang), image=image_noun(modality, lang))
        return self.user_turn(question, lang, preamble=preamble)

    def format_answer(self, groundings: Sequence[Grounding], image_size: tuple[int, int]) -> str:
        """The groundings in the record codec (boxes in pixels of the original image)."""
        if not groundings:
            raise ValueError("a detection answer needs at least one grounding")
        return record_codec().format(groundings, image_size)

    def parse_answer(self, text: str, image_size: tuple[int, int], *, codec: RegionCodec | None = None) -> ParseResult:
        """Groundings in original-image pixels (empty, with ``problems``, on malformed text).

        Args:
            text: model output.
            image_size: ``(width, height)`` of the original image.
            codec: the codec the model writes (default ``TextBoxCodec(1000)``).
        """
        if not isinstance(text, str):
            return ParseResult(problems=[f"expected text, got {type(text).__name__}"])
        return (codec or record_codec()).parse(text, image_size)

    def make_record(
        self,
        id: str,
        image: str,
        image_size: tuple[int, int],
        groundings: Sequence[Grounding],
        lang: str = "en",
        rng: Rng = None,
        *,
        modality: str | None = None,
        preamble: bool = False,
        source: str | None = None,
        meta: dict | None = None,
    ) -> Record:
        """A detection record asking for every phrase of ``groundings``.

        Args:
            id: record id.
            image: image path.
            image_size: ``(width, height)`` of the original image.
            groundings: the objects and their boxes (pixels); one grounding per object.
            lang, rng, modality, preamble: as in :meth:`build_prompt`.
            source: dataset name; meta: extra fields (``objects``/``regions`` kinds are added).
        """
        rng = as_rng(rng)
        prompt = self.build_prompt([g.phrase for g in groundings], lang, rng, modality=modality, preamble=preamble)
        kinds = {
            "objects": "multi" if len(groundings) > 1 else "single",
            "regions": "multi" if any(len(g.boxes) > 1 for g in groundings) else "single",
        }
        turns = [("user", prompt), ("assistant", self.format_answer(groundings, image_size))]
        return self._record(id, [image], [image_size], turns, lang, groundings, source, {**kinds, **(meta or {})})
