"""Multi-image phantom experiment: does a model use the second image? SYNTHETIC data (phantoms).

For each seed, two tiny models of the same configuration, data and schedule are trained from scratch:
one sees both images of every sample (``multi``), the other only the first (``first_image``: the
other image tags removed, the question unchanged; see
:func:`medrega.builders.mim_phantoms.first_image_only`). Both answer the same held-out questions,
written once before any training (seed ``TEST_SEED``, never trained on), through ``run_benchmark``;
accuracy is the exact match of the normalised answer sentence, per Med-MIM ability and overall.
The abilities and their answer sets are in :mod:`medrega.builders.mim_phantoms` (paired visits with
a nodule that appears, grows or disappears; which image shows a finding; two views; "in the second
image"). Prints ``name[ability]: value`` lines (``mim_multi_accuracy``, ``mim_first_image_accuracy``:
shares 0..1; ``mim_gain``: their difference in points), per seed and the mean over seeds::

    python bench/multi_image.py --seeds 0 1 2          # default sizes
    python bench/multi_image.py --quick --seeds 0      # a smoke run (tiny sizes, numbers mean little)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

TEST_SEED = 10_000
SIZES = {
    "default": {"n_train": 300, "n_test": 50, "steps": 100, "batch": 32},
    "quick": {"n_train": 16, "n_test": 4, "steps": 3, "batch": 8},
}
MODEL = {"patch_size": 16, "pixel_shuffle": None, "vision_width": 96, "vision_layers": 2, "num_layers": 2}  # 16 tokens per 64-px image


def accuracy_by_ability(predictions: Path) -> dict[str, float]:
    """Exact-match accuracy of normalised answers per ability, and ``overall``, from a predictions JSONL."""
    from medrega.metrics import normalize_answer

    hits: dict[str, list[float]] = {}
    for line in map(json.loads, predictions.read_text(encoding="utf-8").splitlines()):
        if line.get("skipped"):
            raise RuntimeError(f"{line['key']} was skipped: {line['skipped']}")
        hit = float(normalize_answer(line["text"] or "") == normalize_answer(line["reference"]))
        for key in (line["ability"], "overall"):
            hits.setdefault(key, []).append(hit)
    return {k: sum(v) / len(v) for k, v in hits.items()}


def train_and_score(train: Path, test: Path, out: Path, seed: int, size: dict) -> dict[str, float]:
    from medrega import presets
    from medrega.evaluation import run_benchmark
    from medrega.training import DataSource, TrainConfig, Trainer

    config = TrainConfig(
        data=(DataSource(str(train)),), output_dir=str(out / "run"), stage="full", max_steps=size["steps"],
        micro_batch_size=size["batch"], lr=1e-3, warmup_steps=max(1, size["steps"] // 10), min_lr_ratio=0.05,
        save_every=10**9, max_length=256, seed=seed,
    )  # fmt: skip
    model, processor = presets.build("tiny", seed=seed, **MODEL)
    trainer = Trainer(config, model, processor, progress=False)
    trainer.train()
    run_benchmark((trainer.model.eval(), processor), data=str(test), out=out / "eval", batch_size=50, max_new_tokens=16, progress=False)
    return accuracy_by_ability(out / "eval" / "predictions.jsonl")


def run(seeds: list[int], size: dict, out: Path) -> dict[int, dict[str, dict[str, float]]]:
    from medrega.builders.mim_phantoms import make_mim_dataset, write_first_image_only

    test = make_mim_dataset(out / "test", size["n_test"], seed=TEST_SEED)  # fixed before any training
    tests = {"multi": test, "first_image": write_first_image_only(test)}
    results = {}
    for seed in seeds:
        train = make_mim_dataset(out / f"train_{seed}", size["n_train"], seed=seed + 1)
        trains = {"multi": train, "first_image": write_first_image_only(train)}
        results[seed] = {v: train_and_score(trains[v], tests[v], out / f"seed{seed}_{v}", seed, size) for v in ("multi", "first_image")}
    return results


def report(results: dict[int, dict[str, dict[str, float]]]) -> None:
    def lines(tag: str, multi: dict[str, float], first: dict[str, float]) -> None:
        for ability in sorted(multi, key=lambda a: (a == "overall", a)):
            print(f"mim_multi_accuracy[{ability}{tag}]: {multi[ability]:.4f}")
            print(f"mim_first_image_accuracy[{ability}{tag}]: {first[ability]:.4f}")
            print(f"mim_gain[{ability}{tag}]: {100 * (multi[ability] - first[ability]):.1f}")

    for seed, r in results.items():
        lines(f",seed={seed}", r["multi"], r["first_image"])
    mean = {v: {a: statistics.mean(r[v][a] for r in results.values()) for a in next(iter(results.values()))[v]} for v in ("multi", "first_image")}
    print(f"seeds: {' '.join(map(str, results))}")
    lines("", mean["multi"], mean["first_image"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--steps", type=int, help="optimizer steps per model (default: the size's)")
    parser.add_argument("--out", help="keep data, runs and predictions here (default: a temporary folder)")
    args = parser.parse_args(argv)
    size = dict(SIZES["quick" if args.quick else "default"])
    if args.steps:
        size["steps"] = args.steps
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.seeds, size, Path(args.out or tmp))
    report(results)
    print(f"seconds: {time.perf_counter() - start:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
