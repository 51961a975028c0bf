"""Text-to-region detection: single or several objects, each with one or several regions, or none.

Prompt: ``<image>\\nPlease locate <ref>left lung</ref> in this image.``; answer: the groundings,
``<ref>left lung</ref><box>[[520, 110, 880, 590]]</box>``, one ``<box>`` per object holding all of
its regions (``[[...], [...]]`` for several), objects joined by ``", "``.

**Absent structures.** An object the image does not contain is answered, in the same list, with no
``<box>`` and the fixed words of :data:`medrega.answers.NOT_FOUND`:

* English: ``<ref>nodule</ref>: not found`` (ASCII colon and space);
* Chinese: ``<ref>结节</ref>：未发现`` (full-width colon, no space).

Found objects come first, then the absent ones, all joined by ``", "``; an answer holding an absent
object ends with ``"."`` (English) or ``"。"`` (Chinese). So a query for a nodule the image lacks is
answered ``<ref>nodule</ref>: not found.`` / ``<ref>结节</ref>：未发现。``, and a query for the liver and
a nodule ``<ref>liver</ref><box>[[...]]</box>, <ref>nodule</ref>: not found.``. The region markup is
unchanged (no ``<box>`` is written for an absent object), so box-constrained decoding allows it.
:meth:`DetectionTask.parse_answer` reads both forms (either colon, any case) into
:attr:`DetectionAnswer.not_found`.
"""

from __future__ import annotations

from collections.abc import Sequence

from medrega.answers import NOT_FOUND, not_found
from medrega.data.records import Record
from medrega.grounding import REF_END, REF_START, Grounding, ParseResult, RegionCodec
from medrega.tasks.base import Rng, Task, as_rng, check_lang, image_noun, record_codec, refs

__all__ = ["DetectionAnswer", "DetectionTask", "not_found_item"]

_COLON = {"en": ": ", "zh": "："}
_STOP = {"en": ".", "zh": "。"}


def not_found_item(phrase: str, lang: str = "en") -> str:
    """The answer item of an absent object: ``<ref>nodule</ref>: not found`` / ``<ref>结节</ref>：未发现``."""
    check_lang(lang)
    if not isinstance(phrase, str) or not phrase.strip():
        raise ValueError(f"an absent object needs a non-empty phrase, got {phrase!r}")
    return f"{REF_START}{phrase.strip()}{REF_END}{_COLON[lang]}{NOT_FOUND[lang]}"


class DetectionAnswer(ParseResult):
    """A parsed detection answer: the groundings (a :class:`ParseResult`) plus ``not_found``, the phrases
    the answer says the image does not contain, in order."""

    def __init__(self, groundings=(), problems=(), not_found: Sequence[str] = ()):
        super().__init__(groundings, problems)
        self.not_found: list[str] = list(not_found)


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

    def format_answer(
        self, groundings: Sequence[Grounding], image_size: tuple[int, int], *, absent: Sequence[str] = (), lang: str = "en"
    ) -> str:
        """The groundings in the record codec (boxes in pixels of the original image), then the absent
        objects in the not-found form of ``lang`` (see the module docstring).

        Args:
            groundings: the objects found, with their boxes.
            image_size: ``(width, height)`` of the original image.
            absent: phrases of objects the image does not contain.
            lang: ``"en"`` or ``"zh"`` (the not-found words and full stop).
        """
        check_lang(lang)
        if not groundings and not absent:
            raise ValueError("a detection answer needs at least one grounding or one absent object")
        items = [record_codec().format(groundings, image_size)] if groundings else []
        items += [not_found_item(phrase, lang) for phrase in absent]
        return ", ".join(items) + (_STOP[lang] if absent else "")

    def parse_answer(self, text: str, image_size: tuple[int, int], *, codec: RegionCodec | None = None) -> DetectionAnswer:
        """Groundings in original-image pixels (empty, with ``problems``, on malformed text) and the
        phrases said not found (``not_found``).

        Args:
            text: model output.
            image_size: ``(width, height)`` of the original image.
            codec: the codec the model writes (default ``TextBoxCodec(1000)``).
        """
        if not isinstance(text, str):
            return DetectionAnswer(problems=[f"expected text, got {type(text).__name__}"])
        codec = codec or record_codec()
        parsed = codec.parse(text, image_size)
        return DetectionAnswer(parsed, parsed.problems, not_found(codec.strip(text)))

    def make_record(
        self,
        id: str,
        image: str,
        image_size: tuple[int, int],
        groundings: Sequence[Grounding],
        lang: str = "en",
        rng: Rng = None,
        *,
        absent: Sequence[str] = (),
        modality: str | None = None,
        preamble: bool = False,
        source: str | None = None,
        meta: dict | None = None,
    ) -> Record:
        """A detection record asking for every phrase of ``groundings``, then every phrase of ``absent``.

        Args:
            id: record id.
            image: image path.
            image_size: ``(width, height)`` of the original image.
            groundings: the objects and their boxes (pixels); one grounding per object.
            lang, rng, modality, preamble: as in :meth:`build_prompt`.
            absent: objects asked for that the image does not contain (a negative query), answered
                "not found" (see the module docstring); listed in ``meta["absent"]``.
            source: dataset name; meta: extra fields (``objects``/``regions`` kinds are added).
        """
        rng = as_rng(rng)
        absent = [str(p).strip() for p in absent]
        asked = [g.phrase for g in groundings] + absent
        prompt = self.build_prompt(asked, lang, rng, modality=modality, preamble=preamble)
        kinds = {
            "objects": "multi" if len(asked) > 1 else "single",
            "regions": "multi" if any(len(g.boxes) > 1 for g in groundings) else "single",
        }
        if absent:
            kinds["absent"] = absent
        turns = [("user", prompt), ("assistant", self.format_answer(groundings, image_size, absent=absent, lang=lang))]
        return self._record(id, [image], [image_size], turns, lang, groundings, source, {**kinds, **(meta or {})})
