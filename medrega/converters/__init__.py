"""``medrega.convert(src, dst)``: turn a published checkpoint directory into a medrega model directory.

Design choices:

* The source is detected from ``config.json`` ``model_type``; each source (``llava``, ``internvl``) is one
  small module that translates the config, names its key mapping (:mod:`medrega.models.conversion`) and
  refuses what medrega cannot express, naming the setting.
* Weights stream one input shard at a time (:mod:`medrega.converters.shards`), keep their dtype, and are
  written as size-capped safetensors shards with an index. The model is never built, except on the meta
  device (no memory) to know the keys and shapes it expects.
* Every key and shape is checked before anything is written: an unknown key, a missing one or a wrong
  shape refuses the whole conversion, so half a model is never written.
* The tokenizer (when the source has one) gets medrega's chat and region tokens
  (:meth:`~medrega.MedRegAProcessor.prepare_tokenizer`, the text-box codec by default); when that grows it
  past the model's vocabulary, the embedding and head rows it adds start at the mean of the existing ones.
  The image placeholder is the tokenizer's ``<image>`` (its embedding row is always replaced by image
  features, so a new id changes no logits).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from medrega.converters.shards import ShardWriter, checkpoint_files, open_shard, parse_size
from medrega.models.conversion import rename_key

__all__ = ["convert", "ConversionError", "SOURCES"]

logger = logging.getLogger(__name__)

EMBED, HEAD = "language_model.model.embed_tokens.weight", "language_model.lm_head.weight"
DEFAULT_CODEC = {"type": "text", "scale": 1000}


class ConversionError(ValueError):
    """A checkpoint (or one of its settings) that medrega cannot express; nothing was written."""


@dataclass
class Source:
    """What a source module hands the converter.

    Args:
        name: the source, for messages.
        text_config: the language model's config (its ``tie_word_embeddings`` already set from the source).
        config_kwargs: the other ``MedRegAConfig`` arguments.
        mapping: the key renames (``{regex: replacement}``).
        check: called with the built ``MedRegAConfig``; raises :class:`ConversionError` on what it cannot express.
    """

    name: str
    text_config: object
    config_kwargs: dict
    mapping: dict[str, str]
    check: Callable | None = None


def _llava(src: Path, raw: dict) -> Source:
    from medrega.converters.llava import llava_source

    return llava_source(src, raw)


def _internvl(src: Path, raw: dict) -> Source:
    from medrega.converters.internvl import internvl_source

    return internvl_source(src, raw)


SOURCES: dict[str, Callable[[Path, dict], Source]] = {"llava": _llava, "internvl": _internvl}
_NOT_YET = {
    "internvl_chat": "the original InternVL-Chat remote-code layout (MedRegA's release) is not supported yet: "
    "it needs the qkv split, scoped vision renames and the pixel-shuffle 'v1' token order",
}


def _load_tokenizer(src: Path):
    if not any((src / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(src, trust_remote_code=False)


def _source_dtype(raw: dict):
    for cfg in (raw, raw.get("text_config") or {}):
        dtype = cfg.get("dtype") or cfg.get("torch_dtype")
        if dtype:
            return dtype
    return None


def convert(src: str | Path, dst: str | Path, *, max_shard_size: int | str = "5GB", region_codec: dict | None = None, chat_template: str | None = None) -> Path:
    """Convert a transformers LLaVA or InternVL checkpoint directory into a medrega model directory.

    ``dst`` then loads with ``AutoModelForImageTextToText.from_pretrained(dst)`` (after ``import medrega``) and,
    when the source has a tokenizer, with ``medrega.Assistant.from_pretrained(dst)``.

    Args:
        src: the source directory (``config.json``, weights, optionally a tokenizer).
        dst: the output directory (created; must be empty if it exists).
        max_shard_size: largest output shard (bytes or e.g. ``"5GB"``).
        region_codec: the converted model's box codec (default: text boxes on 0..1000, which adds only the
            ``<ref>``/``<box>`` tags; ``{"type": "loc", "bins": 1000}`` adds 1000 loc tokens).
        chat_template: the processor's chat template (default: medrega's ChatML).

    Returns:
        ``dst``.

    Raises:
        ConversionError: a source, setting or key medrega cannot express (nothing is written).
    """
    from medrega.grounding import IMAGE_TOKEN, codec_from_config
    from medrega.models import MedRegAConfig, MedRegAForConditionalGeneration
    from medrega.models.vision import image_token_count
    from medrega.processing import MedRegAProcessor

    src, dst = Path(src), Path(dst)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} is not a model directory (no config.json)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} exists and is not an empty directory")
    raw = json.loads((src / "config.json").read_text())
    model_type = raw.get("model_type")
    if model_type in _NOT_YET:
        raise ConversionError(f"model_type {model_type!r}: {_NOT_YET[model_type]}")
    if model_type not in SOURCES:
        raise ConversionError(f"model_type {model_type!r} in {src / 'config.json'} is not a source medrega converts (supported: {sorted(SOURCES)})")
    source = SOURCES[model_type](src, raw)
    max_bytes = parse_size(max_shard_size)
    files = checkpoint_files(src)

    # tokenizer: medrega's tokens; the vocabulary grows only if the tokenizer outgrows it
    tokenizer = _load_tokenizer(src)
    text_config = source.text_config
    source_vocab = text_config.vocab_size
    kwargs = dict(source.config_kwargs)
    codec = dict(region_codec or DEFAULT_CODEC)
    if tokenizer is not None:
        added = MedRegAProcessor.prepare_tokenizer(tokenizer, codec_from_config(codec))
        text_config.vocab_size = max(source_vocab, len(tokenizer))
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if image_id != kwargs.get("image_token_id"):
            logger.info("image placeholder: %s id %d (the source used id %s)", IMAGE_TOKEN, image_id, kwargs.get("image_token_id"))
        kwargs.update(image_token_id=image_id, region_token_ids=added.ids)
    else:
        logger.warning("%s has no tokenizer: writing the model only (no processor; the Assistant needs one)", src)
    try:
        config = MedRegAConfig(text_config=text_config, region_codec=codec, **kwargs)
    except ValueError as err:
        raise ConversionError(f"{source.name} config cannot be expressed: {err}") from err
    if source.check is not None:
        source.check(config)
    config.num_image_tokens = image_token_count(config)
    config.architectures = [MedRegAForConditionalGeneration.__name__]
    config.dtype = _source_dtype(raw)

    with torch.device("meta"):  # keys and shapes only: no memory
        expected = {k: tuple(v.shape) for k, v in MedRegAForConditionalGeneration(config).state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop(HEAD, None)
    plan = _plan(files, source, expected)

    dst.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(dst, max_bytes)
    for path in files:
        with open_shard(path) as shard:
            for key in shard.names():
                new = plan.get((path.name, key))
                if new is None:
                    continue  # a tied head the source also wrote
                tensor = shard.get_tensor(key)
                if new in (EMBED, HEAD) and tensor.shape[0] < expected[new][0]:
                    extra = expected[new][0] - tensor.shape[0]
                    tensor = torch.cat([tensor, tensor.float().mean(0, keepdim=True).to(tensor.dtype).expand(extra, -1)])
                writer.add(new, tensor)
    shards = writer.close()
    config.save_pretrained(dst)
    if tokenizer is not None:
        MedRegAProcessor.from_model_config(config, tokenizer, **({"chat_template": chat_template} if chat_template else {})).save_pretrained(dst)
    logger.info("converted %s (%s) into %s: %d shard(s), %.1f MB", src, source.name, dst, len(shards), writer.total / 1e6)
    return dst


def _plan(files: list[Path], source: Source, expected: dict[str, tuple]) -> dict[tuple[str, str], str]:
    """Check every key and shape of the source (names and headers only); ``{(file, key): new key}``."""
    plan, seen = {}, {}
    for path in files:
        with open_shard(path) as shard:
            for key in shard.names():
                try:
                    new = rename_key(key, source.mapping)
                except KeyError:
                    raise ConversionError(f"unknown checkpoint key {key!r} in {path.name}: no {source.name} rename rule matches it") from None
                if new == HEAD and HEAD not in expected:
                    continue  # tied: the head is the embedding
                if new not in expected:
                    raise ConversionError(f"checkpoint key {key!r} in {path.name} (medrega {new!r}) has no place in the converted model")
                if new in seen:
                    raise ConversionError(f"checkpoint keys {seen[new]!r} and {key!r} both map to {new!r}")
                shape, want = shard.shape(key), expected[new]
                grows = new in (EMBED, HEAD) and len(shape) == 2 and shape[1] == want[1] and shape[0] <= want[0]
                if shape != want and not grows:
                    raise ConversionError(f"checkpoint key {key!r} has shape {list(shape)}, the converted model expects {list(want)} for {new!r}")
                seen[new] = key
                plan[(path.name, key)] = new
    missing = sorted(set(expected) - set(seen))
    if missing:
        raise ConversionError(f"the checkpoint lacks {len(missing)} key(s) the model needs (medrega names): {missing[:8]}")
    return plan
