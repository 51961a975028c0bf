"""Training stages as one call, and LoRA on the language model (peft, imported lazily).

* ``alignment``: only the projector learns (vision tower and language model frozen).
* ``instruction``: projector and language model learn, the vision tower stays frozen.
* ``full``: everything learns.

A box head (``config.box_head``), new weights like the projector's, learns in every stage.

:class:`TrainingStages` gives the model these as methods. ``apply_lora`` injects LoRA adapters into
the language model in place (``peft.inject_adapter_in_model``), freezes its base weights and keeps the
rows of ``config.region_token_ids`` (medrega's added tokens) of the input embeddings (and of an untied
``lm_head``) trainable through peft's ``trainable_token_indices``. ``merge_lora`` folds everything back
into plain weights for export.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from torch import nn

__all__ = ["STAGES", "PARTS", "part_parameters", "TrainingStages"]

logger = logging.getLogger(__name__)

STAGES = {"alignment": ("projector", "box_head"), "instruction": ("projector", "language", "box_head"), "full": ("vision", "projector", "language", "box_head")}
PARTS = {"vision": "vision_tower", "projector": "projector", "language": "language_model", "box_head": "box_head"}  # part -> model attribute


def part_parameters(model: nn.Module) -> Iterator[tuple[str, str, nn.Parameter]]:
    """``(part, name inside the part, parameter)`` for every parameter of the model, part by part.

    Args:
        model: a :class:`~medrega.models.MedRegAForConditionalGeneration`.
    """
    for part, attr in PARTS.items():
        module = getattr(model, attr, None)  # no box head unless the config asks for one
        for name, param in () if module is None else module.named_parameters():
            yield part, name, param


def _is_adapter_param(name: str) -> bool:
    return "lora_" in name or "trainable_tokens_delta" in name


def _module_name(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError(f"{type(target).__name__} is not a submodule of the language model")


class TrainingStages:
    """Training stages and LoRA, as methods of :class:`~medrega.models.MedRegAForConditionalGeneration`."""

    def trainable_summary(self) -> dict[str, int]:
        """Trainable parameters per part: ``{"vision", "projector", "language", "trainable", "total"}``."""
        out = dict.fromkeys(PARTS, 0)
        for part, _, param in part_parameters(self):
            out[part] += param.numel() if param.requires_grad else 0
        out["trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        out["total"] = sum(p.numel() for p in self.parameters())
        return out

    def set_trainable(self, stage: str) -> dict[str, int]:
        """Freeze everything but the parts that ``stage`` trains.

        With LoRA applied, "training the language model" means training its adapters and region-token
        rows; its base weights stay frozen.

        Args:
            stage: ``"alignment"``, ``"instruction"`` or ``"full"``.

        Returns:
            :meth:`trainable_summary` of the model.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown training stage {stage!r}; choose one of {sorted(STAGES)}")
        lora = getattr(self, "lora_applied", False)
        for part, name, param in part_parameters(self):
            train = part in STAGES[stage]
            adapters_only = part == "language" and lora
            param.requires_grad_(train and (_is_adapter_param(name) or not adapters_only))
        return self.trainable_summary()

    def apply_lora(
        self,
        r: int = 16,
        alpha: int = 32,
        dropout: float = 0.0,
        target_modules: str | Sequence[str] = "all-linear",
        trainable_token_ids: Sequence[int] | None = None,
    ) -> dict[str, int]:
        """Add LoRA adapters to the language model in place; its base weights are frozen.

        The vision tower and projector keep their current ``requires_grad`` (e.g. from :meth:`set_trainable`).

        Args:
            r, alpha, dropout: LoRA rank, scaling numerator and dropout.
            target_modules: module names or ``"all-linear"`` (every linear layer except ``lm_head``).
            trainable_token_ids: embedding rows that stay trainable (default: ``config.region_token_ids``).

        Returns:
            :meth:`trainable_summary` of the model.
        """
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as err:
            raise ImportError("LoRA needs peft: pip install 'medrega[train]'") from err
        if getattr(self, "lora_applied", False):
            raise ValueError("LoRA is already applied to this model; call merge_lora() first to stack another")
        lm = self.language_model
        ids = list(trainable_token_ids if trainable_token_ids is not None else self.config.region_token_ids or [])
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
        self.lora_applied = True
        return self.trainable_summary()

    def merge_lora(self) -> nn.Module:
        """Fold LoRA adapters and trainable token rows into the base weights, remove the peft wrappers.

        Returns:
            the same model, now free of peft modules (``save_pretrained`` writes plain weights).
        """
        if not getattr(self, "lora_applied", False):
            return self
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        lm = self.language_model
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
        self.lora_applied = False
        return self
