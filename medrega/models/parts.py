"""Assemble a MedRegA model from pretrained parts on the local machine.

The vision tower is a timm architecture name or a local Hugging Face vision model directory; the
language model is a local directory or a hub id already in the local cache (or a built model). The
tokenizer receives the chat and region tokens; the embedding rows of new tokens start at the mean of
the pretrained rows (input embeddings, and ``lm_head`` when it is not tied). :class:`PartsBuilder` gives
the model class :meth:`~PartsBuilder.from_parts`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from medrega.models.configuration import MedRegAConfig, TimmVisionConfig

__all__ = ["PartsBuilder", "load_vision", "load_language_model"]

logger = logging.getLogger(__name__)


def load_vision(vision: str | Path, image_size: int | None = None, pretrained: bool = True, timm_kwargs: dict | None = None):
    """Load a vision backbone: a local Hugging Face vision model directory or a timm name.

    Args:
        vision: directory with ``config.json`` + weights of a vision model (``CLIPVisionModel``,
            ``SiglipVisionModel``, ...), or a timm architecture name.
        image_size: input side for timm (default: the architecture's own).
        pretrained: timm only: load timm's pretrained weights (from its local cache; offline this fails
            with a clear error). ``False`` starts the timm backbone from random weights.
        timm_kwargs: extra ``timm.create_model`` arguments.

    Returns:
        ``(vision_config, module)``.
    """
    path = Path(vision)
    if path.is_dir():
        config = AutoConfig.from_pretrained(path)
        if hasattr(config, "vision_config"):
            raise ValueError(
                f"{path} holds a whole {config.model_type} model, not a vision tower; save the tower alone, e.g. "
                f"{type(config).__name__.replace('Config', 'VisionModel')}.from_pretrained(dir).save_pretrained(out)"
            )
        return config, AutoModel.from_pretrained(path)
    import timm

    if not timm.is_model(str(vision)):
        raise FileNotFoundError(f"vision {str(vision)!r} is neither a local model directory nor a timm architecture name")
    from medrega.models.vision import build_timm

    default_size = timm.models.get_pretrained_cfg(str(vision)).input_size[-1]
    config = TimmVisionConfig(timm_name=str(vision), timm_kwargs=dict(timm_kwargs or {}), image_size=image_size or default_size)
    try:
        return config, build_timm(config, pretrained=pretrained)
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise OSError(
            f"could not load timm's pretrained weights for {vision!r} ({err}); put them in the local Hugging Face "
            "cache first, or pass vision_pretrained=False to start the vision tower from random weights"
        ) from err


def load_language_model(language_model: str | Path | PreTrainedModel, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """A causal LM from a local directory, a cached hub id, or an already built model.

    Args:
        language_model: a local directory, a hub id in the local cache, or a built causal LM (returned as is).
        dtype: dtype to load the language model in.
    """
    if isinstance(language_model, PreTrainedModel):
        return language_model
    try:
        return AutoModelForCausalLM.from_pretrained(language_model, dtype=dtype)
    except OSError as err:
        where = "directory exists but lacks config.json or weights" if Path(language_model).is_dir() else "is not a local directory and not in the local Hugging Face cache (offline)"
        raise OSError(f"could not load the language model {str(language_model)!r}: it {where}. Download it first or pass a local directory. ({err})") from err


def mean_init_rows(embedding: nn.Module, rows: list[int], old_rows: int) -> None:
    """Set ``rows`` of an embedding / lm_head weight to the mean of its first ``old_rows`` rows (computed in float32)."""
    if not rows:
        return
    with torch.no_grad():
        weight = embedding.weight
        weight[rows] = weight[:old_rows].float().mean(dim=0, keepdim=True).to(weight.dtype)
        bias = getattr(embedding, "bias", None)
        if bias is not None:
            bias[rows] = bias[:old_rows].mean()


class PartsBuilder:
    """Building from pretrained parts, as a class method of :class:`~medrega.models.MedRegAForConditionalGeneration`."""

    @classmethod
    def from_parts(
        cls,
        vision: str | Path,
        language_model: str | Path | PreTrainedModel,
        tokenizer,
        projector: dict | None = None,
        codec=None,
        *,
        vision_pretrained: bool = True,
        image_size: int | None = None,
        timm_kwargs: dict | None = None,
        dtype: torch.dtype | None = None,
        **config_kwargs,
    ):
        """Build a MedRegA model from a pretrained vision tower, a pretrained causal LM and its tokenizer.

        The tokenizer gets the chat tokens, the region tokens of ``codec`` and ``<image>``
        (``MedRegAProcessor.prepare_tokenizer``); the embeddings grow to the new tokenizer length and new
        rows are mean-initialised: rows of tokens the tokenizer did not hold before, and rows the resize
        adds (tokens added to the tokenizer before this call). The projector starts from random weights.

        Args:
            vision: a timm architecture name or a local Hugging Face vision model directory.
            language_model: a local directory, a hub id in the local cache, or a built causal LM.
            tokenizer: the language model's tokenizer (or its directory); changed in place.
            projector: projector settings (see :class:`MedRegAConfig`).
            codec: region codec (default ``LocTokenCodec()``).
            vision_pretrained: timm only: load timm's pretrained weights.
            image_size: timm only: input side (default: the architecture's).
            timm_kwargs: timm only: extra ``create_model`` arguments.
            dtype: dtype to load the language model in.
            **config_kwargs: further :class:`MedRegAConfig` arguments (``vision_feature_layer``, ``max_tiles``, ...).

        Returns:
            the model (``model.config.region_token_ids`` lists medrega's tokens: chat markers, region tokens
            and ``<image>``).
        """
        from medrega.grounding import IMAGE_TOKEN, LocTokenCodec
        from medrega.processing import MedRegAProcessor

        codec = codec or LocTokenCodec()
        if isinstance(tokenizer, (str, Path)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        vision_config, vision_model = load_vision(vision, image_size, vision_pretrained, timm_kwargs)
        lm = load_language_model(language_model, dtype)
        old_rows = lm.get_input_embeddings().weight.shape[0]
        old_tokenizer = len(tokenizer)
        added = MedRegAProcessor.prepare_tokenizer(tokenizer, codec)
        new_ids = sorted({i for i in added.ids if i >= old_tokenizer} | set(range(old_rows, len(tokenizer))))
        if len(tokenizer) > old_rows:
            lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        config = MedRegAConfig(
            vision_config=vision_config,
            text_config=lm.config,
            projector_config=projector,
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            region_codec=codec.to_config(),
            region_token_ids=list(added.ids),
            **config_kwargs,
        )
        model = cls(config, vision_model=vision_model, language_model=lm)
        if new_ids:
            mean_init_rows(model.get_input_embeddings(), new_ids, old_rows)
            output = model.get_output_embeddings()
            if output is not None and output.weight is not model.get_input_embeddings().weight:
                mean_init_rows(output, new_ids, old_rows)
        logger.info("built MedRegA from parts: %d new tokens, %s", len(new_ids), model.trainable_summary())
        return model
