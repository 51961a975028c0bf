"""Position ids under which the language model sees image tokens.

``"sequential"`` (LLaVA, InternVL, MedRegA's checkpoints): every image token takes the next position,
like text. ``"shared"``: all tokens of one image take the position of its first token and the text
after the image goes on from there, so rotary attention cannot tell an image's tokens apart by where
they sit and must read their content (the vision tower's own position code still says where each
token lies in the image). Qwen2-VL's multimodal RoPE rests on the same idea.

Generation computes the positions of the prompt once; every later token is shifted by the same
per-row ``rope_deltas`` (the number of positions the prompt's images gave back).
"""

from __future__ import annotations

import torch

IMAGE_POSITIONS = ("sequential", "shared")


def sequential_positions(attention_mask: torch.Tensor | None, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """``(B, T)`` positions counting real tokens only (left padding stays at 0), as ``generate`` builds them."""
    if attention_mask is None:
        return torch.arange(shape[1], device=device).expand(shape)
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def shared_image_positions(base: torch.Tensor, is_image: torch.Tensor, per_image: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions where each run of ``per_image`` image tokens shares its first token's position.

    Args:
        base: ``(B, T)`` sequential positions.
        is_image: ``(B, T)`` placeholder mask (runs of ``per_image`` tokens, one per image).
        per_image: tokens per image.

    Returns:
        ``(positions (B, T), rope_deltas (B,))``: the shared positions and, per row, how many positions
        the images gave back (subtract it from the sequential position of every later token).
    """
    index_in_image = (is_image.long().cumsum(-1) - 1) % per_image
    repeats = is_image & (index_in_image != 0)
    shift = repeats.long().cumsum(-1)
    return base - shift, shift[:, -1]
