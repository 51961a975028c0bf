"""Training stages as one call, and LoRA on the language model (peft, imported lazily).

* ``alignment``: only the projector learns (vision tower and language model frozen).
* ``instruction``: projector and language model learn, the vision tower stays frozen.
* ``full``: everything learns.

``apply_lora`` injects LoRA adapters into the language model in place (``peft.inject_adapter_in_model``),
freezes its base weights and keeps the region-token rows of the input embeddings (and of an untied
``lm_head``) trainable through peft's ``trainable_token_indices``. ``merge_lora`` folds everything back
into plain weights for export.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

__all__ = ["STAGES", "set_trainable", "apply_lora", "merge_lora", "trainable_summary"]

logger = logging.getLogger(__name__)

STAGES = {"alignment": ("projector",), "instruction": ("projector", "language"), "full": ("vision", "projector", "language")}
_PARTS = {"vision": "vision_tower", "projector": "projector", "language": "language_model"}


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per part: ``{"vision", "projector", "language", "trainable", "total"}``."""
    out = {}
    for part, attr in _PARTS.items():
        out[part] = sum(p.numel() for p in getattr(model, attr).parameters() if p.requires_grad)
    out["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out["total"] = sum(p.numel() for p in model.parameters())
    return out


def _is_adapter_param(name: str) -> bool:
    return "lora_" in name or "trainable_tokens_delta" in name


def set_trainable(model: nn.Module, stage: str) -> dict[str, int]:
    """Freeze everything but the parts that ``stage`` trains.

    With LoRA applied, "training the language model" means training its adapters and region-token
    rows; its base weights stay frozen.

    Args:
        model: a :class:`~medrega.models.MedRegAForConditionalGeneration`.
        stage: ``"alignment"``, ``"instruction"`` or ``"full"``.

    Returns:
        :func:`trainable_summary` of the model.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; choose one of {sorted(STAGES)}")
    lora = getattr(model, "lora_applied", False)
    for part, attr in _PARTS.items():
        train = part in STAGES[stage]
        for name, param in getattr(model, attr).named_parameters():
            if part == "language" and lora:
                param.requires_grad_(train and _is_adapter_param(name))
            else:
                param.requires_grad_(train)
    return trainable_summary(model)


def _module_name(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError(f"{type(target).__name__} is not a submodule of the language model")


def apply_lora(
    model: nn.Module,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    trainable_token_ids: Sequence[int] | None = None,
) -> dict[str, int]:
    """Add LoRA adapters to the language model in place; its base weights are frozen.

    Args:
        model: a :class:`~medrega.models.MedRegAForConditionalGeneration` (vision and projector keep their
            current ``requires_grad``, e.g. from :func:`set_trainable`).
        r, alpha, dropout: LoRA rank, scaling numerator and dropout.
        target_modules: module names or ``"all-linear"`` (every linear layer except ``lm_head``).
        trainable_token_ids: embedding rows that stay trainable (default: ``config.region_token_ids``).

    Returns:
        :func:`trainable_summary` of the model.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ImportError("LoRA needs peft: pip install 'medrega[train]'") from err
    if getattr(model, "lora_applied", False):
        raise ValueError("LoRA is already applied to this model; call merge_lora() first to stack another")
    lm = model.language_model
    ids = list(trainable_token_ids if trainable_token_ids is not None else model.config.region_token_ids or [])
    tokens = None
    if ids:
        tokens = {_module_name(lm, lm.get_input_embeddings()): ids}
        if not getattr(lm.config, "tie_word_embeddings", False):
            tokens[_module_name(lm, lm.get_output_embeddings())] = ids
    else:
        logger.warning("apply_lora: no region_token_ids in the config and none given; the embeddings stay frozen")
    for param in lm.parameters():
        param.requires_grad_(False)
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, trainable_token_indices=tokens)
    inject_adapter_in_model(config, lm)
    model.lora_applied = True
    return trainable_summary(model)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters and trainable token rows into the base weights, remove the peft wrappers.

    Returns:
        the same model, now free of peft modules (``save_pretrained`` writes plain weights).
    """
    if not getattr(model, "lora_applied", False):
        return model
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    lm = model.language_model
    for kind in (AuxiliaryTrainingWrapper, BaseTunerLayer):
        for name, module in list(lm.named_modules()):
            if not isinstance(module, kind) or not name:
                continue
            if kind is AuxiliaryTrainingWrapper:
                plain = module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None)
            else:
                module.merge()
                plain = module.get_base_layer()
            parent_name, _, child = name.rpartition(".")
            setattr(lm.get_submodule(parent_name) if parent_name else lm, child, plain)
    model.lora_applied = False
    return model
