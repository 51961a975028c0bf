"""The LM head's share of a training step: full-vocabulary logits, labelled positions only, and labelled
positions with the chunked linear cross-entropy (the default), timed and peak-memory counted in one process.

Usage: python bench/bench_loss_head.py [--vocab 32000] [--batch 8] [--length 384] [--answer 48] [--repeats 5]
Ends with ``head_speedup`` (full logits / default), ``head_speedup_chunked`` (whole label logits /
chunked) and ``head_peak_memory_ratio`` (chunked / whole label logits) lines.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakTensorBytes  # noqa: E402

from medrega import presets  # noqa: E402
from medrega.models import modeling  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=32000, help="pad the vocabulary to a realistic size")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=384)
    parser.add_argument("--answer", type=int, default=48, help="labelled tokens per sample (the answer)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, _ = presets.build("tiny")
    model.resize_token_embeddings(args.vocab)
    model.train()
    ids = torch.randint(10, args.vocab, (args.batch, args.length))
    labels = torch.full_like(ids, -100)
    labels[:, -args.answer :] = ids[:, -args.answer :]
    plain_head = modeling._plain_head

    def chunked():
        modeling._plain_head = plain_head
        return model(input_ids=ids, labels=labels).loss

    def whole_label_logits():  # the label-only head through the module: one (K, V) logit matrix
        modeling._plain_head = lambda head: False
        return model(input_ids=ids, labels=labels).loss

    def full_logits():  # what a plain causal LM does: logits for every position, then cross-entropy
        hidden = model.language_model.get_decoder()(input_ids=ids).last_hidden_state
        logits = model.get_output_embeddings()(hidden).float()
        return F.cross_entropy(logits[:, :-1].reshape(-1, args.vocab), labels[:, 1:].reshape(-1), ignore_index=-100)

    paths = {"full-vocabulary logits": full_logits, "label positions, whole logits": whole_label_logits, "label positions, chunked": chunked}
    losses = {name: float(step().detach()) for name, step in paths.items()}
    assert max(losses.values()) - min(losses.values()) < 1e-4, losses
    timings, peaks = {}, {}
    for _ in range(2):  # alternate the paths; best of each
        for name, step in paths.items():
            step().backward()  # warm up
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            for _ in range(args.repeats):
                step().backward()
                model.zero_grad(set_to_none=True)
            timings[name] = min(timings.get(name, float("inf")), (time.perf_counter() - start) / args.repeats)
    for name, step in paths.items():
        with PeakTensorBytes(list(model.parameters())) as tracker:
            step().backward()
        model.zero_grad(set_to_none=True)
        peaks[name] = tracker.peak
    modeling._plain_head = plain_head
    for name in paths:
        print(f"{name:>30}: {timings[name] * 1000:8.1f} ms / step, peak {peaks[name] / 2**20:7.1f} MiB")
    print(f"shape: vocab {args.vocab}, batch {args.batch} x {args.length} tokens, {args.answer} labelled per sample")
    print(f"head_speedup: {timings['full-vocabulary logits'] / timings['label positions, chunked']:.2f}")
    print(f"head_speedup_chunked: {timings['label positions, whole logits'] / timings['label positions, chunked']:.2f}")
    print(f"head_peak_memory_ratio: {peaks['label positions, chunked'] / peaks['label positions, whole logits']:.2f}")


if __name__ == "__main__":
    main()
