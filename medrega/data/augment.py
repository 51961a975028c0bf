"""Box-aware geometric augmentation: random crop (optionally resized) and horizontal flip.

Boxes move with the image and never go stale: each box is clipped to the crop, and a crop that
would cut more than ``max_area_loss`` of any box's area is redrawn (up to ``max_tries``, then the
image is left uncropped). No grounding is ever dropped.

Horizontal flip is OFF by default: a flipped chest radiograph shows the patient's right lung on the
image's right, so "left lung" / "right lung" answers (and any laterality in reports) become wrong.
Enable it only for data whose text carries no laterality. ``geometric=False`` turns off crop and
flip altogether, e.g. for region tasks whose answers must refer to the exact stored image.

:func:`augment_record` applies the same transform to a record: its image size, its groundings,
``meta["region"]`` (the queried boxes of identification records) and every ``<box>`` in its
conversation (prompts and answers), rewritten with ``TextBoxCodec(scale=record.box_scale)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from medrega import boxes as B
from medrega.data.records import Record, Turn
from medrega.grounding import Grounding, TextBoxCodec

__all__ = ["AppliedTransform", "BoxAugment", "augment_record"]


@dataclass(frozen=True)
class AppliedTransform:
    """What was done to an image: crop (pixels of the input image), resize, then flip.

    Args:
        input_size: ``(width, height)`` before the transform.
        crop: ``(x1, y1, x2, y2)`` integer crop window (the whole image when not cropped).
        output_size: ``(width, height)`` after the transform.
        flipped: mirrored left-right after cropping and resizing.
    """

    input_size: tuple[int, int]
    crop: tuple[int, int, int, int]
    output_size: tuple[int, int]
    flipped: bool = False

    @property
    def is_identity(self) -> bool:
        return not self.flipped and self.crop == (0, 0, *self.input_size) and self.output_size == self.input_size

    def apply_boxes(self, boxes: Sequence[B.Box]) -> list[B.Box]:
        """Map pixel boxes of the input image onto the output image (clipped to the crop)."""
        if not boxes:
            return []
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        x1, y1, x2, y2 = self.crop
        sx = self.output_size[0] / (x2 - x1)
        sy = self.output_size[1] / (y2 - y1)
        out = np.empty_like(b)
        ow, oh = self.output_size
        out[:, [0, 2]] = np.clip((np.clip(b[:, [0, 2]], x1, x2) - x1) * sx, 0, ow)  # outer clip: float rounding
        out[:, [1, 3]] = np.clip((np.clip(b[:, [1, 3]], y1, y2) - y1) * sy, 0, oh)
        if self.flipped:
            out[:, [0, 2]] = ow - out[:, [2, 0]]
        return [tuple(float(v) for v in row) for row in out]  # type: ignore[misc]

    def apply_image(self, image: Image.Image, resample: int = Image.Resampling.BILINEAR) -> Image.Image:
        """Apply the transform to an image (use ``Image.Resampling.NEAREST`` for masks)."""
        if image.size != self.input_size:
            raise ValueError(f"transform was drawn for an image of size {self.input_size}, got {image.size}")
        out = image.crop(self.crop)
        if out.size != self.output_size:
            out = out.resize(self.output_size, resample)
        return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.flipped else out


class BoxAugment:
    """Draw and apply a box-safe crop / flip.

    Args:
        crop_prob: chance of cropping.
        crop_scale: range of the crop's area as a fraction of the image.
        crop_ratio: range of the crop's aspect ratio (width / height), sampled log-uniformly.
        max_area_loss: largest fraction of a box's area a crop may cut; a worse crop is redrawn.
        max_tries: crop draws before giving up and leaving the image uncropped.
        output_size: resize the crop to ``(width, height)``; ``None`` keeps the crop's size (the
            processor resizes for the model anyway).
        flip_prob: chance of a horizontal flip; 0 by default (flips swap left/right anatomy).
        geometric: ``False`` disables crop and flip.
    """

    def __init__(
        self,
        crop_prob: float = 0.5,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        max_area_loss: float = 0.25,
        max_tries: int = 10,
        output_size: tuple[int, int] | None = None,
        flip_prob: float = 0.0,
        geometric: bool = True,
    ):
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {crop_ratio}")
        if not 0 <= max_area_loss < 1:
            raise ValueError(f"max_area_loss must lie in [0, 1), got {max_area_loss}")
        for name, p in (("crop_prob", crop_prob), ("flip_prob", flip_prob)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {p}")
        self.crop_prob, self.crop_scale, self.crop_ratio = crop_prob, crop_scale, crop_ratio
        self.max_area_loss, self.max_tries = max_area_loss, max_tries
        self.output_size, self.flip_prob, self.geometric = output_size, flip_prob, geometric

    def _crop_ok(self, boxes: np.ndarray, crop: tuple[int, int, int, int]) -> bool:
        if not boxes.size:
            return True
        x1, y1, x2, y2 = crop
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        iw = np.clip(np.minimum(boxes[:, 2], x2) - np.maximum(boxes[:, 0], x1), 0, None)
        ih = np.clip(np.minimum(boxes[:, 3], y2) - np.maximum(boxes[:, 1], y1), 0, None)
        return bool(np.all(iw * ih >= (1 - self.max_area_loss) * area))

    def _draw_crop(self, size: tuple[int, int], boxes: np.ndarray, rng: random.Random) -> tuple[int, int, int, int]:
        w, h = size
        full = (0, 0, w, h)
        if rng.random() >= self.crop_prob:
            return full
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        for _ in range(self.max_tries):
            area = w * h * rng.uniform(*self.crop_scale)
            ratio = math.exp(rng.uniform(log_lo, log_hi))
            cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if not (0 < cw <= w and 0 < ch <= h):
                continue
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            crop = (x, y, x + cw, y + ch)
            if self._crop_ok(boxes, crop):
                return crop
        return full

    def draw(self, image_size: tuple[int, int], boxes: Sequence[B.Box] = (), rng: random.Random | int | None = None) -> AppliedTransform:
        """Draw a transform for an image of ``image_size`` that keeps every box in ``boxes`` safe."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        size = (int(image_size[0]), int(image_size[1]))
        if not self.geometric:
            return AppliedTransform(size, (0, 0, *size), size, False)
        crop = self._draw_crop(size, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), rng)
        out = self.output_size or (crop[2] - crop[0], crop[3] - crop[1])
        flipped = rng.random() < self.flip_prob
        return AppliedTransform(size, crop, (int(out[0]), int(out[1])), flipped)

    def __call__(
        self, image: Image.Image, groundings: Sequence[Grounding], rng: random.Random | int | None = None, image_index: int = 0
    ) -> tuple[Image.Image, list[Grounding], AppliedTransform]:
        """Augment one image and the groundings that belong to it.

        Args:
            image: the image.
            groundings: boxes in pixels of ``image``; only those with ``image_index`` move.
            rng: a ``random.Random`` or a seed.
            image_index: which image of the sample ``image`` is.

        Returns:
            ``(image, groundings, applied_transform)``.
        """
        boxes = [b for g in groundings if g.image_index == image_index for b in g.boxes]
        transform = self.draw(image.size, boxes, rng)
        moved = [
            replace(g, boxes=transform.apply_boxes(g.boxes)) if g.image_index == image_index else g for g in groundings
        ]
        return transform.apply_image(image), moved, transform


def _text_boxes(codec: TextBoxCodec, text: str, sizes: list[tuple[int, int]], image_index: int) -> list[B.Box]:
    return [b for g in codec.parse(text, sizes) if g.image_index == image_index for b in g.boxes]


def _rewrite(codec: TextBoxCodec, text: str, sizes, new_sizes, image_index: int, transform: AppliedTransform) -> str:
    """``text`` with the boxes of image ``image_index`` moved by ``transform`` (other images' boxes kept)."""
    return codec.map_boxes(text, sizes, lambda boxes, index: transform.apply_boxes(boxes) if index == image_index else None, output_size=new_sizes)


def augment_record(
    record: Record, image: Image.Image, augment: BoxAugment, rng: random.Random | int | None = None, image_index: int = 0
) -> tuple[Image.Image, Record, AppliedTransform]:
    """Augment one image of a record and rewrite everything that refers to its pixels.

    Args:
        record: a validated record; its ``image_sizes`` (when known) must match ``image``.
        image: the record's image number ``image_index``, as loaded.
        augment: the augmentation.
        rng: a ``random.Random`` or a seed.
        image_index: which image of the record ``image`` is.

    Returns:
        ``(image, record, applied_transform)``; the input record is not modified.
    """
    if not 0 <= image_index < len(record.images):
        raise ValueError(f"{record.location or record.id}: image_index {image_index} but {len(record.images)} image(s)")
    sizes = [tuple(s) for s in record.image_sizes] if record.image_sizes else [image.size] * len(record.images)
    if tuple(sizes[image_index]) != image.size:
        raise ValueError(
            f"{record.location or record.id}: image {image_index} is {image.size[0]}x{image.size[1]} but the record says "
            f"{sizes[image_index][0]}x{sizes[image_index][1]}; its boxes would not match"
        )
    codec = TextBoxCodec(scale=record.box_scale)
    region = [tuple(b) for b in record.meta.get("region", [])] if image_index == 0 else []
    boxes = [b for g in record.groundings if g.image_index == image_index for b in g.boxes] + region
    for turn in record.conversation:
        boxes += _text_boxes(codec, turn.content, sizes, image_index)
    transform = augment.draw(image.size, boxes, rng)
    if transform.is_identity:
        return image, record, transform
    new_sizes = list(sizes)
    new_sizes[image_index] = transform.output_size
    meta = dict(record.meta)
    if region:
        meta["region"] = [list(b) for b in transform.apply_boxes(region)]
    new = replace(
        record,
        conversation=[Turn(t.role, _rewrite(codec, t.content, sizes, new_sizes, image_index, transform)) for t in record.conversation],
        groundings=[replace(g, boxes=transform.apply_boxes(g.boxes)) if g.image_index == image_index else g for g in record.groundings],
        image_sizes=new_sizes,
        meta=meta,
    )
    return transform.apply_image(image), new, transform
