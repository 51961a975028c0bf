"""Boxes: the one coordinate rule of medrega.

Every box in the library is ``(x1, y1, x2, y2)`` in pixels of the *original* image
(before any resize, letterbox or tiling), with ``x1 < x2`` and ``y1 < y2``.
Normalised coordinates are fractions of the original width and height.

Region tokens carry boxes quantised into ``bins`` integer bins per axis:

* ``quantize(box_norm, bins)``  = ``floor(v * bins)`` clipped to ``[0, bins - 1]``
* ``dequantize(bins_box, bins)`` = the bin centre ``(b + 0.5) / bins``

so a pixel box survives ``quantize`` then ``dequantize`` within half a bin
(``0.5 * width / bins`` pixels horizontally, ``0.5 * height / bins`` vertically).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]

__all__ = [
    "Box",
    "BoxError",
    "quantize",
    "dequantize",
    "normalize",
    "denormalize",
    "pixel_to_bins",
    "bins_to_pixel",
    "iou",
    "iou_matrix",
    "validate_box",
    "from_xywh",
    "to_xywh",
    "from_mask",
]


class BoxError(ValueError):
    """A box that breaks the coordinate rule (reversed, empty or outside the image)."""


def _as_box(box: Sequence[float], what: str = "box") -> Box:
    if len(box) != 4:
        raise BoxError(f"{what} must have 4 coordinates (x1, y1, x2, y2), got {len(box)}: {box!r}")
    values = tuple(float(v) for v in box)
    if not all(math.isfinite(v) for v in values):
        raise BoxError(f"{what} has a non-finite coordinate: {box!r}")
    return values  # type: ignore[return-value]


def quantize(box_norm: Sequence[float], bins: int = 1000) -> tuple[int, int, int, int]:
    """Quantise a normalised box into integer bins: ``floor(v * bins)`` clipped to ``[0, bins-1]``."""
    return tuple(min(max(math.floor(v * bins), 0), bins - 1) for v in _as_box(box_norm))  # type: ignore[return-value]


def dequantize(bins_box: Sequence[int], bins: int = 1000) -> Box:
    """Map integer bins back to normalised coordinates at bin centres ``(b + 0.5) / bins``."""
    return tuple((float(b) + 0.5) / bins for b in _as_box(bins_box, "bins box"))  # type: ignore[return-value]


def normalize(box: Sequence[float], image_size: tuple[int, int]) -> Box:
    """Pixel box -> fractions of the original ``image_size = (width, height)``."""
    x1, y1, x2, y2 = _as_box(box)
    w, h = image_size
    return (x1 / w, y1 / h, x2 / w, y2 / h)


def denormalize(box_norm: Sequence[float], image_size: tuple[int, int]) -> Box:
    """Normalised box -> pixels of the original ``image_size = (width, height)``."""
    x1, y1, x2, y2 = _as_box(box_norm)
    w, h = image_size
    return (x1 * w, y1 * h, x2 * w, y2 * h)


def pixel_to_bins(box: Sequence[float], image_size: tuple[int, int], bins: int = 1000) -> tuple[int, int, int, int]:
    """Pixel box of the original image -> quantised bins."""
    return quantize(normalize(box, image_size), bins)


def bins_to_pixel(bins_box: Sequence[int], image_size: tuple[int, int], bins: int = 1000) -> Box:
    """Quantised bins -> pixel box (bin centres) of the original image."""
    return denormalize(dequantize(bins_box, bins), image_size)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes; 0.0 when the union is empty."""
    ax1, ay1, ax2, ay2 = _as_box(a)
    bx1, by1, bx2, by2 = _as_box(b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1) + max(0.0, bx2 - bx1) * max(0.0, by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(boxes_a: Sequence[Sequence[float]], boxes_b: Sequence[Sequence[float]]) -> np.ndarray:
    """Pairwise IoU, shape ``(len(boxes_a), len(boxes_b))``, vectorised with numpy."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def validate_box(box: Sequence[float], image_size: tuple[int, int] | None = None, *, clip: bool = False) -> Box:
    """Check a pixel box: ``x1 < x2``, ``y1 < y2`` and, given ``image_size``, inside the image.

    Args:
        box: ``(x1, y1, x2, y2)`` in pixels.
        image_size: ``(width, height)`` of the original image, or ``None`` to skip the bounds check.
        clip: clip a box that leaves the image to its bounds instead of raising.

    Returns:
        The (possibly clipped) box as floats.

    Raises:
        BoxError: reversed or empty corners, or outside the image when ``clip`` is false.
    """
    x1, y1, x2, y2 = _as_box(box)
    if image_size is not None:
        w, h = image_size
        inside = 0 <= x1 <= w and 0 <= x2 <= w and 0 <= y1 <= h and 0 <= y2 <= h
        if not inside:
            if not clip:
                raise BoxError(f"box {box!r} lies outside the image of size {w}x{h}")
            x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
            y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
    if not (x1 < x2 and y1 < y2):
        raise BoxError(f"box {box!r} needs x1 < x2 and y1 < y2")
    return (x1, y1, x2, y2)


def from_xywh(box: Sequence[float]) -> Box:
    """COCO ``(x, y, width, height)`` -> ``(x1, y1, x2, y2)``."""
    x, y, w, h = _as_box(box, "xywh box")
    return (x, y, x + w, y + h)


def to_xywh(box: Sequence[float]) -> Box:
    """``(x1, y1, x2, y2)`` -> COCO ``(x, y, width, height)``."""
    x1, y1, x2, y2 = _as_box(box)
    return (x1, y1, x2 - x1, y2 - y1)


def from_mask(mask: np.ndarray) -> Box:
    """Tight pixel box around the nonzero pixels of a 2-D mask (pixel edges, so a 1-pixel mask is 1x1).

    Raises:
        BoxError: the mask is not 2-D or has no foreground pixel.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise BoxError(f"mask must be 2-D (height, width), got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise BoxError("mask has no foreground pixel")
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
