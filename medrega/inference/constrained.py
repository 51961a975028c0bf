"""Constrained decoding of boxes: inside ``<box>`` the model can only write well-formed boxes.

:class:`BoxConstraintLogitsProcessor` is a transformers ``LogitsProcessor``. After ``<box>``:

* multi-image samples (``n_images >= 2``) first write an image tag ``<img_k>`` with ``k <= n_images``;
  single-image samples write none;
* then loc tokens in groups of four ``x1 y1 x2 y2`` with ``x1 < x2`` and ``y1 < y2``
  (``x1``, ``y1`` in ``0..bins-2``; ``x2`` above ``x1``; ``y2`` above ``y1``);
* after a complete group, only another loc token (a new box) or ``</box>``; after ``max_boxes``
  groups, only ``</box>``.

Outside ``<box>`` nothing is constrained, except that a ``<box>`` which could no longer close within
``max_length`` is not opened. The state of every sequence is read from its token ids at each step
(stateless, so beam reordering is safe): the last ``<box>`` and ``</box>`` positions, the number of
loc tokens since, and the previous-but-one token (the lower bound of ``x2`` and ``y2``). Everything is
tensor work over ``(batch, seq)`` and ``(batch, vocab)``; nothing loops over the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from medrega.grounding import BOX_END, BOX_START, LocTokenCodec

__all__ = ["BoxConstraintLogitsProcessor"]


class BoxConstraintLogitsProcessor(LogitsProcessor):
    """Allow only well-formed ``<box>`` bodies of loc tokens during generation.

    Args:
        box_start_id, box_end_id: ids of ``<box>`` and ``</box>``.
        loc_ids: ids of ``<loc_0> .. <loc_{bins-1}>``, in bin order.
        image_tag_ids: ids of ``<img_1> .. <img_K>``, in order.
        n_images: images per sequence (an int for all, or one per batch row); 2 or more means every
            box starts with an image tag.
        max_boxes: most boxes inside one ``<box>``.
        max_length: total length (prompt + new tokens) generation stops at; boxes are closed in time.
    """

    def __init__(
        self,
        box_start_id: int,
        box_end_id: int,
        loc_ids: Sequence[int],
        image_tag_ids: Sequence[int] = (),
        n_images: int | Sequence[int] = 1,
        max_boxes: int = 16,
        max_length: int | None = None,
    ):
        if len(loc_ids) < 2:
            raise ValueError(f"need at least 2 loc tokens for x1 < x2, got {len(loc_ids)}")
        if max_boxes < 1:
            raise ValueError(f"max_boxes must be at least 1, got {max_boxes}")
        self.box_start_id, self.box_end_id = int(box_start_id), int(box_end_id)
        self.loc_ids = torch.as_tensor(list(loc_ids), dtype=torch.long)
        self.tag_ids = torch.as_tensor(list(image_tag_ids), dtype=torch.long)
        self.bins = len(loc_ids)
        self.max_boxes = int(max_boxes)
        self.max_length = max_length
        self.n_images = n_images
        size = int(max(self.loc_ids.max(), self.box_start_id, self.box_end_id, *self.tag_ids.tolist())) + 1
        self._bin_of = torch.full((size,), -1, dtype=torch.long)
        self._bin_of[self.loc_ids] = torch.arange(self.bins)

    @staticmethod
    def supports(codec) -> bool:
        """Whether boxes of ``codec`` can be constrained (loc tokens; text boxes are free digits)."""
        return isinstance(codec, LocTokenCodec)

    @classmethod
    def from_processor(cls, processor, n_images: int | Sequence[int] = 1, **kwargs) -> BoxConstraintLogitsProcessor:
        """Build the constraint from a :class:`~medrega.processing.MedRegAProcessor` whose codec is loc tokens.

        Args:
            processor: the model's processor.
            n_images: images per sequence (see the class).
            **kwargs: ``max_boxes``, ``max_length``.
        """
        codec = processor.codec
        if not cls.supports(codec):
            raise TypeError(f"constrained box decoding needs the loc-token codec, the processor uses {type(codec).__name__}")
        tok = processor.tokenizer
        ids = tok.convert_tokens_to_ids([BOX_START, BOX_END, *codec.image_tags(), *codec.loc_tokens()])
        if any(i is None or i == tok.unk_token_id for i in ids):
            raise ValueError("the tokenizer lacks region tokens; call MedRegAProcessor.prepare_tokenizer first")
        n_tags = codec.max_images
        return cls(ids[0], ids[1], ids[2 + n_tags :], ids[2 : 2 + n_tags], n_images=n_images, **kwargs)

    @staticmethod
    def _per_row(values: torch.Tensor, batch: int) -> torch.Tensor:
        """One value per row: a single value for all, or one per sample repeated over its beams / returned sequences."""
        if values.numel() == 1:
            return values.expand(batch)
        if batch % values.numel():
            raise ValueError(f"n_images has {values.numel()} entries but generation runs {batch} rows")
        return values.repeat_interleave(batch // values.numel())  # (B,): sample i owns rows i*k .. i*k+k-1

    def _lookup(self, table: torch.Tensor, ids: torch.Tensor, fill: int) -> torch.Tensor:
        """``table[ids]`` with ``fill`` for ids beyond the table (ordinary text tokens)."""
        known = ids < table.numel()
        return torch.where(known, table[ids.clamp(max=table.numel() - 1)], torch.full_like(ids, fill))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, length = input_ids.shape
        device = scores.device
        if self._bin_of.device != device:
            self._bin_of = self._bin_of.to(device)
            self.loc_ids, self.tag_ids = self.loc_ids.to(device), self.tag_ids.to(device)
        n_images = self._per_row(torch.as_tensor(self.n_images, dtype=torch.long, device=device).flatten(), batch)
        needs_tag = n_images >= 2

        pos = torch.arange(length, device=device).expand(batch, length)
        last_open = torch.where(input_ids == self.box_start_id, pos, -1).amax(1)  # (B,)
        last_close = torch.where(input_ids == self.box_end_id, pos, -1).amax(1)
        inside = last_open > last_close
        room = (self.max_length - length) if self.max_length is not None else None
        if not bool(inside.any()):  # prose everywhere: at most the no-room rule applies
            return self._block_unclosable(scores, inside, needs_tag, room)

        bins = self._lookup(self._bin_of, input_ids, -1)  # (B, T), -1 for non-loc tokens
        count = ((bins >= 0) & (pos > last_open[:, None])).sum(1)  # loc tokens since <box>
        phase = count % 4
        at_tag = inside & needs_tag & (last_open == length - 1)
        prev2 = bins[:, -2] if length >= 2 else torch.full((batch,), -1, dtype=torch.long, device=device)

        # Bounds on the bin of the next loc token: lower <= bin <= upper.
        lower = torch.where(phase >= 2, prev2 + 1, torch.zeros_like(phase))
        upper = torch.where(phase <= 1, torch.full_like(phase, self.bins - 2), torch.full_like(phase, self.bins - 1))
        loc_ok = inside & ~at_tag
        may_close = loc_ok & (phase == 0) & (count > 0)
        if room is not None:  # a new box needs four locs and </box> after it
            loc_ok = loc_ok & ~((phase == 0) & (room < 5))
        loc_ok = loc_ok & ~((phase == 0) & (count >= 4 * self.max_boxes))

        grid = torch.arange(self.bins, device=device)
        allowed_locs = loc_ok[:, None] & (grid >= lower[:, None]) & (grid <= upper[:, None])  # (B, bins)
        allowed = torch.zeros_like(scores, dtype=torch.bool)  # (B, V)
        allowed[:, self.loc_ids] = allowed_locs
        allowed[:, self.box_end_id] = may_close
        if self.tag_ids.numel():
            tag_number = torch.arange(1, self.tag_ids.numel() + 1, device=device)
            allowed[:, self.tag_ids] = at_tag[:, None] & (tag_number[None, :] <= n_images[:, None])

        stuck = inside & ~allowed.any(1)  # a state the rules cannot continue (e.g. a malformed prompt): close
        allowed[:, self.box_end_id] |= stuck
        out = torch.where(inside[:, None], scores.masked_fill(~allowed, float("-inf")), scores)
        return self._block_unclosable(out, inside, needs_tag, room)

    def _block_unclosable(self, scores: torch.Tensor, inside: torch.Tensor, needs_tag: torch.Tensor, room: int | None) -> torch.Tensor:
        """Forbid ``<box>`` where ``<box> [tag] 4 locs </box>`` no longer fits before ``max_length``."""
        if room is None or room >= 7:
            return scores
        scores = scores.clone()
        no_room = ~inside & (room < 6 + needs_tag.long())
        scores[:, self.box_start_id] = scores[:, self.box_start_id].masked_fill(no_room, float("-inf"))
        return scores
