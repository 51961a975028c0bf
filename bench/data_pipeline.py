"""Data pipeline throughput against the training step's consumption, on the tiny preset.

Samples/s that ``medrega.training.data.TrainData`` (JSONL records -> image loading -> processor ->
length-grouped sampler -> ``pad_collate``, in a ``DataLoader``) delivers with 0, 1 and 2 workers, and
samples/s that the default training step (``Trainer.loss_step``) consumes on those batches, measured in
this process. ``data_to_step_ratio`` is the data rate with the default number of workers
(``TrainConfig.num_workers``) over the step's rate; ``data_to_step_ratio_workers_N`` for each N.

    python bench/data_pipeline.py --quick
    python bench/data_pipeline.py --phantoms 16
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from medrega import presets
from medrega.builders.phantom_records import make_phantom_dataset
from medrega.training.config import DataSource, TrainConfig
from medrega.training.data import TrainData
from medrega.training.trainer import Trainer


def _epoch(data: TrainData, n_batches: int) -> tuple[float, list[dict], int]:
    start = time.perf_counter()
    it = data.batches()
    batches = [next(it) for _ in range(n_batches)]
    seconds = time.perf_counter() - start
    return seconds, batches, sum(b["num_samples"] for b in batches)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--phantoms", type=int, default=None, help="phantoms (16 records each)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    phantoms = args.phantoms or (4 if args.quick else 12)
    tmp = tempfile.mkdtemp()
    path = make_phantom_dataset(tmp, phantoms, seed=0)
    config = TrainConfig(data=(DataSource(str(path)),), output_dir=str(Path(tmp) / "out"), max_steps=10**6, warmup_steps=0)
    model, processor = presets.build("tiny")
    trainer = Trainer(config, model=model, processor=processor, progress=False)
    env = trainer.env
    n_batches = None
    rates = {}
    batches = None
    for workers in args.workers:
        data = TrainData(dataclasses.replace(config, num_workers=workers), processor, env)
        if n_batches is None:
            n_batches = len(data._sampler())
        seconds, got, samples = _epoch(data, n_batches)
        rates[workers] = samples / seconds
        batches = batches or got
        print(f"data_samples_per_s_workers_{workers}: {rates[workers]:.1f}")
    trainer.loss_step([batches[0]])  # warm-up
    start = time.perf_counter()
    for batch in batches:
        trainer.loss_step([batch])
    step_rate = sum(b["num_samples"] for b in batches) / (time.perf_counter() - start)
    print(f"records: {len(data.encoded)} micro_batch: {config.micro_batch_size} batches: {n_batches} threads: {torch.get_num_threads()}")
    print(f"step_samples_per_s: {step_rate:.1f}")
    for workers, rate in rates.items():
        print(f"data_to_step_ratio_workers_{workers}: {rate / step_rate:.2f}")
    default = config.num_workers
    if default in rates:
        print(f"data_to_step_ratio: {rates[default] / step_rate:.2f}  (default num_workers={default})")
    return {"rates": rates, "step": step_rate}


if __name__ == "__main__":
    main()
