"""A recipe test in torchtune's style: a short, seeded training of the tiny preset whose first losses
are pinned and whose held-out loss must fall, so a change that stops the model learning fails here."""

import pytest
import torch

from medrega import presets
from medrega.builders.phantom_records import make_phantom_dataset
from medrega.data import load_records
from medrega.data.collate import pad_collate
from medrega.training import DataSource, TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

FIRST_LOSSES = {1: 8.089, 2: 7.828, 3: 7.621}  # seed 0, 64 phantoms, micro-batch 8, lr 1e-3


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
