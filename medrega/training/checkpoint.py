"""Atomic, resumable checkpoints.

A checkpoint is written to ``<root>/step_<N>.tmp/`` and renamed to ``<root>/step_<N>/`` only once
every file is on disk (with a ``COMPLETE`` marker); then ``<root>/latest`` is replaced atomically.
A crash at any point leaves ``latest`` naming a checkpoint that loads.

Contents: model and optimizer (plain PyTorch: ``model.safetensors`` + ``optimizer.pt``, read with
``weights_only=True``; DeepSpeed: its own sharded files), the scheduler, the data position and every
process's RNG state, so a resumed run continues exactly.

Trust: ``latest`` is followed only when it names a ``step_<N>`` directory of this root. DeepSpeed's
own resume (``engine.load_checkpoint``) unpickles its shards with ``weights_only=False``: resuming a
DeepSpeed run trusts the checkpoint directory, so resume only from directories you wrote.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

__all__ = ["CheckpointManager", "CheckpointWriteError", "capture_rng", "restore_rng"]

logger = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
_TAG = re.compile(r"step_\d+")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, no permission); the previous one stays valid."""


def capture_rng() -> dict:
    """Python, NumPy and torch RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    return {
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[float(v) if isinstance(v, float) else int(v) for v in np_state[2:]]],
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    internal, version, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])


class CheckpointManager:
    """Write and find checkpoints under ``root``.

    Args:
        root: checkpoint directory.
        keep: how many complete checkpoints to keep (oldest removed first).
        rank, world_size: this process in a distributed run.
        barrier: a callable that synchronises processes (``torch.distributed.barrier``), or ``None``.
    """

    def __init__(self, root: str | Path, keep: int = 2, rank: int = 0, world_size: int = 1, barrier=None):
        self.root = Path(root)
        self.keep = keep
        self.rank = rank
        self.world_size = world_size
        self._barrier = barrier or (lambda: None)

    # -- locating -------------------------------------------------------------------------------
    def latest(self) -> Path | None:
        """The newest complete checkpoint, following ``latest`` (falls back to scanning)."""
        pointer = self.root / "latest"
        if pointer.is_file():
            tag = pointer.read_text(errors="replace").strip()
            if not _TAG.fullmatch(tag):
                logger.warning("%s names %r, not a step_<N> checkpoint of this directory: ignored", pointer, tag[:80])
            elif (self.root / tag / COMPLETE).is_file():
                return self.root / tag
        complete = sorted(self._complete(), key=lambda p: int(p.name.split("_")[1]))
        return complete[-1] if complete else None

    def _complete(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp") and (p / COMPLETE).is_file()]

    # -- writing --------------------------------------------------------------------------------
    def save(self, step: int, write_weights, trainer_state: dict) -> Path:
        """Write checkpoint ``step``.

        Args:
            step: optimizer step.
            write_weights: ``callable(tmp_dir: Path, tag: str)`` that writes model/optimizer/scheduler
                (called on every rank; DeepSpeed writes its shards collectively).
            trainer_state: JSON-able state (data position, step, ...) written by rank 0.
        """
        tag = f"step_{step}"
        tmp = self.root / f"{tag}.tmp"
        final = self.root / tag
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self._barrier()
        try:
            write_weights(tmp, tmp.name)
            torch.save(capture_rng(), tmp / f"rng_rank{self.rank}.pt")
            self._barrier()
            if self.rank == 0:
                (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
                _fsync_tree(tmp)
        except (OSError, RuntimeError) as err:  # torch reports a full disk as "RuntimeError: ... unexpected pos"
            raise self._write_error(tag, tmp, err) from err
        if self.rank == 0:
            (tmp / COMPLETE).write_text(str(step))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            pointer_tmp = self.root / "latest.tmp"
            pointer_tmp.write_text(tag)
            os.replace(pointer_tmp, self.root / "latest")
            self._prune()
        self._barrier()
        return final

    def _write_error(self, tag: str, tmp: Path, err: Exception) -> CheckpointWriteError:
        free = shutil.disk_usage(self.root).free
        previous = self.latest()
        cause = "the disk is full" if free < 64 * 2**20 or "unexpected pos" in str(err) or getattr(err, "errno", None) == 28 else "the write failed"
        return CheckpointWriteError(
            f"checkpoint {tag} could not be written to {tmp}: {cause} ({free / 2**20:.0f} MiB free there; {type(err).__name__}: {err}); "
            f"the previous checkpoint {previous or '(none)'} stays valid"
        )

    def _prune(self) -> None:
        complete = sorted(self._complete(), key=lambda p: int(p.name.split("_")[1]))
        for old in complete[: -self.keep]:
            (old / COMPLETE).unlink(missing_ok=True)  # unmark first: a kill mid-delete never leaves a "complete" partial
            shutil.rmtree(old, ignore_errors=True)

    # -- reading --------------------------------------------------------------------------------
    def read_state(self, checkpoint: Path) -> dict:
        """Trainer state of a checkpoint, and restore this rank's RNG."""
        rng_file = checkpoint / f"rng_rank{self.rank}.pt"
        if not rng_file.is_file():
            raise FileNotFoundError(f"{rng_file} missing: was {checkpoint} written with {self.world_size} process(es)?")
        restore_rng(torch.load(rng_file, weights_only=True))
        return json.loads((checkpoint / "trainer_state.json").read_text())


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
