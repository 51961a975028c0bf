"""AdamW step time on the tiny preset's trainable parameters: torch's per-tensor loop (its CPU default)
against the fused kernel that training uses (``medrega.training.optim.adamw``), in the same process.

    python bench/bench_optimizer.py [--steps 50]
"""

import argparse
import time

import torch

from medrega import presets
from medrega.training.optim import adamw


def _seconds_per_step(optimizer, steps: int) -> float:
    optimizer.step()  # state allocated outside the timing
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = presets.build("tiny")
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    loop = _seconds_per_step(torch.optim.AdamW([{"params": params}], foreach=False), args.steps)
    fused = _seconds_per_step(adamw([{"params": params}]), args.steps)
    print(f"params: {sum(p.numel() for p in params)} in {len(params)} tensors")
    print(f"per_tensor_ms: {loop * 1000:.2f}")
    print(f"fused_ms: {fused * 1000:.2f}")
    print(f"optimizer_speedup: {loop / fused:.2f}")


if __name__ == "__main__":
    main()
