"""The training loop on the tiny preset: loss falls, exact resume, atomic checkpoints, export."""

import json
from pathlib import Path

import pytest
import torch

from medrega import presets
from medrega.builders.phantom_records import make_phantom_dataset
from medrega.training import DataSource, TrainConfig, Trainer, load_config
from medrega.training.checkpoint import CheckpointManager

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("phantoms"), 24, seed=3, tasks=("detection", "identification"), langs=("en", "zh"))


def _config(phantoms, out, **kw):
    base = dict(model="tiny", data=(DataSource(str(phantoms)),), output_dir=str(out), stage="full", max_steps=6, micro_batch_size=4,
                lr=2e-3, warmup_steps=2, save_every=3, max_length=128, precision="fp32", log_every=1)
    return TrainConfig(**{**base, **kw})


def _trainer(config, resume=False):
    model, processor = presets.build("tiny", seed=0)
    return Trainer(config, model=model, processor=processor, resume=resume, progress=False)


def test_train_resume_checkpoint_and_export(phantoms, tmp_path):
    full = _trainer(_config(phantoms, tmp_path / "full")).train()
    losses = [full.losses[s] for s in sorted(full.losses)]
    assert len(losses) == 6 and losses[-1] < losses[0]
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 and r["lr"] > 0 for r in rows)
    ckpt = CheckpointManager(tmp_path / "full" / "checkpoints").latest()
    assert ckpt.name == "step_6" and (ckpt / "model.safetensors").is_file() and (ckpt / "optimizer.pt").is_file()

    # kill the run right after the step-3 checkpoint, then resume in a fresh trainer
    killed = _trainer(_config(phantoms, tmp_path / "split"))
    save = killed.save_checkpoint

    def save_then_die():
        save()
        raise KeyboardInterrupt("killed")

    killed.save_checkpoint = save_then_die
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed_trainer = _trainer(_config(phantoms, tmp_path / "split"), resume=True)
    assert resumed_trainer.step == 3
    resumed = resumed_trainer.train()
    assert sorted(resumed.losses) == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed.losses[step] == pytest.approx(full.losses[step], rel=1e-5, abs=1e-6)

    exported = resumed_trainer.export(tmp_path / "exported")
    from medrega import MedRegAForConditionalGeneration, MedRegAProcessor

    model = MedRegAForConditionalGeneration.from_pretrained(exported)
    processor = MedRegAProcessor.from_pretrained(exported)
    for a, b in zip(model.state_dict().values(), resumed_trainer.model.state_dict().values()):
        assert torch.equal(a, b)
    assert processor.num_image_tokens == model.config.num_image_tokens


def test_interrupted_checkpoint_leaves_previous_loadable(phantoms, tmp_path):
    trainer = _trainer(_config(phantoms, tmp_path, max_steps=2, save_every=1))
    trainer.train()
    manager = trainer.checkpoints
    assert manager.latest().name == "step_2"

    def crash(tmp, tag):
        (tmp / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        manager.save(3, crash, {"step": 3})
    assert manager.latest().name == "step_2"
    again = _trainer(_config(phantoms, tmp_path, max_steps=4, save_every=1), resume=True)
    assert again.step == 2


def test_loss_is_normalised_by_label_tokens_across_micro_batches(phantoms, tmp_path):
    trainer = _trainer(_config(phantoms, tmp_path, micro_batch_size=4, group_by_length=False))
    batches = trainer.data.batches()
    first, second = next(batches), next(batches)
    from medrega.data.collate import pad_collate

    def grads():
        out = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        trainer.model.zero_grad(set_to_none=True)
        return out

    split_loss, _, _ = trainer.backward([first, second])
    split = grads()
    samples = [
        {"input_ids": ids[mask.bool()], "labels": lab[mask.bool()], "pixel_values": pix}
        for b in (first, second)
        for ids, lab, mask, pix in zip(b["input_ids"], b["labels"], b["attention_mask"], b["pixel_values"].split(1))
    ]
    whole_loss, _, _ = trainer.backward([pad_collate(samples, 0)])
    whole = grads()
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", sorted((ROOT / "train" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = load_config(path)
    assert config.data and config.max_steps >= 1
    if config.deepspeed:
        ds = json.loads(Path(config.deepspeed).read_text())
        assert ds["zero_optimization"]["stage"] in (2, 3)


def test_box_aware_augmentation_is_seeded_and_keeps_regions(phantoms, tmp_path):
    trainer = _trainer(_config(phantoms, tmp_path, augment_crop_prob=1.0))
    encoded = trainer.data.encoded
    first, again = encoded[0], encoded[0]
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["pixel_values"], again["pixel_values"])
    plain = trainer.processor.encode_record(trainer.data.mix[0])
    assert not torch.equal(first["pixel_values"], plain["pixel_values"])  # the image was cropped
    text = trainer.processor.tokenizer.decode(first["input_ids"], skip_special_tokens=True)
    assert "<box>" in text
    encoded.epoch = 1
    assert not torch.equal(encoded[0]["pixel_values"], first["pixel_values"])  # a new crop next epoch


def test_lora_checkpointing_and_module_learning_rates(phantoms, tmp_path):
    config = _config(phantoms, tmp_path, stage="instruction", lora_r=4, gradient_checkpointing=True, max_steps=2,
                     lr=1e-3, lr_projector=5e-3, lr_vision=1e-5)
    trainer = _trainer(config)
    rates = {group["name"].split("_")[0]: group["initial_lr"] for group in trainer.optimizer.param_groups}
    assert rates["projector"] == 5e-3 and rates["language"] == 1e-3 and "vision" not in rates  # vision frozen
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert any("lora" in n for n in trainable) and not any(n.startswith("vision_tower") for n in trainable)
    result = trainer.train()
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
    exported = trainer.export(tmp_path / "merged")
    from medrega import MedRegAForConditionalGeneration

    merged = MedRegAForConditionalGeneration.from_pretrained(exported)
    assert not any("lora" in n for n in merged.state_dict())
