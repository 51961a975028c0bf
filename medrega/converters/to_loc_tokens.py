"""Move a text-box model directory (e.g. a converted MedRegA, boxes written as ``[[x1, y1, x2, y2]]`` on
0..999) onto medrega's loc-token codec (``<loc_0>`` ... ``<loc_{bins-1}>``, one token per coordinate) for
further fine-tuning.

:func:`to_loc_tokens` loads the directory, adds the codec's tokens to the tokenizer, grows the input
embeddings and the head to the new vocabulary, starts the new rows with one of :data:`INITS`, and writes a
medrega model directory whose processor (and model config) carries the loc-token codec;
``medrega.Assistant.from_pretrained(dst)`` and medrega's trainer load it.

Initialisations of the ``<loc_k>`` rows (input embeddings and, when untied, the head alike):

* ``"mean"``: the mean of the existing rows (what ``medrega.convert`` does for any token it adds).
* ``"digits"``: the mean of the rows of the tokens of the decimal string the text codec wrote for the same
  coordinate: bin ``k`` covers ``[k / bins, (k + 1) / bins)``, its centre ``(k + 0.5) / bins`` was written
  ``round(centre * scale)`` (``scale``: the source codec's, 999 for MedRegA), e.g. ``<loc_421>`` starts at
  the mean of the rows of the tokens of ``"421"``. The model's knowledge of coordinates as numbers carries
  over.
* ``"ordinal"``: the smooth sinusoidal code of the bin used by medrega's randomly initialised presets
  (:func:`medrega.presets.ordinal_init_`): neighbouring bins start similar, nothing is taken from the model.

Other tokens the codec adds (``<img_k>`` tags, ``<image>``, when missing) start at the mean.

**Training data needs no conversion.** Records (:mod:`medrega.data.records`) keep their boxes as text on
``0..box_scale`` relative to the original image, and the processor rewrites region markup into the model's
codec when it encodes a record (:meth:`~medrega.MedRegAProcessor.encode_record`). Only the processor's codec
changes: the same JSONL files train the converted model, and their boxes reach it as loc tokens.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from medrega.converters import ConversionError

__all__ = ["to_loc_tokens", "loc_digit_strings", "INITS"]

logger = logging.getLogger(__name__)

INITS = ("mean", "digits", "ordinal")


def loc_digit_strings(bins: int, scale: int) -> list[str]:
    """The decimal string a ``TextBoxCodec(scale)`` writes for the centre of each of ``bins`` loc bins."""
    return [str(min(max(round((k + 0.5) / bins * scale), 0), scale)) for k in range(bins)]


@torch.no_grad()
def _digit_init_rows(weight: torch.Tensor, rows: list[int], sources: list[list[int]]) -> None:
    """Set each ``weight[rows[i]]`` to the mean of ``weight[sources[i]]``."""
    values = torch.stack([weight[torch.tensor(ids)].float().mean(0) for ids in sources])
    weight[torch.tensor(rows)] = values.to(weight.dtype)


def to_loc_tokens(src: str | Path, dst: str | Path, *, init: str = "mean", bins: int = 1000, max_shard_size: int | str = "5GB") -> Path:
    """Write ``dst``: the text-box model directory ``src`` moved onto the loc-token codec.

    Args:
        src: a medrega model directory (model + processor) whose codec writes text boxes (``medrega.convert``
            of a MedRegA / InternVL-Chat / LLaVA checkpoint, or any text-codec medrega model).
        dst: the output directory (created; must be empty if it exists).
        init: how the loc-token rows start, one of :data:`INITS` (see the module docstring).
        bins: loc bins per axis (``LocTokenCodec(bins)``).
        max_shard_size: largest output safetensors shard.

    Returns:
        ``dst``. Its ``config.region_codec`` and processor are ``{"type": "loc", "bins": bins}``; the new tokens
        join ``config.region_token_ids`` (trainable under LoRA); every other setting (chat template, image
        token and wrapper, ``prompt_profile``) is kept. Records need no conversion (see the module docstring).

    Raises:
        ConversionError: ``src`` does not write text boxes, or ``init`` / ``bins`` is unknown or invalid.
    """
    from medrega.grounding import LocTokenCodec, TextBoxCodec
    from medrega.models import MedRegAForConditionalGeneration
    from medrega.models.parts import mean_init_rows
    from medrega.processing import MedRegAProcessor

    src, dst = Path(src), Path(dst)
    if init not in INITS:
        raise ConversionError(f"init={init!r} is not one of {INITS}")
    if not isinstance(bins, int) or bins < 2:
        raise ConversionError(f"bins={bins!r}: need an int >= 2")
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} is not a model directory (no config.json)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} exists and is not an empty directory")
    processor = MedRegAProcessor.from_pretrained(src)
    source = processor.codec
    if not isinstance(source, TextBoxCodec):
        raise ConversionError(f"{src} writes boxes with the {processor.region_codec} codec, not text boxes: nothing to move onto loc tokens")
    model = MedRegAForConditionalGeneration.from_pretrained(src, dtype="auto")
    tokenizer = processor.tokenizer
    codec = LocTokenCodec(bins, max_images=source.max_images)

    old_vocab = tokenizer.get_vocab()
    old_rows = model.get_input_embeddings().weight.shape[0]
    reference = min(len(tokenizer), old_rows)
    digit_ids = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in loc_digit_strings(bins, source.scale)] if init == "digits" else None
    added = codec.add_to_tokenizer(tokenizer)
    new_ids = sorted({i for t, i in zip(added.tokens, added.ids, strict=True) if t not in old_vocab})
    loc_ids = codec.loc_token_ids(tokenizer)
    others = [i for i in new_ids if i not in set(loc_ids)]
    rows = max(old_rows, len(tokenizer))
    if rows > old_rows:
        model.resize_token_embeddings(rows, mean_resizing=False)
    model.config.text_config.vocab_size = rows

    tied = bool(model.config.tie_word_embeddings)
    for embedding in [model.get_input_embeddings()] + ([] if tied else [model.get_output_embeddings()]):
        mean_init_rows(embedding, others + (loc_ids if init == "mean" else []), reference)
        if init == "digits":
            _digit_init_rows(embedding.weight, loc_ids, digit_ids)
    if init == "ordinal":
        from medrega.presets import ordinal_init_

        ordinal_init_(model, loc_ids)

    model.config.region_codec = codec.to_config()
    model.config.region_token_ids = sorted({*(model.config.region_token_ids or []), *added.ids})
    out = MedRegAProcessor(
        processor.image_processor,
        tokenizer,
        chat_template=processor.chat_template,
        num_image_tokens=processor.num_image_tokens,
        region_codec=codec.to_config(),
        max_length=processor.max_length,
        image_token=processor.image_token,
        image_wrapper=processor.image_wrapper,
    )
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst, max_shard_size=max_shard_size)
    out.save_pretrained(dst)
    logger.info("moved %s onto %d loc tokens (%s init, %d new rows) into %s", src, bins, init, rows - old_rows, dst)
    return dst
