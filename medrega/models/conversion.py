"""Key renames for foreign checkpoints, one declarative mapping per source.

``LLAVA_KEY_MAPPING`` maps transformers' ``LlavaForConditionalGeneration`` state dicts onto
:class:`~medrega.models.MedRegAForConditionalGeneration` configured with the same HF vision tower,
a 2-layer GELU projector and the same language model.
"""

from __future__ import annotations

import re

import torch

__all__ = ["LLAVA_KEY_MAPPING", "convert_state_dict"]

LLAVA_KEY_MAPPING = {
    r"^model\.vision_tower\.": "vision_tower.model.",
    r"^model\.multi_modal_projector\.": "projector.mlp.",
    r"^model\.language_model\.": "language_model.model.",
    r"^lm_head\.": "language_model.lm_head.",
}


def convert_state_dict(state_dict: dict[str, torch.Tensor], mapping: dict[str, str]) -> dict[str, torch.Tensor]:
    """Rename keys with the first matching pattern of ``mapping``; a key no pattern matches raises.

    Args:
        state_dict: the foreign checkpoint.
        mapping: ``{regex: replacement}``.
    """
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in mapping.items():
            new, hits = re.subn(pattern, replacement, key)
            if hits:
                out[new] = value
                break
        else:
            raise KeyError(f"no rename rule for checkpoint key {key!r}")
    return out
