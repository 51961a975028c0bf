"""A SwiGLU MLP (``down(silu(gate(x)) * up(x))``) that keeps less for its backward pass.

Autograd keeps five tensors of a Llama-style MLP per token: ``x``, ``gate(x)``, ``silu(gate(x))``,
``up(x)`` and their product. Here one function computes the whole MLP and keeps ``x``, ``gate(x)`` and
``up(x)``; the backward pass recomputes the two element-wise products (cheap next to the three
matmuls). That is 8 of the 17 intermediate-width values per token fewer in the largest part of a
training step's activations (the approach of Liger Kernel's SwiGLU, in plain PyTorch on any device).

:func:`use_lean_mlp_` swaps it into a transformers causal LM (Llama, Qwen2, Mistral, ...): the new
module holds the same ``gate_proj`` / ``up_proj`` / ``down_proj`` modules, so weights and checkpoint keys
are unchanged. Adapters (LoRA) on the projections or DeepSpeed ZeRO-3 partitioned weights take the plain
module path, which gives the same result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SwiGLUMLP", "swiglu_mlp", "use_lean_mlp_"]


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate_weight, up_weight, down_weight):
        gate = F.linear(x, gate_weight)  # (..., I)
        up = F.linear(x, up_weight)  # (..., I)
        out = F.linear(F.silu(gate) * up, down_weight)  # (..., H)
        ctx.save_for_backward(x, gate, up, gate_weight, up_weight, down_weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, gate, up, gate_weight, up_weight, down_weight = ctx.saved_tensors
        need_x, need_gate, need_up, need_down = ctx.needs_input_grad
        act = F.silu(gate)  # recomputed
        flat_out = grad_out.reshape(-1, grad_out.shape[-1])  # (N, H)
        grad_down = flat_out.T @ (act * up).reshape(-1, up.shape[-1]) if need_down else None  # (H, I)
        grad_hidden = grad_out @ down_weight  # (..., I): d loss / d (silu(gate) * up)
        grad_up = grad_hidden * act
        del act
        grad_gate = torch.ops.aten.silu_backward(grad_hidden.mul_(up), gate)  # one fused kernel for d silu(g) / dg
        del grad_hidden
        flat_x = x.reshape(-1, x.shape[-1])  # (N, H)
        grad_x = (grad_gate @ gate_weight).add_(grad_up @ up_weight) if need_x else None
        grad_gate_w = grad_gate.reshape(-1, grad_gate.shape[-1]).T @ flat_x if need_gate else None  # (I, H)
        grad_up_w = grad_up.reshape(-1, grad_up.shape[-1]).T @ flat_x if need_up else None
        return grad_x, grad_gate_w, grad_up_w, grad_down


def swiglu_mlp(x: torch.Tensor, gate_weight: torch.Tensor, up_weight: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    """``silu(x @ gate_weight.T) * (x @ up_weight.T) @ down_weight.T``, keeping only ``x``, the gate and
    the up projection for the backward pass.

    Args:
        x: ``(..., H)`` hidden states.
        gate_weight, up_weight: ``(I, H)`` bias-free projection weights.
        down_weight: ``(H, I)``.

    Returns:
        ``(..., H)``; its gradients equal those of the three ``F.linear`` calls.
    """
    return _SwiGLU.apply(x, gate_weight, up_weight, down_weight)


def _plain(linear: nn.Module) -> bool:
    """A bias-free ``nn.Linear`` whose weight is a whole local tensor (not a DeepSpeed ZeRO-3 shard)."""
    return type(linear) is nn.Linear and linear.bias is None and not hasattr(linear.weight, "ds_id")


class SwiGLUMLP(nn.Module):
    """A Llama-style MLP with the same submodules (and state-dict keys) that runs :func:`swiglu_mlp`
    when gradients are recorded and its projections are plain linear layers, and the modules otherwise
    (inference, adapters, ZeRO-3 shards)."""

    def __init__(self, gate_proj: nn.Module, up_proj: nn.Module, down_proj: nn.Module):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = gate_proj, up_proj, down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and _plain(self.gate_proj) and _plain(self.up_proj) and _plain(self.down_proj):
            return swiglu_mlp(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def use_lean_mlp_(language_model: nn.Module) -> int:
    """Replace every SwiGLU MLP of a transformers causal LM with a :class:`SwiGLUMLP` over the same
    projections (in place; weights, keys and outputs unchanged).

    An MLP qualifies when its config's ``hidden_act`` is ``"silu"`` and it has ``gate_proj``, ``up_proj``
    and ``down_proj``; others are left as they are.

    Args:
        language_model: e.g. a ``LlamaForCausalLM``.

    Returns:
        The number of MLPs replaced.
    """
    if getattr(language_model.config, "hidden_act", None) not in ("silu", "swish"):
        return 0
    swaps = [
        (parent, name, child)
        for parent in language_model.modules()
        for name, child in parent.named_children()
        if name == "mlp" and type(child) is not SwiGLUMLP and all(hasattr(child, p) for p in ("gate_proj", "up_proj", "down_proj"))
    ]
    for parent, name, child in swaps:
        setattr(parent, name, SwiGLUMLP(child.gate_proj, child.up_proj, child.down_proj))
    return len(swaps)
