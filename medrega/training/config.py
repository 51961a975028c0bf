"""Typed training configuration, read from YAML; every field is also a command-line flag."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medrega.models.stages import STAGES

__all__ = ["DataSource", "TrainConfig", "load_config", "add_cli_overrides", "ADAMW_BETAS", "ADAMW_EPS"]

ADAMW_BETAS, ADAMW_EPS = (0.9, 0.999), 1e-8  # AdamW's settings, the same with or without DeepSpeed


@dataclass(frozen=True)
class DataSource:
    """One dataset of the training mix.

    Args:
        path: a JSONL record file in any format ``load_records`` reads (not a JSON array: training
            indexes records line by line).
        weight: repeat factor; fractional values take a seeded fraction (0.5 = half, 2.3 = twice and 30%).
        format: record format (``"auto"`` by default).
        image_root: directory image paths are relative to.
        confine_images: skip (and count) records whose image paths resolve outside the image root
            (``../`` escapes, absolute paths); off unless the config says so.
    """

    path: str
    weight: float = 1.0
    format: str = "auto"
    image_root: str | None = None
    confine_images: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Read with :func:`load_config`.

    Args:
        model: a preset name (``"tiny"``) or a Hugging Face model directory.
        data: the weighted dataset mix.
        output_dir: checkpoints, ``metrics.jsonl`` and the exported model go here.
        stage: ``alignment`` (projector only), ``instruction`` (projector + language model) or ``full``.
        lora_r: > 0 trains LoRA adapters on the language model instead of its full weights.
        max_steps: optimizer steps.
        max_minutes: also stop (and checkpoint) once this much wall time has passed.
        micro_batch_size: samples per forward pass per process.
        grad_accumulation: micro-batches per optimizer step; the loss is normalised by the number of
            label tokens across all of them (and all processes).
        lr, lr_vision, lr_projector, lr_language: learning rates (module rates default to ``lr``; a box head trains at ``lr``).
        warmup_steps: linear warmup before the cosine decay (to ``min_lr_ratio * lr``).
        max_length: token budget per sample (prose is truncated, never images or regions).
        packing: pack samples into rows of ``max_length`` tokens (no padding, no cross-sample attention;
            on the CPU, attention runs per packed sample: :mod:`medrega.models.segment_attention`).
        group_by_length: batch samples of similar length together.
        augment_crop_prob: chance of a box-aware random crop per image (boxes move with the image;
            0 disables geometric augmentation).
        max_consecutive_skips: stop with an error once this many samples in a row could not be used
            (too long, image unreadable or over the pixel limit, bad record), or a whole epoch could not.
        save_every: write a checkpoint every N optimizer steps (and at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        precision: ``"auto"`` (bf16 where the hardware has it, else fp32), ``"bf16"`` or ``"fp32"``.
        gradient_checkpointing: recompute activations in the backward pass.
        compile: ``torch.compile`` the repeated blocks (decoder layers, vision blocks) in place, once for
            all sequence lengths (:func:`medrega.models.compile.compile_blocks_`). Pays on a GPU, where
            steps of small models are bound by kernel launches; the first step waits for the compiler.
        keep_host_memory: on a CPU, keep freed memory in the process (glibc ``mallopt``, process-wide)
            instead of returning it to the operating system, so that steps do not page-fault
            (:mod:`medrega.training.host_memory`).
        deepspeed: a DeepSpeed JSON config (ZeRO-2/3) used when launched with ``deepspeed``.
    """

    model: str = "tiny"
    data: tuple[DataSource, ...] = ()
    output_dir: str = "runs/medrega"
    stage: str = "instruction"
    lora_r: int = 0
    lora_alpha: int = 16
    max_steps: int = 100
    max_minutes: float | None = None
    micro_batch_size: int = 8
    grad_accumulation: int = 1
    lr: float = 1e-4
    lr_vision: float | None = None
    lr_projector: float | None = None
    lr_language: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 2048
    packing: bool = False
    group_by_length: bool = True
    augment_crop_prob: float = 0.0
    num_workers: int = 0
    max_consecutive_skips: int = 1000
    save_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    precision: str = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False
    keep_host_memory: bool = True
    deepspeed: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {tuple(STAGES)}, got {self.stage!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        for name in ("max_steps", "micro_batch_size", "grad_accumulation", "save_every", "max_length", "keep_checkpoints", "max_consecutive_skips"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.data:
            raise ValueError("data: at least one dataset is needed")
        if any(s.weight <= 0 for s in self.data):
            raise ValueError("data: every weight must be > 0")

    @property
    def module_lrs(self) -> dict[str, float]:
        """Learning rate per module group."""
        return {
            "vision": self.lr if self.lr_vision is None else self.lr_vision,
            "projector": self.lr if self.lr_projector is None else self.lr_projector,
            "language": self.lr if self.lr_language is None else self.lr_language,
            "box_head": self.lr,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(raw: dict[str, Any], source: str) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown}; known: {sorted(names)}")
    raw = dict(raw)
    data = raw.get("data", ())
    if isinstance(data, (str, dict)):
        data = [data]
    raw["data"] = tuple(DataSource(path=d) if isinstance(d, str) else DataSource(**d) for d in data)
    return TrainConfig(**raw)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config and apply ``overrides`` (e.g. from the command line). Relative data paths
    are resolved against the YAML file's directory."""
    raw: dict[str, Any] = {}
    source = "<overrides>"
    if path is not None:
        source = str(path)
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        base = Path(path).resolve().parent
        for item in raw.get("data", []) or []:
            if isinstance(item, dict) and not Path(item["path"]).is_absolute():
                item["path"] = str(base / item["path"])
        if raw.get("deepspeed") and not Path(raw["deepspeed"]).is_absolute():
            raw["deepspeed"] = str(base / raw["deepspeed"])
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return _coerce(raw, source)


def _parse_bool(value: str) -> bool:
    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")
    return value.lower() in ("1", "true", "yes")


_FLAG_TYPES = {"int": int, "float": float, "str": str, "bool": _parse_bool}


def add_cli_overrides(parser: argparse.ArgumentParser) -> None:
    """Add one ``--field`` flag per :class:`TrainConfig` field (flags never drift from configs)."""
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "data":
            parser.add_argument(flag, action="append", help="a record file (repeatable; replaces the config's mix)")
            continue
        kind = _FLAG_TYPES[str(f.type).split("|")[0].strip()]
        parser.add_argument(flag, dest=f.name, type=kind, default=None, metavar=f.name.upper())
