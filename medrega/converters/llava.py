"""transformers ``LlavaForConditionalGeneration`` -> medrega: config translation and what it refuses.

Carried: ``vision_feature_layer`` (LLaVA's default is -2), the select strategy, the top-level
``tie_word_embeddings`` (it decides in transformers 5), ``image_token_id``/``image_token_index``, the projector
activation and bias, and the image normalisation of ``preprocessor_config.json``. Keys: the three layouts of
:data:`~medrega.models.LLAVA_KEY_MAPPING`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlavaConfig
from transformers.activations import ACT2FN

from medrega.converters import ConversionError, Source
from medrega.models.conversion import LLAVA_KEY_MAPPING

__all__ = ["llava_source", "image_normalisation"]


def image_normalisation(src: Path) -> dict:
    """``image_mean``/``image_std`` of the source's ``preprocessor_config.json`` (empty when absent)."""
    path = src / "preprocessor_config.json"
    if not path.is_file():
        return {}
    spec = json.loads(path.read_text())
    return {k: spec[k] for k in ("image_mean", "image_std") if spec.get(k) is not None}


def feature_layer(value) -> int:
    """The single vision layer medrega can use; a list of layers (concatenated features) is refused."""
    if isinstance(value, (list, tuple)):
        raise ConversionError(f"vision_feature_layer={list(value)} (several layers, features concatenated) has no medrega equivalent: medrega takes one layer")
    return int(value)


def check_projector_settings(cfg) -> str:
    """The feature select strategy of a LLaVA-family config, refusing a strategy or projector activation
    medrega cannot express."""
    strategy = cfg.vision_feature_select_strategy
    if strategy not in ("default", "full"):
        raise ConversionError(f"vision_feature_select_strategy={strategy!r} is not 'default' or 'full'")
    if cfg.projector_hidden_act not in ACT2FN:
        raise ConversionError(f"projector_hidden_act={cfg.projector_hidden_act!r} is not a transformers activation")
    return strategy


def llava_source(src: Path, raw: dict) -> Source:
    """The medrega config of a LLaVA ``config.json`` (``raw``)."""
    cfg = LlavaConfig.from_dict(raw)
    strategy = check_projector_settings(cfg)
    text = cfg.text_config
    text.tie_word_embeddings = bool(getattr(cfg, "tie_word_embeddings", False))  # the top-level flag decides in v5
    image_token_id = getattr(cfg, "image_token_id", None)
    if image_token_id is None:
        image_token_id = raw.get("image_token_index")
    kwargs = {
        "vision_config": cfg.vision_config,
        "projector_config": {"depth": 2, "activation": cfg.projector_hidden_act, "bias": bool(cfg.multimodal_projector_bias)},
        "image_token_id": image_token_id,
        "vision_feature_layer": feature_layer(cfg.vision_feature_layer),
        "vision_feature_select_strategy": strategy,
        **image_normalisation(src),
    }
    return Source("llava", text, kwargs, LLAVA_KEY_MAPPING, check=_one_prefix_token if strategy == "default" else None)


def _one_prefix_token(config) -> None:
    """LLaVA's "default" drops position 0 whatever the tower; medrega drops the tower's prefix tokens. They
    agree only for a tower with exactly one prefix (CLS) token."""
    from medrega.models.vision import VisionTower

    vision = config.vision_config
    patch = getattr(vision, "patch_size", None)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    if not isinstance(patch, int):
        raise ConversionError(f"{vision.model_type} vision config has no patch_size: cannot check vision_feature_select_strategy='default'")
    side = config.image_size
    with torch.device("meta"):
        tower = VisionTower(vision, config.vision_feature_layer, "full")
        tokens = tower(torch.empty(1, 3, side, side)).last_hidden_state.shape[1]
    prefix = tokens - (side // patch) ** 2
    if prefix != 1:
        raise ConversionError(
            f"vision_feature_select_strategy='default' with a {vision.model_type} tower of {prefix} prefix (CLS) tokens: "
            "LLaVA drops position 0 whatever the tower, medrega drops the tower's prefix tokens, so the features would differ"
        )
