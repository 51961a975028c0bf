"""The vision tower: a timm backbone or a Hugging Face vision model behind one interface.

``VisionTower(pixel_values).last_hidden_state`` holds patch features ``(num_images, tokens, hidden)`` of the layer
``config.vision_feature_layer``; with the ``"default"`` strategy the tower's prefix tokens (CLS,
registers) are dropped, as ``LlavaForConditionalGeneration`` does for CLIP.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutput

from medrega.models.configuration import TimmVisionConfig
from medrega.models.projector import pixel_shuffle

__all__ = ["VisionTower", "build_timm", "image_token_count"]


def build_timm(config: TimmVisionConfig, pretrained: bool = False) -> nn.Module:
    """``timm.create_model`` for a :class:`TimmVisionConfig` (classifier head removed).

    Args:
        config: the timm architecture and its arguments.
        pretrained: load timm's pretrained weights (from the local cache or the hub).
    """
    import timm

    if not timm.is_model(config.timm_name):
        raise ValueError(f"timm has no architecture {config.timm_name!r}")
    try:
        return timm.create_model(config.timm_name, pretrained=pretrained, num_classes=0, img_size=config.image_size, **config.timm_kwargs)
    except TypeError as err:  # convolutional backbones take any size and have no img_size argument
        if "img_size" not in str(err):
            raise
    return timm.create_model(config.timm_name, pretrained=pretrained, num_classes=0, **config.timm_kwargs)


class VisionTower(nn.Module):
    """Patch features of a timm or Hugging Face vision backbone.

    Args:
        vision_config: :class:`TimmVisionConfig` or a Hugging Face vision config.
        feature_layer: which layer's output to use (``-1``: the last).
        select_strategy: ``"default"`` drops prefix tokens, ``"full"`` keeps them.
        model: an already built backbone (pretrained weights); built from the config when ``None``.
    """

    def __init__(self, vision_config: PreTrainedConfig, feature_layer: int = -1, select_strategy: str = "default", model: nn.Module | None = None):
        super().__init__()
        self.is_timm = isinstance(vision_config, TimmVisionConfig)
        self.feature_layer = feature_layer
        self.keep_prefix = select_strategy == "full"
        if self.is_timm:
            self.model = model if model is not None else build_timm(vision_config)
            for module in self.model.modules():  # timm initialised these; the HF initialiser must not redo it
                module._is_hf_initialized = True
            self.hidden_size = self.model.num_features
            self.num_prefix_tokens = getattr(self.model, "num_prefix_tokens", 0)
            if feature_layer != -1 and not hasattr(self.model, "forward_intermediates"):
                raise ValueError(f"timm model {vision_config.timm_name!r} has no forward_intermediates; use vision_feature_layer=-1")
        else:
            self.model = model if model is not None else AutoModel.from_config(vision_config)
            self.hidden_size = vision_config.hidden_size
            self.num_prefix_tokens = None  # found from the sequence length at run time
        # the parent model gathers `_no_split_modules` from its direct children only: pass the tower's on (device_map="auto")
        self._no_split_modules = list(getattr(self.model, "_no_split_modules", None) or [])

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False) -> BaseModelOutput:
        """``(N, 3, S, S)`` images -> ``last_hidden_state (N, tokens, hidden)``, the selected features.

        ``hidden_states`` holds every layer of a Hugging Face tower when ``output_hidden_states``
        (timm towers return ``None`` there).
        """
        if self.is_timm:
            return BaseModelOutput(last_hidden_state=self._timm_features(pixel_values))
        out = self.model(pixel_values, output_hidden_states=True, return_dict=True)
        feats = out.hidden_states[self.feature_layer]  # (N, prefix + patches, C)
        if not self.keep_prefix:
            feats = feats[:, self._hf_prefix(pixel_values, feats.shape[1]) :]
        return BaseModelOutput(last_hidden_state=feats, hidden_states=out.hidden_states if output_hidden_states else None)

    def _hf_prefix(self, pixel_values: torch.Tensor, length: int) -> int:
        patch = getattr(self.model.config, "patch_size", None)
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
        patches = (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch)
        return length - patches

    def _timm_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.feature_layer == -1:
            feats = self.model.forward_features(pixel_values)
            if feats.ndim == 4:  # convolutional: (N, C, H, W) -> (N, H*W, C)
                return feats.flatten(2).transpose(1, 2)
            return feats if self.keep_prefix else feats[:, self.num_prefix_tokens :]
        (out,) = self.model.forward_intermediates(
            pixel_values, indices=[self.feature_layer], output_fmt="NLC", intermediates_only=True, return_prefix_tokens=self.keep_prefix
        )
        if not self.keep_prefix:
            return out  # (N, patches, C)
        patches, prefix = out
        return torch.cat([prefix, patches], dim=1)  # (N, prefix + patches, C)


def image_token_count(config) -> int:
    """Tokens per image after the projector for a :class:`~medrega.models.MedRegAConfig`: its tower's
    features, merged by the pixel shuffle (found on the meta device, no compute).

    Args:
        config: the model configuration (its ``num_image_tokens`` is not read).
    """
    side = config.image_size
    with torch.device("meta"):
        tower = VisionTower(config.vision_config, config.vision_feature_layer, config.vision_feature_select_strategy)
        feats = tower(torch.empty(1, 3, side, side)).last_hidden_state
        if config.shuffle_factor > 1:
            feats = pixel_shuffle(feats, config.shuffle_factor)
    return feats.shape[1]
