"""A frozen vision tower costs no backward: no autograd graph (so no activations kept) through it, and
the trainable parts get the same gradients as when the tower is trained."""

import copy

import pytest
import torch

from medrega import presets

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    model, processor = presets.build("tiny", seed=0)
    return model, processor


def _batch(model):
    n = model.config.num_image_tokens
    img = model.config.image_token_id
    torch.manual_seed(1)
    row = torch.cat([torch.tensor([5, 6, 7]), torch.full((n,), img), torch.randint(10, 200, (12,)), torch.full((n,), img), torch.randint(10, 200, (6,))])
    ids = torch.stack([row, row.flip(0)])
    labels = ids.clone()
    labels[ids == img] = -100
    labels[:, :3] = -100
    return {"input_ids": ids, "labels": labels, "pixel_values": torch.randn(4, 3, model.config.image_size, model.config.image_size)}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_frozen_tower_builds_no_graph(tiny, checkpointing):
    model = copy.deepcopy(tiny[0])
    model.set_trainable("instruction")
    if checkpointing:
        model.activation_checkpointing_enable()
    model.train()
    px = _batch(model)["pixel_values"]
    vision = model.get_image_features(px).last_hidden_state
    assert not vision.requires_grad and vision.grad_fn is None  # nothing of the tower is kept for backward
    features = model.get_image_features(px).pooler_output
    assert features.requires_grad  # the projector still learns


def test_frozen_tower_gives_same_gradients_for_trainable_parts(tiny):
    frozen = copy.deepcopy(tiny[0])
    trained = copy.deepcopy(tiny[0])
    frozen.set_trainable("instruction")
    trained.set_trainable("full")
    batch = _batch(frozen)
    for model in (frozen, trained):
        model.train()
        model(**batch).loss.backward()
    grads = dict(trained.named_parameters())
    checked = 0
    for name, param in frozen.named_parameters():
        if name.startswith("vision_tower."):
            assert param.grad is None
            assert grads[name].grad is not None
            continue
        torch.testing.assert_close(param.grad, grads[name].grad, atol=1e-6, rtol=1e-5)
        checked += 1
    assert checked > 10
