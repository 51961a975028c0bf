"""Per-module learning rates and the warmup + cosine schedule."""

from __future__ import annotations

import math

import torch

__all__ = ["module_of", "param_groups", "cosine_with_warmup"]


def module_of(name: str) -> str:
    """``"vision"``, ``"projector"`` or ``"language"`` for a parameter name of the MedRegA model."""
    if name.startswith(("vision", "model.vision")) or ".vision_tower." in name or name.startswith("vision_tower"):
        return "vision"
    if "projector" in name:
        return "projector"
    return "language"


def param_groups(model: torch.nn.Module, lrs: dict[str, float], weight_decay: float = 0.0) -> list[dict]:
    """Trainable parameters grouped by module (and decay / no decay), each group with its learning rate.

    Args:
        model: the model; frozen parameters are left out.
        lrs: ``{"vision": lr, "projector": lr, "language": lr}``.
        weight_decay: applied to matrices, not to biases and norms.
    """
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and weight_decay > 0
        groups.setdefault((module_of(name), decay), []).append(param)
    return [
        {"params": params, "lr": lrs[module], "weight_decay": weight_decay if decay else 0.0, "name": f"{module}{'' if decay else '_no_decay'}"}
        for (module, decay), params in sorted(groups.items())
    ]


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1):
    """Linear warmup to each group's learning rate, then cosine decay to ``min_lr_ratio`` of it."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
