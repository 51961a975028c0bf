"""Streaming checkpoint files: read one input shard at a time, write size-capped safetensors shards.

Weights are read only with ``safetensors`` or ``torch.load(mmap=True, weights_only=True)``; no model is built
and no tensor changes dtype. Peak memory is about one output shard plus one input tensor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["checkpoint_files", "open_shard", "ShardWriter", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*$", re.I)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """Bytes of ``size``: an int or a string such as ``"5GB"``, ``"500MiB"``."""
    if isinstance(size, int):
        value = size
    else:
        match = _SIZE.match(str(size))
        if not match:
            raise ValueError(f"max_shard_size must be bytes or a size such as '5GB', got {size!r}")
        value = int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def checkpoint_files(src: Path) -> list[Path]:
    """The weight files of a model directory, in index order: safetensors first, else ``.bin``."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = src / index_name
        if index.is_file():
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [n for n in names if not (src / n).is_file()]
            if missing:
                raise FileNotFoundError(f"{index} names shard files that are not there: {missing}")
            return [src / n for n in names]
        if (src / single).is_file():
            return [src / single]
    raise FileNotFoundError(f"{src} holds no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)")


class _BinShard:
    """A ``.bin`` file behind the ``safe_open`` interface (memory-mapped, tensors only)."""

    def __init__(self, path: Path):
        self.tensors = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        bad = [k for k, v in self.tensors.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise ValueError(f"{path} holds non-tensor entries {bad[:5]}")

    def names(self) -> list[str]:
        return list(self.tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensors[key].shape)

    def get_tensor(self, key: str) -> torch.Tensor:
        return self.tensors[key]


class _SafeShard:
    def __init__(self, handle):
        self.handle = handle

    def names(self) -> list[str]:
        return list(self.handle.keys())

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.handle.get_slice(key).get_shape())

    def get_tensor(self, key: str) -> torch.Tensor:
        return self.handle.get_tensor(key)


@contextmanager
def open_shard(path: Path) -> Iterator[_SafeShard | _BinShard]:
    """One input shard, open for reading key names, shapes (no data read) and tensors."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            yield _SafeShard(handle)
    else:
        shard = _BinShard(path)
        try:
            yield shard
        finally:
            del shard.tensors


class ShardWriter:
    """Write tensors into ``model-0000k-of-0000n.safetensors`` shards of at most ``max_bytes`` (a single tensor
    larger than that gets a shard of its own) and ``model.safetensors.index.json``; one shard is ``model.safetensors``.

    Args:
        out: the output directory.
        max_bytes: the shard size cap.
    """

    def __init__(self, out: Path, max_bytes: int):
        self.out, self.max_bytes = out, max_bytes
        self.buffer: dict[str, torch.Tensor] = {}
        self.buffered = 0
        self.written: list[tuple[Path, list[str]]] = []
        self.total = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.buffer and self.buffered + size > self.max_bytes:
            self._flush()
        self.buffer[key] = tensor.contiguous()
        self.buffered += size
        self.total += size

    def _flush(self) -> None:
        path = self.out / f"model-part-{len(self.written) + 1:05d}.safetensors"
        save_file(self.buffer, str(path), metadata={"format": "pt"})
        self.written.append((path, list(self.buffer)))
        self.buffer, self.buffered = {}, 0

    def close(self) -> list[Path]:
        """Flush, name the shards and write the index; returns the shard files."""
        if self.buffer or not self.written:
            self._flush()
        n = len(self.written)
        if n == 1:
            final = self.out / "model.safetensors"
            self.written[0][0].replace(final)
            return [final]
        weight_map, paths = {}, []
        for k, (path, keys) in enumerate(self.written, start=1):
            final = self.out / f"model-{k:05d}-of-{n:05d}.safetensors"
            path.replace(final)
            paths.append(final)
            weight_map.update(dict.fromkeys(keys, final.name))
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return paths
