"""Key renames for foreign checkpoints, one declarative mapping per source.

``LLAVA_KEY_MAPPING`` maps transformers' ``LlavaForConditionalGeneration`` checkpoints onto
:class:`~medrega.models.MedRegAForConditionalGeneration` configured with the same HF vision tower,
a 2-layer GELU projector and the same language model. It takes the three layouts seen in practice
(first match wins): the v5 in-memory ``state_dict()`` (``model.vision_tower.*``, ``lm_head.*``),
v5 ``save_pretrained`` files (``vision_tower.*``, ``language_model.model.*``, ``language_model.lm_head.*``)
and older hub files (``vision_tower.vision_model.*``; transformers 5 vision models are flat).
``INTERNVL_KEY_MAPPING`` does the same for ``InternVLForConditionalGeneration`` (InternVL 2.5/3).
"""

from __future__ import annotations

import re

import torch

__all__ = ["LLAVA_KEY_MAPPING", "INTERNVL_KEY_MAPPING", "convert_state_dict", "rename_key"]

_LANGUAGE_MODEL = {
    r"^(model\.language_model\.|language_model\.model\.)": "language_model.model.",
    r"^(language_model\.)?lm_head\.": "language_model.lm_head.",
}
LLAVA_KEY_MAPPING = {
    r"^(model\.)?vision_tower\.vision_model\.": "vision_tower.model.",
    r"^(model\.)?vision_tower\.": "vision_tower.model.",
    r"^(model\.)?multi_modal_projector\.": "projector.mlp.",
    **_LANGUAGE_MODEL,
}
INTERNVL_KEY_MAPPING = {
    r"^(model\.)?vision_tower\.": "vision_tower.model.",
    r"^(model\.)?multi_modal_projector\.layer_norm\.": "projector.mlp.norm.",
    r"^(model\.)?multi_modal_projector\.": "projector.mlp.",
    **_LANGUAGE_MODEL,
}


def rename_key(key: str, mapping: dict[str, str]) -> str:
    """``key`` renamed by the first matching pattern of ``mapping``; a key no pattern matches raises ``KeyError``.

    Args:
        key: a foreign checkpoint key.
        mapping: ``{regex: replacement}``.
    """
    for pattern, replacement in mapping.items():
        new, hits = re.subn(pattern, replacement, key)
        if hits:
            return new
    raise KeyError(f"no rename rule for checkpoint key {key!r}")


def convert_state_dict(state_dict: dict[str, torch.Tensor], mapping: dict[str, str]) -> dict[str, torch.Tensor]:
    """Rename keys with the first matching pattern of ``mapping``; a key no pattern matches raises.

    Args:
        state_dict: the foreign checkpoint.
        mapping: ``{regex: replacement}``.
    """
    return {rename_key(key, mapping): value for key, value in state_dict.items()}
