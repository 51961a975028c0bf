"""Batching processed samples: padding (``pad_collate``) or packing (``pack_samples``).

A processed sample is ``{"input_ids": LongTensor (L,), "labels": LongTensor (L,),
"pixel_values": FloatTensor (n_img, 3, S, S)}`` with ``n_img`` possibly 0. Both collators return the
model inputs plus three counters the training loop reports, which are not model inputs:
``num_samples``, ``num_tokens`` (real tokens) and ``num_padding_tokens``.

Packing puts whole samples side by side in rows of at most ``max_length`` tokens; a sample is never
split, so an image's placeholder run never straddles two rows. ``position_ids`` restart at 0 at every
sample and ``attention_mask`` is ``None``: transformers (v5) then builds a block-diagonal causal mask
from the position ids (``find_packed_sequence_indices`` in ``transformers.masking_utils``), so no
token attends across samples. The model must run without a KV cache (``use_cache=False``) for that
path. Padding at the end of a row gets its own positions from 0, so it forms a separate block.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

__all__ = ["pad_collate", "pack_samples", "plan_packing", "IGNORE_INDEX", "PACKING_STRATEGIES"]

IGNORE_INDEX = -100
PACKING_STRATEGIES = ("ffd", "sequential")


def _check(samples: Sequence[dict]) -> tuple[torch.Tensor, int | None]:
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    lengths = []
    side = None
    for i, s in enumerate(samples):
        ids, labels = s["input_ids"], s["labels"]
        if ids.dim() != 1 or labels.shape != ids.shape:
            raise ValueError(f"sample {i}: input_ids and labels must be 1-D of one length, got {tuple(ids.shape)} and {tuple(labels.shape)}")
        if ids.numel() == 0:
            raise ValueError(f"sample {i}: empty input_ids")
        pixels = s.get("pixel_values")
        if pixels is not None and pixels.numel():
            if pixels.dim() != 4 or pixels.shape[1] != 3 or pixels.shape[2] != pixels.shape[3]:
                raise ValueError(f"sample {i}: pixel_values must be (n_img, 3, S, S), got {tuple(pixels.shape)}")
            if side is not None and pixels.shape[2] != side:
                raise ValueError(f"sample {i}: image side {pixels.shape[2]} differs from {side} of earlier samples")
            side = int(pixels.shape[2])
        lengths.append(ids.numel())
    return torch.tensor(lengths, dtype=torch.long), side


def _pixels(samples: Sequence[dict], order: Sequence[int], side: int | None) -> torch.Tensor:
    parts = [samples[i]["pixel_values"] for i in order if samples[i].get("pixel_values") is not None and samples[i]["pixel_values"].numel()]
    if parts:
        return torch.cat(parts)  # (sum n_img, 3, S, S)
    return torch.zeros(0, 3, side or 0, side or 0)


def pad_collate(samples: Sequence[dict], pad_token_id: int, *, padding_side: str = "right") -> dict:
    """Pad samples to the longest one.

    Args:
        samples: processed samples (see the module docstring).
        pad_token_id: id written into padded ``input_ids``.
        padding_side: ``"right"`` (training) or ``"left"``.

    Returns:
        ``input_ids (B, Lmax)``, ``attention_mask (B, Lmax)``, ``labels (B, Lmax)`` (-100 on padding),
        ``pixel_values (sum n_img, 3, S, S)`` in sample order, and the counters.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    lengths, side = _check(samples)
    ids = [s["input_ids"] for s in samples]
    labels = [s["labels"] for s in samples]
    input_ids = pad_sequence(ids, batch_first=True, padding_value=pad_token_id, padding_side=padding_side)
    label_ids = pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX, padding_side=padding_side)
    width = input_ids.shape[1]
    cols = torch.arange(width)
    if padding_side == "right":
        attention = (cols[None, :] < lengths[:, None]).long()
    else:
        attention = (cols[None, :] >= (width - lengths)[:, None]).long()
    total = int(lengths.sum())
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": label_ids,
        "pixel_values": _pixels(samples, range(len(samples)), side),
        "num_samples": len(samples),
        "num_tokens": total,
        "num_padding_tokens": input_ids.numel() - total,
    }


def plan_packing(lengths: Sequence[int], max_length: int, strategy: str = "ffd") -> list[list[int]]:
    """Assign samples to rows of at most ``max_length`` tokens without splitting any sample.

    Args:
        lengths: tokens per sample.
        max_length: row capacity.
        strategy: ``"ffd"`` (first-fit decreasing: fewest rows, order changes) or ``"sequential"``
            (next-fit in the given order: a new row when the next sample does not fit).

    Returns:
        Sample indices per row, in placement order.
    """
    if strategy not in PACKING_STRATEGIES:
        raise ValueError(f"strategy must be one of {PACKING_STRATEGIES}, got {strategy!r}")
    lengths = np.asarray(lengths, dtype=np.int64)
    too_long = np.flatnonzero(lengths > max_length)
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(f"sample {i} has {lengths[i]} tokens, more than max_length={max_length}; samples are never split")
    rows: list[list[int]] = []
    if strategy == "sequential":
        fill = max_length + 1
        for i, n in enumerate(lengths.tolist()):
            if fill + n > max_length:
                rows.append([])
                fill = 0
            rows[-1].append(i)
            fill += n
        return rows
    remaining = np.empty(0, dtype=np.int64)
    for i in np.argsort(-lengths, kind="stable").tolist():
        fits = np.flatnonzero(remaining >= lengths[i])
        if fits.size:
            row = int(fits[0])
        else:
            row = len(rows)
            rows.append([])
            remaining = np.append(remaining, max_length)
        rows[row].append(i)
        remaining[row] -= lengths[i]
    return rows


def pack_samples(samples: Sequence[dict], max_length: int, *, pad_token_id: int = 0, strategy: str = "ffd") -> dict:
    """Pack whole samples into rows of at most ``max_length`` tokens.

    Args:
        samples: processed samples (see the module docstring).
        max_length: row capacity; a longer sample raises ``ValueError`` (it is never split).
        pad_token_id: id written after the last sample of a row.
        strategy: see :func:`plan_packing`.

    Returns:
        ``input_ids (R, L)``, ``labels (R, L)`` (-100 on padding), ``position_ids (R, L)`` restarting
        at every sample, ``attention_mask=None``, ``pixel_values`` in placement order (row by row),
        ``rows`` (sample indices per row) and the counters. ``L`` is the fullest row's length.
    """
    lengths, side = _check(samples)
    rows = plan_packing(lengths.tolist(), max_length, strategy)
    order = [i for row in rows for i in row]
    order_t = torch.tensor(order, dtype=torch.long)
    lens = lengths[order_t]  # (N,) in placement order
    row_of_sample = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor([len(r) for r in rows]))
    row_fill = torch.zeros(len(rows), dtype=torch.long).index_add_(0, row_of_sample, lens)
    # column where each sample starts inside its row: exclusive cumsum, restarted per row
    ends = torch.cumsum(lens, 0)
    starts = ends - lens
    row_start = torch.cumsum(row_fill, 0) - row_fill
    col_start = starts - row_start[row_of_sample]
    total = int(lens.sum())
    width = int(row_fill.max())
    # per token: (row, column, position inside its sample)
    tok_sample_start = torch.repeat_interleave(starts, lens)
    within = torch.arange(total) - tok_sample_start
    tok_row = torch.repeat_interleave(row_of_sample, lens)
    tok_col = torch.repeat_interleave(col_start, lens) + within
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    input_ids[tok_row, tok_col] = torch.cat([samples[i]["input_ids"] for i in order])
    labels[tok_row, tok_col] = torch.cat([samples[i]["labels"] for i in order])
    position_ids = (torch.arange(width)[None, :] - row_fill[:, None]).clamp_min(0)  # padding: its own block from 0
    position_ids[tok_row, tok_col] = within
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "attention_mask": None,
        "pixel_values": _pixels(samples, order, side),
        "rows": rows,
        "num_samples": len(samples),
        "num_tokens": total,
        "num_padding_tokens": input_ids.numel() - total,
    }
