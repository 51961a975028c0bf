"""Do a trained demo model's image tokens still differ between images? SYNTHETIC data.

A diagnostic for the demo's small-lesion problem (README, "Demo"): a model can only find a structure
that its image tokens carry. This reads ``DEMO_OUT/model`` and the held-out phantoms of ``DEMO_OUT`` and
prints the spread of the projected image tokens (what the language model and a box head read): their
standard deviation across images (same token, different phantoms) and across tokens (same phantom),
averaged over features, and their mean norm. A spread across images near zero next to its value at
init (``--init``: the tiny preset as built) means the vision tower has stopped telling phantoms apart.

    python bench/feature_spread.py demo_out [--images 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from medrega import presets
from medrega.models import MedRegAForConditionalGeneration
from medrega.processing import MedRegAProcessor


def spread(model, processor, paths: list[Path]) -> dict[str, float]:
    """``{"across_images", "across_tokens", "norm"}`` of the projected image tokens of ``paths``."""
    images = [Image.open(p).convert("RGB") for p in paths]
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = model.eval().get_image_features(pixels).pooler_output.float()  # (N, n, H)
    return {"across_images": tokens.std(0).mean().item(), "across_tokens": tokens.std(1).mean().item(), "norm": tokens.norm(dim=-1).mean().item()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_out", type=Path, help="a directory written by `medrega demo --out` or bench/demo_levers.py --out")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--init", action="store_true", help="also the tiny preset as built (seed 0)")
    args = parser.parse_args(argv)
    paths = sorted((args.demo_out / "heldout" / "images").glob("*.png"))[: args.images]
    if len(paths) < 2:
        parser.error(f"{args.demo_out / 'heldout' / 'images'} holds {len(paths)} phantom images; a spread needs at least 2")
    processor = MedRegAProcessor.from_pretrained(args.demo_out / "model")
    models = {"trained": MedRegAForConditionalGeneration.from_pretrained(args.demo_out / "model")}
    if args.init:
        models["init"] = presets.build("tiny", seed=0)[0]
    for name, model in models.items():
        for key, value in spread(model, processor, paths).items():
            print(f"{name}_token_{key}: {value:.5f}")


if __name__ == "__main__":
    main()
