"""The region language: groundings written into text and read back.

A :class:`Grounding` ties a phrase to one or more boxes of one image, in pixels of
the original image (see :mod:`medrega.boxes`). Two codecs turn groundings into text:

* :class:`LocTokenCodec` (native): each coordinate is one tokenizer token,
  ``<ref>left lung</ref><box><loc_12><loc_40><loc_300><loc_511></box>``, bins ``0..bins-1``
  (``quantize``/``dequantize`` of :mod:`medrega.boxes`).
* :class:`TextBoxCodec`: InternVL / MedRegA text, ``<ref>left lung</ref><box>[[12, 40, 300, 511]]</box>``,
  integers on ``0..scale`` (``round(v * scale)``, read back as ``value / scale``). It also reads the
  tag-stripped form ``胰腺癌[[690, 472, 735, 511]]：...`` that models emit once tags are decoded away.

Several boxes of one phrase sit inside one ``<box>``. **Multi-image samples**: when
``image_size`` is a list of two or more sizes, every ``<box>`` starts with an image tag
``<img_k>`` (1-based: ``<img_2>`` is the second image), and the grounding's ``image_index``
is ``k - 1``. With a single image no tag is written, and a box without a tag belongs to
the first image.

``parse`` never raises on model output unless ``strict=True``: malformed groundings are
skipped and described in ``ParseResult.problems``.
"""

from __future__ import annotations

import bisect
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from medrega import boxes as B

__all__ = [
    "DEFAULT_BOX_SCALE",
    "MEDREGA_BOX_SCALE",
    "codec_from_config",
    "grounding_spans",
    "Grounding",
    "ParseResult",
    "GroundingParseError",
    "AddedTokens",
    "RegionCodec",
    "LocTokenCodec",
    "TextBoxCodec",
    "REF_START",
    "REF_END",
    "BOX_START",
    "BOX_END",
    "IMAGE_TOKEN",
]

REF_START, REF_END, BOX_START, BOX_END = "<ref>", "</ref>", "<box>", "</box>"
IMAGE_TOKEN = "<image>"
DEFAULT_BOX_SCALE = 1000  # text boxes of medrega records and InternVL: integers on 0..1000
MEDREGA_BOX_SCALE = 999  # text boxes of MedRegA's released LLaVA / InternVL files: 0..999
_CLOSED_BOX = re.compile(r"<box>((?:(?!</?box>).)*)</box>", re.S)  # a body never spans another tag: linear
_GROUNDING = re.compile(r"<ref>(?:(?!<ref>|</ref>).)*</ref>\s*<box>(?:(?!<box>).)*?</box>", re.S)


def grounding_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of every whole grounding ``<ref>phrase</ref><box>...</box>`` in ``text``
    (any codec: the tags are shared), in order."""
    return [m.span() for m in _GROUNDING.finditer(text)]


class _TagIndex:
    """Positions of the region tags in a text; calling ``(tag, pos)`` is ``text.find(tag, pos)`` by bisection."""

    def __init__(self, text: str):
        self.positions = {tag: [m.start() for m in re.finditer(re.escape(tag), text)] for tag in (REF_START, REF_END, BOX_START, BOX_END)}

    def __call__(self, tag: str, pos: int) -> int:
        found = self.positions[tag]
        i = bisect.bisect_left(found, pos)
        return found[i] if i < len(found) else -1


_IMG_TAG = re.compile(r"\s*<img_(\d{1,6})>\s*")  # bounded: a huge number is malformed, not an int to build

ImageSize = tuple[int, int]


def _split_image_tag(body: str) -> tuple[int, str]:
    """``(0-based image index, rest)`` of a ``<box>`` body; index 0 when it starts with no ``<img_k>`` tag."""
    tag = _IMG_TAG.match(body)
    return (int(tag.group(1)) - 1, body[tag.end() :]) if tag else (0, body)


@dataclass
class Grounding:
    """A phrase tied to boxes of one image.

    Args:
        phrase: the text the boxes belong to (English or Chinese).
        boxes: ``(x1, y1, x2, y2)`` boxes in pixels of the original image.
        image_index: which image of a multi-image sample (0-based).
    """

    phrase: str
    boxes: list[B.Box] = field(default_factory=list)
    image_index: int = 0

    def __post_init__(self) -> None:
        self.boxes = [tuple(float(v) for v in box) for box in self.boxes]  # type: ignore[misc]

    def to_dict(self) -> dict:
        """A JSON-ready dict: ``{"phrase", "boxes", "image_index"}``."""
        return {"phrase": self.phrase, "boxes": [list(b) for b in self.boxes], "image_index": self.image_index}

    @classmethod
    def from_dict(cls, data: dict) -> Grounding:
        """Inverse of :meth:`to_dict`."""
        return cls(data["phrase"], [tuple(b) for b in data.get("boxes", [])], int(data.get("image_index", 0)))


class ParseResult(list):
    """The groundings found in a text (a ``list[Grounding]``) plus ``problems``: what was skipped and why."""

    def __init__(self, groundings: Sequence[Grounding] = (), problems: Sequence[str] = ()):
        super().__init__(groundings)
        self.problems: list[str] = list(problems)


class GroundingParseError(ValueError):
    """Raised by ``parse(..., strict=True)`` on malformed region markup."""


@dataclass(frozen=True)
class AddedTokens:
    """What :meth:`RegionCodec.add_to_tokenizer` added: the new tokens and their ids."""

    tokens: list[str]
    ids: list[int]
    num_added: int


def _sizes(image_size: ImageSize | Sequence[ImageSize]) -> list[ImageSize]:
    if len(image_size) == 2 and all(isinstance(v, (int, float)) for v in image_size):
        return [(image_size[0], image_size[1])]  # type: ignore[list-item]
    sizes = [tuple(s) for s in image_size]  # type: ignore[union-attr]
    if not sizes or any(len(s) != 2 for s in sizes):
        raise ValueError(f"image_size must be (width, height) or a list of them, got {image_size!r}")
    return sizes  # type: ignore[return-value]


class RegionCodec(ABC):
    """Shared machinery of the codecs: tags, multi-image markers, problem reporting."""

    def __init__(self, max_images: int = 16):
        self.max_images = max_images

    def to_config(self) -> dict:
        """The codec as a config dict (``MedRegAConfig.region_codec``); ``codec_from_config`` reads it back."""
        return {"type": self.name, "max_images": self.max_images}

    @abstractmethod
    def _encode_box(self, box: B.Box, size: ImageSize) -> str:
        """One box of an image of ``size`` as text."""

    @abstractmethod
    def _decode_body(self, body: str, size: ImageSize) -> tuple[list[B.Box], list[str]]:
        """Boxes (pixels) and problems found in the body of one ``<box>`` (image tag removed)."""

    def _bare_boxes(self, text: str) -> list[tuple[int, int, str]]:
        """Spans ``(start, end, body)`` of boxes written without tags; none by default."""
        return []

    # -- public API -----------------------------------------------------------------------
    def format_box(self, boxes: Sequence[B.Box], image_size: ImageSize | Sequence[ImageSize], image_index: int = 0) -> str:
        """``<box>...</box>`` for boxes of one image (used for boxes inside prompts)."""
        sizes = _sizes(image_size)
        if not 0 <= image_index < len(sizes):
            raise ValueError(f"image_index {image_index} but the sample has {len(sizes)} image(s)")
        if not boxes:
            raise ValueError("a <box> needs at least one box")
        size = sizes[image_index]
        tag = f"<img_{image_index + 1}>" if len(sizes) > 1 else ""
        for box in boxes:
            B.validate_box(box, size)
        return BOX_START + tag + self._join(self._encode_box(tuple(box), size) for box in boxes) + BOX_END

    def _join(self, parts) -> str:
        return "".join(parts)

    def format(self, groundings: Sequence[Grounding], image_size: ImageSize | Sequence[ImageSize], sep: str = ", ") -> str:
        """Write groundings as ``<ref>phrase</ref><box>...</box>`` joined by ``sep``.

        Args:
            groundings: boxes in original-image pixels.
            image_size: ``(width, height)``, or a list of sizes for a multi-image sample.
            sep: text placed between groundings.
        """
        return sep.join(
            f"{REF_START}{g.phrase}{REF_END}" + self.format_box(g.boxes, image_size, g.image_index) for g in groundings
        )

    def parse(self, text: str, image_size: ImageSize | Sequence[ImageSize], strict: bool = False) -> ParseResult:
        """Read every grounding in ``text``; boxes come back in original-image pixels.

        A ``<box>`` takes the phrase of the ``<ref>`` right before it; a ``<box>`` with no ``<ref>``
        takes the prose just before it. Malformed boxes are skipped and listed in ``problems``
        (or raise :class:`GroundingParseError` when ``strict``).
        """
        sizes = _sizes(image_size)
        found: list[Grounding] = []
        problems: list[str] = []
        after = _TagIndex(text)  # next tag at or after a position, in O(log n): parsing stays near-linear
        pos = 0
        last_phrase_end = 0
        pending_phrase: str | None = None
        while True:
            ref = after(REF_START, pos)
            box = after(BOX_START, pos)
            if ref < 0 and box < 0:
                break
            if ref >= 0 and (box < 0 or ref < box):
                end = after(REF_END, ref + len(REF_START))
                nxt = after(REF_START, ref + len(REF_START))
                if end < 0 or (0 <= nxt < end):
                    problems.append(f"unclosed {REF_START} at character {ref}")
                    pos = ref + len(REF_START)
                    continue
                pending_phrase = text[ref + len(REF_START) : end].strip()
                pos = last_phrase_end = end + len(REF_END)
                continue
            end = after(BOX_END, box + len(BOX_START))
            nxt = after(BOX_START, box + len(BOX_START))
            if end < 0 or (0 <= nxt < end):
                problems.append(f"unclosed {BOX_START} at character {box}")
                pos = box + len(BOX_START)
                pending_phrase = None
                continue
            phrase = pending_phrase if pending_phrase is not None else self._phrase_before(text[last_phrase_end:box])
            body = text[box + len(BOX_START) : end]
            self._add(found, problems, phrase, body, sizes, where=f"<box> at character {box}")
            pending_phrase = None
            pos = last_phrase_end = end + len(BOX_END)
        if not found and REF_START not in text and BOX_START not in text:
            prev = 0
            for start, end, body in self._bare_boxes(text):
                self._add(found, problems, self._phrase_before(text[prev:start]), body, sizes, where=f"box at character {start}")
                prev = end
        if strict and problems:
            raise GroundingParseError("; ".join(problems))
        return ParseResult(found, problems)

    def transcode(self, text: str, image_size: ImageSize | Sequence[ImageSize], target: RegionCodec) -> str:
        """Rewrite every ``<box>`` of ``text`` from this codec into ``target``'s form.

        Boxes that do not decode cleanly (e.g. a prompt describing the format, ``[[x1, y1, x2, y2]]``)
        are left as written; prose and ``<ref>`` tags are untouched.
        """
        return self.map_boxes(text, image_size, lambda boxes, index: boxes, target=target)

    def map_boxes(
        self,
        text: str,
        image_size: ImageSize | Sequence[ImageSize],
        fn: Callable[[list[B.Box], int], Sequence[B.Box] | None],
        *,
        target: RegionCodec | None = None,
        output_size: ImageSize | Sequence[ImageSize] | None = None,
    ) -> str:
        """Rewrite the boxes of every ``<box>`` of ``text`` with ``fn``.

        Args:
            text: text holding this codec's region markup.
            image_size: ``(width, height)`` of the image(s) the boxes refer to.
            fn: ``(boxes in pixels, image index) -> new boxes``, or ``None`` to leave that ``<box>`` as written.
            target: the codec to write the new boxes in (default: this one).
            output_size: the image size(s) the new boxes refer to (default: ``image_size``), e.g. after a crop.

        Returns:
            ``text`` with the rewritten boxes; a ``<box>`` that does not decode cleanly, or whose new boxes
            cannot be written (empty, collapsed), is left as written.
        """
        sizes = _sizes(image_size)
        out_sizes = _sizes(output_size) if output_size is not None else sizes
        target = target or self

        def rewrite(match: re.Match) -> str:
            index, body = _split_image_tag(match.group(1))
            if not 0 <= index < len(sizes):
                return match.group(0)
            boxes, problems = self._decode_body(body, sizes[index])
            new = fn(boxes, index) if boxes and not problems else None
            if not new:
                return match.group(0)
            try:
                return target.format_box(new, out_sizes, index)
            except B.BoxError:  # a box that collapses to a line cannot be written as a region
                return match.group(0)

        return _CLOSED_BOX.sub(rewrite, text)

    def strip(self, text: str) -> str:
        """The prose of ``text`` without region markup: ``<ref>`` tags dropped (phrase kept), boxes removed."""
        out = re.sub(r"<box>.*?(</box>|$)", "", text, flags=re.S)
        out = out.replace(REF_START, "").replace(REF_END, "")
        for start, end, _ in reversed(self._bare_boxes(out)):
            out = out[:start] + out[end:]
        return out

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _phrase_before(prose: str) -> str:
        parts = re.split(r"[,.;:!?\n，。；：！？、]", prose)
        return parts[-1].strip() if parts else ""

    def _add(self, found, problems, phrase, body, sizes, where) -> None:
        index, body = _split_image_tag(body)
        if not 0 <= index < len(sizes):
            problems.append(f"{where}: image tag <img_{index + 1}> but the sample has {len(sizes)} image(s)")
            return
        boxes, box_problems = self._decode_body(body, sizes[index])
        problems.extend(f"{where}: {p}" for p in box_problems)
        if boxes:
            found.append(Grounding(phrase, boxes, index))
        elif not box_problems:
            problems.append(f"{where}: no box inside")

    def image_tags(self) -> list[str]:
        """The multi-image tags ``<img_1> .. <img_{max_images}>``."""
        return [f"<img_{k}>" for k in range(1, self.max_images + 1)]

    def region_tokens(self) -> list[str]:
        """Tokens this codec needs in a tokenizer, besides the image placeholder."""
        return [REF_START, REF_END, BOX_START, BOX_END, *self.image_tags()]

    def add_to_tokenizer(self, tokenizer) -> AddedTokens:
        """Add the region tokens (kept by ``decode(skip_special_tokens=True)``) and the image
        placeholder (a special token) to a Hugging Face tokenizer.

        Returns:
            :class:`AddedTokens` with every region token, its id and how many were new,
            so that a model can resize and mean-initialise its embeddings.
        """
        from tokenizers import AddedToken

        region = self.region_tokens()
        before = len(tokenizer)
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in region])
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
        tokens = [*region, IMAGE_TOKEN]
        ids = tokenizer.convert_tokens_to_ids(tokens)
        for token, token_id in zip(tokens, ids, strict=True):
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise RuntimeError(f"tokenizer did not take the token {token!r}")
        return AddedTokens(tokens=tokens, ids=ids, num_added=len(tokenizer) - before)

    def _check(self, values: list[int], limit: int) -> str | None:
        if any(v < 0 or v > limit for v in values):
            return f"coordinate outside 0..{limit}: {values}"
        if values[0] > values[2] or values[1] > values[3]:
            return f"reversed corners (need x1 < x2, y1 < y2): {values}"
        if values[0] == values[2] or values[1] == values[3]:
            return f"zero-area box (need x1 < x2, y1 < y2): {values}"
        return None


def _widen(values: Sequence[int], limit: int) -> list[int]:
    """Quantised corners with ``x1 < x2`` and ``y1 < y2``: a box thinner than one step keeps one step."""
    out = list(values)
    for lo, hi in ((0, 2), (1, 3)):
        if out[hi] <= out[lo]:
            out[lo], out[hi] = (out[lo], out[lo] + 1) if out[lo] < limit else (limit - 1, limit)
    return out


class LocTokenCodec(RegionCodec):
    """Native format: one ``<loc_k>`` token per coordinate, ``k`` in ``0..bins-1``.

    Args:
        bins: quantisation bins per axis.
        max_images: how many ``<img_k>`` tags a multi-image sample may use.
    """

    name = "loc"

    def __init__(self, bins: int = 1000, max_images: int = 16):
        super().__init__(max_images)
        self.bins = bins

    def to_config(self) -> dict:
        return {**super().to_config(), "bins": self.bins}

    def loc_token(self, k: int) -> str:
        return f"<loc_{k}>"

    def loc_tokens(self) -> list[str]:
        """``<loc_0> .. <loc_{bins-1}>``, in bin order."""
        return [self.loc_token(k) for k in range(self.bins)]

    def loc_token_ids(self, tokenizer) -> list[int]:
        """The tokenizer's ids of :meth:`loc_tokens`, in bin order; raises when it lacks any of them."""
        ids = tokenizer.convert_tokens_to_ids(self.loc_tokens())
        if any(i is None or i == tokenizer.unk_token_id for i in ids):
            raise ValueError("the tokenizer lacks loc tokens; call MedRegAProcessor.prepare_tokenizer (or codec.add_to_tokenizer) first")
        return ids

    def region_tokens(self) -> list[str]:
        return [*super().region_tokens(), *self.loc_tokens()]

    def _encode_box(self, box, size) -> str:
        return "".join(self.loc_token(v) for v in _widen(B.pixel_to_bins(box, size, self.bins), self.bins - 1))

    def _decode_body(self, body, size):
        problems: list[str] = []
        values = [int(v) for v in re.findall(r"<loc_(\d{1,9})>", body)]  # bounded digits: never a huge int
        leftover = re.sub(r"<loc_\d+>|\s", "", body)
        if leftover:
            problems.append(f"unexpected text inside <box>: {leftover[:40]!r}")
        if len(values) % 4:
            problems.append(f"{len(values)} loc tokens is not a multiple of 4; last {len(values) % 4} ignored")
        out = []
        for i in range(0, len(values) - 3, 4):
            group = values[i : i + 4]
            problem = self._check(group, self.bins - 1)
            if problem:
                problems.append(problem)
                continue
            out.append(B.bins_to_pixel(group, size, self.bins))
        return out, problems


class TextBoxCodec(RegionCodec):
    """InternVL / MedRegA text boxes ``[[x1, y1, x2, y2], ...]`` with integers on ``0..scale``.

    Args:
        scale: the largest coordinate value (InternVL 1000; MedRegA's data and prompts 999).
        max_images: how many ``<img_k>`` tags a multi-image sample may use.
    """

    name = "text"
    _GROUP = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]")
    _BARE = re.compile(r"\[\[[^\[\]]*\](?:\s*,\s*\[[^\[\]]*\])*\]")

    def __init__(self, scale: int = DEFAULT_BOX_SCALE, max_images: int = 16):
        super().__init__(max_images)
        self.scale = scale

    def to_config(self) -> dict:
        return {**super().to_config(), "scale": self.scale}

    def _encode_box(self, box, size) -> str:
        values = _widen([min(max(round(v * self.scale), 0), self.scale) for v in B.normalize(box, size)], self.scale)
        return "[" + ", ".join(str(v) for v in values) + "]"

    def _join(self, parts) -> str:
        return "[" + ", ".join(parts) + "]"

    def _decode_body(self, body, size):
        problems: list[str] = []
        body = body.strip()
        groups = list(self._GROUP.finditer(body))
        leftover = self._GROUP.sub("", body)
        if re.sub(r"[\s,\[\]]", "", leftover):
            problems.append(f"unexpected text inside box: {leftover.strip()[:40]!r}")
        elif leftover.count("[") != leftover.count("]") or (body and not body.startswith("[")):
            problems.append(f"unbalanced brackets in box: {body[:60]!r}")
        out = []
        for m in groups:
            raw = [float(v) for v in m.groups()]
            problem = self._check(raw, self.scale)  # type: ignore[arg-type]
            if problem:
                problems.append(problem)
                continue
            norm = [v / self.scale for v in raw]
            out.append(B.denormalize(norm, size))
        return out, problems

    def _bare_boxes(self, text):
        return [(m.start(), m.end(), m.group(0)) for m in self._BARE.finditer(text)]


def codec_from_config(spec: dict | None) -> RegionCodec:
    """The codec of a config dict (``RegionCodec.to_config``): ``{"type": "loc", "bins": 1000}`` or
    ``{"type": "text", "scale": 1000}``; ``None`` gives the default loc-token codec."""
    spec = dict(spec or LocTokenCodec().to_config())
    kind = spec.pop("type", "loc")
    if kind == "loc":
        return LocTokenCodec(**spec)
    if kind == "text":
        return TextBoxCodec(**spec)
    raise ValueError(f"unknown region codec type {kind!r} (expected 'loc' or 'text')")
