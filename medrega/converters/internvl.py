"""transformers ``InternVLForConditionalGeneration`` (InternVL 2.5/3) -> medrega.

The tower is transformers' ``InternVLVisionModel`` itself; the projector is LayerNorm + 2 linears after a pixel
shuffle of ``downsample_ratio`` (medrega's shuffle is transformers' InternVL one, bit for bit). Carried: the
top-level ``tie_word_embeddings`` (InternVLConfig ties by default), the feature layer and strategy, the
activation. Refused: ``use_mean_pooling=False``, where transformers applies a final LayerNorm at layer -1 that
medrega's tower (which reads ``hidden_states``) would skip.
"""

from __future__ import annotations

from pathlib import Path

from transformers import InternVLConfig

from medrega.converters import ConversionError, Source
from medrega.converters.llava import check_projector_settings, feature_layer, image_normalisation
from medrega.models.conversion import INTERNVL_KEY_MAPPING

__all__ = ["internvl_source"]


def internvl_source(src: Path, raw: dict) -> Source:
    """The medrega config of an InternVL ``config.json`` (``raw``)."""
    cfg = InternVLConfig.from_dict(raw)
    vision = cfg.vision_config
    layer = feature_layer(cfg.vision_feature_layer)
    if not vision.use_mean_pooling and layer == -1:
        raise ConversionError("vision_config.use_mean_pooling=False: transformers applies a final LayerNorm to the last layer's features, which medrega does not")
    strategy = check_projector_settings(cfg)
    text = cfg.text_config
    text.tie_word_embeddings = bool(getattr(cfg, "tie_word_embeddings", True))
    kwargs = {
        "vision_config": vision,
        "projector_config": {"depth": 2, "layer_norm": True, "pixel_shuffle": cfg.downsample_ratio, "activation": cfg.projector_hidden_act},
        "image_token_id": cfg.image_token_id,
        "vision_feature_layer": layer,
        "vision_feature_select_strategy": strategy,
        **image_normalisation(src),
    }
    return Source("internvl", text, kwargs, INTERNVL_KEY_MAPPING)
