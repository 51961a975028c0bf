"""Cross-entropy of a linear head without materialising the full logits: chunked, gradients in forward.

The label-only head still builds a ``(K, V)`` logit matrix for K label positions; with a 32k vocabulary
that matrix, its log-softmax and its gradient are the largest tensors of a training step. Here the
rows are processed in chunks: each chunk's logits become its softmax in place and then the gradients
of the hidden states and of the head's weight, so only one chunk of logits is ever alive (the
approach of Liger Kernel's fused linear cross-entropy, written for plain PyTorch on any device).
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 2**22
"""Logit elements per chunk (16 MiB in fp32): rows per chunk = CHUNK_ELEMENTS // vocabulary size."""


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int, grad_enabled: bool):
        need_h, need_w = (grad_enabled and ctx.needs_input_grad[0]), (grad_enabled and ctx.needs_input_grad[1])
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w and hidden.shape[0] == 0 else None
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start : start + chunk_rows]
            t = targets[start : start + chunk_rows]
            logits = (h @ weight.T).float()  # (c, V)
            picked = logits.gather(1, t[:, None])
            peak = logits.amax(dim=-1, keepdim=True)
            exp = logits.sub_(peak).exp_()  # in place: one chunk of logits alive at a time
            norm = exp.sum(dim=-1, keepdim=True)
            total += (norm.log() + peak - picked).sum()
            if need_h or need_w:
                probs = exp.div_(norm)
                probs[torch.arange(len(t), device=t.device), t] -= 1.0  # d(loss)/d(logits)
                g = probs.to(weight.dtype)
                if need_h:
                    grad_h[start : start + chunk_rows] = g @ weight
                if need_w:  # (V, H), accumulated in fp32
                    if grad_w is None:
                        grad_w = (g.T @ h).float()
                    elif weight.dtype == torch.float32:
                        grad_w.addmm_(g.T, h)
                    else:
                        grad_w += (g.T @ h).float()
                del probs, g
            del logits, exp  # before the next chunk's logits exist
        ctx.grads = (grad_h, grad_w.to(weight.dtype) if grad_w is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_h, grad_w = ctx.grads
        ctx.grads = None
        if grad_h is not None:
            grad_h = grad_h.mul_(grad_output.to(grad_h.dtype))
        if grad_w is not None:
            grad_w = grad_w.mul_(grad_output.to(grad_w.dtype))
        return grad_h, grad_w, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """Summed cross-entropy of ``hidden @ weight.T`` against ``targets``, in fp32, never holding all logits.

    Args:
        hidden: ``(K, H)`` hidden states of the positions that have a label.
        weight: ``(V, H)`` the head's weight (no bias).
        targets: ``(K,)`` token ids in ``[0, V)``; every row counts (select labelled rows first).
        chunk_rows: rows per chunk; default ``CHUNK_ELEMENTS // V`` (at least 1).

    Returns:
        The 0-d fp32 sum of token losses; its backward gives the same gradients as
        ``F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")``.
    """
    if hidden.ndim != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be (K, H) and targets (K,); got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    chunk_rows = chunk_rows or max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_rows, torch.is_grad_enabled())
