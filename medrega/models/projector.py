"""Vision-to-text projector: optional pixel shuffle, optional LayerNorm, then an MLP.

With ``depth=2``, no LayerNorm and no pixel shuffle this is LLaVA-1.5's projector
(``LlavaMultiModalProjector``: linear, GELU, linear). With ``pixel_shuffle=0.5`` and ``layer_norm=True``
it is InternVL's ``mlp1`` (2x2 neighbouring patches merged into one token, 4x fewer tokens).

Pixel-shuffle versions (the original InternVL-Chat ``ps_version``): ``"v2"`` (the default; transformers'
``InternVLModel.pixel_shuffle`` bit for bit) hands the merged tokens to the LLM in row-major order of the
merged grid. ``"v1"`` (InternVL-Chat's config default, used by InternVL-Chat-V1.2 and MedRegA) skips the
original's last ``permute``: each merged token holds the same channels as in v2, but the merged grid reaches
the LLM transposed (column-major). No weight permutation turns one into the other, so a v1 checkpoint needs
``pixel_shuffle_version="v1"``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from transformers.activations import ACT2FN

__all__ = ["MultiModalProjector", "pixel_shuffle", "PIXEL_SHUFFLE_VERSIONS"]

PIXEL_SHUFFLE_VERSIONS = ("v1", "v2")


def pixel_shuffle(x: torch.Tensor, factor: int, version: str = "v2") -> torch.Tensor:
    """Merge ``factor x factor`` neighbouring patches into one token (InternVL ``pixel_shuffle``).

    Args:
        x: ``(N, L, C)`` patch features of a square grid (``L = side * side``).
        factor: patches merged per side (2 for InternVL's ratio 0.5).
        version: ``"v2"`` (merged grid row-major, as transformers' InternVL) or ``"v1"`` (the original
            InternVL-Chat default: the same merged tokens, the merged grid transposed).

    Returns:
        ``(N, L / factor**2, C * factor**2)``.
    """
    n, length, c = x.shape
    side = math.isqrt(length)
    if side * side != length or side % factor:
        raise ValueError(f"pixel shuffle by {factor} needs a square grid divisible by {factor}, got {length} tokens")
    x = x.reshape(n, side, side // factor, c * factor)  # (N, W, H/f, C*f)
    x = x.permute(0, 2, 1, 3)  # (N, H/f, W, C*f)
    x = x.reshape(n, side // factor, side // factor, c * factor * factor)  # (N, H/f, W/f, C*f*f)
    if version == "v2":
        x = x.permute(0, 2, 1, 3)  # (N, W/f, H/f, C*f*f)
    elif version != "v1":  # v1: the original skips this permute
        raise ValueError(f"pixel shuffle version must be one of {PIXEL_SHUFFLE_VERSIONS}, got {version!r}")
    return x.reshape(n, -1, c * factor * factor)  # (N, L/f^2, C*f^2)


class MultiModalProjector(nn.Module):
    """Project vision features to the language model's width.

    Args:
        vision_size: width of the vision features.
        text_size: width of the language model.
        depth: number of linear layers.
        hidden_size: width of the inner layers (default ``text_size``).
        layer_norm: LayerNorm on the (shuffled) vision features first.
        pixel_shuffle: ratio (``1/k``) or ``None``.
        activation: activation between linear layers (a transformers ``ACT2FN`` name).
        bias: biases in the linear layers.
        pixel_shuffle_version: ``"v2"`` or ``"v1"`` (see the module docstring).
    """

    def __init__(
        self,
        vision_size: int,
        text_size: int,
        depth: int = 2,
        hidden_size: int | None = None,
        layer_norm: bool = False,
        pixel_shuffle: float | None = None,
        activation: str = "gelu",
        bias: bool = True,
        pixel_shuffle_version: str = "v2",
    ):
        super().__init__()
        if pixel_shuffle_version not in PIXEL_SHUFFLE_VERSIONS:
            raise ValueError(f"pixel_shuffle_version must be one of {PIXEL_SHUFFLE_VERSIONS}, got {pixel_shuffle_version!r}")
        self.pixel_shuffle_version = pixel_shuffle_version
        self.factor = 1 if pixel_shuffle is None else round(1 / pixel_shuffle)
        in_size = vision_size * self.factor**2
        hidden_size = hidden_size or text_size
        widths = [in_size] + [hidden_size] * (depth - 1) + [text_size]
        layers: list[tuple[str, nn.Module]] = []
        if layer_norm:
            layers.append(("norm", nn.LayerNorm(in_size)))
        for i in range(depth):
            layers.append((f"linear_{i + 1}", nn.Linear(widths[i], widths[i + 1], bias=bias)))
            if i < depth - 1:
                layers.append((f"act_{i + 1}", ACT2FN[activation]))
        self.mlp = nn.Sequential(OrderedDict(layers))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, L, vision_size)`` -> ``(N, L / factor**2, text_size)``."""
        if self.factor > 1:
            features = pixel_shuffle(features, self.factor, self.pixel_shuffle_version)
        return self.mlp(features)
