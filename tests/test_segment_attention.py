"""Segment attention: packed rows attend per sample, with the losses and gradients of the block mask."""

import json

import pytest
import torch

from medrega.data import pack_samples, pad_collate
from medrega.models import MedRegAForConditionalGeneration, tiny_config
from medrega.models.segment_attention import SEGMENT_ATTENTION, segment_bounds

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, IMG, N_TOK = 300, 299, 4


def make_model():
    torch.manual_seed(0)
    cfg = tiny_config(VOCAB, IMG, hidden_size=32, num_layers=2, vision_width=32, vision_layers=1, image_size=32, patch_size=16)
    return MedRegAForConditionalGeneration(cfg)


def sample(n_images, text, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.full((N_TOK,), IMG)] * n_images + [torch.randint(3, 200, (text,), generator=g)])
    labels = ids.clone()
    labels[: n_images * N_TOK + 2] = -100
    return {"input_ids": ids, "labels": labels, "pixel_values": torch.randn(n_images, 3, 32, 32, generator=g)}


def use(model, implementation):
    model.language_model.set_attn_implementation(implementation)


def loss_and_grads(model, batch):
    model.zero_grad()
    keys = ("input_ids", "attention_mask", "labels", "pixel_values", "position_ids")
    loss = model(**{k: v for k, v in batch.items() if k in keys and v is not None}).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_segment_bounds_follow_restarting_positions():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 0, 1, 2]])
    assert segment_bounds(pos) == [[(0, 3), (3, 5), (5, 9)], [(0, 6), (6, 9)]]


def test_packed_rows_equal_block_mask_and_padded_batch():
    model = make_model().train()
    samples = [sample(1, 9, 1), sample(0, 14, 2), sample(2, 5, 3), sample(1, 20, 4), sample(0, 7, 5)]
    packed = pack_samples(samples, 40, pad_token_id=0)
    assert packed["input_ids"].shape[0] >= 2 and packed["num_padding_tokens"] > 0  # several rows, a padding tail
    use(model, "sdpa")
    block_loss, block_grads = loss_and_grads(model, packed)
    padded_loss, _ = loss_and_grads(model, pad_collate(samples, 0))
    use(model, SEGMENT_ATTENTION)
    seg_loss, seg_grads = loss_and_grads(model, packed)
    seg_padded_loss, _ = loss_and_grads(model, pad_collate(samples, 0))  # a padding mask: SDPA's path
    torch.testing.assert_close(seg_loss, block_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seg_loss, padded_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seg_padded_loss, padded_loss, atol=1e-6, rtol=1e-6)
    assert seg_grads.keys() == block_grads.keys()
    for name, grad in seg_grads.items():
        torch.testing.assert_close(grad, block_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_generation_is_unchanged():
    model = make_model().eval()
    s = sample(1, 6, 7)
    inputs = {"input_ids": s["input_ids"][None], "pixel_values": s["pixel_values"]}
    use(model, "sdpa")
    ref = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    use(model, SEGMENT_ATTENTION)
    assert torch.equal(model.generate(**inputs, max_new_tokens=5, do_sample=False), ref)


def test_trainer_packing_uses_segments_and_checkpoints_stay_portable(tmp_path):
    from medrega import presets
    from medrega.builders.phantom_records import make_phantom_dataset
    from medrega.training import DataSource, TrainConfig, Trainer

    data = make_phantom_dataset(tmp_path / "data", 4, seed=0, tasks=("detection",), langs=("en",))
    for packing, expected in ((False, "sdpa"), (True, SEGMENT_ATTENTION)):
        config = TrainConfig(model="tiny", data=(DataSource(str(data)),), output_dir=str(tmp_path / f"out{packing}"), max_steps=1, micro_batch_size=2, packing=packing, precision="fp32")
        model, processor = presets.build("tiny", seed=0)
        trainer = Trainer(config, model=model, processor=processor, progress=False)
        assert trainer.model.config.text_config._attn_implementation == expected
    trainer.model.save_pretrained(tmp_path / "saved")
    assert SEGMENT_ATTENTION not in json.dumps(json.loads((tmp_path / "saved" / "config.json").read_text()))
