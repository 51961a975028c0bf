"""``MedRegAImageProcessor``: the image half of the processor, saved as ``preprocessor_config.json``.

It loads any image source (path, PIL, numpy, DICOM), optionally cuts it into InternVL-style
tiles plus a thumbnail, resizes or letterboxes each crop onto the tower's square input and
normalises it. It also returns the original size and the :class:`~medrega.image_transforms.ImageTransform`
of every image, so that boxes stay in pixels of the original image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ImagesKwargs

from medrega.image_transforms import RESIZE_MODES, ImageTransform, prepare_image, to_tensor

__all__ = ["MedRegAImageProcessor", "PreparedImages"]


@dataclass
class PreparedImages:
    """Images ready for the model: ``pixel_values (N_crops, 3, S, S)``, the original ``(w, h)`` of each
    image, the transform applied to each, and how many crops (tiles, thumbnail) each image became."""

    pixel_values: torch.Tensor
    sizes: list[tuple[int, int]]
    transforms: list[ImageTransform]
    crops: list[int]


class MedRegAImagesKwargs(ImagesKwargs, total=False):
    image_size: int
    resize_mode: str
    max_tiles: int
    use_thumbnail: bool


class MedRegAImageProcessor(BaseImageProcessor):
    """Prepare images for MedRegA's vision tower.

    Args:
        image_size: side of the square image the vision tower takes.
        image_mean, image_std: per-channel normalisation.
        resize_mode: ``"resize"`` (stretch) or ``"letterbox"`` (keep the aspect ratio, pad).
        max_tiles: dynamic-resolution tiles per image (0: one resized image).
        use_thumbnail: with tiles, add the whole image as a thumbnail (the last crop).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = MedRegAImagesKwargs

    def __init__(
        self,
        image_size: int = 224,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        resize_mode: str = "resize",
        max_tiles: int = 0,
        use_thumbnail: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        if int(max_tiles) < 0:
            raise ValueError(f"max_tiles must be >= 0, got {max_tiles}")
        self.image_size = int(image_size)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.resize_mode = resize_mode
        self.max_tiles = int(max_tiles)
        self.use_thumbnail = bool(use_thumbnail)

    def prepare(self, images: Sequence, window=None) -> PreparedImages:
        """Load and prepare ``images`` (each a path, PIL image, numpy array or DICOM dataset).

        Args:
            images: the images, in order.
            window: DICOM / high bit-depth grey-level window (see :func:`medrega.data.images.load_image`).
        """
        from medrega.data.images import load_image
        from medrega.tiling import plan_tiles

        canvases, sizes, transforms, crops_per_image = [], [], [], []
        for source in images:
            loaded = load_image(source, window=window)
            crops = [loaded.image]
            if self.max_tiles > 0:
                plan = plan_tiles(loaded.original_size, self.image_size, self.max_tiles, self.use_thumbnail)
                crops = [loaded.image.crop(tuple(round(v) for v in box)) for box in plan.boxes]
            for crop in crops:
                canvas, transform = prepare_image(crop, self.image_size, self.resize_mode)
                canvases.append(canvas)
            if crops[-1].size != loaded.image.size:  # tiles without a thumbnail: no crop is the whole image
                transform = prepare_image(loaded.image, self.image_size, self.resize_mode)[1]
            sizes.append(loaded.original_size)
            transforms.append(transform)  # the whole image's: the last crop (thumbnail) when tiling
            crops_per_image.append(len(crops))
        side = self.image_size
        pixel_values = to_tensor(canvases, self.image_mean, self.image_std) if canvases else torch.zeros(0, 3, side, side)
        return PreparedImages(pixel_values, sizes, transforms, crops_per_image)

    def preprocess(self, images, return_tensors: str | None = None, **kwargs) -> BatchFeature:
        """``pixel_values`` of one image or a list of images (all crops, in order), as transformers'
        image processors return them; :meth:`prepare` also gives sizes and transforms."""
        given = sorted(k for k, v in kwargs.items() if v is not None)
        if given:
            raise TypeError(f"MedRegAImageProcessor takes its settings at construction, not per call: got {given}")
        flat = list(images) if isinstance(images, (list, tuple)) else [images]
        flat = [im for item in flat for im in (item if isinstance(item, (list, tuple)) else [item])]
        pixel_values = self.prepare(flat).pixel_values
        return BatchFeature({"pixel_values": pixel_values if return_tensors == "pt" else pixel_values.numpy()}, tensor_type=return_tensors)
