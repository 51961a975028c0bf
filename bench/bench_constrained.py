"""Overhead of constrained box decoding on generation speed.

Generates with and without :class:`~medrega.inference.BoxConstraintLogitsProcessor` on the same
prompts, in the same process, alternating the two in each round, and prints tokens/s for both and
their ratio. Generation is forced to its full length (no early stop) so that both runs produce the
same number of tokens. By default a bias makes the model write boxes, so the constraint does its full
work (the worst case); ``--prose`` drops the bias to measure the usual case of text outside boxes.

    python bench/bench_constrained.py                      # tiny preset, CPU
    python bench/bench_constrained.py --batch-size 8 --new-tokens 128 --device cuda
    python bench/bench_constrained.py --model path/to/model_dir
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from medrega.inference import BoxConstraintLogitsProcessor


class RegionBias(LogitsProcessor):
    """Favour ``<box>`` and loc tokens so that most generated tokens are inside boxes."""

    def __init__(self, processor):
        tok, codec = processor.tokenizer, processor.codec
        self.start = tok.convert_tokens_to_ids("<box>")
        self.locs = torch.tensor(codec.loc_token_ids(tok))

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.start] += 8
        scores[:, self.locs.to(scores.device)] += 4
        return scores


def _load(args):
    if args.model:
        from medrega.models import MedRegAForConditionalGeneration
        from medrega.processing import MedRegAProcessor

        return MedRegAForConditionalGeneration.from_pretrained(args.model), MedRegAProcessor.from_pretrained(args.model)
    from medrega import presets

    return presets.build("tiny", seed=0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model directory (default: the tiny preset)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prose", action="store_true", help="no bias towards boxes: measure text generation")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, processor = _load(args)
    model = model.to(args.device).eval()
    prompt = processor.render([{"role": "user", "content": "<image>\nPlease locate <ref>left lung</ref> in this image."}], add_generation_prompt=True)
    images = [[Image.new("L", (256, 256), 60 + 10 * i)] for i in range(args.batch_size)]
    inputs = processor(text=[prompt] * args.batch_size, images=images, return_tensors="pt").to(args.device)
    length = inputs["input_ids"].shape[1]
    bias = [] if args.prose else [RegionBias(processor)]
    constraint = BoxConstraintLogitsProcessor.from_processor(processor, max_length=length + args.new_tokens)
    variants = {"plain": LogitsProcessorList(bias), "constrained": LogitsProcessorList([*bias, constraint])}

    def run(processors) -> tuple[float, torch.Tensor]:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **inputs, logits_processor=processors, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id
            )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, out[:, length:]

    for processors in variants.values():  # warm-up
        run(processors)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    outputs = {}
    for _ in range(args.rounds):
        for name, processors in variants.items():
            elapsed, outputs[name] = run(processors)
            seconds[name].append(elapsed)
    tokens = args.batch_size * args.new_tokens
    speed = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    texts = processor.tokenizer.batch_decode(outputs["constrained"], skip_special_tokens=True)
    problems = sum(len(processor.codec.parse(t[: t.rfind("</box>") + 6] if "</box>" in t else "", (256, 256)).problems) for t in texts)
    boxes = sum(t.count("</box>") for t in texts)
    report = {
        "device": args.device,
        "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        "boxes_favoured": not args.prose,
        "plain_tokens_per_s": round(speed["plain"], 1),
        "constrained_tokens_per_s": round(speed["constrained"], 1),
        "ratio_constrained_over_plain": round(speed["constrained"] / speed["plain"], 3),
        "closed_boxes_constrained": boxes,
        "box_problems_constrained": problems,
    }
    for key, value in report.items():
        print(f"{key:32s} {value}")
    return report


if __name__ == "__main__":
    main()
