"""One run of ``medrega demo`` with a lever pulled, for the README's lever table. SYNTHETIC data.

Levers (each off by default, so the plain command is the demo at a fixed step count):

* ``--patch-gain G``: multiply the vision tower's initial patch projection by ``G``, so that image
  content is not drowned by the position code (at init the projected image tokens vary across images
  by ~6% of their norm; 15% at ``G = 3``, 26% at ``G = 10``).
* ``--position-scale F``: multiply the vision tower's initial position code by ``F``
  (:data:`medrega.presets.POSITION_CODE_SCALE` is its std by default).
* ``--vision-warmup S``: before the demo's training, train the vision tower and projector for ``S``
  steps (batch 32, lr 1e-3) to regress the box of every structure that a phantom holds once from the
  image tokens: one learned query per structure attends over the tokens, a linear layer gives the box,
  L1 loss. 2,000 phantoms of their own seeds (:data:`WARMUP_SEEDS`).
* ``--shared-image-positions``: the language model gives all tokens of an image one position
  (``config.image_positions = "shared"``), so its attention cannot pick image tokens by where they sit.
* ``--attention-supervision W``: while training, add ``W`` x a cross-entropy that asks head 0 of
  every language-model layer but the first to attend, from each answer's ``<box>`` token and its first
  three coordinates (the positions that predict the four coordinates), to the image
  token whose grid cell holds the box centre (read from the answer's own loc tokens).
* ``--loc-regression W``: while training, add ``W`` x the L1 distance between each loc-token label's
  coordinate and the coordinate expected under the softmax over the loc tokens' logits at that position
  (an ordinal signal: a guess one bin off costs less than one across the image).
* ``--box-head W``: the tiny preset with a box head (:mod:`medrega.models.box_head`, ``loss_weight`` ``W``):
  the hidden state at ``<box>`` reads the image tokens and regresses the box, which the model then writes.
* ``--stage instruction``: keep the vision tower frozen during the demo's training.
* ``--lr``, ``--nodule-only`` (nearly every detection query asks for the nodule, no negatives),
  ``--small-weight K`` (nodules and liver lesions asked ``K`` times as often as each other structure).

    python bench/demo_levers.py --steps 400 --vision-warmup 300 --stage instruction --nodule-only
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import rotate_half

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vision_probe import PHANTOM_SIDE, AttentionReadout, loc_token_ids  # noqa: E402

from medrega.data.phantoms import VOCAB, make_phantom  # noqa: E402
from medrega.demo import run_demo  # noqa: E402
from medrega.grounding import BOX_START, IMAGE_TOKEN  # noqa: E402
from medrega.models.box_head import bin_lookup  # noqa: E402
from medrega.models.image_positions import sequential_positions, shared_image_positions  # noqa: E402

WARMUP_SEEDS = range(500_000, 502_000)  # the demo draws 32-bit phantom seeds: a shared one has p < 0.002


def warm_up_vision(model, processor, steps: int, batch_size: int = 32) -> float:
    """Train the vision tower and projector to box each structure (see the module docstring); returns
    the last loss (mean L1 in fractions of the image side)."""
    names = list(VOCAB)
    images, targets, present = [], torch.zeros(len(WARMUP_SEEDS), len(names), 4), torch.zeros(len(WARMUP_SEEDS), len(names))
    for row, seed in enumerate(WARMUP_SEEDS):
        phantom = make_phantom(seed)
        images.append(phantom.image.convert("RGB"))
        for column, name in enumerate(names):
            found = [box for en, _, box in phantom.structures if en == name]
            if len(found) == 1:
                targets[row, column], present[row, column] = torch.tensor(found[0]) / PHANTOM_SIDE, 1.0
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    head = AttentionReadout(model.config.text_config.hidden_size, queries=len(names))
    optimizer = torch.optim.AdamW([*model.vision_tower.parameters(), *model.projector.parameters(), *head.parameters()], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        pick = torch.randint(0, len(pixels), (batch_size,), generator=generator)
        error = (head(model.get_image_features(pixels[pick]).pooler_output) + 0.5 - targets[pick]).abs().mean(-1)
        loss = (error * present[pick]).sum() / present[pick].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


def bin_of_token(processor) -> torch.Tensor:
    """``(vocab,)``: each loc token's bin, -1 for every other token."""
    return bin_lookup(processor.codec.loc_token_ids(processor.tokenizer), len(processor.tokenizer))


def supervise_box_attention(model, processor, weight: float) -> None:
    """Wrap ``model.forward`` so that training adds the attention loss of ``--attention-supervision``."""
    tokenizer, codec = processor.tokenizer, processor.codec
    box_id, image_id = tokenizer.convert_tokens_to_ids([BOX_START, IMAGE_TOKEN])
    bin_of = bin_of_token(processor)
    per_image, decoder = model.config.num_image_tokens, model.language_model.get_decoder()
    side = math.isqrt(per_image)
    forward = model.forward

    @functools.wraps(forward)  # generate reads the signature
    def supervised(*args, labels=None, **kwargs):
        if labels is None or not model.training:
            return forward(*args, labels=labels, **kwargs)
        out = forward(*args, labels=labels, output_hidden_states=True, **kwargs)
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        is_image = ids == image_id
        one_image = is_image.sum(-1) == per_image
        rows, cols = ((ids == box_id) & (labels == box_id) & one_image[:, None]).nonzero(as_tuple=True)
        cols = cols[cols + 4 < ids.shape[1]]
        rows = rows[: len(cols)]
        coords = bin_of[labels[rows[:, None], cols[:, None] + torch.arange(1, 5)]]  # (K, 4) bins of x1 y1 x2 y2
        keep = (coords >= 0).all(-1)
        rows, cols, coords = rows[keep], cols[keep], coords[keep].float() / codec.bins
        if len(rows) == 0:
            return out
        centre = ((coords[:, :2] + coords[:, 2:]) / 2 * side).long().clamp(0, side - 1)
        target = (centre[:, 1] * side + centre[:, 0]).repeat(4)
        rows, cols = rows.repeat(4), torch.cat([cols + step for step in range(4)])  # <box> and the first 3 coordinates each predict one
        image_cols = is_image.float().argmax(-1)[rows, None] + torch.arange(per_image)  # (K, n)
        positions = sequential_positions(mask, ids.shape, ids.device)
        if model.config.image_positions == "shared":
            positions, _ = shared_image_positions(positions, is_image, per_image)
        aux = 0.0
        for index in range(1, len(decoder.layers)):
            layer = decoder.layers[index]
            hidden = layer.input_layernorm(out.hidden_states[index])
            cos, sin = decoder.rotary_emb(hidden, positions)
            attention, head_dim = layer.self_attn, layer.self_attn.head_dim
            query = attention.q_proj(hidden[rows, cols])[:, :head_dim]  # head 0, (K, d)
            key = attention.k_proj(hidden[rows[:, None], image_cols])[..., :head_dim]  # (K, n, d)
            query = query * cos[rows, cols] + rotate_half(query) * sin[rows, cols]
            key = key * cos[rows[:, None], image_cols] + rotate_half(key) * sin[rows[:, None], image_cols]
            logits = (query[:, None] * key).sum(-1) * attention.scaling  # (K, n)
            aux = aux + F.cross_entropy(logits, target)
        out.loss = out.loss + weight * aux / (len(decoder.layers) - 1)
        return out

    model.forward = supervised


def regress_loc_tokens(model, processor, weight: float) -> None:
    """Wrap the model's label loss so that training adds the expected-coordinate L1 of ``--loc-regression``."""
    codec, loc_ids, bin_of = processor.codec, loc_token_ids(processor), bin_of_token(processor)
    centres = (torch.arange(codec.bins, dtype=torch.float32) + 0.5) / codec.bins
    label_loss = model._label_loss

    def with_regression(hidden, labels, num_items_in_batch):
        loss = label_loss(hidden, labels, num_items_in_batch)
        bins = bin_of[labels[:, 1:]]  # (B, T-1): token t predicts label t+1
        keep = bins >= 0
        if not keep.any():
            return loss
        logits = hidden[:, :-1][keep].float() @ model.get_output_embeddings().weight[loc_ids].float().T  # (K, bins)
        expected = logits.softmax(-1) @ centres
        return loss + weight * (expected - centres[bins[keep]]).abs().mean()

    model._label_loss = with_regression


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch-gain", type=float, default=1.0)
    parser.add_argument("--position-scale", type=float, default=1.0)
    parser.add_argument("--vision-warmup", type=int, default=0, metavar="STEPS")
    parser.add_argument("--shared-image-positions", action="store_true")
    parser.add_argument("--attention-supervision", type=float, default=0.0, metavar="W")
    parser.add_argument("--loc-regression", type=float, default=0.0, metavar="W")
    parser.add_argument("--box-head", type=float, default=0.0, metavar="W")
    parser.add_argument("--stage", default="full", choices=["full", "instruction"])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--nodule-only", action="store_true")
    parser.add_argument("--small-weight", type=float, default=None, metavar="K", help="ask for nodules and liver lesions K times as often")
    parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    args = parser.parse_args(argv)

    def prepare(model, processor) -> None:
        if args.shared_image_positions:
            model.config.image_positions = "shared"
        with torch.no_grad():
            model.vision_tower.model.patch_embed.proj.weight.mul_(args.patch_gain)
            model.vision_tower.model.pos_embed.mul_(args.position_scale)
        if args.attention_supervision:
            supervise_box_attention(model, processor, args.attention_supervision)
        if args.loc_regression:
            regress_loc_tokens(model, processor, args.loc_regression)
        if args.vision_warmup:
            start = time.perf_counter()
            loss = warm_up_vision(model, processor, args.vision_warmup)
            print(f"vision_warmup_loss: {loss:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)

    if args.nodule_only and args.small_weight:
        parser.error("--small-weight and --nodule-only both set the query weights")
    queries = {"query_weights": {"nodule": 1000}, "negative_rate": 0.0} if args.nodule_only else {}
    if args.small_weight:
        queries["query_weights"] = {"nodule": args.small_weight, "lesion": args.small_weight}
    if args.box_head:
        queries["model_config"] = {"box_head": {"loss_weight": args.box_head}}
    with tempfile.TemporaryDirectory() as scratch:
        metrics = run_demo(args.out or scratch, max_steps=args.steps, seed=args.seed, stage=args.stage, lr=args.lr, prepare_model=prepare, progress=False, **queries)
    print(f"grounding_acc@0.5: {metrics['grounding_acc@0.5']}")
    for name, row in metrics["by_structure"].items():
        print(f"acc@0.5_{name.replace(' ', '_')}: {row['acc@0.5']}")
    print(f"not_found_rate: {metrics['negatives']['not_found_rate']}")


if __name__ == "__main__":
    main()
