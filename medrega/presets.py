"""Named model presets, as data.

* ``tiny``: random weights and a small bilingual byte-level BPE tokenizer trained locally on bundled
  text (< 5 M parameters, built in seconds). Used by the tests, the notebooks and ``medrega demo``.
* Real presets name the pretrained parts to assemble with
  :meth:`~medrega.MedRegAForConditionalGeneration.from_parts` once they are downloaded::

      from medrega import presets
      model, processor = presets.build_from_parts("siglip-qwen2.5-7b", vision="/models/siglip-so400m-patch14-384",
                                                  language_model="/models/Qwen2.5-7B-Instruct")
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from importlib import resources

import torch

from medrega.grounding import BOX_START, IMAGE_TOKEN, LocTokenCodec

__all__ = ["PRESETS", "REAL_PRESETS", "RealPreset", "build", "build_from_parts", "tiny_tokenizer"]


@dataclass(frozen=True)
class RealPreset:
    """A combination of pretrained parts (names as on the Hugging Face hub) with its approximate size."""

    vision: str
    language_model: str
    projector: dict
    parameters: str
    note: str


REAL_PRESETS: dict[str, RealPreset] = {
    "siglip-qwen2.5-7b": RealPreset(
        vision="google/siglip-so400m-patch14-384",
        language_model="Qwen/Qwen2.5-7B-Instruct",
        projector={"depth": 2, "layer_norm": True},
        parameters="~8.1 B (0.4 B vision + 7.6 B language)",
        note="729 tokens per image (27x27 patches; an odd grid, so no pixel shuffle)",
    ),
    "internvit-llama3-8b": RealPreset(
        vision="OpenGVLab/InternViT-300M-448px",
        language_model="meta-llama/Meta-Llama-3-8B-Instruct",
        projector={"depth": 2, "layer_norm": True, "pixel_shuffle": 0.5},
        parameters="~8.3 B (0.3 B vision + 8.0 B language); MedRegA's published scale",
        note="1024 patches per 448-px tile, 256 tokens after the 0.5 pixel shuffle; use max_tiles for dynamic resolution",
    ),
    "clip-qwen2.5-1.5b": RealPreset(
        vision="openai/clip-vit-large-patch14-336",
        language_model="Qwen/Qwen2.5-1.5B-Instruct",
        projector={"depth": 2},
        parameters="~1.8 B (0.3 B vision + 1.5 B language): fits one 24 GB GPU for full fine-tuning with ZeRO-2",
        note="576 patches per image (LLaVA-1.5 layout)",
    ),
}

PRESETS = ("tiny", *REAL_PRESETS)


def _corpus() -> list[str]:
    """Bundled English / Chinese medical text, the task templates and the phantom vocabulary."""
    from medrega.tasks import TASKS

    lines = resources.files("medrega.assets").joinpath("tiny_corpus.txt").read_text(encoding="utf-8").splitlines()
    for task in TASKS.values():
        for by_lang in task.TEMPLATES.values():
            for templates in by_lang.values():
                lines.extend(templates)
        lines.extend(task.PREAMBLES.values())
    return [line for line in lines if line.strip()] * 3


def tiny_tokenizer(vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on the bundled corpus, with chat and region tokens added
    (trained once per process; each call returns a fresh copy)."""
    return copy.deepcopy(_trained_tokenizer(vocab_size))


@functools.lru_cache(maxsize=2)
def _trained_tokenizer(vocab_size: int):
    from medrega.processing import MedRegAProcessor
    from medrega.tokenization import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(_corpus(), vocab_size=vocab_size)
    MedRegAProcessor.prepare_tokenizer(tokenizer)
    return tokenizer


def build(name: str = "tiny", seed: int = 0, **config_overrides):
    """Build ``(model, processor)`` for a preset.

    Args:
        name: ``"tiny"`` (random weights, local tokenizer). Real presets need downloaded parts:
            use :func:`build_from_parts`.
        seed: seeds the random weights.
        **config_overrides: passed to :func:`medrega.models.tiny_config` (e.g. ``hidden_size``,
            ``image_size``, ``region_codec={"type": "loc", "bins": 1000}``); ``box_head=True`` (or a dict of
            ``heads`` / ``loss_weight``) adds the box head (:mod:`medrega.models.box_head`) with this
            tokenizer's ``<box>`` and loc-token ids.
    """
    from medrega.grounding import codec_from_config
    from medrega.models import MedRegAForConditionalGeneration, tiny_config
    from medrega.processing import IM_END, MedRegAProcessor

    if name in REAL_PRESETS:
        raise ValueError(f"preset {name!r} assembles pretrained parts: call presets.build_from_parts({name!r}, vision=..., language_model=...)")
    if name != "tiny":
        raise ValueError(f"unknown preset {name!r}; known: {PRESETS}")
    tokenizer = tiny_tokenizer()
    codec = codec_from_config(config_overrides.pop("region_codec", None))
    added = MedRegAProcessor.prepare_tokenizer(tokenizer, codec)  # nothing new for the default codec
    box_head = config_overrides.pop("box_head", None)
    if box_head:
        if not isinstance(codec, LocTokenCodec):
            raise ValueError("box_head needs the loc-token region codec")
        spec = {} if box_head is True else dict(box_head)
        config_overrides["box_head"] = {**spec, "box_token_id": tokenizer.convert_tokens_to_ids(BOX_START), "loc_token_ids": codec.loc_token_ids(tokenizer)}
    config_overrides = {"patch_size": 8, "pixel_shuffle": 0.5, **config_overrides}
    config = tiny_config(
        vocab_size=len(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        region_codec=codec.to_config(),
        region_token_ids=added.ids,
        **config_overrides,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = MedRegAForConditionalGeneration(config)
    torch.random.set_rng_state(generator_state)
    if isinstance(codec, LocTokenCodec):
        ordinal_init_(model, codec.loc_token_ids(tokenizer))
    sincos_position_init_(model.vision_tower.model)
    sharp_attention_init_(model.language_model, seed)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, MedRegAProcessor.from_model_config(config, tokenizer)


@torch.no_grad()
def ordinal_init_(model, loc_ids: list[int]) -> None:
    """Give the loc tokens' input and output embeddings a smooth sinusoidal code of their bin, so
    that neighbouring bins start out similar (used by randomly initialised presets: it lets a
    model trained from scratch learn coordinates as quantities rather than unrelated classes).

    Args:
        model: a :class:`~medrega.MedRegAForConditionalGeneration`.
        loc_ids: token ids of ``<loc_0> .. <loc_{bins-1}>`` in order.
    """
    bins = len(loc_ids)
    for embedding in (model.get_input_embeddings(), model.get_output_embeddings()):
        weight = embedding.weight
        dim = weight.shape[1]
        position = torch.arange(bins, dtype=torch.float32)[:, None] / bins  # (bins, 1) in [0, 1)
        freqs = torch.pi * torch.logspace(0, math.log10(bins / 2), dim // 2)[None, :]  # periods from twice the range down to 4 bins
        code = torch.cat([torch.sin(position * freqs), torch.cos(position * freqs)], dim=1)  # (bins, dim or dim - 1)
        code = torch.nn.functional.pad(code, (0, dim - code.shape[1]))
        code = code / code.std() * weight.std()
        weight[torch.tensor(loc_ids)] = code.to(weight.dtype)


# Scales of the from-scratch inits below. Measured on a task whose answer depends only on where a square
# is (left or right; 400 images, micro-batch 16, lr 1e-3, seeds 0-2, 150 steps): with timm's defaults
# (position code at std 0.02, q/k at std 0.02) no seed learns it (loss stays at ln 2 for ~250 steps);
# position code alone: 0 of 3; q/k alone: 2 of 3; both: 3 of 3, by step 87-123.
POSITION_CODE_SCALE = 1.5  # std of the position code: above the patch projection's output (~0.3)
QK_INIT_STD = 0.2  # std of the language model's q/k projections: attention is not uniform at step 0


@torch.no_grad()
def sincos_position_init_(vit) -> None:
    """Start a randomly initialised timm ViT's learned position embeddings at the fixed 2-D sin-cos
    code (as MAE does), at a scale where it is not drowned by the patch content, so that patch
    features know where they are from the first step.

    Args:
        vit: a timm ``VisionTransformer`` (prefix tokens keep their random init).
    """
    cols, rows = vit.patch_embed.grid_size
    dim = vit.pos_embed.shape[-1]
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)  # (dim/4,)
    y, x = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32), indexing="ij")
    angles_x = x.reshape(-1, 1) * omega  # (rows*cols, dim/4)
    angles_y = y.reshape(-1, 1) * omega
    code = torch.cat([angles_x.sin(), angles_x.cos(), angles_y.sin(), angles_y.cos()], dim=1)  # (rows*cols, 4*(dim/4))
    code = torch.nn.functional.pad(code, (0, dim - code.shape[1]))
    prefix = vit.pos_embed.shape[1] - rows * cols
    vit.pos_embed[0, prefix:] = code * (POSITION_CODE_SCALE / code.std())


def build_from_parts(name: str, vision: str, language_model: str, **kwargs):
    """Assemble a real preset from downloaded parts (local directories or hub ids when online).

    Args:
        name: a key of :data:`REAL_PRESETS` (it gives the projector).
        vision: the vision tower: a local Hugging Face vision model directory or a timm name.
        language_model: the language model's directory (or hub id); its tokenizer is loaded from there.
        **kwargs: passed to :meth:`~medrega.MedRegAForConditionalGeneration.from_parts` (``codec``,
            ``dtype``, ``max_tiles``, ...).

    Returns:
        ``(model, processor)``; the tokenizer is the language model's, with chat and region tokens added
        by ``from_parts`` (so that it mean-initialises their embedding rows).
    """
    from transformers import AutoTokenizer

    from medrega.models import MedRegAForConditionalGeneration
    from medrega.processing import MedRegAProcessor

    if name not in REAL_PRESETS:
        raise ValueError(f"unknown real preset {name!r}; known: {sorted(REAL_PRESETS)}")
    tokenizer = AutoTokenizer.from_pretrained(language_model)
    model = MedRegAForConditionalGeneration.from_parts(
        vision=vision, language_model=language_model, projector=REAL_PRESETS[name].projector, tokenizer=tokenizer, **kwargs
    )
    return model, MedRegAProcessor.from_model_config(model.config, tokenizer)


@torch.no_grad()
def sharp_attention_init_(language_model, seed: int) -> None:
    """Draw a randomly initialised language model's query and key projections at
    :data:`QK_INIT_STD`: with the usual 0.02 both start near zero, attention is uniform and its
    gradient is tiny, and a model trained from scratch sits for hundreds of steps at the answer
    prior before it learns where in the image to look.

    Args:
        language_model: a transformers causal LM whose attention modules have ``q_proj`` / ``k_proj``.
        seed: seeds the draw.
    """
    generator = torch.Generator().manual_seed(seed)
    for name, module in language_model.named_modules():
        if name.rsplit(".", 1)[-1] in ("q_proj", "k_proj"):
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * QK_INIT_STD)
