"""Loss on labelled positions only vs. full-vocabulary logits: time and memory of a training step.

Usage: python bench/bench_loss_head.py [--vocab 32000] [--batch 16] [--length 512] [--repeats 5]
Prints both timings measured in this process and their ratio (reference / ours).
"""

import argparse
import time

import torch
import torch.nn.functional as F

from medrega import presets


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

    def ours():
        model(input_ids=ids, labels=labels).loss.backward()

    def full_logits():  # what a plain causal LM does: logits for every position, then cross-entropy
        hidden = model.language_model.get_decoder()(input_ids=ids).last_hidden_state
        logits = model.get_output_embeddings()(hidden).float()
        F.cross_entropy(logits[:, :-1].reshape(-1, args.vocab), labels[:, 1:].reshape(-1), ignore_index=-100).backward()

    timings = {}
    for name, step in (("full-vocabulary logits", full_logits), ("labelled positions only", ours), ("full-vocabulary logits ", full_logits), ("labelled positions only ", ours)):
        step()  # warm up
        start = time.perf_counter()
        for _ in range(args.repeats):
            step()
            model.zero_grad(set_to_none=True)
        timings[name.strip()] = min(timings.get(name.strip(), float("inf")), (time.perf_counter() - start) / args.repeats)
    for name, seconds in timings.items():
        print(f"{name:>26}: {seconds * 1000:8.1f} ms / step")
    print(f"speed-up (reference / ours): {timings['full-vocabulary logits'] / timings['labelled positions only']:.2f}x "
          f"(vocab {args.vocab}, batch {args.batch} x {args.length} tokens, {args.answer} labelled per sample)")


if __name__ == "__main__":
    main()
