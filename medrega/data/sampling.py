"""``LengthGroupedBatchSampler``: batches of similar token length, seeded, distributed and resumable.

The order follows Hugging Face's length-grouped sampler: a seeded permutation is cut into megabatches
of ``megabatch_mult * batch_size * world_size`` samples, each megabatch is sorted by length
(longest first), and cut into global batches of ``batch_size * world_size``; rank ``r`` takes the
``r``-th slice of each global batch, so all ranks step through samples of similar length together.
Global batches are then shuffled (seeded), and the one holding the longest sample goes first, so an
out-of-memory error shows at the first step rather than hours later.

Every rank gets the same number of batches: the permutation is padded by wrapping around (as
``DistributedSampler`` does) unless ``drop_last``. Everything is computed with numpy per epoch.

Resume: ``state_dict()`` holds the epoch and the position (batches of this epoch already taken);
``load_state_dict`` makes the next ``__iter__`` continue right after them. A DataLoader prefetches,
so the sampler's own count runs ahead of training: pass the training loop's count of consumed
batches, ``state_dict(position=k)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["LengthGroupedBatchSampler"]


class LengthGroupedBatchSampler:
    """Yield lists of dataset indices, batches grouped by length.

    Args:
        lengths: the token length of every sample, shape ``(N,)``; an estimate that counts image
            placeholder tokens is enough (:meth:`medrega.data.JsonlDataset.token_lengths`).
        batch_size: samples per batch on each rank.
        world_size, rank: the distributed layout (``rank`` in ``0..world_size-1``).
        seed: seeds the permutation and the batch order (combined with the epoch).
        megabatch_mult: megabatch size in global batches.
        drop_last: drop the incomplete last global batch instead of padding it by wrapping around.
        group_by_length: ``False`` gives plain seeded random batches (same interface, no sorting).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        megabatch_mult: int = 50,
        drop_last: bool = False,
        group_by_length: bool = True,
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if batch_size < 1 or world_size < 1 or megabatch_mult < 1:
            raise ValueError(f"batch_size, world_size and megabatch_mult must be >= 1, got {batch_size}, {world_size}, {megabatch_mult}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if self.lengths.size == 0:
            raise ValueError("no samples: lengths is empty")
        if drop_last and self.lengths.size < batch_size * world_size:
            raise ValueError(f"{self.lengths.size} samples cannot fill one global batch of {batch_size * world_size} with drop_last")
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.seed, self.megabatch_mult = int(seed), megabatch_mult
        self.drop_last, self.group_by_length = drop_last, group_by_length
        self.epoch = 0
        self.position = 0
        self._yielded = 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        """Batches per epoch on this rank (the full epoch, whatever the resume position)."""
        n = self.lengths.size
        return n // self.global_batch if self.drop_last else math.ceil(n / self.global_batch)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's permutation; the position goes back to the start of the epoch."""
        self.epoch = int(epoch)
        self.position = 0

    def epoch_batches(self, epoch: int | None = None) -> np.ndarray:
        """All batches of an epoch for this rank, shape ``(len(self), batch_size)``."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        n, g = self.lengths.size, self.global_batch
        total = len(self) * g
        perm = rng.permutation(n)
        if total > n:  # wrap around so every rank gets full batches
            perm = np.concatenate([perm, np.resize(perm, total - n)])
        perm = perm[:total]
        if self.group_by_length:
            mega = g * self.megabatch_mult
            group = np.arange(total) // mega
            order = np.lexsort((-self.lengths[perm], group))  # by megabatch, then longest first
            perm = perm[order]
        batches = perm.reshape(len(self), self.world_size, self.batch_size)  # (global batches, ranks, batch)
        batch_order = rng.permutation(len(self))
        if self.group_by_length:
            longest = int(np.argmax(self.lengths[batches].max(axis=(1, 2))[batch_order]))
            batch_order[[0, longest]] = batch_order[[longest, 0]]
        return batches[batch_order, self.rank]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()
        start = self.position
        self._yielded = start
        for batch in batches[start:]:
            self._yielded += 1
            yield batch.tolist()
        self.position = 0

    def state_dict(self, position: int | None = None) -> dict:
        """What resumes the sampler: ``{"epoch", "position", "seed", "num_samples", "batch_size", "world_size"}``.

        Args:
            position: batches of this epoch the training loop consumed (default: those yielded so far).
        """
        return {
            "epoch": self.epoch,
            "position": self._yielded if position is None else int(position),
            "seed": self.seed,
            "num_samples": int(self.lengths.size),
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; raises when the data or the layout changed since it was saved."""
        mine = {"seed": self.seed, "num_samples": int(self.lengths.size), "batch_size": self.batch_size, "world_size": self.world_size}
        changed = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: saved {a} now {b}" for k, (a, b) in changed.items())
            raise ValueError(f"cannot resume the sampler exactly, the setup changed ({detail})")
        if not 0 <= int(state["position"]) <= len(self):
            raise ValueError(f"position {state['position']} outside 0..{len(self)}")
        self.epoch = int(state["epoch"])
        self.position = self._yielded = int(state["position"])
