import pytest
import torch

from medrega.models import image_groups
from medrega.models.image_groups import identical_images


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_repeated_images_are_grouped_in_order_of_first_appearance(dtype):
    px = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    batch = torch.stack([px[2], px[0], px[2], px[1], px[0], px[3]])
    first, inverse = identical_images(batch)
    assert first.tolist() == [0, 1, 3, 5]
    assert inverse.tolist() == [0, 1, 0, 2, 1, 3]
    assert torch.equal(batch[first][inverse], batch)


def test_distinct_images_give_none_even_when_they_hold_the_same_pixels_rearranged():
    px = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert identical_images(torch.stack([px, px.flip(-1), px.transpose(-1, -2)])) is None


def test_equal_keys_of_distinct_images_are_not_merged(monkeypatch):
    monkeypatch.setattr(image_groups, "_probe", lambda length, device: torch.zeros(length, dtype=torch.int32))  # every key 0
    px = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    assert identical_images(px) is None
    first, inverse = identical_images(torch.stack([px[0], px[0]]))
    assert first.tolist() == [0] and inverse.tolist() == [0, 0]
