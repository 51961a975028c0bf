"""Box head: the hidden state at an answer's ``<box>`` reads the image and regresses the box.

A language model writes a box as four loc tokens, each classified into ``bins`` classes from one hidden
state. Trained from scratch, that loss leaves the model on a prior box per structure for hundreds of
steps (README, "Demo": small lesions). The box head is a direct path from the image to the box: the
hidden state at ``<box>`` queries its sample's image tokens (multi-head attention), an MLP on what it read
regresses ``(x1, y1, x2, y2)`` as fractions of the image side, trained with L1 against the answer's own loc tokens
(the language model's loss on them is kept). In generation the four loc tokens after each ``<box>`` are
the head's box, quantised by the codec (:class:`BoxDecoding`), so answers are written and parsed as
without it. It serves samples with exactly one image (multi-image boxes begin with an ``<img_k>`` tag and
stay with the language model).

Off by default (``MedRegAConfig.box_head = None``): the released MedRegA, LLaVA and InternVL layouts have
no box head. ``medrega.presets.build("tiny", box_head=True)`` turns it on.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BoxHead", "BoxDecoding", "answer_boxes", "bin_lookup", "quantise", "BOX_HEAD_DEFAULTS"]

BOX_HEAD_DEFAULTS = {"heads": 4, "loss_weight": 5.0}


class BoxHead(nn.Module):
    """``(K, width)`` query hidden states and ``(K, n, width)`` image tokens -> ``(K, 4)`` boxes in [0, 1]."""

    def __init__(self, width: int, heads: int = 4):
        super().__init__()
        if width % heads:
            raise ValueError(f"box head: width {width} is not divisible by heads={heads}")
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 4))

    def forward(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        k, n, width = tokens.shape
        query = self.query(hidden).view(k, self.heads, -1)
        key, value = self.key(tokens).view(k, n, self.heads, -1), self.value(tokens).view(k, n, self.heads, -1)
        weights = torch.einsum("khd,knhd->khn", query, key).mul(query.shape[-1] ** -0.5).softmax(-1)
        pooled = torch.einsum("khn,knhd->khd", weights, value).reshape(k, width)
        return torch.sigmoid(self.out(pooled))  # the hidden state only steers the attention: a box must come from the image


def answer_boxes(input_ids: torch.Tensor, labels: torch.Tensor, box_token_id: int, bin_of: torch.Tensor, rows_ok: torch.Tensor):
    """The labelled boxes the head learns: ``<box>`` followed by four labelled loc tokens.

    Args:
        input_ids, labels: ``(B, T)``; labels aligned with the ids (``-100`` where unlabelled).
        box_token_id: id of ``<box>``.
        bin_of: ``(vocab,)`` each loc token's bin, -1 for every other token.
        rows_ok: ``(B,)`` rows the head serves (exactly one image).

    Returns:
        ``(rows, cols, bins)``: the ``<box>`` positions and the ``(K, 4)`` bins of their coordinates.
    """
    rows, cols = ((input_ids == box_token_id) & (labels == box_token_id) & rows_ok[:, None]).nonzero(as_tuple=True)
    inside = cols + 4 < input_ids.shape[1]
    rows, cols = rows[inside], cols[inside]
    following = labels[rows[:, None], cols[:, None] + torch.arange(1, 5, device=labels.device)]
    bins = bin_of.to(labels.device)[following.clamp(min=0)].masked_fill(following < 0, -1)
    keep = (bins >= 0).all(-1)
    return rows[keep], cols[keep], bins[keep]


def bin_lookup(loc_token_ids: list[int], vocab_size: int) -> torch.Tensor:
    """``(vocab,)``: the bin of each loc token, -1 for every other token."""
    bin_of = torch.full((vocab_size,), -1, dtype=torch.long)
    bin_of[torch.tensor(loc_token_ids)] = torch.arange(len(loc_token_ids))
    return bin_of


def quantise(boxes: torch.Tensor, bins: int) -> torch.Tensor:
    """``(K, 4)`` boxes in [0, 1] -> ``(K, 4)`` bins, corners ordered (x1 <= x2, y1 <= y2)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    ordered = torch.stack([torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)], -1)
    return (ordered * bins).long().clamp(0, bins - 1)


class BoxDecoding:
    """State of one ``generate`` call: each row's image tokens (kept at prefill) and the loc tokens still
    to emit after the row's last ``<box>``. Greedy search and sampling keep rows in place; a row whose
    input is not the token forced at the step before (beam search reorders rows) raises."""

    def __init__(self, tokens: torch.Tensor, rows_ok: torch.Tensor):
        batch = tokens.shape[0]
        self.tokens, self.rows_ok = tokens, rows_ok  # (B, n, H), (B,)
        self.pending = torch.zeros(batch, 4, dtype=torch.long, device=tokens.device)  # token ids to emit
        self.left = torch.zeros(batch, dtype=torch.long, device=tokens.device)
        self.expected = torch.full((batch,), -1, dtype=torch.long, device=tokens.device)

    def step(self, head: BoxHead, input_ids: torch.Tensor, hidden: torch.Tensor, logits: torch.Tensor, box_token_id: int, loc_ids: torch.Tensor, bin_of: torch.Tensor) -> None:
        """Check the last forced tokens, start a box where a row's input holds a ``<box>`` followed by
        fewer than four loc tokens (a decoding step sees one token, a prefill the whole row) and force the
        next loc token of every open box into ``logits[:, -1]`` (in place)."""
        if input_ids.shape[0] != self.tokens.shape[0]:
            raise ValueError(f"box head decoding: the batch has {input_ids.shape[0]} rows, its prefill had {self.tokens.shape[0]}")
        last = input_ids[:, -1]
        forced_before = self.expected >= 0
        if bool((forced_before & (last != self.expected)).any()):
            raise ValueError("box head decoding supports greedy search and sampling; a row's input is not the loc token the head forced (beam search reorders rows)")
        coordinates_since = torch.zeros_like(last)  # trailing loc tokens of the row (the coordinates written)
        for written in range(min(4, input_ids.shape[1])):
            column = input_ids.shape[1] - 1 - written
            opened = (input_ids[:, column] == box_token_id) & self.rows_ok & (coordinates_since == written) & ~forced_before
            if bool(opened.any()):
                boxes = head(hidden[opened, column].to(self.tokens.dtype), self.tokens[opened])
                self.pending[opened] = loc_ids[quantise(boxes.float(), len(loc_ids))]
                self.left[opened] = 4 - written
            coordinates_since += (coordinates_since == written) & (bin_of[input_ids[:, column]] >= 0)
        active = self.left > 0
        self.expected = torch.full_like(self.expected, -1)
        if bool(active.any()):
            forced = self.pending[active, 4 - self.left[active]]
            row_logits = torch.full_like(logits[active, -1], float("-inf"))
            row_logits[torch.arange(len(forced), device=forced.device), forced] = 0.0
            logits[active, -1] = row_logits
            self.expected[active] = forced
            self.left[active] -= 1
