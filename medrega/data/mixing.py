"""``MixedDataset``: several datasets mixed by repeat factors, reproducible per seed and epoch.

A factor ``r`` takes every sample ``floor(r)`` times plus a seeded ``r - floor(r)`` fraction of the
samples drawn without replacement: ``0.5`` is a seeded half, ``2.3`` is two full passes plus 30 %.
The fractional draw changes with the epoch (``set_epoch``) and is the same for the same
``(seed, epoch)``, so the mix a resumed run sees is the one the interrupted run saw. The index maps
are numpy arrays (no per-sample Python objects) and the mix is in dataset order: shuffling is the
sampler's job (see :class:`medrega.data.sampling.LengthGroupedBatchSampler`).

With ``persistent_workers=True`` a DataLoader keeps copies made before ``set_epoch``; call it before
the loader starts iterating an epoch, or use non-persistent workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["MixedDataset"]


class MixedDataset:
    """Concatenate datasets with per-dataset repeat factors.

    Args:
        parts: ``(dataset, repeat)`` pairs; ``repeat`` is a non-negative float.
        seed: seeds the fractional draws.
    """

    def __init__(self, parts: Sequence[tuple[object, float]], seed: int = 0):
        if not parts:
            raise ValueError("MixedDataset needs at least one (dataset, repeat) pair")
        for k, (dataset, repeat) in enumerate(parts):
            if not (isinstance(repeat, (int, float)) and math.isfinite(repeat) and repeat >= 0):
                raise ValueError(f"part {k}: repeat must be a finite number >= 0, got {repeat!r}")
            if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
                raise TypeError(f"part {k}: expected a map-style dataset, got {type(dataset).__name__}")
        self.datasets = [d for d, _ in parts]
        self.repeats = [float(r) for _, r in parts]
        self.seed = int(seed)
        self.epoch = 0
        self.dataset_ids, self.sample_ids = self._build()
        if not len(self.sample_ids):
            raise ValueError("the mix is empty: every part has zero samples or a repeat of 0")

    def _build(self) -> tuple[np.ndarray, np.ndarray]:
        ids, samples = [], []
        for k, (dataset, repeat) in enumerate(zip(self.datasets, self.repeats)):
            n = len(dataset)
            whole = math.floor(repeat)
            extra = round((repeat - whole) * n)
            rng = np.random.default_rng([self.seed, self.epoch, k])
            # (whole * n,) full passes then (extra,) seeded distinct samples
            picked = np.concatenate([np.tile(np.arange(n, dtype=np.int64), whole), np.sort(rng.choice(n, extra, replace=False))])
            samples.append(picked)
            ids.append(np.full(picked.size, k, dtype=np.int32))
        return np.concatenate(ids), np.concatenate(samples)

    def set_epoch(self, epoch: int) -> None:
        """Redraw the fractional parts for ``epoch`` (the length does not change)."""
        self.epoch = int(epoch)
        self.dataset_ids, self.sample_ids = self._build()

    def __len__(self) -> int:
        return int(self.sample_ids.size)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a mix of {len(self)} samples")
        return self.datasets[int(self.dataset_ids[index])][int(self.sample_ids[index])]

    def gather(self, per_dataset: Sequence[np.ndarray]) -> np.ndarray:
        """Align per-dataset arrays (e.g. token lengths) with the mix: ``out[i]`` belongs to sample ``i``.

        Args:
            per_dataset: one array per part, each as long as its dataset.
        """
        if len(per_dataset) != len(self.datasets):
            raise ValueError(f"{len(per_dataset)} arrays for {len(self.datasets)} datasets")
        arrays = [np.asarray(a) for a in per_dataset]
        for k, (a, d) in enumerate(zip(arrays, self.datasets)):
            if len(a) != len(d):
                raise ValueError(f"array {k} has {len(a)} entries but dataset {k} has {len(d)} samples")
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])])
        return np.concatenate(arrays)[offsets[self.dataset_ids] + self.sample_ids]

    def counts(self) -> list[int]:
        """How many samples each part contributes to the mix."""
        return np.bincount(self.dataset_ids, minlength=len(self.datasets)).tolist()
