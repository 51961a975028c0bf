"""Which initialisation of the loc-token rows learns fastest after moving a text-box model onto loc tokens
(:func:`medrega.converters.to_loc_tokens`)?

1. A tiny text-box model (the ``tiny`` preset with ``TextBoxCodec(999)``, MedRegA's codec) is trained for
   ``--pretrain-steps`` on the phantoms' detection records (:func:`make_phantom_dataset`), so that its digit
   tokens mean coordinates, as in a converted MedRegA.
2. It is moved onto loc tokens with each init of :data:`~medrega.converters.to_loc_tokens.INITS`.
3. Each converted model is fine-tuned for ``--steps`` on the same batches (same order, same seed); the loss
   curve, the final training loss (mean of the last 10 steps) and the loss on held-out phantoms (another
   seed) are printed, the last lines as ``loc_init_<name>_loss: value`` and ``loc_init_<name>_heldout: value``.

Run: ``nice python bench/loc_init.py`` (551 s measured with the defaults on a 2-core CPU shared with three other jobs).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch


def batches(processor, records, batch: int, steps: int, seed: int):
    """``steps`` padded batches of ``batch`` records drawn in a seeded order (the same for every init)."""
    from medrega.data.collate import pad_collate

    encoded = [processor.encode_record(r) for r in records]
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch:
        chunk = list(range(len(encoded)))
        rng.shuffle(chunk)
        order += chunk
    pad = processor.tokenizer.pad_token_id
    for s in range(steps):
        yield pad_collate([encoded[i] for i in order[s * batch : (s + 1) * batch]], pad)


def step_inputs(b: dict) -> dict:
    return {k: b[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values")}


def train(model, processor, records, *, steps: int, batch: int, lr: float, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for b in batches(processor, records, batch, steps, seed):
        loss = model(**step_inputs(b)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate(model, processor, records, batch: int) -> float:
    from medrega.data.collate import pad_collate

    model.eval()
    total, tokens = 0.0, 0
    encoded = [processor.encode_record(r) for r in records]
    for i in range(0, len(encoded), batch):
        b = pad_collate(encoded[i : i + batch], processor.tokenizer.pad_token_id)
        n = int((b["labels"][:, 1:] != -100).sum())
        total += float(model(**step_inputs(b)).loss) * n
        tokens += n
    return total / max(tokens, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="training phantoms (one detection record each, per language)")
    parser.add_argument("--heldout", type=int, default=8, help="held-out phantoms")
    parser.add_argument("--pretrain-steps", type=int, default=60, help="text-box training before the move")
    parser.add_argument("--steps", type=int, default=40, help="fine-tuning steps after the move, per init")
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the curves here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from medrega import presets
    from medrega.builders.phantom_records import make_phantom_dataset
    from medrega.converters.to_loc_tokens import INITS, to_loc_tokens
    from medrega.data import load_records
    from medrega.models import MedRegAForConditionalGeneration
    from medrega.processing import MedRegAProcessor

    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = load_records(make_phantom_dataset(tmp / "train", args.n, seed=args.seed, tasks=("detection",)))
        heldout = load_records(make_phantom_dataset(tmp / "heldout", args.heldout, seed=args.seed + 1000, tasks=("detection",)))
        model, processor = presets.build("tiny", seed=args.seed, region_codec={"type": "text", "scale": 999})
        pre = train(model, processor, records, steps=args.pretrain_steps, batch=args.batch, lr=args.lr, seed=args.seed)
        text_heldout = evaluate(model, processor, heldout, args.batch)
        print(f"text-box model: {len(records)} detection records, {args.pretrain_steps} steps, loss {pre[0]:.3f} -> {sum(pre[-10:]) / len(pre[-10:]):.3f}, held-out {text_heldout:.3f}", flush=True)
        model.save_pretrained(tmp / "text")
        processor.save_pretrained(tmp / "text")

        results = {}
        for init in INITS:
            to_loc_tokens(tmp / "text", tmp / init, init=init)
            loc_model = MedRegAForConditionalGeneration.from_pretrained(tmp / init)
            loc_processor = MedRegAProcessor.from_pretrained(tmp / init)
            before = evaluate(loc_model, loc_processor, heldout, args.batch)
            losses = train(loc_model, loc_processor, records, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed + 1)
            after = evaluate(loc_model, loc_processor, heldout, args.batch)
            results[init] = {"heldout_before": before, "curve": losses, "final": sum(losses[-10:]) / len(losses[-10:]), "heldout": after}
            every = max(1, args.steps // 10)
            curve = " ".join(f"{i}:{losses[i]:.3f}" for i in range(0, args.steps, every))
            print(f"{init:8s} held-out before {before:.3f}; curve {curve}; final {results[init]['final']:.3f}; held-out after {after:.3f}", flush=True)
    best = min(results, key=lambda k: results[k]["heldout"])
    for init, r in results.items():
        print(f"loc_init_{init}_loss: {r['final']:.4f}")
        print(f"loc_init_{init}_heldout: {r['heldout']:.4f}")
    print(f"fastest learner (lowest held-out loss after {args.steps} steps): {best}; {time.time() - start:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "text_heldout": text_heldout, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
