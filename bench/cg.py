"""Compositional generalization (Med-MAT's CG effect) measured on the SYNTHETIC MAT world, on a CPU.

Writes the world (:func:`medrega.builders.mat_world.make_mat_world`: phantom modalities x areas x tasks,
every combination but the target, plus the target's test questions drawn from their own seed), plans
the held-out target with :func:`medrega.data.mat_planner.plan_cg`, then trains and evaluates the plan's
first ``--related`` related mixes and their controls (``--ablations`` adds the ablations) with
:func:`medrega.experiments.run_cg`, for every seed. The world, the test set and the target are fixed
before any training; seeds change the model's initial weights and the data order only.

    python bench/cg.py                      # 3 seeds, related-1 vs control-1
    python bench/cg.py --steps 600 --related 2 --ablations --seeds 0 1 2 3

Prints ``name: value`` lines, accuracies and gaps in points (x 100): ``cg_related_accuracy``,
``cg_unrelated_accuracy``, ``cg_gap`` (related minus unrelated, mean over seeds), ``cg_gap_min`` (its
minimum over the seeds), each seed's gap and the chance level. The CG table is in ``<out>/cg/cg.md``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from medrega.builders.mat_world import TASKS, make_mat_world
from medrega.data.mat_planner import CGPlan, plan_cg
from medrega.experiments import run_cg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="experiment folder (default: a temporary one, removed); reuse it to resume")
    parser.add_argument("--target", nargs=3, default=["CT", "Lung", "level"], metavar=("MODALITY", "AREA", "TASK"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--n-per-label", type=int, default=60, help="images per label of each training dataset")
    parser.add_argument("--n-test-per-label", type=int, default=40, help="images per label of the target's test set")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--related", type=int, default=1, help="related mixes kept (plan order), each with its control")
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--untrained", action="store_true", help="add the untrained model's row")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="medrega-cg-"))

    world = make_mat_world(out / "world", tuple(args.target), seed=args.world_seed, n_per_label=args.n_per_label,
                           n_test_per_label=args.n_test_per_label)  # fmt: skip
    full = plan_cg(world.registry, world.target, kind="user", seed=args.world_seed)
    related = full.related[: args.related]
    names = {m.name for m in related}
    plan = CGPlan(full.target, full.held_out, related, [c for c in full.controls if c.of in names],
                  full.ablations if args.ablations else [], full.notes)  # fmt: skip
    overrides = {"model": "tiny", "stage": "full", "max_steps": args.steps, "micro_batch_size": args.batch, "lr": args.lr,
                 "warmup_steps": max(1, args.steps // 10), "min_lr_ratio": 0.1, "save_every": 10**9, "max_length": 128,
                 "precision": "fp32"}  # fmt: skip
    result = run_cg(plan, world.target_path, out / "cg", seeds=args.seeds, overrides=overrides, batch_size=64,
                    max_new_tokens=3, untrained=args.untrained, progress=False)  # fmt: skip
    summary = result.summary()
    gaps = _per_seed_gaps(result)
    print(f"target: {' / '.join(world.target)} ({world.counts['target']} test questions, never trained on)")
    for mix in plan.mixes:
        print(f"mix_{mix.name}: {'; '.join(e.label for e in mix.entries)}")
    print(f"chance_accuracy: {100 / len(TASKS[world.target[2]].labels):.1f}")
    for key in ("cg_related_accuracy", "cg_unrelated_accuracy", "cg_gap", "cg_gap_std", "cg_gap_min"):
        print(f"{key}: {100 * summary[key]:.1f}")
    for seed, gap in gaps.items():
        print(f"cg_gap_seed_{seed}: {100 * gap:.1f}")
    print(f"seeds: {len(result.seeds)}  steps: {args.steps}  batch: {args.batch}  threads: {torch.get_num_threads()}")
    print(f"wall_seconds: {time.perf_counter() - start:.0f}")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)


def _per_seed_gaps(result) -> dict[int, float]:
    """Each seed's gap as ``CGResult.summary`` takes it: mean related minus mean control."""
    pairs = [(r.of, r.name) for r in result.runs if r.role == "control"]
    return {s: sum(result.scores[a][s] - result.scores[b][s] for a, b in pairs) / len(pairs) for s in result.seeds}


if __name__ == "__main__":
    main()
