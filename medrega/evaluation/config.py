"""Typed evaluation configuration, read from YAML (``eval/configs/*.yaml``); arguments override it."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medrega.data.loading import FORMATS
from medrega.evaluation.benchmarks import BenchmarkFile

__all__ = ["EvalConfig", "add_eval_arguments", "load_eval_config"]

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EvalConfig:
    """Everything an evaluation run needs. Read with :func:`load_eval_config`.

    Args:
        model: a model directory (``save_pretrained`` output).
        data: the benchmark files (a path or a :class:`~medrega.evaluation.benchmarks.BenchmarkFile` each).
        output_dir: ``predictions.jsonl``, ``metrics.md`` and ``metrics.json`` go here.
        batch_size: samples per ``generate`` call.
        max_new_tokens: generation budget per answer.
        limit: evaluate only the first N lines of each file.
        constrained: constrained box decoding (loc-token codec only).
        device: where to run (e.g. ``"cuda"``); default: where the model is (CPU when loaded here).
        dtype: weights dtype when loading: ``float32``, ``bfloat16`` or ``float16`` (default: as saved).
    """

    model: str | None = None
    data: tuple[BenchmarkFile, ...] = ()
    output_dir: str | None = None
    batch_size: int = 8
    max_new_tokens: int = 256
    limit: int | None = None
    constrained: bool = False
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or unset, got {self.limit}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for spec in self.data:
            if spec.format != "auto" and spec.format not in FORMATS:
                raise ValueError(f"data {spec.path}: format must be 'auto' or one of {FORMATS}, got {spec.format!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _benchmark(item: str | dict | BenchmarkFile, base: Path | None, source: str) -> BenchmarkFile:
    if isinstance(item, BenchmarkFile):
        return item
    if isinstance(item, (str, Path)):
        item = {"path": str(item)}
    if not isinstance(item, dict) or "path" not in item:
        raise ValueError(f"{source}: each data entry needs a 'path', got {item!r}")
    names = {f.name for f in dataclasses.fields(BenchmarkFile)}
    unknown = sorted(set(item) - names)
    if unknown:
        raise ValueError(f"{source}: unknown data field(s) {unknown}; known: {sorted(names)}")
    item = dict(item)
    if base is not None:
        for key in ("path", "image_root", "mat_table"):
            if item.get(key) and not Path(item[key]).is_absolute():
                item[key] = str(base / item[key])
    return BenchmarkFile(**item)


def load_eval_config(config: str | Path | dict | EvalConfig | None = None, overrides: dict[str, Any] | None = None) -> EvalConfig:
    """Build an :class:`EvalConfig` from a YAML file, a dict or a config, then apply ``overrides``.

    Relative paths of data entries in a YAML file (``path``, ``image_root``, ``mat_table``) are
    resolved against its directory; ``model`` and ``output_dir`` stay relative to the working
    directory (as in training configs). Override values that are ``None`` are ignored. Overriding ``data``
    replaces the file list; a file that the config also lists keeps the config's options for it.

    Args:
        config: a YAML path, a mapping, an :class:`EvalConfig`, or ``None`` for the defaults.
        overrides: field values, e.g. from the command line.
    """
    source, base = "<config>", None
    if isinstance(config, EvalConfig):
        raw = config.to_dict()
        raw["data"] = list(config.data)
    elif isinstance(config, dict):
        raw = dict(config)
    elif config is not None:
        source, base = str(config), Path(config).resolve().parent
        raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{config}: expected a mapping at the top level")
    else:
        raw = {}
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown}; known: {sorted(names)}")
    data = raw.get("data") or ()
    data = [data] if isinstance(data, (str, dict)) else list(data)
    raw["data"] = tuple(_benchmark(item, base, source) for item in data)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "data" in overrides:
        listed = {str(Path(s.path).resolve()): s for s in raw["data"]}
        items = [overrides.pop("data")] if isinstance(overrides.get("data"), (str, Path)) else overrides.pop("data")
        chosen = []
        for item in items:
            spec = _benchmark(item, None, "<data>")
            known = listed.get(str(Path(spec.path).resolve())) if isinstance(item, (str, Path)) else None
            chosen.append(known or spec)
        raw["data"] = tuple(chosen)
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; known: {sorted(names)}")
    raw.update(overrides)
    return EvalConfig(**raw)


def _parse_bool(value: str) -> bool:
    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")
    return value.lower() in ("1", "true", "yes")


_FLAG_TYPES = {"int": int, "str": str, "bool": _parse_bool}


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--field`` flag per :class:`EvalConfig` field (default ``None``: the config's value);
    ``--data`` takes several files and ``--out`` is short for ``--output-dir``."""
    for f in dataclasses.fields(EvalConfig):
        flags = ["--" + f.name.replace("_", "-")] + (["--out"] if f.name == "output_dir" else [])
        if f.name == "data":
            parser.add_argument(*flags, nargs="+", default=None, help="benchmark files (replace the config's list)")
            continue
        kind = _FLAG_TYPES[str(f.type).split("|")[0].strip()]
        parser.add_argument(*flags, dest=f.name, type=kind, default=None, metavar=f.name.upper())
