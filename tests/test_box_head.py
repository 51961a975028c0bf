"""The optional box head: its loss in training, the loc tokens it writes in generation, config and checkpoints."""

import pytest
import torch

from medrega.models import MedRegAConfig, MedRegAForConditionalGeneration, tiny_config
from medrega.models.box_head import BoxDecoding, quantise
from medrega.training.optim import param_groups

VOCAB, IMG, N_TOK, BOX, END, BINS = 300, 299, 4, 230, 231, 50
LOCS = list(range(240, 240 + BINS))
CODEC = {"type": "loc", "bins": BINS}

pytestmark = pytest.mark.usefixtures("one_thread")


def config(**box_head):
    spec = {"box_token_id": BOX, "loc_token_ids": LOCS, **box_head}
    return tiny_config(VOCAB, IMG, hidden_size=32, num_layers=2, vision_width=32, vision_layers=1, image_size=32, patch_size=16, region_codec=CODEC, box_head=spec)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MedRegAForConditionalGeneration(config(loss_weight=3.0))


def images(n, seed):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def sample(n_images, answer):
    """``(ids, labels)``: text, ``n_images`` images, a question, then ``answer`` (labelled)."""
    prompt = [5, 6, *[IMG] * (N_TOK * n_images), 7, 8, 9]
    return torch.tensor(prompt + answer), torch.tensor([-100] * len(prompt) + answer)


def heads_output(model):
    captured = []
    handle = model.box_head.register_forward_hook(lambda module, inputs, output: captured.append(output))
    return captured, handle


def test_config_checks_and_round_trips(tmp_path):
    with pytest.raises(ValueError, match="loc-token region codec"):
        tiny_config(VOCAB, IMG, region_codec={"type": "text", "scale": 1000}, box_head={"box_token_id": BOX, "loc_token_ids": LOCS})
    with pytest.raises(ValueError, match="must hold the 50 loc tokens"):
        config(loc_token_ids=LOCS[:-1])
    with pytest.raises(ValueError, match="unknown box_head keys"):
        config(layers=2)
    with pytest.raises(ValueError, match=r"ids in \[0, 300\)"):
        config(box_token_id=VOCAB)
    cfg = config(heads=2)
    cfg.save_pretrained(tmp_path)
    expected = {"heads": 2, "loss_weight": 5.0, "box_token_id": BOX, "loc_token_ids": LOCS}
    assert MedRegAConfig.from_pretrained(tmp_path).box_head == expected
    assert tiny_config(VOCAB, IMG).box_head is None


def test_loss_adds_the_weighted_l1_of_single_image_answer_boxes(model):
    one = sample(1, [BOX, LOCS[3], LOCS[10], LOCS[20], LOCS[40], END])
    two = sample(2, [BOX, LOCS[1], LOCS[2], LOCS[3], LOCS[4], END])  # two images: the language model's alone
    width = max(len(one[0]), len(two[0]))
    ids = torch.stack([torch.nn.functional.pad(t[0], (0, width - len(t[0]))) for t in (one, two)])
    labels = torch.stack([torch.nn.functional.pad(t[1], (0, width - len(t[1])), value=-100) for t in (one, two)])
    mask = (labels != -100) | (ids != 0)
    model.train()
    model.zero_grad()
    captured, handle = heads_output(model)
    try:
        loss = model(input_ids=ids, attention_mask=mask.long(), pixel_values=images(3, seed=1), labels=labels).loss
        model.config.box_head["loss_weight"] = 0.0
        language_only = model(input_ids=ids, attention_mask=mask.long(), pixel_values=images(3, seed=1), labels=labels).loss
    finally:
        model.config.box_head["loss_weight"] = 3.0
        handle.remove()
    assert captured[0].shape == (1, 4)
    target = (torch.tensor([3, 10, 20, 40]) + 0.5) / BINS
    torch.testing.assert_close(loss - language_only, 3.0 * (captured[0][0] - target).abs().mean())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.box_head.parameters())


def test_generation_writes_the_heads_box_cached_or_not(model):
    model.eval()
    ids = torch.stack([sample(1, [BOX])[0], sample(1, [BOX])[0]])  # both rows end with <box>
    ids[1, :2] = torch.tensor([11, 12])
    captured, handle = heads_output(model)
    try:
        cached = model.generate(input_ids=ids, pixel_values=images(2, seed=2), max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)
        heads_box = torch.tensor(LOCS)[quantise(captured[0], BINS)]
        uncached = model.generate(input_ids=ids, pixel_values=images(2, seed=2), max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=False)
    finally:
        handle.remove()
    assert torch.equal(cached[:, ids.shape[1] :], heads_box)
    assert torch.equal(uncached, cached)


def test_a_box_begun_in_the_prompt_is_finished_by_the_head(model):
    model.eval()
    ids, _ = sample(1, [BOX])
    with torch.no_grad():
        full = model.generate(input_ids=ids[None], pixel_values=images(1, seed=3), max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)
        rest = model.generate(input_ids=full[:, : len(ids) + 1], pixel_values=images(1, seed=3), max_new_tokens=3, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(rest, full)


def test_decoding_refuses_rows_that_did_not_take_the_forced_token(model):
    state = BoxDecoding(torch.randn(1, N_TOK, 32), torch.tensor([True]))
    logits = torch.zeros(1, 1, VOCAB)
    with torch.no_grad():
        state.step(model.box_head, torch.tensor([[BOX]]), torch.randn(1, 1, 32), logits, BOX, *model._box_lookups("cpu"))
    forced = int(logits[0, -1].argmax())
    assert forced in LOCS and torch.isinf(logits[0, -1]).sum() == VOCAB - 1
    with pytest.raises(ValueError, match="beam search"):
        state.step(model.box_head, torch.tensor([[forced + 1 if forced + 1 in LOCS else forced - 1]]), torch.randn(1, 1, 32), torch.zeros(1, 1, VOCAB), BOX, *model._box_lookups("cpu"))


def test_checkpoint_round_trip_and_every_stage_trains_the_head(tmp_path, model):
    model.save_pretrained(tmp_path)
    loaded = MedRegAForConditionalGeneration.from_pretrained(tmp_path)
    for name, tensor in model.box_head.state_dict().items():
        torch.testing.assert_close(loaded.box_head.state_dict()[name], tensor)
    ids, options = sample(1, [BOX])[0][None], {"max_new_tokens": 5, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    model.eval()
    assert torch.equal(loaded.eval().generate(input_ids=ids, pixel_values=images(1, seed=6), **options), model.generate(input_ids=ids, pixel_values=images(1, seed=6), **options))
    for stage in ("alignment", "instruction", "full"):
        loaded.set_trainable(stage)
        assert all(p.requires_grad for p in loaded.box_head.parameters())
    groups = param_groups(loaded, {"vision": 1e-3, "projector": 1e-3, "language": 1e-3, "box_head": 2e-3})
    assert [g["lr"] for g in groups if g["name"].startswith("box_head")] == [2e-3]


def test_the_head_leaves_the_other_parts_init_as_it_was():
    from medrega import presets

    plain, _ = presets.build("tiny", seed=0)
    with_head, processor = presets.build("tiny", seed=0, box_head={"loss_weight": 2.0})
    assert with_head.config.box_head["loc_token_ids"] == processor.codec.loc_token_ids(processor.tokenizer)
    assert with_head.config.box_head["loss_weight"] == 2.0
    heads = with_head.state_dict()
    assert all(torch.equal(tensor, heads[name]) for name, tensor in plain.state_dict().items())
