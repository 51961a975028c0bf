import shutil
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medrega.data.images import WINDOW_PRESETS, ImageLoadError, ImageNotFoundError, is_dicom, load_image


def _testdata(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    if path is None:
        pytest.fail(f"pydicom test file {name} is not installed")
    return path


@pytest.fixture(scope="module")
def demo_images(fixtures_dir):
    return fixtures_dir / "medrega-demo" / "images"


def test_ct_applies_rescale_then_window():
    path = _testdata("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    loaded = load_image(path, window="lung")
    assert loaded.modality == "CT" and loaded.window == WINDOW_PRESETS["lung"]
    assert loaded.original_size == (ds.Columns, ds.Rows) and loaded.image.mode == "RGB"
    grey = np.asarray(loaded.image)[:, :, 0].astype(np.float32)
    expected = np.clip((hu - (-600 - 750)) / 1500, 0, 1) * 255
    assert np.abs(grey - expected).max() <= 1.0
    # explicit windows and presets change the picture; the default falls back to min-max (no window in this file)
    assert not np.array_equal(np.asarray(load_image(path, window="bone").image), np.asarray(loaded.image))
    auto = load_image(path)
    assert auto.window == pytest.approx(((hu.min() + hu.max()) / 2, hu.max() - hu.min()))


def test_mr_uses_its_own_window_and_monochrome1_inverts():
    path = _testdata("MR_small.dcm")
    loaded = load_image(path)
    assert loaded.window == (600.0, 1600.0) and loaded.modality == "MR"
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = load_image(ds)
    assert np.array_equal(np.asarray(inverted.image), 255 - np.asarray(loaded.image))


def test_multiframe_frames_and_range_error():
    path = _testdata("rtdose.dcm")
    first, last = load_image(path, frame=0), load_image(path, frame=14)
    assert first.num_frames == 15 and first.original_size == (10, 10)
    ds = pydicom.dcmread(path)
    assert not np.array_equal(ds.pixel_array[0], ds.pixel_array[14])
    assert first.window != last.window
    with pytest.raises(ImageLoadError, match=r"rtdose\.dcm: frame 15 .* 15 frame"):
        load_image(path, frame=15)


def test_dicom_found_by_magic_without_extension(tmp_path):
    target = tmp_path / "scan.bin"
    shutil.copy(_testdata("MR_small.dcm"), target)
    assert is_dicom(target)
    assert load_image(target).modality == "MR"


def test_demo_images_including_png_named_jpg(demo_images):
    for name in ("demo_01.jpg", "demo_06.jpg", "demo_07.jpg"):
        with Image.open(demo_images / name) as raw:
            size, fmt = raw.size, raw.format
        loaded = load_image(demo_images / name)
        assert loaded.image.mode == "RGB" and loaded.original_size == size
        assert loaded.source.endswith(name)
        if name in ("demo_06.jpg", "demo_07.jpg"):
            assert fmt == "PNG"


def test_arrays_and_pil_inputs():
    grey16 = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 7) % 4096
    loaded = load_image(grey16)
    assert loaded.original_size == (64, 48) and loaded.window is not None
    px = np.asarray(loaded.image)[:, :, 0]
    assert px.min() == 0 and px.max() == 255
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(load_image(rgb).image), rgb)
    unit = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    assert np.asarray(load_image(unit).image)[-1, -1, 0] == 255
    assert load_image(Image.fromarray(rgb)).original_size == (30, 20)
    windowed = load_image(np.full((4, 4), 100, dtype=np.int16), window=(100, 50))
    assert np.asarray(windowed.image)[0, 0, 0] == 128


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ImageNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not an image at all")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        load_image(broken)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.zeros((64, 64), np.uint8) + 80).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ImageLoadError, match="truncated.png"):
        load_image(truncated)
    with pytest.raises(ImageLoadError, match="MR_truncated.dcm"):
        load_image(_testdata("MR_truncated.dcm"))
    with pytest.raises(ValueError, match="unknown window preset"):
        load_image(_testdata("CT_small.dcm"), window="lungs-ish")
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((2, 3, 4, 5)))
    with pytest.raises(TypeError):
        load_image(42)
