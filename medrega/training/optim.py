"""The optimizer (AdamW, fused where torch has a fused kernel), per-module learning rates and the
warmup + cosine schedule."""

from __future__ import annotations

import math

import torch

from medrega.models.stages import part_parameters
from medrega.training.config import ADAMW_BETAS, ADAMW_EPS

__all__ = ["adamw", "param_groups", "cosine_with_warmup"]


def param_groups(model: torch.nn.Module, lrs: dict[str, float], weight_decay: float = 0.0) -> list[dict]:
    """Trainable parameters grouped by model part (the parts of :data:`medrega.models.stages.PARTS`)
    and decay / no decay, each group with its learning rate.

    Args:
        model: a :class:`~medrega.models.MedRegAForConditionalGeneration`; frozen parameters are left out.
        lrs: ``{"vision": lr, "projector": lr, "language": lr}``.
        weight_decay: applied to matrices, not to biases and norms.
    """
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for part, _, param in part_parameters(model):
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and weight_decay > 0
        groups.setdefault((part, decay), []).append(param)
    return [
        {"params": params, "lr": lrs[part], "weight_decay": weight_decay if decay else 0.0, "name": f"{part}{'' if decay else '_no_decay'}"}
        for (part, decay), params in sorted(groups.items())
    ]


def adamw(groups: list[dict]) -> torch.optim.AdamW:
    """AdamW over parameter groups, with torch's fused kernel when every parameter is a floating tensor on the
    CPU or a CUDA device (one kernel for all tensors: about 3.5x faster per step than the per-tensor loop on
    the tiny preset's CPU step, see ``bench/bench_optimizer.py``); the same update either way."""
    params = [p for group in groups for p in group["params"]]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) and len({p.device for p in params}) == 1
    return torch.optim.AdamW(groups, betas=ADAMW_BETAS, eps=ADAMW_EPS, fused=fused or None)


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1):
    """Linear warmup to each group's learning rate, then cosine decay to ``min_lr_ratio`` of it."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
