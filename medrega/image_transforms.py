"""Resize or letterbox an image for the vision tower, and record the transform.

The model always speaks in boxes relative to the original image; an :class:`ImageTransform`
maps boxes between the original image and the model's input canvas, for drawing on the input,
for augmentation and for checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from medrega.boxes import Box

__all__ = ["ImageTransform", "prepare_image", "to_tensor", "RESIZE_MODES"]

RESIZE_MODES = ("resize", "letterbox")


@dataclass(frozen=True)
class ImageTransform:
    """``input = original * scale + offset`` per axis, from an ``original_size`` image to a square canvas.

    Args:
        original_size: ``(width, height)`` of the original image.
        scale: ``(sx, sy)``.
        offset: ``(ox, oy)`` in input pixels (letterbox padding).
        input_size: side of the square input canvas.
    """

    original_size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]
    input_size: int

    def to_input(self, box: Box) -> Box:
        """A box in original pixels -> the same box on the model's input canvas."""
        (sx, sy), (ox, oy) = self.scale, self.offset
        x1, y1, x2, y2 = box
        return (x1 * sx + ox, y1 * sy + oy, x2 * sx + ox, y2 * sy + oy)

    def to_original(self, box: Box) -> Box:
        """A box on the model's input canvas -> original pixels (exact inverse of :meth:`to_input`)."""
        (sx, sy), (ox, oy) = self.scale, self.offset
        x1, y1, x2, y2 = box
        return ((x1 - ox) / sx, (y1 - oy) / sy, (x2 - ox) / sx, (y2 - oy) / sy)

    def to_dict(self) -> dict:
        return {"original_size": list(self.original_size), "scale": list(self.scale), "offset": list(self.offset), "input_size": self.input_size}


def prepare_image(image: Image.Image, size: int, mode: str = "resize", fill: int = 0) -> tuple[Image.Image, ImageTransform]:
    """Fit an RGB image onto a ``size`` x ``size`` canvas.

    Args:
        image: the original image.
        size: side of the model's input.
        mode: ``"resize"`` stretches to the square; ``"letterbox"`` keeps the aspect ratio and pads.
        fill: grey level of letterbox padding.

    Returns:
        The canvas and the :class:`ImageTransform` that maps original boxes onto it.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    w, h = image.size
    if mode == "resize":
        out = image.resize((size, size), Image.Resampling.BICUBIC)
        return out, ImageTransform((w, h), (size / w, size / h), (0.0, 0.0), size)
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (size, size), (fill, fill, fill))
    ox, oy = (size - nw) // 2, (size - nh) // 2
    canvas.paste(image.resize((nw, nh), Image.Resampling.BICUBIC), (ox, oy))
    return canvas, ImageTransform((w, h), (nw / w, nh / h), (float(ox), float(oy)), size)


def to_tensor(images: list[Image.Image], mean, std) -> torch.Tensor:
    """RGB PIL images of one size -> normalised float tensor ``(N, 3, H, W)``."""
    if not images:
        return torch.zeros(0)
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])  # (N, H, W, 3)
    tensor = torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)
