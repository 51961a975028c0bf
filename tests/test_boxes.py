import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medrega import boxes as B


def test_quantize_rule():
    assert B.quantize((0.0, 0.5, 0.9995, 1.0)) == (0, 500, 999, 999)
    assert B.quantize((-0.2, 0.0001, 0.0019, 1.7), bins=1000) == (0, 0, 1, 999)
    assert B.dequantize((0, 500, 999, 999)) == (0.0005, 0.5005, 0.9995, 0.9995)


@given(
    w=st.integers(1, 10_000),
    h=st.integers(1, 10_000),
    frac=st.tuples(*[st.floats(0, 1) for _ in range(4)]),
    bins=st.sampled_from([100, 999, 1000]),
)
def test_pixel_box_survives_within_half_a_bin(w, h, frac, bins):
    x1, x2 = sorted((frac[0] * w, frac[2] * w))
    y1, y2 = sorted((frac[1] * h, frac[3] * h))
    back = B.bins_to_pixel(B.pixel_to_bins((x1, y1, x2, y2), (w, h), bins), (w, h), bins)
    for v, b, size in zip((x1, y1, x2, y2), back, (w, h, w, h)):
        # a coordinate on the far edge (v == size) lands in the last bin, half a bin away from its centre
        assert abs(v - b) <= 0.5 * size / bins + 1e-9


def test_iou_and_matrix_agree():
    a, b = (0, 0, 10, 10), (5, 5, 15, 15)
    assert B.iou(a, b) == pytest.approx(25 / 175)
    assert B.iou(a, (20, 20, 30, 30)) == 0.0
    assert B.iou(a, a) == 1.0
    m = B.iou_matrix([a, b], [b, (20, 20, 30, 30)])
    assert m.shape == (2, 2)
    assert m[0, 0] == pytest.approx(25 / 175) and m[1, 0] == 1.0 and m[0, 1] == 0.0


def test_validate_clips_or_raises():
    with pytest.raises(B.BoxError, match="outside the image"):
        B.validate_box((-5, 0, 20, 20), (100, 100))
    assert B.validate_box((-5, 0, 120, 20), (100, 100), clip=True) == (0.0, 0.0, 100.0, 20.0)
    with pytest.raises(B.BoxError, match="x1 < x2"):
        B.validate_box((50, 0, 40, 20))
    with pytest.raises(B.BoxError, match="4 coordinates"):
        B.validate_box((1, 2, 3))


def test_xywh_and_mask_conversion():
    assert B.from_xywh((10, 20, 30, 40)) == (10, 20, 40, 60)
    assert B.to_xywh(B.from_xywh((10, 20, 30, 40))) == (10, 20, 30, 40)
    mask = np.zeros((50, 80), dtype=bool)
    mask[10:21, 30:41] = True
    assert B.from_mask(mask) == (30, 10, 41, 21)
    with pytest.raises(B.BoxError, match="no foreground"):
        B.from_mask(np.zeros((4, 4)))
