"""Tiny random configs: a timm ViT plus a Llama, for tests, presets and CPU demos."""

from __future__ import annotations

from transformers import LlamaConfig

from medrega.models.configuration import MedRegAConfig, TimmVisionConfig
from medrega.models.vision import image_token_count

__all__ = ["tiny_config"]


def tiny_config(
    vocab_size: int,
    image_token_id: int,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    vision_width: int = 192,
    vision_layers: int = 4,
    image_size: int = 64,
    patch_size: int = 16,
    pixel_shuffle: float | None = None,
    **overrides,
) -> MedRegAConfig:
    """A tiny random model for tests, presets and CPU demos: a timm ViT plus a Llama.

    The defaults (4-layer ViT of width 192 on 64-px images with 16-px patches, 4-layer Llama of width 128)
    hold ~3-4 M parameters with a ~3k vocabulary.

    Args:
        vocab_size: text vocabulary (tokenizer length, region tokens included).
        image_token_id: id of ``<image>``.
        hidden_size, num_layers: Llama width and depth.
        vision_width, vision_layers: ViT width and depth.
        image_size, patch_size: square input side and patch side.
        pixel_shuffle: projector pixel-shuffle ratio (e.g. 0.5) or ``None``.
        **overrides: further :class:`MedRegAConfig` arguments (``region_token_ids``, ``region_codec``, ...).

    Returns:
        the config, ``num_image_tokens`` counted from its tower and projector.
    """
    heads = max(1, hidden_size // 32)
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    vision = TimmVisionConfig(
        timm_name="vit_tiny_patch16_224",
        timm_kwargs={"embed_dim": vision_width, "depth": vision_layers, "num_heads": max(1, vision_width // 64), "patch_size": patch_size},
        image_size=image_size,
    )
    settings = {
        "vision_config": vision,
        "text_config": text,
        "projector_config": {"pixel_shuffle": pixel_shuffle, "layer_norm": pixel_shuffle is not None},
        "image_token_id": image_token_id,
    }
    config = MedRegAConfig(**{**settings, **overrides})
    if config.num_image_tokens is None:
        config.num_image_tokens = image_token_count(config)
    return config
