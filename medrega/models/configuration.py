"""``MedRegAConfig``: one nested config (vision / projector / text / regions) serialised to ``config.json``.

Design choices:

* ``vision_config`` is always a ``PreTrainedConfig``: a Hugging Face vision config (SigLIP, CLIP,
  InternVL's vision tower, ...) or :class:`TimmVisionConfig`, a timm architecture name plus keyword
  arguments. A plain dict with ``timm_name`` (and no ``model_type``) becomes a :class:`TimmVisionConfig`.
* ``text_config`` is any causal-LM config (Llama by default); the language model is built with
  ``AutoModelForCausalLM.from_config``.
* ``projector_config`` is a small dict (depth, width, LayerNorm, pixel-shuffle ratio), normalised and
  checked here so a bad key fails at build time, not deep inside ``forward``.
* ``num_image_tokens`` (tokens per image after the projector) is a value of the config, as LLaVA's
  ``image_seq_length``: the builders (``from_parts``, :func:`~medrega.models.tiny_config`) count it,
  a model built from a config without it counts it and writes it in, and a model whose tower and
  projector give another count refuses to build. The image normalisation is inferred from the vision
  tower when not given, so the processor can read both from the config.
* ``tie_word_embeddings`` is the language model's (``text_config.tie_word_embeddings``): a different
  value given here raises instead of being overwritten.
"""

from __future__ import annotations

import re

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from medrega.grounding import LocTokenCodec
from medrega.models.box_head import BOX_HEAD_DEFAULTS
from medrega.models.image_positions import IMAGE_POSITIONS

__all__ = ["TimmVisionConfig", "MedRegAConfig", "PROJECTOR_DEFAULTS", "DEFAULT_TOWER_TOKENS"]

PROJECTOR_DEFAULTS = {"depth": 2, "hidden_size": None, "layer_norm": False, "pixel_shuffle": None, "activation": "gelu", "bias": True, "pixel_shuffle_version": "v2"}
SELECT_STRATEGIES = ("default", "full")
DEFAULT_TOWER_TOKENS = 196  # the default tower, TimmVisionConfig() (ViT-B/16 at 224 px): 14 x 14 patches, CLS dropped


class TimmVisionConfig(PreTrainedConfig):
    """A timm vision backbone: ``timm.create_model(timm_name, pretrained=False, num_classes=0, img_size=image_size, **timm_kwargs)``.

    Args:
        timm_name: timm architecture, e.g. ``"vit_tiny_patch16_224"``.
        timm_kwargs: extra ``create_model`` arguments (``depth``, ``embed_dim``, ``patch_size``, ...);
            ``kwargs`` is accepted as an alias.
        image_size: side of the square input image.
    """

    model_type = "medrega_timm_vision"

    timm_name: str = "vit_base_patch16_224"
    timm_kwargs: dict | None = None
    image_size: int = 224

    def __post_init__(self, **kwargs):
        alias = kwargs.pop("kwargs", None)
        if alias is not None:
            if self.timm_kwargs:
                raise ValueError("give timm arguments as `timm_kwargs` or `kwargs`, not both")
            self.timm_kwargs = dict(alias)
        self.timm_kwargs = dict(self.timm_kwargs or {})
        for reserved in ("pretrained", "num_classes", "img_size"):
            if reserved in self.timm_kwargs:
                raise ValueError(f"timm_kwargs may not set {reserved!r}: it is fixed by the model (img_size comes from image_size)")
        if not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        super().__post_init__(**kwargs)


def _square_side(vision_config: PreTrainedConfig) -> int:
    size = getattr(vision_config, "image_size", None)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"the vision tower must take square images, its image_size is {size!r}")
        size = size[0]
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"{type(vision_config).__name__} has no usable image_size ({size!r})")
    return size


def _default_normalisation(vision_config: PreTrainedConfig) -> tuple[list[float], list[float]]:
    if isinstance(vision_config, TimmVisionConfig):
        import timm

        cfg = timm.models.get_pretrained_cfg(vision_config.timm_name)
        if cfg is not None and cfg.mean is not None:
            return list(cfg.mean), list(cfg.std)
        return list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD)
    model_type = vision_config.model_type
    if model_type.startswith("clip"):
        return list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
    if model_type.startswith("siglip"):
        return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    return list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD)


class MedRegAConfig(PreTrainedConfig):
    """Configuration of :class:`~medrega.models.MedRegAForConditionalGeneration`.

    Args:
        vision_config: a Hugging Face vision config (or its dict with ``model_type``), a
            :class:`TimmVisionConfig`, or ``{"timm_name": ..., "kwargs": {...}, "image_size": ...}``.
        text_config: a causal-LM config or its dict (``model_type`` defaults to ``"llama"``).
        projector_config: ``{"depth", "hidden_size", "layer_norm", "pixel_shuffle", "activation", "bias",
            "pixel_shuffle_version"}``; ``depth`` linear layers of width ``hidden_size`` (default: the text
            hidden size), an optional LayerNorm first, an optional pixel shuffle with ratio ``pixel_shuffle``
            (InternVL: 0.5) in token order ``pixel_shuffle_version`` (``"v2"``, the default and transformers'
            InternVL; ``"v1"``, the original InternVL-Chat default that MedRegA uses: the merged grid transposed).
        image_token_id: id of the ``<image>`` placeholder token (``None`` until a tokenizer names it;
            the model then refuses images).
        num_image_tokens: placeholder tokens per image after the projector. ``None``: counted when a model
            is built from this config (and :data:`DEFAULT_TOWER_TOKENS` for the default tower with the
            default strategy and no pixel shuffle).
        vision_feature_layer: vision hidden state to use (``-1``: the last; HF towers index ``hidden_states``).
        vision_feature_select_strategy: ``"default"`` drops the tower's prefix (CLS/register) tokens,
            ``"full"`` keeps them.
        image_mean, image_std: per-channel normalisation (inferred from the tower when ``None``).
        region_codec: ``{"type": "loc", "bins": 1000}`` or ``{"type": "text", "scale": 1000}``
            (``RegionCodec.to_config()``; default: ``LocTokenCodec().to_config()``).
        region_token_ids: ids of every token medrega adds to the tokenizer (chat markers, the codec's
            region tokens, ``<image>``: ``MedRegAProcessor.prepare_tokenizer(...).ids``); their embedding
            rows stay trainable under LoRA.
        max_tiles: dynamic-resolution tiles per image (0: no tiling).
        use_thumbnail: add a whole-image thumbnail after the tiles.
        image_positions: ``"sequential"`` (every image token its own position, as LLaVA, InternVL and
            MedRegA's checkpoints were trained) or ``"shared"`` (all tokens of an image share one position,
            so attention reads them by content: :mod:`medrega.models.image_positions`).
        box_head: ``None`` (no box head, the layout of released checkpoints) or ``{"box_token_id",
            "loc_token_ids", "heads", "loss_weight"}``: a head that regresses each answer box from the hidden
            state at ``<box>`` and the image tokens and writes the loc tokens in generation
            (:mod:`medrega.models.box_head`; defaults: 4 heads, loss weight 5.0). Needs the loc codec.
        tie_word_embeddings: whether ``lm_head`` shares the input embeddings; always the language model's
            ``text_config.tie_word_embeddings`` (``None``: take it; a different value raises).
    """

    model_type = "medrega"
    keys_to_ignore_at_inference = ["past_key_values", "cache", "hidden_states", "attentions", "image_hidden_states"]
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type=TimmVisionConfig.model_type),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector_config: dict | None = None
    image_token_id: int | None = None
    num_image_tokens: int | None = None
    vision_feature_layer: int = -1
    vision_feature_select_strategy: str = "default"
    image_mean: list | tuple | None = None
    image_std: list | tuple | None = None
    region_codec: dict | None = None
    region_token_ids: list | None = None
    max_tiles: int = 0
    use_thumbnail: bool = True
    image_positions: str = "sequential"
    box_head: dict | None = None
    tie_word_embeddings: bool | None = None

    def __post_init__(self, **kwargs):
        default_tower = self.vision_config is None
        super().__post_init__(**kwargs)
        self._tie_as_text_config()
        self.projector_config = self._checked_projector(self.projector_config)
        self.region_codec = dict(self.region_codec or LocTokenCodec().to_config())
        if self.region_codec.get("type") not in ("loc", "text"):
            raise ValueError(f"region_codec type must be 'loc' or 'text', got {self.region_codec.get('type')!r}")
        if self.vision_feature_select_strategy not in SELECT_STRATEGIES:
            raise ValueError(f"vision_feature_select_strategy must be one of {SELECT_STRATEGIES}, got {self.vision_feature_select_strategy!r}")
        vocab = self.text_config.vocab_size
        if self.image_token_id is not None and (not isinstance(self.image_token_id, int) or not 0 <= self.image_token_id < vocab):
            raise ValueError(f"image_token_id must be an int in [0, {vocab}) (the text vocabulary), got {self.image_token_id!r}")
        if self.region_token_ids is not None:
            self.region_token_ids = [int(i) for i in self.region_token_ids]
            outside = [i for i in self.region_token_ids if not 0 <= i < vocab]
            if outside:
                raise ValueError(f"region_token_ids outside the vocabulary of {vocab}: {outside[:5]}")
        if self.image_positions not in IMAGE_POSITIONS:
            raise ValueError(f"image_positions must be one of {IMAGE_POSITIONS}, got {self.image_positions!r}")
        if self.box_head is not None:
            self.box_head = self._checked_box_head(self.box_head, vocab)
        if self.max_tiles < 0:
            raise ValueError(f"max_tiles must be >= 0, got {self.max_tiles}")
        if self.image_mean is None or self.image_std is None:
            mean, std = _default_normalisation(self.vision_config)
            self.image_mean = self.image_mean if self.image_mean is not None else mean
            self.image_std = self.image_std if self.image_std is not None else std
        self.image_mean, self.image_std = [float(v) for v in self.image_mean], [float(v) for v in self.image_std]
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError(f"image_mean/image_std must be 3 values (std > 0), got {self.image_mean}, {self.image_std}")
        _square_side(self.vision_config)
        if self.num_image_tokens is None and default_tower and self.vision_feature_select_strategy == "default" and self.shuffle_factor == 1:
            self.num_image_tokens = DEFAULT_TOWER_TOKENS
        if self.num_image_tokens is not None and (not isinstance(self.num_image_tokens, int) or self.num_image_tokens <= 0):
            raise ValueError(f"num_image_tokens must be a positive int, got {self.num_image_tokens!r}")

    def _tie_as_text_config(self) -> None:
        """Take ``tie_word_embeddings`` from the language model; refuse a value that contradicts it."""
        text_tie = bool(getattr(self.text_config, "tie_word_embeddings", False))
        if self.tie_word_embeddings is not None and bool(self.tie_word_embeddings) != text_tie:
            raise ValueError(
                f"tie_word_embeddings={self.tie_word_embeddings} contradicts text_config.tie_word_embeddings={text_tie}: "
                "the language model decides whether lm_head is tied; set it in text_config"
            )
        self.tie_word_embeddings = text_tie

    def _checked_box_head(self, spec: dict, vocab: int) -> dict:
        spec = {**BOX_HEAD_DEFAULTS, **spec}
        unknown = set(spec) - {*BOX_HEAD_DEFAULTS, "box_token_id", "loc_token_ids"}
        if unknown:
            raise ValueError(f"unknown box_head keys {sorted(unknown)}; allowed: box_token_id, loc_token_ids, {', '.join(BOX_HEAD_DEFAULTS)}")
        if self.region_codec["type"] != "loc":
            raise ValueError("box_head needs the loc-token region codec (region_codec={'type': 'loc', ...})")
        ids = [int(i) for i in spec.get("loc_token_ids") or ()]
        if len(ids) != self.region_codec.get("bins", 1000):
            raise ValueError(f"box_head.loc_token_ids must hold the {self.region_codec.get('bins', 1000)} loc tokens' ids in bin order, got {len(ids)}")
        box = spec.get("box_token_id")
        if not all(isinstance(i, int) and 0 <= i < vocab for i in [*ids, box]):
            raise ValueError(f"box_head.box_token_id and loc_token_ids must be ids in [0, {vocab}) (the text vocabulary)")
        if not isinstance(spec["heads"], int) or spec["heads"] < 1 or float(spec["loss_weight"]) < 0:
            raise ValueError(f"box_head heads must be an int >= 1 and loss_weight >= 0, got {spec['heads']!r}, {spec['loss_weight']!r}")
        return {**spec, "loc_token_ids": ids, "loss_weight": float(spec["loss_weight"])}

    @staticmethod
    def _checked_projector(spec: dict | None) -> dict:
        spec = dict(spec or {})
        unknown = set(spec) - set(PROJECTOR_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown projector_config keys {sorted(unknown)}; allowed: {sorted(PROJECTOR_DEFAULTS)}")
        out = {**PROJECTOR_DEFAULTS, **spec}
        if not isinstance(out["depth"], int) or out["depth"] < 1:
            raise ValueError(f"projector depth must be an int >= 1, got {out['depth']!r}")
        ratio = out["pixel_shuffle"]
        if ratio is not None:
            factor = 1 / ratio if 0 < ratio < 1 else 0
            if abs(factor - round(factor)) > 1e-6 or round(factor) < 2:
                raise ValueError(f"pixel_shuffle ratio must be 1/k for an integer k >= 2 (InternVL: 0.5), got {ratio!r}")
        if out["pixel_shuffle_version"] not in ("v1", "v2"):
            raise ValueError(f"projector pixel_shuffle_version must be 'v1' or 'v2', got {out['pixel_shuffle_version']!r}")
        if out["pixel_shuffle_version"] == "v1" and ratio is None:
            raise ValueError("projector pixel_shuffle_version='v1' needs a pixel_shuffle ratio (it orders the merged tokens)")
        return out

    @property
    def shuffle_factor(self) -> int:
        """How many patches per side the pixel shuffle merges (1: none; 2 for ratio 0.5)."""
        ratio = self.projector_config["pixel_shuffle"]
        return 1 if ratio is None else round(1 / ratio)

    @property
    def image_size(self) -> int:
        """Side of the square image the vision tower takes."""
        return _square_side(self.vision_config)

    def to_json_string(self, use_diff: bool = True) -> str:
        """JSON as transformers writes it, with lists of numbers on one line (``config.json`` and ``print``)."""
        return _ONE_LINE_NUMBERS.sub(lambda m: re.sub(r"\s+", " ", m.group()).replace("[ ", "[").replace(" ]", "]"), super().to_json_string(use_diff))

    def __repr__(self) -> str:
        region = self.region_token_ids
        summary = f"{len(region)} ids from {min(region)} to {max(region)}" if region else region
        text = _ONE_LINE_NUMBERS.sub(lambda m: f'"{summary}"' if m.group().count(",") + 1 == len(region or ()) else m.group(), self.to_json_string())
        return f"{type(self).__name__} {text}"


_ONE_LINE_NUMBERS = re.compile(r"\[\s*-?[\d.eE+-]+(?:\s*,\s*-?[\d.eE+-]+)*\s*\]")
