"""``medrega.convert(src, dst)``: turn a published checkpoint directory into a medrega model directory.

Design choices:

* The source is detected from ``config.json`` ``model_type``; each source (``llava``, ``internvl``,
  ``internvl_chat``, the original InternVL-Chat remote-code layout of MedRegA's release) is one
  small module that translates the config, names its key mapping (:mod:`medrega.models.conversion`) and
  refuses what medrega cannot express, naming the setting.
* Weights stream one input shard at a time (:mod:`medrega.converters.shards`), keep their dtype, and are
  written as size-capped safetensors shards with an index. The model is never built, except on the meta
  device (no memory) to know the keys and shapes it expects.
* Every key and shape is checked before anything is written: an unknown key, a missing one or a wrong
  shape refuses the whole conversion, so half a model is never written.
* A source may split one key into row blocks (InternVL-Chat's fused ``qkv``) and transform a tensor once
  (position embeddings resized to ``force_image_size``); the plan checks the shapes these produce.
* The tokenizer (when the source has one) gets medrega's chat and region tokens
  (:meth:`~medrega.MedRegAProcessor.prepare_tokenizer`, the text-box codec by default); when that grows it
  past the model's vocabulary, the embedding and head rows it adds start at the mean of the existing ones.
  The image placeholder is the tokenizer's ``<image>`` (its embedding row is always replaced by image
  features, so a new id changes no logits). A source with its own conventions (``internvl_chat``) keeps its
  tokenizer unchanged instead: the tokens it needs must be there, the image-context id comes from it (or,
  without tokenizer files, from ``image_token_id=``), and its processor settings (image token and wrapper,
  chat template) are written into ``processor_config.json``.
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

__all__ = ["convert", "to_loc_tokens", "ConversionError", "SOURCES"]

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
        splits: ``{regex on the renamed key: replacements}``: keys cut into equal row blocks
            (:func:`~medrega.models.conversion.split_key`).
        transforms: ``{medrega key: fn}`` applied once to that tensor (its shape is checked after ``fn``).
        keep_tokenizer: the tokens the source's tokenizer must already hold; set, the tokenizer is kept as
            it is (no medrega tokens). ``None``: medrega's tokens are added.
        processor_kwargs: ``MedRegAProcessor`` settings of the source (``image_token``, ``image_wrapper``,
            ``chat_template``, ``resize_mode``).
        template_error: why the source's chat template cannot be carried (refused unless ``chat_template=``).
        default_codec: the region codec when ``region_codec`` is not given.
    """

    name: str
    text_config: object
    config_kwargs: dict
    mapping: dict[str, str]
    check: Callable | None = None
    splits: dict[str, tuple[str, ...]] | None = None
    transforms: dict[str, Callable] | None = None
    keep_tokenizer: tuple[str, ...] | None = None
    processor_kwargs: dict | None = None
    template_error: str | None = None
    default_codec: dict | None = None


def _llava(src: Path, raw: dict) -> Source:
    from medrega.converters.llava import llava_source

    return llava_source(src, raw)


def _internvl(src: Path, raw: dict) -> Source:
    from medrega.converters.internvl import internvl_source

    return internvl_source(src, raw)


def _internvl_chat(src: Path, raw: dict) -> Source:
    from medrega.converters.internvl_chat import internvl_chat_source

    return internvl_chat_source(src, raw)


SOURCES: dict[str, Callable[[Path, dict], Source]] = {"llava": _llava, "internvl": _internvl, "internvl_chat": _internvl_chat}


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


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    max_shard_size: int | str = "5GB",
    region_codec: dict | None = None,
    chat_template: str | None = None,
    image_token_id: int | None = None,
) -> Path:
    """Convert a transformers LLaVA or InternVL checkpoint directory, or an original InternVL-Chat one
    (MedRegA's release), into a medrega model directory.

    ``dst`` then loads with ``AutoModelForImageTextToText.from_pretrained(dst)`` (after ``import medrega``) and,
    when the source has a tokenizer, with ``medrega.Assistant.from_pretrained(dst)``.

    Args:
        src: the source directory (``config.json``, weights, optionally a tokenizer).
        dst: the output directory (created; must be empty if it exists).
        max_shard_size: largest output shard (bytes or e.g. ``"5GB"``).
        region_codec: the converted model's box codec (default: text boxes on 0..1000, which adds only the
            ``<ref>``/``<box>`` tags; ``{"type": "loc", "bins": 1000}`` adds 1000 loc tokens; InternVL-Chat:
            text boxes on 0..999, MedRegA's scale, and no codec that needs new tokens).
        chat_template: the processor's chat template (default: medrega's ChatML; InternVL-Chat: ``Hermes-2``
            as MedRegA renders it).
        image_token_id: the image-context token id for a source without tokenizer files (InternVL-Chat:
            ``<IMG_CONTEXT>``'s id); with a tokenizer it must agree with it.

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
    codec = dict(region_codec or source.default_codec or DEFAULT_CODEC)
    processor_kwargs = dict(source.processor_kwargs or {})
    if chat_template:
        processor_kwargs["chat_template"] = chat_template
    elif source.template_error and tokenizer is not None:
        raise ConversionError(source.template_error)
    if source.keep_tokenizer is not None:
        kwargs.update(_kept_tokenizer_ids(source, tokenizer, codec, image_token_id, kwargs.get("image_token_id"), source_vocab, src))
    elif tokenizer is not None:
        added = MedRegAProcessor.prepare_tokenizer(tokenizer, codec_from_config(codec))
        text_config.vocab_size = max(source_vocab, len(tokenizer))
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if image_id != kwargs.get("image_token_id"):
            logger.info("image placeholder: %s id %d (the source used id %s)", IMAGE_TOKEN, image_id, kwargs.get("image_token_id"))
        kwargs.update(image_token_id=image_id, region_token_ids=added.ids)
    else:
        logger.warning("%s has no tokenizer: writing the model only (no processor; the Assistant needs one)", src)
    if image_token_id is not None and kwargs.get("image_token_id") != image_token_id:
        if tokenizer is not None:
            raise ConversionError(f"image_token_id={image_token_id} disagrees with the tokenizer's id {kwargs.get('image_token_id')}")
        kwargs["image_token_id"] = image_token_id
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
        meta_model = MedRegAForConditionalGeneration(config)
        expected = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    del meta_model
    if config.tie_word_embeddings:
        expected.pop(HEAD, None)
    plan = _plan(files, source, expected)

    dst.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(dst, max_bytes)
    for path in files:
        with open_shard(path) as shard:
            for key in shard.names():
                targets = plan.get((path.name, key))
                if targets is None:
                    continue  # a tied head the source also wrote
                tensor = shard.get_tensor(key)
                blocks = tensor.chunk(len(targets)) if len(targets) > 1 else (tensor,)
                for new, block in zip(targets, blocks, strict=True):
                    if new in (source.transforms or {}):
                        block = source.transforms[new](block)
                    if new in (EMBED, HEAD) and block.shape[0] < expected[new][0]:
                        extra = expected[new][0] - block.shape[0]
                        block = torch.cat([block, block.float().mean(0, keepdim=True).to(block.dtype).expand(extra, -1)])
                    writer.add(new, block)
    shards = writer.close()
    config.save_pretrained(dst)
    if tokenizer is not None:
        MedRegAProcessor.from_model_config(config, tokenizer, **processor_kwargs).save_pretrained(dst)
    logger.info("converted %s (%s) into %s: %d shard(s), %.1f MB", src, source.name, dst, len(shards), writer.total / 1e6)
    return dst


def _kept_tokenizer_ids(source: Source, tokenizer, codec: dict, given: int | None, configured: int | None, vocab: int, src: Path) -> dict:
    """A source whose tokenizer is kept: check it holds the tokens it needs and is not larger than the
    embeddings; the ``MedRegAConfig`` arguments it decides (the image-context id)."""
    from medrega.grounding import codec_from_config

    if codec.get("type") != "text":
        raise ConversionError(f"region_codec type {codec.get('type')!r} adds tokens to the tokenizer; a {source.name} conversion keeps it unchanged (text boxes only)")
    codec_from_config(codec)  # a bad codec fails here, before anything is written
    if tokenizer is None:
        if given is None and configured is None:
            raise ConversionError(f"{src} has no tokenizer files: give image_token_id= (the id of {source.processor_kwargs.get('image_token')}) to convert the model alone")
        return {}
    vocab_now = tokenizer.get_vocab()
    missing = [t for t in source.keep_tokenizer if t not in vocab_now]
    if missing:
        raise ConversionError(f"the {source.name} tokenizer lacks {missing}; a {source.name} conversion keeps the tokenizer unchanged, so they must be there")
    if len(tokenizer) > vocab:
        raise ConversionError(f"the tokenizer has {len(tokenizer)} tokens but the language model's vocab_size is {vocab}")
    image_token = source.processor_kwargs["image_token"]
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    if configured is not None and configured != image_id:
        raise ConversionError(f"config.json image-context id {configured} disagrees with the tokenizer's {image_token} id {image_id}")
    return {"image_token_id": image_id}


def _plan(files: list[Path], source: Source, expected: dict[str, tuple]) -> dict[tuple[str, str], list[str]]:
    """Check every key and shape of the source (names and headers only); ``{(file, key): new keys}`` (one per
    row block of a split key)."""
    from medrega.models.conversion import split_key

    plan, seen = {}, {}
    transforms = source.transforms or {}
    for path in files:
        with open_shard(path) as shard:
            for key in shard.names():
                try:
                    renamed = rename_key(key, source.mapping)
                except KeyError:
                    raise ConversionError(f"unknown checkpoint key {key!r} in {path.name}: no {source.name} rename rule matches it") from None
                if renamed == HEAD and HEAD not in expected:
                    continue  # tied: the head is the embedding
                shape = shard.shape(key)
                targets = split_key(renamed, source.splits or {}) or [renamed]
                if len(targets) > 1:
                    if not shape or shape[0] % len(targets):
                        raise ConversionError(f"checkpoint key {key!r} has shape {list(shape)}: its rows do not split into {len(targets)} equal blocks")
                    shape = (shape[0] // len(targets), *shape[1:])
                for new in targets:
                    if new not in expected:
                        raise ConversionError(f"checkpoint key {key!r} in {path.name} (medrega {new!r}) has no place in the converted model")
                    if new in seen:
                        raise ConversionError(f"checkpoint keys {seen[new]!r} and {key!r} both map to {new!r}")
                    got = tuple(transforms[new](torch.empty(shape, device="meta")).shape) if new in transforms else shape
                    want = expected[new]
                    grows = new in (EMBED, HEAD) and len(got) == 2 and got[1] == want[1] and got[0] <= want[0]
                    if got != want and not grows:
                        raise ConversionError(f"checkpoint key {key!r} has shape {list(shape)}, the converted model expects {list(want)} for {new!r}")
                    seen[new] = key
                plan[(path.name, key)] = targets
    missing = sorted(set(expected) - set(seen))
    if missing:
        raise ConversionError(f"the checkpoint lacks {len(missing)} key(s) the model needs (medrega names): {missing[:8]}")
    return plan


from medrega.converters.to_loc_tokens import to_loc_tokens  # noqa: E402  (needs ConversionError above)
