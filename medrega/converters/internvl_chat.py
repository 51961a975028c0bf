"""The original InternVL-Chat remote-code layout (InternVL-Chat-V1.2; MedRegA's released weights) -> medrega.

The checkpoint is read without its remote code: ``config.json`` (``model_type: internvl_chat``) is parsed here,
weights are renamed by :data:`~medrega.models.conversion.INTERNVL_CHAT_KEY_MAPPING` (vision renames scoped to
``vision_model.``) and the fused ``attn.qkv`` is split by rows into q/k/v
(:data:`~medrega.models.conversion.INTERNVL_CHAT_SPLITS`).

* Vision: InternViT becomes transformers' ``InternVLVisionModel`` (``norm_type`` RMSNorm for InternViT-6B, or
  LayerNorm; ``qk_normalization`` -> ``use_qk_norm``; ``qkv_bias`` -> ``attention_bias``; ``ls1/ls2`` -> the layer
  scales). When ``force_image_size`` differs from the tower's ``image_size``, the position embeddings are resized
  once here, as the original does on every forward (bicubic, ``align_corners=False``, the CLS row kept).
* Projector: ``mlp1`` = LayerNorm + Linear + GELU + Linear after a pixel shuffle of ``downsample_ratio``, in the
  token order of ``ps_version`` (absent: ``"v1"``, the InternVL-Chat default that MedRegA trained with).
* Language model: ``llm_config`` must be a Llama (InternVL-Chat-V1.2 / MedRegA: Nous-Hermes-2-Yi-34B); its keys
  pass unchanged, and its own ``tie_word_embeddings`` decides the tying (the original builds the LLM from
  ``llm_config``).
* Conventions (MedRegA's): the tokenizer is kept as it is (no medrega tokens: the image run is ``<IMG_CONTEXT>``
  wrapped in ``<img>``/``</img>``, regions are the ``<ref>``/``<box>`` text boxes on 0..999 that it already
  holds); the ``Hermes-2`` chat template with the system prompt ``"Answer the questions."``; images stretched to
  the tower's size, ImageNet mean/std, no tiling unless ``dynamic_image_size``.

Refused, naming the setting: another ``ps_version``, a ``downsample_ratio`` that is not ``1/k``, a non-Llama
LLM (InternLM2 needs its own key map), LoRA-wrapped weights, another norm type, and (without ``chat_template``)
a conversation template other than ``Hermes-2``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CONFIG_MAPPING, InternVLVisionConfig
from transformers.activations import ACT2FN

from medrega.converters import ConversionError, Source
from medrega.models.conversion import INTERNVL_CHAT_KEY_MAPPING, INTERNVL_CHAT_SPLITS

__all__ = ["internvl_chat_source", "IMAGE_CONTEXT", "IMAGE_WRAPPER", "REQUIRED_TOKENS", "MEDREGA_CODEC"]

logger = logging.getLogger(__name__)

IMAGE_CONTEXT = "<IMG_CONTEXT>"
IMAGE_WRAPPER = ("<img>", "</img>")
REQUIRED_TOKENS = ("<|im_start|>", "<|im_end|>", IMAGE_CONTEXT, *IMAGE_WRAPPER, "<ref>", "</ref>", "<box>", "</box>")
MEDREGA_CODEC = {"type": "text", "scale": 999}  # MedRegA's BBOX_SCALE: boxes are integers on 0..999, read as v / 999
_NORMS = {"rms_norm": "rms_norm", "rms": "rms_norm", "layer_norm": "layer_norm"}
_TEMPLATES = ("Hermes-2",)
POSITION_EMBEDDINGS = "vision_tower.model.embeddings.position_embeddings"


def _get(cfg: dict, key: str, where: str):
    if key not in cfg:
        raise ConversionError(f"{where} has no {key!r}: cannot build the converted model")
    return cfg[key]


def _side(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def resize_position_embeddings(pos: torch.Tensor, old_grid: int, new_grid: int) -> torch.Tensor:
    """``(1, 1 + old_grid**2, C)`` -> ``(1, 1 + new_grid**2, C)``: the CLS row kept, the patch rows resized as
    InternViT's ``_get_pos_embed`` does (float, bicubic, ``align_corners=False``), back in ``pos``'s dtype."""
    cls, grid = pos[:, :1], pos[:, 1:]
    grid = grid.float().reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.reshape(1, -1, new_grid * new_grid).permute(0, 2, 1).to(pos.dtype)
    return torch.cat([cls, grid], dim=1)


def internvl_chat_source(src: Path, raw: dict) -> Source:
    """The medrega config of an original InternVL-Chat ``config.json`` (``raw``)."""
    vision = dict(_get(raw, "vision_config", "config.json"))
    llm = dict(_get(raw, "llm_config", "config.json"))
    for flag in ("use_backbone_lora", "use_llm_lora"):
        if raw.get(flag):
            raise ConversionError(f"{flag}={raw[flag]}: the checkpoint holds LoRA-wrapped weights; merge them into the base weights first")

    # vision tower
    norm = vision.get("norm_type", "rms_norm")  # InternViT-6B V1.2 configs predate the field: RMSNorm
    if norm not in _NORMS:
        raise ConversionError(f"vision_config.norm_type={norm!r} is not one of {sorted(_NORMS)}")
    hidden_act = vision.get("hidden_act", "gelu")
    if hidden_act not in ACT2FN:
        raise ConversionError(f"vision_config.hidden_act={hidden_act!r} is not a transformers activation")
    patch, tower_size = _side(_get(vision, "patch_size", "vision_config")), _side(_get(vision, "image_size", "vision_config"))
    size = _side(raw.get("force_image_size") or tower_size)
    if size % patch or tower_size % patch:
        raise ConversionError(f"image size {size} (force_image_size) / {tower_size} (vision_config.image_size) is not a multiple of patch_size={patch}")
    vision_config = InternVLVisionConfig(
        hidden_size=_get(vision, "hidden_size", "vision_config"),
        num_hidden_layers=_get(vision, "num_hidden_layers", "vision_config"),
        num_attention_heads=_get(vision, "num_attention_heads", "vision_config"),
        intermediate_size=_get(vision, "intermediate_size", "vision_config"),
        hidden_act=hidden_act,
        norm_type=_NORMS[norm],
        layer_norm_eps=vision.get("layer_norm_eps", 1e-6),
        use_qk_norm=bool(vision.get("qk_normalization", False)),
        attention_bias=bool(vision.get("qkv_bias", False)),
        layer_scale_init_value=vision.get("initializer_factor", 0.1),
        image_size=[size, size],
        patch_size=[patch, patch],
        num_channels=vision.get("num_channels", 3),
        use_mean_pooling=True,  # InternViT has no final norm: the last block's output is the feature
    )

    # projector
    ratio = raw.get("downsample_ratio", 0.5)
    factor = 1 / ratio if 0 < ratio < 1 else 0
    if abs(factor - round(factor)) > 1e-6 or round(factor) < 2:
        raise ConversionError(f"downsample_ratio={ratio!r}: medrega's pixel shuffle needs 1/k for an integer k >= 2 (InternVL: 0.5)")
    ps_version = raw.get("ps_version", "v1")  # InternVLChatConfig's default
    if ps_version not in ("v1", "v2"):
        raise ConversionError(f"ps_version={ps_version!r} is not 'v1' or 'v2'")
    if (size // patch) % round(factor):
        raise ConversionError(f"a {size // patch}x{size // patch} patch grid cannot be pixel-shuffled by downsample_ratio={ratio}")

    # language model
    llm_type = llm.get("model_type")
    architectures = llm.get("architectures") or ["LlamaForCausalLM"]
    if llm_type != "llama" or architectures[0] != "LlamaForCausalLM":
        raise ConversionError(f"llm_config model_type={llm_type!r} ({architectures[0]}): only a Llama language model (InternVL-Chat-V1.2, MedRegA) has a key map")
    text = CONFIG_MAPPING["llama"].from_dict(llm)
    text.tie_word_embeddings = bool(llm.get("tie_word_embeddings", False))
    if "tie_word_embeddings" in raw and bool(raw["tie_word_embeddings"]) != text.tie_word_embeddings:
        logger.info("config.json tie_word_embeddings=%s is the wrapper's; llm_config's (%s) decides, as in the original", raw["tie_word_embeddings"], text.tie_word_embeddings)

    dynamic = bool(raw.get("dynamic_image_size", False))
    kwargs = {
        "vision_config": vision_config,
        "projector_config": {"depth": 2, "layer_norm": True, "pixel_shuffle": ratio, "activation": "gelu", "pixel_shuffle_version": ps_version},
        "vision_feature_layer": int(raw.get("select_layer", -1)),
        "vision_feature_select_strategy": "default",  # the original drops the CLS token (vit_embeds[:, 1:])
        "max_tiles": int(raw.get("max_dynamic_patch", 6)) if dynamic else 0,
        "use_thumbnail": bool(raw.get("use_thumbnail", False)),
        "prompt_profile": "medrega",  # the Assistant sends MedRegA's own prompt wording (medrega.tasks.profiles)
    }
    if "img_context_token_id" in raw and raw["img_context_token_id"] is not None:
        kwargs["image_token_id"] = int(raw["img_context_token_id"])

    transforms = {}
    if size != tower_size:
        old, new = tower_size // patch, size // patch
        transforms[POSITION_EMBEDDINGS] = lambda t: resize_position_embeddings(t, old, new)
        logger.info("position embeddings resized once from %d to %d px (force_image_size)", tower_size, size)

    from medrega.processing import HERMES2_CHAT_TEMPLATE

    template = raw.get("template")
    processor = {"image_token": IMAGE_CONTEXT, "image_wrapper": list(IMAGE_WRAPPER), "resize_mode": "resize"}
    template_error = None
    if template in _TEMPLATES:
        processor["chat_template"] = HERMES2_CHAT_TEMPLATE
    else:
        template_error = f"template={template!r}: medrega has the {' / '.join(_TEMPLATES)} conversation only; pass chat_template= (a Jinja template) to convert it"
    return Source(
        "internvl_chat",
        text,
        kwargs,
        INTERNVL_CHAT_KEY_MAPPING,
        splits=INTERNVL_CHAT_SPLITS,
        transforms=transforms,
        keep_tokenizer=REQUIRED_TOKENS,
        processor_kwargs=processor,
        template_error=template_error,
        default_codec=MEDREGA_CODEC,
    )
