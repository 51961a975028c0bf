"""A recipe test in torchtune's style: a short, seeded training of the tiny preset whose first losses
are pinned and whose held-out loss must fall, so a change that stops the model learning fails here."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medrega import presets
from medrega.builders.phantom_records import make_phantom_dataset
from medrega.data import Record, Turn, load_records
from medrega.data.collate import pad_collate
from medrega.training import DataSource, TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

FIRST_LOSSES = {1: 8.041, 2: 7.949, 3: 7.787}  # seed 0, 64 phantoms, micro-batch 8, lr 1e-3


def _heldout_loss(model, processor, records) -> float:
    batch = pad_collate([processor.encode_record(r) for r in records], processor.tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"], pixel_values=batch["pixel_values"], return_logits=False).loss
    return float(loss)


def test_tiny_preset_learns_grounding_with_pinned_first_losses(tmp_path):
    train = make_phantom_dataset(tmp_path / "train", 64, seed=1, tasks=("detection",), filename="d.jsonl")
    heldout = load_records(make_phantom_dataset(tmp_path / "heldout", 16, seed=10_000, tasks=("detection",)))
    model, processor = presets.build("tiny", seed=0)
    before = _heldout_loss(model, processor, heldout)
    config = TrainConfig(model="tiny", data=(DataSource(str(train)),), output_dir=str(tmp_path / "run"), stage="full", max_steps=40,
                         micro_batch_size=8, lr=1e-3, warmup_steps=4, save_every=10**9, max_length=256, seed=0)  # fmt: skip
    result = Trainer(config, model, processor, progress=False).train()
    for step, loss in FIRST_LOSSES.items():
        assert result.losses[step] == pytest.approx(loss, abs=2e-3), step
    assert result.losses[40] < 0.6 * result.losses[1]
    after = _heldout_loss(model, processor, heldout)
    assert after < 0.6 * before, (before, after)


def _square_records(folder, n: int, seed: int) -> list[Record]:
    """``n`` 64-px grey images with one bright square in the left or the right half; the answer says which."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        side = "left" if rng.random() < 0.5 else "right"
        pixels = rng.integers(20, 40, (64, 64), dtype=np.uint8)
        size = int(rng.integers(8, 20))
        y, x = int(rng.integers(0, 64 - size)), int(rng.integers(0, 32 - size)) + (32 if side == "right" else 0)
        pixels[y : y + size, x : x + size] = 220
        path = folder / f"{i}.png"
        Image.fromarray(pixels).save(path)
        records.append(Record(id=f"square-{seed}-{i}", images=[str(path)], conversation=[Turn("user", "<image>\nIs the square on the left or the right?"), Turn("assistant", side)]))
    return records


def test_tiny_preset_learns_where_things_are_in_the_image(tmp_path):
    """An answer that only the square's position decides: with timm's and transformers' default inits the
    tiny preset stays at chance for ~250 steps here; its position code and q/k init make it learn (on a
    machine of the first measurement by step 87-123; on a 2-core AMD EPYC, seeds 0-2, between steps 200 and 230 of
    a 300-step run, and one run in the parallel suite had not left the plateau at step 300: how long it lasts
    depends on rounding, so the run is 400 steps long)."""
    train = _square_records(tmp_path / "train", 256, seed=1)
    heldout = _square_records(tmp_path / "heldout", 48, seed=2)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in train), encoding="utf-8")
    model, processor = presets.build("tiny", seed=0)
    config = TrainConfig(model="tiny", data=(DataSource(str(tmp_path / "train.jsonl")),), output_dir=str(tmp_path / "run"), stage="full",
                         max_steps=400, micro_batch_size=16, lr=1e-3, warmup_steps=30, min_lr_ratio=0.05, save_every=10**9, max_length=64, seed=0)  # fmt: skip
    Trainer(config, model, processor, progress=False).train()
    answers = {side: processor.tokenizer(side, add_special_tokens=False)["input_ids"][0] for side in ("left", "right")}
    batch = pad_collate([processor.encode_record(r) for r in heldout], processor.tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]).logits
    first_label = (batch["labels"] != -100).int().argmax(dim=1)  # the answer's first token
    scores = logits[torch.arange(len(heldout)), first_label - 1][:, [answers["left"], answers["right"]]]
    truth = torch.tensor([r.conversation[1].content == "right" for r in heldout])
    accuracy = float(((scores[:, 1] > scores[:, 0]) == truth).float().mean())
    assert accuracy >= 0.9, accuracy
