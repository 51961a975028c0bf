"""Vision-to-text projector: optional pixel shuffle, optional LayerNorm, then an MLP.

With ``depth=2``, no LayerNorm and no pixel shuffle this is LLaVA-1.5's projector
(``LlavaMultiModalProjector``: linear, GELU, linear). With ``pixel_shuffle=0.5`` and ``layer_norm=True``
it is InternVL's ``mlp1`` (2x2 neighbouring patches merged into one token, 4x fewer tokens).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from transformers.activations import ACT2FN

__all__ = ["MultiModalProjector", "pixel_shuffle"]


def pixel_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Merge ``factor x factor`` neighbouring patches into one token (InternVL ``pixel_shuffle``, v2 layout).

    Args:
        x: ``(N, L, C)`` patch features of a square grid (``L = side * side``).
        factor: patches merged per side (2 for InternVL's ratio 0.5).

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
    x = x.permute(0, 2, 1, 3)  # (N, W/f, H/f, C*f*f)
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
    ):
        super().__init__()
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
            features = pixel_shuffle(features, self.factor)
        return self.mlp(features)
