"""One generation path: conversations + images -> a batched, optionally box-constrained ``generate``
-> :class:`~medrega.processing.Decoded` answers (text, and groundings in original-image pixels).

The :class:`~medrega.inference.Assistant`, ``medrega eval`` (:func:`medrega.evaluation.predict`), the
demo and the CLI all generate through :func:`generate_answers`, so they stop, pad and constrain alike:

* prompts are rendered with the processor's chat template and left-padded into one batch;
* generation stops at ``<|im_end|>`` or the tokenizer's eos; greedy unless ``generate_kwargs`` say otherwise;
* ``constrained=True`` appends :class:`BoxConstraintLogitsProcessor` after the caller's processors.
  A model whose codec writes text boxes cannot be constrained: it decodes unconstrained (logged once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from transformers import LogitsProcessorList

from medrega.inference.constrained import BoxConstraintLogitsProcessor

__all__ = ["generate_answers"]

logger = logging.getLogger(__name__)


def _stop_and_pad_ids(processor) -> tuple[list[int], int]:
    """``(eos ids, pad id)`` for ``generate``: ``<|im_end|>`` and the tokenizer's eos; pad falls back to eos."""
    tok = processor.tokenizer
    eos = [i for i in (processor.im_end_id, tok.eos_token_id) if i is not None]
    return eos, tok.pad_token_id if tok.pad_token_id is not None else eos[0]


def generate_answers(
    model,
    processor,
    conversations: Sequence[Sequence],
    images: Sequence[Sequence],
    *,
    max_new_tokens: int = 256,
    constrained: bool = False,
    streamer=None,
    generate_kwargs: dict | None = None,
) -> list:
    """Generate the next assistant turn of each conversation, in one batch.

    Args:
        model: a :class:`~medrega.MedRegAForConditionalGeneration` (on its device, in eval mode).
        processor: its :class:`~medrega.MedRegAProcessor`.
        conversations: per sample, the turns so far (dicts or :class:`~medrega.data.records.Turn`),
            ending with a user turn; ``<image>`` placeholders in the order of ``images``.
        images: per sample, its PIL images.
        max_new_tokens: generation budget per answer.
        constrained: only well-formed boxes inside ``<box>`` (loc-token codecs).
        streamer: a transformers streamer (batch of one).
        generate_kwargs: more ``model.generate`` options; a ``logits_processor`` list runs before the constraint.

    Returns:
        One :class:`~medrega.processing.Decoded` per sample.
    """
    extra = dict(generate_kwargs or {})
    prompts = [processor.render(list(turns), add_generation_prompt=True) for turns in conversations]
    batch = processor(text=prompts, images=[list(ims) for ims in images], return_tensors="pt", padding_side="left")
    device = next(model.parameters()).device
    inputs = batch.to(device=device, dtype=model.dtype)  # casts pixel_values only
    length = inputs["input_ids"].shape[1]
    processors = LogitsProcessorList(extra.pop("logits_processor", None) or [])
    if constrained and not BoxConstraintLogitsProcessor.supports(processor.codec):
        logger.info("constrained box decoding needs the loc-token codec; this model writes %s boxes, decoded unconstrained", type(processor.codec).__name__)
        constrained = False
    if constrained:
        n_images = [len(ims) for ims in images]
        processors.append(BoxConstraintLogitsProcessor.from_processor(processor, n_images=n_images, max_length=length + max_new_tokens))
    eos, pad = _stop_and_pad_ids(processor)
    options = {"max_new_tokens": int(max_new_tokens), "do_sample": False, "eos_token_id": eos, "pad_token_id": pad, **extra}
    with torch.inference_mode():
        output = model.generate(**inputs, logits_processor=processors, streamer=streamer, **options)
    return processor.post_process(output[:, length:].cpu(), batch.image_sizes)  # (B, new tokens)
