"""image_positions="shared": one position per image, consistent between training, prefill and decoding."""

import pytest
import torch

from medrega.models import MedRegAConfig, MedRegAForConditionalGeneration, tiny_config
from medrega.models.image_positions import shared_image_positions

VOCAB, IMG, N_TOK = 300, 299, 4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = tiny_config(VOCAB, IMG, hidden_size=32, num_layers=2, vision_width=32, vision_layers=1, image_size=32, patch_size=16, image_positions="shared")
    return MedRegAForConditionalGeneration(cfg).eval()


def prompt(n_images, text, seed):
    g = torch.Generator().manual_seed(seed)
    parts = []
    for _ in range(n_images):
        parts += [torch.randint(3, 200, (2,), generator=g), torch.full((N_TOK,), IMG)]
    return torch.cat([*parts, torch.randint(3, 200, (text,), generator=g)])


def images(n, seed):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_each_image_takes_its_first_tokens_position():
    is_image = torch.tensor([[0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)  # 1 image, then 2 back to back
    positions, deltas = shared_image_positions(torch.arange(15)[None], is_image, per_image=4)
    assert positions.tolist() == [[0, 1, 1, 1, 1, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5]]
    assert deltas.tolist() == [9]


def test_config_checks_and_round_trips(tmp_path, model):
    with pytest.raises(ValueError, match="image_positions must be one of"):
        tiny_config(VOCAB, IMG, image_positions="rowwise")
    model.config.save_pretrained(tmp_path)
    assert MedRegAConfig.from_pretrained(tmp_path).image_positions == "shared"


def test_shared_positions_change_what_the_model_computes(model):
    ids, px = prompt(1, 6, seed=1)[None], images(1, seed=2)
    shared = model(input_ids=ids, pixel_values=px).logits
    model.config.image_positions = "sequential"
    try:
        sequential = model(input_ids=ids, pixel_values=px).logits
    finally:
        model.config.image_positions = "shared"
    torch.testing.assert_close(shared[:, :3], sequential[:, :3])  # before the image's second token: identical
    assert not torch.allclose(shared[:, -1], sequential[:, -1])


def test_cached_generation_equals_full_forwards_and_left_padding_equals_alone(model):
    rows = [prompt(1, 7, seed=3), prompt(2, 3, seed=4)]
    px = images(3, seed=5)
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), r]) for r in rows])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    out = model.generate(
        input_ids=ids, attention_mask=mask, pixel_values=px, max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0,
        output_logits=True, return_dict_in_generate=True,
    )
    step_logits = torch.stack(out.logits, dim=1)  # (B, 5, V) from the cache
    for b, (row, pixels) in enumerate(zip(rows, (px[:1], px[1:]))):
        full = out.sequences[b, width - len(row) :][None]  # the prompt alone, then what was generated
        logits = model(input_ids=full[:, :-1], pixel_values=pixels, use_cache=False).logits[0, -5:]
        torch.testing.assert_close(step_logits[b], logits, atol=1e-5, rtol=1e-4)


def test_packed_rows_are_refused(model):
    ids = torch.cat([prompt(1, 3, seed=6), prompt(0, 4, seed=7)])[None]
    positions = torch.cat([torch.arange(9), torch.arange(4)])[None]
    with pytest.raises(ValueError, match="packed rows"):
        model(input_ids=ids, pixel_values=images(1, seed=8), position_ids=positions, labels=ids)
