"""Grounding generation: medrega's ``generate_answers`` against transformers' LLaVA ``generate`` on
the same weights, batch 1 and batched, and the cost of constrained box decoding.

Prompts are the phantom detection (grounding) questions with their image. Both sides include the
processor call (render, tokenize, image preprocessing) and decoding; generation is forced to its full
length (``min_new_tokens``) so both produce the same number of tokens, and the greedy token ids of the
two models are asserted equal first. Configurations alternate round by round in this process.

* ``generate_ratio``: medrega tokens/s over R1's, batched (``generate_ratio_batch1`` for batch 1).
* ``constrained_overhead``: extra time per token with ``constrained=True``, batched.

    python bench/generate.py --quick
    python bench/generate.py --device cuda --size gpu --dtype bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SIZES, build_pair, phantom_records, sync  # noqa: E402

from medrega.data.images import load_image  # noqa: E402
from medrega.inference.generation import generate_answers  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", choices=sorted(SIZES), default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    size = SIZES[args.size or ("quick" if args.quick else "cpu")]
    n_prompts = args.prompts or (3 if args.quick else 8)
    new_tokens = args.new_tokens or (16 if args.quick else 64)
    rounds = args.rounds or (2 if args.quick else 3)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    device = torch.device(args.device)
    ours, r1, processor = build_pair(size, device, dtype)
    tmp = tempfile.mkdtemp()
    path, records = phantom_records(n_prompts, tmp)
    records = [r for r in records if r.task == "detection"][:n_prompts]
    convs = [[r.conversation[0]] for r in records]
    images = [[load_image(path.parent / p).image for p in r.images] for r in records]
    eos = ours.generation_config.eos_token_id
    pad = ours.generation_config.pad_token_id
    forced = {"min_new_tokens": new_tokens}

    def r1_generate(c, ims):
        prompts = [processor.render(list(t), add_generation_prompt=True) for t in c]
        batch = processor(text=prompts, images=[list(i) for i in ims], return_tensors="pt", padding_side="left")
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}
        inputs["pixel_values"] = batch["pixel_values"].to(device=device, dtype=dtype)
        with torch.inference_mode():
            out = r1.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad, **forced)
        return processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :].cpu()), out

    def ours_generate(c, ims, constrained=False):
        return generate_answers(ours, processor, c, ims, max_new_tokens=new_tokens, constrained=constrained, generate_kwargs=dict(forced))

    # same weights, same greedy tokens
    prompts = [processor.render(list(t), add_generation_prompt=True) for t in convs]
    batch = processor(text=prompts, images=[list(i) for i in images], return_tensors="pt", padding_side="left").to(device=device, dtype=dtype)
    with torch.inference_mode():
        ours_ids = ours.generate(**batch, max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad, **forced)
    _, r1_ids = r1_generate(convs, images)
    agreement = float((ours_ids.cpu() == r1_ids.cpu()).float().mean())
    print(f"token_agreement: {agreement:.3f}")
    if dtype == torch.float32:  # bf16 kernels may break near-ties differently; fp32 must agree exactly
        assert agreement == 1.0, "medrega and R1 generate different tokens from the same weights"

    paths = {
        "medrega": lambda c, i: ours_generate(c, i),
        "medrega_constrained": lambda c, i: ours_generate(c, i, constrained=True),
        "r1": r1_generate,
    }
    for fn in paths.values():
        fn(convs[:1], images[:1])  # warm-up
    batched = {name: [] for name in paths}
    single = {name: [] for name in paths}
    names = list(paths)
    for k in range(rounds):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            fn = paths[name]
            sync(device)
            start = time.perf_counter()
            fn(convs, images)
            sync(device)
            batched[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            for c, i in zip(convs, images, strict=True):
                fn([c], [i])
            sync(device)
            single[name].append(time.perf_counter() - start)
    tokens = n_prompts * new_tokens
    print(f"device: {device} threads: {torch.get_num_threads()} dtype: {args.dtype} prompts: {n_prompts} new_tokens: {new_tokens} rounds: {rounds}")
    out = {}
    for name in paths:
        b, s = statistics.median(batched[name]), statistics.median(single[name])
        out[name] = (b, s)
        print(f"{name}: batched_tokens_per_s={tokens / b:.1f} batched_s_per_image={b / n_prompts:.3f} batch1_tokens_per_s={tokens / s:.1f} batch1_s_per_image={s / n_prompts:.3f}")
    print(f"generate_ratio: {out['r1'][0] / out['medrega'][0]:.2f}")
    print(f"generate_ratio_batch1: {out['r1'][1] / out['medrega'][1]:.2f}")
    print(f"constrained_overhead: {out['medrega_constrained'][0] / out['medrega'][0] - 1:.3f}")
    print(f"constrained_overhead_batch1: {out['medrega_constrained'][1] / out['medrega'][1] - 1:.3f}")
    return out


if __name__ == "__main__":
    main()
