"""Multi-image understanding: Med-MIM's four abilities over two or more images.

* ``temporal``: change between studies taken at different times (images in time order);
* ``reasoning``: reasoning over several views of one patient;
* ``comparison``: differences between the images;
* ``coreference``: a question about one image named by its ordinal ("In the second image, ...",
  "第二张图像中，...").

The user turn opens with ordinal image tags, ``Image 1: <image>\\nImage 2: <image>\\n``
(``图1：<image>\\n图2：<image>\\n``), or Med-MIM's bare ``<image><image>`` with ``tagged=False``.
Answers are text, optionally preceded by groundings whose boxes carry the image tag
(``<ref>nodule</ref><box><img_2>[[...]]</box>: The nodule has grown.``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from medrega.data.records import Record
from medrega.grounding import Grounding, ParseResult, RegionCodec
from medrega.tasks.base import Rng, Task, as_rng, check_lang, ordinal, prose, record_codec

__all__ = ["ABILITIES", "MultiImageAnswer", "MultiImageTask"]

ABILITIES = ("temporal", "reasoning", "comparison", "coreference")
_COLON = {"en": ": ", "zh": "："}


@dataclass
class MultiImageAnswer:
    """A parsed multi-image answer: the prose (``None`` when empty) and the groundings (pixels, per image)."""

    text: str | None
    groundings: ParseResult = field(default_factory=ParseResult)


class MultiImageTask(Task):
    """Multi-image questions (temporal change, multi-view reasoning, comparison, co-reference)."""

    name = "multi_image"
    TEMPLATES = {
        "temporal": {
            "en": (
                "The images are in time order, earliest first. {question}",
                "These studies of one patient were taken at different times, in order. {question}",
                "{question}",
            ),
            "zh": (
                "这些图像按时间先后排列，最早的在前。{question}",
                "以下是同一患者按时间顺序拍摄的检查。{question}",
                "{question}",
            ),
        },
        "reasoning": {
            "en": (
                "These images show the same patient from different views. {question}",
                "Use all the images to answer. {question}",
                "{question}",
            ),
            "zh": ("这些图像是同一患者的不同视角。{question}", "请综合所有图像回答。{question}", "{question}"),
        },
        "comparison": {
            "en": (
                "Compare the images. {question}",
                "Look at the differences between the images. {question}",
                "{question}",
            ),
            "zh": ("请比较这些图像。{question}", "请观察这些图像之间的差异。{question}", "{question}"),
        },
        "coreference": {
            "en": (
                "In the {ordinal} image, {question_lc}",
                "Look at the {ordinal} image. {question}",
                "Regarding the {ordinal} image: {question}",
            ),
            "zh": ("{ordinal}图像中，{question}", "请看{ordinal}图像。{question}", "关于{ordinal}图像：{question}"),
        },
    }
    PREAMBLES = {
        "en": "You are a helpful medical assistant. You are required to answer the question based on several medical "
        "images. Boxes carry the number of the image they belong to.",
        "zh": "你是一个医疗助手，你需要根据多张医学图像回答问题。边界框带有其所属图像的编号。",
    }

    def build_prompt(
        self,
        question: str,
        n_images: int = 2,
        lang: str = "en",
        rng: Rng = None,
        *,
        ability: str = "temporal",
        target_image: int | None = None,
        tagged: bool = True,
        preamble: bool = False,
    ) -> str:
        """The user turn: image tags, then ``question`` in a template of ``ability``.

        Args:
            question: the question (a full sentence, capitalised in English).
            n_images: how many images the sample has (at least 2).
            lang, rng, preamble: as for every task (see :mod:`medrega.tasks.base`).
            ability: one of ``ABILITIES``.
            target_image: 0-based image the question refers to (required for ``coreference``).
            tagged: ordinal tags before each ``<image>`` (``False``: Med-MIM's bare placeholders).
        """
        if ability not in ABILITIES:
            raise ValueError(f"ability must be one of {ABILITIES}, got {ability!r}")
        if n_images < 2:
            raise ValueError(f"a multi-image prompt needs at least 2 images, got {n_images}")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"a multi-image prompt needs a question, got {question!r}")
        fields = {"question": question.strip(), "question_lc": question.strip()[:1].lower() + question.strip()[1:]}
        if ability == "coreference":
            if target_image is None or not 0 <= target_image < n_images:
                raise ValueError(f"coreference needs target_image in 0..{n_images - 1}, got {target_image!r}")
            fields["ordinal"] = ordinal(target_image, lang)
        text = self.pick(ability, lang, rng, **fields)
        return self.user_turn(text, lang, n_images=n_images, preamble=preamble, tagged=tagged)

    def format_answer(
        self,
        text: str | None,
        lang: str = "en",
        *,
        groundings: Sequence[Grounding] = (),
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> str:
        """``text``, preceded by ``groundings`` (boxes tagged with their image) when given.

        Args:
            text: the answer prose (may be ``None`` when groundings are the answer).
            lang: ``"en"`` or ``"zh"`` (the separator after the groundings).
            groundings: regions the answer refers to, with ``image_index`` set.
            image_sizes: ``(width, height)`` of every image (needed with groundings).
        """
        text = (text or "").strip()
        if not groundings:
            if not text:
                raise ValueError("a multi-image answer needs text or groundings")
            return text
        if image_sizes is None or len(image_sizes) < 2:
            raise ValueError("groundings of a multi-image answer need the sizes of all images")
        markup = record_codec().format(groundings, list(image_sizes))
        return markup + (_COLON[check_lang(lang)] + text if text else "")

    def parse_answer(
        self, text: str, image_sizes: Sequence[tuple[int, int]], *, codec: RegionCodec | None = None
    ) -> MultiImageAnswer:
        """The prose and groundings of an answer; never raises.

        Args:
            text: model output.
            image_sizes: ``(width, height)`` of every image of the sample.
            codec: the codec the model writes (default ``TextBoxCodec(1000)``).
        """
        codec = codec or record_codec()
        if not isinstance(text, str):
            return MultiImageAnswer(None, ParseResult(problems=[f"expected text, got {type(text).__name__}"]))
        return MultiImageAnswer(prose(text, codec) or None, codec.parse(text, list(image_sizes)))

    def make_record(
        self,
        id: str,
        images: Sequence[str],
        image_sizes: Sequence[tuple[int, int]],
        question: str,
        answer: str | None,
        lang: str = "en",
        rng: Rng = None,
        *,
        ability: str = "temporal",
        target_image: int | None = None,
        groundings: Sequence[Grounding] = (),
        tagged: bool = True,
        preamble: bool = False,
        source: str | None = None,
        meta: dict | None = None,
    ) -> Record:
        """A multi-image record; ``meta`` keeps ``ability`` (and ``target_image`` for co-reference).

        Args:
            id: record id; images: image paths; image_sizes: ``(width, height)`` of each.
            question, answer, groundings: the question, the answer prose and its regions (pixels).
            lang, rng, ability, target_image, tagged, preamble: as in :meth:`build_prompt`.
            source, meta: as every record.
        """
        prompt = self.build_prompt(
            question,
            len(images),
            lang,
            as_rng(rng),
            ability=ability,
            target_image=target_image,
            tagged=tagged,
            preamble=preamble,
        )
        reply = self.format_answer(answer, lang, groundings=groundings, image_sizes=image_sizes)
        extra = {"ability": ability} | ({"target_image": target_image} if target_image is not None else {})
        return self._record(
            id,
            images,
            image_sizes,
            [("user", prompt), ("assistant", reply)],
            lang,
            groundings,
            source,
            {**extra, **(meta or {})},
        )
