"""Find the identical images of a batch without comparing every pair.

``torch.unique(pixels.flatten(1), dim=0)`` would do it, but on CUDA it sorts whole rows with a
per-element comparator and takes tens of milliseconds for a few dozen images (pytorch/pytorch#122274),
more than the frozen tower it saves. Here each image gets one integer, the wrapping sum of its pixels'
bit patterns times fixed random integers (exact, so equal images get equal keys on any device); images
with equal keys are grouped by a 1-D ``unique`` and the grouping is then checked, so distinct images are
never merged.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["identical_images"]


_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@functools.lru_cache(maxsize=8)
def _probe(length: int, device: torch.device) -> torch.Tensor:
    """Fixed random int32 values, ``length`` of them, on ``device``."""
    return torch.randint(-(2**31), 2**31 - 1, (length,), dtype=torch.int32, generator=torch.Generator().manual_seed(0)).to(device)


def identical_images(pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Group equal images of ``pixel_values`` ``(N, ...)``.

    Returns:
        ``(first, inverse)`` when some images repeat: ``pixel_values[first]`` holds each distinct image
        once (in order of first appearance) and ``pixel_values[first][inverse]`` equals ``pixel_values``;
        ``None`` when all images differ. Two host syncs at most (the key ``unique`` and the check).
    """
    n = pixel_values.shape[0]
    flat = pixel_values.reshape(n, -1)
    bits = flat.contiguous().view(_BITS[flat.element_size()]).to(torch.int32)
    keys = (bits * _probe(flat.shape[1], flat.device)).sum(dim=1, dtype=torch.int64)
    unique_keys, inverse = torch.unique(keys, return_inverse=True)
    if unique_keys.numel() == n:
        return None
    order = torch.arange(n, device=flat.device)
    first_of_key = torch.full((unique_keys.numel(),), n, device=flat.device).scatter_reduce_(0, inverse, order, "amin")
    if not torch.equal(flat, flat[first_of_key[inverse]]):  # two distinct images share a number
        return None
    first, order_of_key = first_of_key.sort()  # groups in order of first appearance, without another sync
    rank = torch.empty_like(order_of_key).scatter_(0, order_of_key, torch.arange(len(first), device=flat.device))
    return first, rank[inverse]
