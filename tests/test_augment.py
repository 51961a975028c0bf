import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medrega import boxes as B
from medrega.data.augment import AppliedTransform, BoxAugment, augment_record
from medrega.grounding import Grounding, TextBoxCodec
from medrega.tasks import get_task


@st.composite
def scenes(draw):
    w, h = draw(st.integers(16, 120)), draw(st.integers(16, 120))
    boxes = []
    for _ in range(draw(st.integers(1, 3))):
        x1, y1 = draw(st.integers(0, w - 4)), draw(st.integers(0, h - 4))
        boxes.append((x1, y1, draw(st.integers(x1 + 4, w)), draw(st.integers(y1 + 4, h))))
    return (w, h), boxes


def _mask(size, box):
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1:y2, x1:x2] = 255
    return Image.fromarray(mask)


@settings(max_examples=200, deadline=None)
@given(scenes(), st.integers(0, 10_000), st.booleans(), st.sampled_from([None, (48, 40)]))
def test_boxes_follow_the_masks(scene, seed, flip, output_size):
    size, boxes = scene
    augment = BoxAugment(crop_prob=1.0, crop_scale=(0.3, 1.0), max_area_loss=0.5, flip_prob=float(flip), output_size=output_size)
    image = Image.new("L", size, 90)
    out, groundings, transform = augment(image, [Grounding("lesion", boxes)], rng=seed)
    assert out.size == transform.output_size
    assert transform.flipped == flip
    moved = groundings[0].boxes
    assert len(moved) == len(boxes)  # nothing dropped
    for box, new in zip(boxes, moved):
        kept = transform.apply_image(_mask(size, box), Image.Resampling.NEAREST)
        expected = B.from_mask(np.asarray(kept) > 0)
        assert np.allclose(new, expected, atol=1.0), (box, new, expected, transform)
        area = (box[2] - box[0]) * (box[3] - box[1])
        x1, y1, x2, y2 = transform.crop
        inside = max(0, min(box[2], x2) - max(box[0], x1)) * max(0, min(box[3], y2) - max(box[1], y1))
        assert inside >= 0.5 * area


def test_crop_that_would_cut_a_box_is_redrawn_or_skipped():
    augment = BoxAugment(crop_prob=1.0, crop_scale=(0.2, 0.3), max_area_loss=0.0, max_tries=5)
    box = (5.0, 5.0, 95.0, 95.0)  # a box covering the image cannot survive a 30 % crop
    for seed in range(20):
        _, groundings, transform = augment(Image.new("L", (100, 100)), [Grounding("heart", [box])], rng=seed)
        assert transform.crop == (0, 0, 100, 100) and groundings[0].boxes == [box]


def test_flip_is_off_by_default_and_geometric_false_is_identity():
    image = Image.new("L", (50, 40))
    assert not any(BoxAugment(crop_prob=1.0).draw(image.size, [], rng=s).flipped for s in range(50))
    assert all(BoxAugment(crop_prob=1.0, flip_prob=1.0, geometric=False).draw(image.size, [], rng=s).is_identity for s in range(10))


def test_flip_maps_boxes_exactly():
    t = AppliedTransform((100, 50), (0, 0, 100, 50), (100, 50), flipped=True)
    assert t.apply_boxes([(10, 5, 30, 25)]) == [(70.0, 5.0, 90.0, 25.0)]


def test_record_text_is_rewritten_with_the_boxes(fixtures_dir):
    path = fixtures_dir / "medrega-demo" / "images" / "demo_01.jpg"
    image = Image.open(path).convert("RGB")
    size = image.size
    groundings = [Grounding("heart", [(300.0, 200.0, 500.0, 400.0)]), Grounding("nodule", [(100.0, 100.0, 160.0, 150.0)])]
    detection = get_task("detection").make_record("r1", str(path), size, groundings)
    identification = get_task("identification").make_record("r2", str(path), size, (300, 200, 500, 400), "heart")
    augment = BoxAugment(crop_prob=1.0, crop_scale=(0.5, 0.9), max_area_loss=0.1, flip_prob=1.0)
    codec = TextBoxCodec(scale=detection.box_scale)
    for seed in range(5):
        out, new, transform = augment_record(detection, image, augment, rng=seed)
        assert out.size == tuple(new.image_sizes[0]) == transform.output_size
        reparsed = codec.parse(new.answer, new.image_sizes)
        assert [g.phrase for g in reparsed] == ["heart", "nodule"]
        expected = [transform.apply_boxes(g.boxes) for g in groundings]
        for g, exp in zip(reparsed, expected):  # text boxes are rounded to 1/1000 of the new image
            assert np.allclose(g.boxes, exp, atol=max(out.size) / 1000 + 1e-6)
        assert [g.boxes for g in new.groundings] == expected
        new.validate("augmented")
        assert detection.image_sizes[0] == size  # the input record is untouched
        _, new_id, t2 = augment_record(identification, image, augment, rng=seed)
        assert new_id.meta["region"] == [list(b) for b in t2.apply_boxes([(300, 200, 500, 400)])]
        prompt_box = codec.parse(new_id.prompt, new_id.image_sizes)[0].boxes[0]
        assert np.allclose(prompt_box, new_id.meta["region"][0], atol=max(t2.output_size) / 1000 + 1e-6)
        assert new_id.answer == "heart"


def test_size_mismatch_is_an_error():
    record = get_task("detection").make_record("r", "x.png", (64, 64), [Grounding("heart", [(1, 1, 10, 10)])])
    with pytest.raises(ValueError, match="64x64"):
        augment_record(record, Image.new("RGB", (32, 32)), BoxAugment(), rng=random.Random(0))
