"""Can the demo's vision tower and projector localise a small structure on their own? SYNTHETIC data.

A diagnostic for the demo's small-lesion problem (README, "Demo"): the tiny preset's vision tower and
projector (random init, as in the demo) are trained with a small readout head that maps their image tokens
to one box of a structure, on phantoms that contain exactly one such structure. No language model, no
prompt, no loc tokens. Held-out phantoms (other seeds) are scored every 100 steps with ``acc@0.5`` (share
of predicted boxes with IoU >= 0.5) and mean IoU. Readouts (``--readout``):

* ``linear_l1``: one linear layer over all image tokens, box in [0, 1] coordinates, L1 loss;
* ``attention_l1``: one learned query attends over the image tokens (as an answer token would), then a
  linear layer, L1 loss;
* ``linear_bins``: one linear layer to 4 x ``--bins`` logits (one class per coordinate bin, as loc tokens
  are), cross-entropy.
* ``attention_loc``: the language model's way in miniature: one learned query per coordinate attends over
  the image tokens, an MLP block with a residual, RMSNorm, then the logits of the model's own loc-token
  rows of the output embedding (as the preset initialises them; ``--loc-code`` swaps the init), cross-entropy
  (``--expected-l1 W`` adds W x the L1 of the coordinate expected under the softmax; ``--no-block`` drops
  the MLP block and the norm; ``--aux-l1 W`` adds W x the L1 of a linear coordinate head on the hidden
  state that the loc rows read).

    python bench/vision_probe.py --structure nodule --readout linear_l1
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from medrega import boxes, presets
from medrega.data.phantoms import make_phantom

PHANTOM_SIDE = 128


def phantoms_with_one(structure: str, first_seed: int, n: int, processor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixel_values, boxes)`` of the first ``n`` phantoms from ``first_seed`` on that hold exactly one
    ``structure``; boxes as fractions of the image side."""
    images, targets, seed = [], [], first_seed
    while len(images) < n:
        phantom = make_phantom(seed)
        seed += 1
        found = [box for name, _, box in phantom.structures if name == structure]
        if len(found) == 1:
            images.append(phantom.image.convert("RGB"))
            targets.append([c / PHANTOM_SIDE for c in found[0]])
    return processor.image_processor(images, return_tensors="pt")["pixel_values"], torch.tensor(targets)


def loc_token_ids(processor) -> torch.Tensor:
    """Token ids of ``<loc_0> .. <loc_{bins-1}>``, in bin order."""
    return torch.tensor(processor.codec.loc_token_ids(processor.tokenizer))


def loc_rows(model, processor) -> torch.Tensor:
    """The loc tokens' rows of the model's output embedding, in bin order."""
    return model.get_output_embeddings().weight.detach()[loc_token_ids(processor)]


def loc_code(kind: str, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` as the preset made them, random at their std, or a quadratic code of the bin."""
    if kind == "random":
        return torch.randn_like(rows) * rows.std()
    if kind == "quadratic":
        u = (torch.arange(len(rows), dtype=torch.float32) + 0.5) / len(rows)
        directions = torch.linalg.qr(torch.randn(rows.shape[1], 2))[0].T
        return QUADRATIC_SCALE * (u[:, None] * directions[0] - u[:, None] ** 2 * directions[1])
    return rows


QUADRATIC_SCALE = 50.0
BIN_READOUTS = ("linear_bins", "attention_loc")


class AttentionReadout(torch.nn.Module):
    """One learned query per structure attends over the image tokens; a shared linear layer maps each
    result to a box: ``(N, tokens, width) -> (N, queries, 4)``."""

    def __init__(self, width: int, queries: int = 1):
        super().__init__()
        self.query = torch.nn.Parameter(torch.randn(queries, width) * 0.2)
        self.key, self.value, self.out = torch.nn.Linear(width, width), torch.nn.Linear(width, width), torch.nn.Linear(width, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(torch.einsum("ntd,qd->nqt", self.key(tokens), self.query) / tokens.shape[-1] ** 0.5, dim=-1)
        return self.out(torch.einsum("nqt,ntd->nqd", weights, self.value(tokens)))


class LocReadout(torch.nn.Module):
    """Four learned queries (x1, y1, x2, y2) attend over the image tokens; an MLP block and RMSNorm give a
    hidden state per coordinate (``block=False``: the attention's output as it is), whose logits are taken against ``loc_rows`` (trainable, ``(bins, width)``)."""

    def __init__(self, width: int, loc_rows: torch.Tensor, block: bool = True):
        super().__init__()
        self.block = block
        self.query = torch.nn.Parameter(torch.randn(4, width) * 0.2)
        self.key, self.value = torch.nn.Linear(width, width), torch.nn.Linear(width, width)
        self.mlp = torch.nn.Sequential(torch.nn.RMSNorm(width), torch.nn.Linear(width, 4 * width), torch.nn.SiLU(), torch.nn.Linear(4 * width, width))
        self.norm = torch.nn.RMSNorm(width)
        self.loc_rows = torch.nn.Parameter(loc_rows.clone())
        self.coordinate = torch.nn.Linear(width, 1)  # --aux-l1: the coordinate, read linearly from the hidden state
        self.hidden = None  # (N, 4, width) of the last call

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(torch.einsum("ntd,qd->nqt", self.key(tokens), self.query) / tokens.shape[-1] ** 0.5, dim=-1)
        hidden = torch.einsum("nqt,ntd->nqd", weights, self.value(tokens))
        if self.block:
            hidden = self.norm(hidden + self.mlp(hidden))
        self.hidden = hidden
        return hidden @ self.loc_rows.T


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--structure", default="nodule", choices=["nodule", "lesion", "heart"])
    parser.add_argument("--readout", default="linear_l1", choices=["linear_l1", "attention_l1", "linear_bins", "attention_loc"])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--bins", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loc-code", default="preset", choices=["preset", "random", "quadratic"], help="attention_loc: init of the loc rows")
    parser.add_argument("--no-block", action="store_true", help="attention_loc: no MLP block and norm before the loc rows")
    parser.add_argument("--aux-l1", type=float, default=0.0, metavar="W", help="attention_loc: add W x the L1 of a linear coordinate head on each hidden state")
    parser.add_argument("--expected-l1", type=float, default=0.0, metavar="W", help="bin readouts: add W x L1 of the expected coordinate under the softmax")
    args = parser.parse_args(argv)
    if args.aux_l1 and args.readout != "attention_loc":
        parser.error("--aux-l1 needs --readout attention_loc")
    start = time.perf_counter()
    model, processor = presets.build("tiny", seed=args.seed)
    if args.readout == "attention_loc" and args.bins != processor.codec.bins:
        parser.error(f"attention_loc reads the preset's {processor.codec.bins} loc tokens: --bins must be {processor.codec.bins}")
    train_x, train_y = phantoms_with_one(args.structure, 0, args.n_train, processor)
    test_x, test_y = phantoms_with_one(args.structure, 10**6, 300, processor)
    tokens, width = model.config.num_image_tokens, model.config.text_config.hidden_size
    head = {
        "linear_l1": lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(tokens * width, 4)),
        "attention_l1": lambda: torch.nn.Sequential(AttentionReadout(width), torch.nn.Flatten()),
        "linear_bins": lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(tokens * width, 4 * args.bins)),
        "attention_loc": lambda: LocReadout(width, loc_code(args.loc_code, loc_rows(model, processor)), block=not args.no_block),
    }[args.readout]()
    parameters = [*model.vision_tower.parameters(), *model.projector.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)

    def outputs(pixels: torch.Tensor) -> torch.Tensor:
        out = head(model.get_image_features(pixels).pooler_output)  # features (N, tokens, width)
        return out.view(-1, 4, args.bins) if args.readout in BIN_READOUTS else out + 0.5

    def predicted_boxes(pixels: torch.Tensor) -> torch.Tensor:
        out = outputs(pixels)
        return (out.argmax(-1).float() + 0.5) / args.bins if args.readout in BIN_READOUTS else out

    centres = (torch.arange(args.bins, dtype=torch.float32) + 0.5) / args.bins  # --expected-l1
    generator = torch.Generator().manual_seed(args.seed)
    for step in range(1, args.steps + 1):
        pick = torch.randint(0, len(train_x), (args.batch,), generator=generator)
        out, target = outputs(train_x[pick]), train_y[pick]
        if args.readout in BIN_READOUTS:
            loss = F.cross_entropy(out.reshape(-1, args.bins), (target * args.bins).long().clamp(0, args.bins - 1).reshape(-1))
            if args.expected_l1:
                loss = loss + args.expected_l1 * (out.softmax(-1) @ centres - target).abs().mean()
            if args.aux_l1:
                loss = loss + args.aux_l1 * (head.coordinate(head.hidden).squeeze(-1) + 0.5 - target).abs().mean()
        else:
            loss = (out - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps:
            with torch.no_grad():
                ious = [boxes.iou(p.tolist(), t.tolist()) for p, t in zip(predicted_boxes(test_x), test_y, strict=True)]
            print(f"step {step}: loss {loss.item():.4f} heldout acc@0.5 {sum(i >= 0.5 for i in ious) / len(ious):.3f} mean_iou {sum(ious) / len(ious):.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"probe_acc@0.5: {sum(i >= 0.5 for i in ious) / len(ious):.3f}")
    print(f"probe_mean_iou: {sum(ious) / len(ious):.3f}")


if __name__ == "__main__":
    main()
