"""The lean SwiGLU MLP gives transformers' Llama MLP outputs and gradients, keeps less, and steps aside
for adapters."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from medrega import presets
from medrega.models.swiglu import SwiGLUMLP, swiglu_mlp, use_lean_mlp_

pytestmark = pytest.mark.usefixtures("one_thread")


def _llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
    return LlamaForCausalLM(config)


def test_gradients_pass_gradcheck():
    torch.manual_seed(0)
    args = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in ((2, 5, 6), (11, 6), (11, 6), (6, 11))]
    assert torch.autograd.gradcheck(swiglu_mlp, args)


def test_swapped_llama_gives_the_same_loss_and_gradients_with_the_same_keys():
    reference = _llama()
    lean = copy.deepcopy(reference)
    assert use_lean_mlp_(lean) == 2
    assert all(type(layer.mlp) is SwiGLUMLP for layer in lean.model.layers)
    assert list(lean.state_dict()) == list(reference.state_dict())
    ids = torch.randint(0, 97, (3, 9))
    losses = [model(input_ids=ids, labels=ids).loss for model in (reference, lean)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0])
    for (name, p), q in zip(reference.named_parameters(), lean.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_frozen_projections_and_inputs_get_no_gradient():
    mlp = _llama().model.layers[0].mlp
    for p in mlp.parameters():
        p.requires_grad_(False)
    mlp.up_proj.weight.requires_grad_(True)
    x = torch.randn(2, 4, 32)
    swiglu_mlp(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight).sum().backward()
    expected = torch.autograd.grad(mlp(x).sum(), mlp.up_proj.weight)[0]
    assert mlp.gate_proj.weight.grad is None and mlp.down_proj.weight.grad is None
    torch.testing.assert_close(mlp.up_proj.weight.grad, expected)


def test_keeps_fewer_activations_than_the_module():
    mlp = _llama().model.layers[0].mlp
    lean = SwiGLUMLP(mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    x = torch.randn(4, 16, 32, requires_grad=True)

    def saved_bytes(module):
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            module(x)
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in kept if not isinstance(t, torch.nn.Parameter)}
        return sum(storages.values())

    inner = 4 * 16 * 80 * 4  # one intermediate-width activation, bytes
    assert saved_bytes(mlp) - saved_bytes(lean) >= 2 * inner


def test_adapters_take_the_module_path():
    from peft import LoraConfig, get_peft_model

    model, _ = presets.build("tiny")
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["gate_proj", "up_proj", "down_proj"]))
    ids = torch.randint(0, 100, (2, 7))
    mlp = model.base_model.model.language_model.model.layers[0].mlp
    assert type(mlp) is SwiGLUMLP
    for module in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        module.lora_B["default"].weight.data.normal_()  # adapters that change the output
    x = torch.randn(2, 7, mlp.gate_proj.in_features)
    plain = swiglu_mlp(x, mlp.gate_proj.base_layer.weight, mlp.up_proj.base_layer.weight, mlp.down_proj.base_layer.weight)
    assert not torch.allclose(mlp(x), plain)
    assert model(input_ids=ids, labels=ids).loss.isfinite()
