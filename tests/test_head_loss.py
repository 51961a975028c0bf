"""The chunked linear cross-entropy gives torch's loss and gradients, and the model uses it by default."""

import copy

import pytest
import torch
import torch.nn.functional as F

from medrega import presets
from medrega.models import modeling
from medrega.models.head_loss import linear_cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(hidden, weight, targets):
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")


def _grads(fn, hidden, weight, targets, divisor=7.0):
    h = hidden.detach().clone().requires_grad_(hidden.requires_grad)
    w = weight.detach().clone().requires_grad_(weight.requires_grad)
    loss = fn(h, w, targets) / divisor
    loss.backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("rows,chunk", [(37, 5), (37, 37), (37, 100), (1, None), (64, None)])
def test_loss_and_gradients_equal_torch_cross_entropy(rows, chunk):
    torch.manual_seed(rows)
    hidden = torch.randn(rows, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 300, (rows,))
    ours = _grads(lambda h, w, t: linear_cross_entropy(h, w, t, chunk), hidden, weight, targets)
    ref = _grads(_reference, hidden, weight, targets)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_frozen_weight_or_input_gets_no_gradient():
    torch.manual_seed(0)
    hidden, targets = torch.randn(9, 8), torch.randint(0, 50, (9,))
    weight = torch.randn(50, 8)
    _, h_grad, w_grad = _grads(lambda h, w, t: linear_cross_entropy(h, w, t, 4), hidden.requires_grad_(), weight, targets)
    assert w_grad is None and h_grad is not None
    _, h_grad, w_grad = _grads(lambda h, w, t: linear_cross_entropy(h, w, t, 4), hidden.detach(), weight.requires_grad_(), targets)
    assert h_grad is None
    torch.testing.assert_close(w_grad, _grads(_reference, hidden.detach(), weight, targets)[2])


def test_no_label_rows_give_zero_loss_that_still_backpropagates():
    hidden = torch.randn(0, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.count_nonzero(weight.grad) == 0


def test_without_grad_mode_no_gradient_is_computed():
    hidden = torch.randn(6, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)
    targets = torch.randint(0, 50, (6,))
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, _reference(hidden, weight, targets).detach())


def test_bf16_matches_the_fp32_reference_closely():
    torch.manual_seed(3)
    hidden = torch.randn(40, 32)
    weight = torch.randn(500, 32) * 0.1
    targets = torch.randint(0, 500, (40,))
    ours = _grads(lambda h, w, t: linear_cross_entropy(h, w, t, 7), hidden.bfloat16().requires_grad_(), weight.bfloat16().requires_grad_(), targets)
    ref = _grads(_reference, hidden.requires_grad_(), weight.requires_grad_(), targets)
    torch.testing.assert_close(ours[0], ref[0], atol=0.05, rtol=0.01)
    for a, b in zip(ours[1:], ref[1:], strict=True):
        assert a.dtype == torch.bfloat16
        assert F.cosine_similarity(a.float().flatten(), b.flatten(), dim=0) > 0.999


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.zeros(3, dtype=torch.long))


def test_model_loss_and_gradients_equal_the_module_path(monkeypatch):
    model, _ = presets.build("tiny", seed=0)
    model.train()
    torch.manual_seed(1)
    ids = torch.randint(10, 200, (2, 24))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[1, 20:] = -100
    results = []
    for fused in (True, False):
        copy_ = copy.deepcopy(model)
        if not fused:
            monkeypatch.setattr(modeling, "_plain_head", lambda head: False)
        loss = copy_(input_ids=ids, labels=labels, num_items_in_batch=50).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in copy_.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=1e-6, rtol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], atol=5e-6, rtol=1e-5, msg=name)  # fp32; the lean MLP sums in another order


def test_head_with_adapter_or_bias_goes_through_the_module():
    assert modeling._plain_head(torch.nn.Linear(4, 8, bias=False))
    assert not modeling._plain_head(torch.nn.Linear(4, 8, bias=True))

    class Wrapped(torch.nn.Linear):
        pass

    assert not modeling._plain_head(Wrapped(4, 8, bias=False))
