"""Where does a trained demo model look when it starts a box? SYNTHETIC data.

For held-out single-region detection queries of one structure (the demo's ``heldout/`` records), runs
the model teacher-forced on the whole record and reads the attention from the ``<box>`` position (the
one that predicts the first coordinate) to the image tokens. Prints, per layer, the attention mass on
the image tokens and the image token that gets the most of it (summed over heads), next to the token
whose grid cell holds the true box's centre. ``answer_attends_true_token``: share of queries where a layer
that puts >= 10% of its attention on the image has its argmax on the true token. A model that reads the image moves its argmax with the
structure; one that has learned a prior keeps it on the same token for every image.

    python bench/answer_attention.py demo_out --structure nodule
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from medrega import MedRegAForConditionalGeneration, MedRegAProcessor
from medrega.data import load_records
from medrega.grounding import BOX_START, IMAGE_TOKEN


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_dir", type=Path, help="a `medrega demo --out` directory")
    parser.add_argument("--structure", default="nodule")
    parser.add_argument("--samples", type=int, default=12)
    args = parser.parse_args(argv)
    model = MedRegAForConditionalGeneration.from_pretrained(args.demo_dir / "model", attn_implementation="eager").eval()
    processor = MedRegAProcessor.from_pretrained(args.demo_dir / "model")
    image_id, box_id = processor.tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, BOX_START])
    (heldout,) = (args.demo_dir / "heldout").glob("*.jsonl")
    records = [r for r in load_records(heldout) if r.groundings and len(r.groundings[0].boxes) == 1 and r.groundings[0].phrase == args.structure][: args.samples]
    if not records:
        raise SystemExit(f"{heldout}: no single-region query for {args.structure!r}")
    side = math.isqrt(model.config.num_image_tokens)
    moves_with_truth = 0
    for record in records:
        encoded = processor.encode_record(record)
        ids = encoded["input_ids"]
        with torch.no_grad():
            out = model(input_ids=ids[None], pixel_values=encoded["pixel_values"], output_attentions=True)
        is_image = ids == image_id
        box_position = int((ids == box_id).nonzero()[0])
        (x1, y1, x2, y2), (w, h) = record.groundings[0].boxes[0], record.image_sizes[0]
        truth = int((y1 + y2) / 2 / h * side) * side + int((x1 + x2) / 2 / w * side)
        to_image = [layer[0, :, box_position, is_image] for layer in out.attentions]  # (heads, image tokens) per layer
        mass = [round(a.sum(-1).mean().item(), 2) for a in to_image]
        argmax = [int(a.sum(0).argmax()) for a in to_image]
        moves_with_truth += any(token == truth and m >= 0.1 for token, m in zip(argmax, mass))
        print(f"{record.id}: true token {truth}, argmax per layer {argmax}, mass on image per layer {mass}")
    print(f"answer_attends_true_token: {moves_with_truth / len(records):.3f}")


if __name__ == "__main__":
    main()
