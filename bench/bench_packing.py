"""Padding vs. packing on phantom records of every task: wasted tokens and training throughput.

Usage: python bench/bench_packing.py [--samples 256] [--batch 32]
Prints padding share and samples/s for both collators, measured in this process, and their ratio.
"""

import argparse
import tempfile
import time

import torch

from medrega import presets
from medrega.builders.phantom_records import make_phantom_dataset
from medrega.data import load_records, pack_samples, pad_collate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=192, help="row length when packing")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, processor = presets.build("tiny")
    with tempfile.TemporaryDirectory() as tmp:
        records = load_records(make_phantom_dataset(tmp, args.samples // 16 + 1, seed=0))[: args.samples]
        samples = [processor.encode_record(r) for r in records]
    batches = [samples[i : i + args.batch] for i in range(0, len(samples), args.batch)]
    results = {}
    for name, collate in (("padding", lambda b: pad_collate(b, 0)), ("packing", lambda b: pack_samples(b, args.max_length))):
        collated = [collate(b) for b in batches]
        padding = sum(c["num_padding_tokens"] for c in collated) / sum(c["input_ids"].numel() for c in collated)
        keys = ("input_ids", "attention_mask", "labels", "pixel_values", "position_ids")
        start = time.perf_counter()
        for c in collated:
            model(**{k: c[k] for k in keys if k in c}).loss.backward()
            model.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        results[name] = len(samples) / seconds
        print(f"{name}: {padding:6.1%} of tokens are padding, {results[name]:7.1f} samples/s")
    print(f"packing / padding throughput: {results['packing'] / results['padding']:.2f}x")


if __name__ == "__main__":
    main()
