"""Process setup: single process, or DeepSpeed (one machine or many) over NCCL or gloo."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from medrega.training.config import ADAMW_BETAS, ADAMW_EPS

__all__ = ["DistEnv", "init_distributed", "deepspeed_config", "pick_dtype"]


@dataclass(frozen=True)
class DistEnv:
    """This process: ``rank``, ``world_size``, ``local_rank``, ``device`` and whether DeepSpeed drives it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    use_deepspeed: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def all_reduce_sum(self, value: float) -> float:
        """Sum a number over processes."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(tensor)
        return float(tensor.item())


def init_distributed(use_deepspeed: bool) -> DistEnv:
    """Initialise the process group when launched by ``deepspeed`` (or ``torchrun``); CPU runs use gloo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if use_deepspeed:
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    elif world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return DistEnv(rank, world_size, local_rank, device, use_deepspeed)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """bf16 where the hardware has it (``"auto"``), else fp32."""
    if precision == "fp32":
        return torch.float32
    has_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not has_bf16:
        raise ValueError("precision 'bf16' asked for, but this device has no bf16 support; use 'auto' or 'fp32'")
    return torch.bfloat16 if has_bf16 else torch.float32


def deepspeed_config(path: str | Path, config, dtype: torch.dtype) -> dict:
    """Read a DeepSpeed JSON config and set every field the training config owns (batch sizes,
    accumulation, clipping, precision, optimizer), so the two never disagree."""
    ds = json.loads(Path(path).read_text())
    ds["train_micro_batch_size_per_gpu"] = config.micro_batch_size
    ds["gradient_accumulation_steps"] = config.grad_accumulation
    ds.pop("train_batch_size", None)
    ds["gradient_clipping"] = config.max_grad_norm
    ds["bf16"] = {"enabled": dtype == torch.bfloat16}
    ds.pop("fp16", None)
    ds["optimizer"] = {
        "type": "AdamW",
        "params": {"lr": config.lr, "weight_decay": config.weight_decay, "betas": list(ADAMW_BETAS), "eps": ADAMW_EPS, "torch_adam": True},
    }
    ds.setdefault("steps_per_print", 10**9)
    ds.setdefault("wall_clock_breakdown", False)
    return ds
