"""Key renames for foreign checkpoints, one declarative mapping per source.

``LLAVA_KEY_MAPPING`` maps transformers' ``LlavaForConditionalGeneration`` checkpoints onto
:class:`~medrega.models.MedRegAForConditionalGeneration` configured with the same HF vision tower,
a 2-layer GELU projector and the same language model. It takes the three layouts seen in practice
(first match wins): the v5 in-memory ``state_dict()`` (``model.vision_tower.*``, ``lm_head.*``),
v5 ``save_pretrained`` files (``vision_tower.*``, ``language_model.model.*``, ``language_model.lm_head.*``)
and older hub files (``vision_tower.vision_model.*``; transformers 5 vision models are flat).
``INTERNVL_KEY_MAPPING`` does the same for ``InternVLForConditionalGeneration`` (InternVL 2.5/3).
``INTERNVL_CHAT_KEY_MAPPING`` maps the original InternVL-Chat remote-code layout (InternVL-Chat-V1.2, MedRegA's
release: ``vision_model.*`` InternViT, ``mlp1.{0,1,3}.*``, ``language_model.*`` Llama) onto a medrega model
whose tower is transformers' ``InternVLVisionModel``. Its vision renames are anchored at ``vision_model.`` (the
same rules applied anywhere would corrupt ``language_model.model.layers.*``), and every vision key is named
explicitly, so a key of another InternViT variant fails as unknown. The fused ``attn.qkv`` is renamed to
``attention.qkv`` and then split by rows into ``q_proj``/``k_proj``/``v_proj`` by ``INTERNVL_CHAT_SPLITS``
(``qkv = x @ W.T`` reshaped ``(3, heads, head_dim)``: rows ``[0:C]`` are q, ``[C:2C]`` k, ``[2C:3C]`` v).
"""

from __future__ import annotations

import re

import torch

__all__ = ["LLAVA_KEY_MAPPING", "INTERNVL_KEY_MAPPING", "INTERNVL_CHAT_KEY_MAPPING", "INTERNVL_CHAT_SPLITS", "convert_state_dict", "rename_key", "split_key"]

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

_VIT, _LAYER = "vision_tower.model.", r"^vision_model\.encoder\.layers\.(\d+)\."
_TO_LAYER = _VIT + r"encoder.layer.\1."
INTERNVL_CHAT_KEY_MAPPING = {
    r"^vision_model\.embeddings\.class_embedding$": _VIT + "embeddings.cls_token",
    r"^vision_model\.embeddings\.position_embedding$": _VIT + "embeddings.position_embeddings",
    r"^vision_model\.embeddings\.patch_embedding\.(weight|bias)$": _VIT + r"embeddings.patch_embeddings.projection.\1",
    _LAYER + r"attn\.qkv\.(weight|bias)$": _TO_LAYER + r"attention.qkv.\2",  # split by INTERNVL_CHAT_SPLITS
    _LAYER + r"attn\.(q_norm|k_norm)\.(weight|bias)$": _TO_LAYER + r"attention.\2.\3",
    _LAYER + r"attn\.proj\.(weight|bias)$": _TO_LAYER + r"attention.projection_layer.\2",
    _LAYER + r"mlp\.(fc1|fc2)\.(weight|bias)$": _TO_LAYER + r"mlp.\2.\3",
    _LAYER + r"norm1\.(weight|bias)$": _TO_LAYER + r"layernorm_before.\2",
    _LAYER + r"norm2\.(weight|bias)$": _TO_LAYER + r"layernorm_after.\2",
    _LAYER + r"ls1$": _TO_LAYER + "lambda_1",
    _LAYER + r"ls2$": _TO_LAYER + "lambda_2",
    r"^mlp1\.0\.(weight|bias)$": r"projector.mlp.norm.\1",
    r"^mlp1\.1\.(weight|bias)$": r"projector.mlp.linear_1.\1",
    r"^mlp1\.3\.(weight|bias)$": r"projector.mlp.linear_2.\1",
    **_LANGUAGE_MODEL,
}
INTERNVL_CHAT_SPLITS = {r"\.attention\.qkv\.(weight|bias)$": (r".attention.q_proj.\1", r".attention.k_proj.\1", r".attention.v_proj.\1")}
"""``{regex on the renamed key: replacements}``: the tensor is cut into ``len(replacements)`` equal row blocks,
block ``i`` named by replacement ``i``."""


def split_key(key: str, splits: dict[str, tuple[str, ...]]) -> list[str] | None:
    """The names of the row blocks a renamed ``key`` splits into (``None``: not split).

    Args:
        key: a key already renamed to medrega's names.
        splits: ``{regex: replacements}`` (e.g. :data:`INTERNVL_CHAT_SPLITS`).
    """
    for pattern, parts in splits.items():
        if re.search(pattern, key):
            return [re.sub(pattern, part, key) for part in parts]
    return None


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
