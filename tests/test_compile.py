"""Regional compilation: compiled blocks give the eager losses and gradients, and keep checkpoints as they were."""

import copy

import pytest
import torch

from medrega.models import MedRegAForConditionalGeneration, tiny_config
from medrega.models.compile import compile_blocks_

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, IMG, N_TOK = 300, 299, 4


def batch(rows, text, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.full((rows, N_TOK), IMG), torch.randint(3, 200, (rows, text), generator=g)], dim=1)
    labels = ids.clone()
    labels[:, : N_TOK + 2] = -100
    return {"input_ids": ids, "labels": labels, "pixel_values": torch.randn(rows, 3, 32, 32, generator=g)}


def loss_and_grads(model, inputs):
    model.zero_grad()
    loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_blocks_match_eager_over_changing_shapes():
    torch.manual_seed(0)
    eager = MedRegAForConditionalGeneration(tiny_config(VOCAB, IMG, hidden_size=32, num_layers=2, vision_width=32, vision_layers=2, image_size=32, patch_size=16)).train()
    compiled = copy.deepcopy(eager)
    keys = list(compiled.state_dict())
    assert compile_blocks_(compiled) == 4  # two decoder layers, two vision blocks
    assert list(compiled.state_dict()) == keys
    for rows, text in ((2, 9), (3, 14)):  # a second shape reuses the dynamic graph
        inputs = batch(rows, text, seed=rows)
        ref_loss, ref_grads = loss_and_grads(eager, inputs)
        loss, grads = loss_and_grads(compiled, inputs)
        torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_trainer_compiles_when_configured(tmp_path):
    from medrega import presets
    from medrega.builders.phantom_records import make_phantom_dataset
    from medrega.training import DataSource, TrainConfig, Trainer

    data = make_phantom_dataset(tmp_path / "data", 2, seed=0, tasks=("detection",), langs=("en",))
    for flag in (False, True):
        config = TrainConfig(data=(DataSource(str(data)),), output_dir=str(tmp_path / f"out{flag}"), max_steps=1, micro_batch_size=2, compile=flag, precision="fp32")
        model, processor = presets.build("tiny", seed=0)
        layers = Trainer(config, model=model, processor=processor, progress=False).model.language_model.model.layers
        assert all((layer._compiled_call_impl is not None) == flag for layer in layers)
