"""Attention for packed rows that never computes a masked block: causal SDPA over each packed sample.

transformers gives packed rows (``position_ids`` restarting inside a row, no attention mask) a dense
block-diagonal mask; on the CPU, and on a GPU without a varlen flash kernel, SDPA then computes every
``T x T`` block of a long row and masks most of them away. Here each sample of a row (a run of
``position_ids`` that grows by one) gets its own causal SDPA call, so a packed row costs what its samples
cost alone. Batches with a padding mask, and decoding with a KV cache, take transformers' SDPA unchanged.

:func:`use_segment_attention_` switches a model to it (``attn_implementation="medrega_segments"``).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, find_packed_sequence_indices, sdpa_mask

__all__ = ["SEGMENT_ATTENTION", "segment_attention_forward", "segment_bounds", "use_segment_attention_"]

SEGMENT_ATTENTION = "medrega_segments"


def segment_bounds(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the ``(start, end)`` column ranges of its packed samples, as transformers' block mask
    draws them (:func:`transformers.masking_utils.find_packed_sequence_indices`)."""
    rows, width = position_ids.shape
    sequence_ids = find_packed_sequence_indices(position_ids)
    if sequence_ids is None:  # one sample per row
        return [[(0, width)] for _ in range(rows)]
    bounds = []
    for row in sequence_ids.cpu():
        ends = torch.unique_consecutive(row, return_counts=True)[1].cumsum(0).tolist()
        bounds.append(list(zip([0, *ends[:-1]], ends, strict=True)))
    return bounds


def segment_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, position_ids=None, **kwargs):
    """transformers' attention-interface signature; ``query`` ``(B, H, T, D)``, returns ``((B, T, H, D), None)``."""
    same_length = query.shape[2] == key.shape[2]
    if attention_mask is not None or position_ids is None or not same_length or query.shape[2] == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    rows = []
    for b, segments in enumerate(segment_bounds(position_ids.expand(query.shape[0], -1))):
        parts = [
            sdpa_attention_forward(module, query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e], None, dropout=dropout, scaling=scaling, is_causal=True)[0]
            for s, e in segments
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
    return (rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)), None


def _segment_mask(*args, attention_mask=None, **kwargs):
    """No mask where there is no padding (each segment is causal on its own); SDPA's mask otherwise."""
    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


AttentionInterface.register(SEGMENT_ATTENTION, segment_attention_forward)
AttentionMaskInterface.register(SEGMENT_ATTENTION, _segment_mask)


def use_segment_attention_(model) -> None:
    """Switch the language model of ``model`` (a MedRegA model, or a transformers causal LM) to segment
    attention, in place; a vision tower keeps its own attention."""
    getattr(model, "language_model", model).set_attn_implementation(SEGMENT_ATTENTION)
