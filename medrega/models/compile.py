"""Regional compilation: ``torch.compile`` of a model's repeated blocks, in place.

Every block of a ``ModuleList`` or ``Sequential`` whose members share one class (the language model's decoder layers,
the vision tower's blocks) is compiled with ``nn.Module.compile``: the blocks share one compiled graph,
so compile time is that of one block, and parameters, state-dict keys and checkpoints stay as they are.
Reference: PyTorch's regional compilation recipe (``recipes/regional_compilation``) and accelerate's
``compile_regions``, which returns a new module with renamed keys instead.
"""

from __future__ import annotations

from torch import nn

__all__ = ["compile_blocks_"]


def _repeated_blocks(model: nn.Module) -> list[nn.Module]:
    blocks = []
    for module in model.modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 1 and len({type(m) for m in module}) == 1:
            blocks.extend(module)
    return blocks


def compile_blocks_(model: nn.Module, dynamic: bool = True, **compile_kwargs) -> int:
    """Compile every repeated block of ``model`` in place (``nn.Module.compile``).

    Args:
        model: e.g. a :class:`~medrega.models.MedRegAForConditionalGeneration`.
        dynamic: compile for varying sequence lengths and batch sizes once, instead of once per shape.
        compile_kwargs: further ``torch.compile`` arguments (``mode``, ``backend``, ...).

    Returns:
        The number of blocks compiled.
    """
    blocks = _repeated_blocks(model)
    for block in blocks:
        block.compile(dynamic=dynamic, **compile_kwargs)
    return len(blocks)
