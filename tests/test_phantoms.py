from collections import Counter

import numpy as np
import pytest

from medrega.boxes import from_mask, iou_matrix
from medrega.data.phantoms import VOCAB, make_phantom, make_prior

ORGANS = ["right lung", "left lung", "heart", "liver"]


@pytest.mark.parametrize("size", [(128, 128), (160, 112), (96, 144)])
def test_boxes_are_tight_boxes_of_the_drawn_masks(size):
    for seed in range(25):
        ph = make_phantom(seed, size)
        w, h = size
        assert ph.image.size == size and ph.image.mode == "L"
        assert [s[0] for s in ph.structures[:4]] == ORGANS
        for (en, zh, box), mask in zip(ph.structures, ph.masks, strict=True):
            assert VOCAB[en] == zh and mask.shape == (h, w) and mask.any()
            assert box == from_mask(mask)
            x1, y1, x2, y2 = (int(v) for v in box)
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert mask[y1:y2, x1:x2].sum() == mask.sum()  # every mask pixel inside the box
            assert mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any()  # tight on every side
            assert mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any()
        organs = ph.masks[:4]
        assert not any((organs[i] & organs[j]).any() for i in range(4) for j in range(i + 1, 4))
        lungs = {"right": ph.masks[0], "left": ph.masks[1]}
        for mask, side in zip(ph.masks[4 : 4 + len(ph.nodule_sides)], ph.nodule_sides):
            assert not (mask & ~lungs[side]).any()
        if ph.liver_lesion:
            assert not (ph.masks[-1] & ~ph.masks[3]).any()
        boxes = dict((s[0], s[2]) for s in ph.structures[:4])
        assert boxes["right lung"][2] <= w / 2 <= boxes["left lung"][0]  # patient's right on the image left


def test_appearance_identifies_each_structure():
    means = {name: [] for name in VOCAB}
    for seed in range(40):
        ph = make_phantom(seed)
        pixels = np.asarray(ph.image, dtype=np.float32)
        for (en, _, _), mask in zip(ph.structures, ph.masks):
            own = mask.copy()
            for (other, _, _), inner in zip(ph.structures, ph.masks):
                if other in ("nodule", "lesion") and en not in ("nodule", "lesion"):
                    own &= ~inner
            means[en].append(pixels[own].mean())
    m = {k: float(np.mean(v)) for k, v in means.items()}
    assert m["nodule"] > m["heart"] > m["liver"] > m["lesion"] > m["left lung"]
    assert abs(m["left lung"] - m["right lung"]) < 5


def test_phantoms_vary_and_are_deterministic():
    a, b, c = make_phantom(5), make_phantom(5), make_phantom(6)
    assert a.image.tobytes() == b.image.tobytes() and a.structures == b.structures
    assert a.image.tobytes() != c.image.tobytes()
    counts = Counter(len(make_phantom(s).nodule_sides) for s in range(100))
    assert set(counts) == {0, 1, 2}
    enlarged = [make_phantom(s) for s in range(60)]
    assert {p.heart_enlarged for p in enlarged} == {True, False}
    big = min(p.structures[2][2][2] - p.structures[2][2][0] for p in enlarged if p.heart_enlarged)
    small = max(p.structures[2][2][2] - p.structures[2][2][0] for p in enlarged if not p.heart_enlarged)
    assert big > small  # an enlarged heart is visibly larger than any normal one
    with pytest.raises(ValueError, match="at least 32"):
        make_phantom(0, (16, 64))


def test_prior_shows_the_change():
    seen = set()
    for seed in range(40):
        ph = make_phantom(seed)
        prior, change, j = make_prior(ph, seed)
        seen.add(change)
        assert prior.structures[:4] == ph.structures[:4]
        n_now, n_before = len(ph.nodule_sides), len(prior.nodule_sides)
        if change == "new":
            assert n_before == n_now - 1
        elif change == "grown":
            before, now = prior.nodule_boxes()[j], ph.nodule_boxes()[j]
            assert (before[2] - before[0]) < (now[2] - now[0])
            assert iou_matrix([before], [now])[0, 0] > 0
        else:
            assert j is None and prior.structures == ph.structures
    assert seen == {"new", "grown", "stable"}
