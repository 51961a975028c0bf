"""Records written from synthetic phantoms (drawings, not medical images) for every task."""

import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from medrega.boxes import iou_matrix
from medrega.builders.phantom_records import make_phantom_dataset
from medrega.data import load_records
from medrega.data.phantoms import SOURCE, VOCAB
from medrega.tasks import TASKS, get_task


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    return make_phantom_dataset(out, 12, seed=3, size=(96, 80))


def test_dataset_has_every_task_in_both_languages_and_loads(dataset):
    records = load_records(dataset)
    assert not records.skipped and len(records) == 12 * len(TASKS) * 2
    assert Counter((r.task, r.lang) for r in records) == {(t, lang): 12 for t in TASKS for lang in ("en", "zh")}
    for r in records:
        assert r.source == SOURCE and r.meta["synthetic"] is True and r.box_scale == 1000
        assert all(Image.open(p).size == (96, 80) for p in r.images)
        assert r.image_sizes == [(96, 80)] * len(r.images)
        r.validate(check_images=True)
    detection = [r for r in records if r.task == "detection"]
    for r in detection:
        parsed = get_task("detection").parse_answer(r.answer, r.image_sizes[0])
        for got, want in zip(parsed, r.groundings, strict=True):
            assert got.phrase == want.phrase
            assert np.all(np.diag(iou_matrix(got.boxes, want.boxes)) > 0.97)
    assert {r.meta["objects"] for r in detection} == {"single", "multi"}
    multi = [r for r in records if r.task == "multi_image"]
    assert all(len(r.images) == 2 and r.images[0].endswith("_prior.png") for r in multi)
    zh = [r for r in records if r.lang == "zh" and r.task == "detection"]
    assert all(g.phrase in VOCAB.values() for r in zh for g in r.groundings)


def test_dataset_is_byte_identical_for_a_seed(tmp_path, dataset):
    again = make_phantom_dataset(tmp_path / "b", 12, seed=3, size=(96, 80))
    assert again.read_bytes() == dataset.read_bytes()
    for png in sorted((dataset.parent / "images").iterdir()):
        assert (again.parent / "images" / png.name).read_bytes() == png.read_bytes()
    other = make_phantom_dataset(tmp_path / "c", 12, seed=4, size=(96, 80), tasks=("detection",), langs=("en",))
    assert other.read_bytes() != dataset.read_bytes()
    assert len(other.read_text(encoding="utf-8").splitlines()) == 12
    with pytest.raises(ValueError, match="unknown task"):
        make_phantom_dataset(tmp_path / "d", 1, tasks=("segmentation",))


def test_generation_speed(tmp_path, record_property):
    start = time.perf_counter()
    path = make_phantom_dataset(tmp_path, 2000, seed=0, tasks=("detection",), langs=("en",))
    seconds = time.perf_counter() - start
    record_property("seconds_for_2000_detection_phantoms", round(seconds, 2))
    print(f"\n2,000 phantoms (detection, en): {seconds:.2f} s")
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2000


def _asked(path) -> Counter:
    return Counter(g.phrase for r in load_records(path) for g in r.groundings)


def test_query_weights_ask_for_weighted_structures_more_often(tmp_path):
    kwargs = dict(seed=5, size=(64, 64), tasks=("detection",), langs=("en",), multi_object_rate=0.0)
    uniform = make_phantom_dataset(tmp_path / "u", 300, **kwargs)
    same = make_phantom_dataset(tmp_path / "n", 300, query_weights=None, **kwargs)
    assert same.read_bytes() == uniform.read_bytes()
    weighted = make_phantom_dataset(tmp_path / "w", 300, query_weights={"nodule": 4.0}, **kwargs)
    before, after = _asked(uniform), _asked(weighted)
    assert after["nodule"] > 1.8 * before["nodule"]
    assert sum(after.values()) == sum(before.values()) == 300
    with pytest.raises(ValueError, match="query_weights"):
        make_phantom_dataset(tmp_path / "x", 1, query_weights={"tumour": 2.0})
    with pytest.raises(ValueError, match="query_weights"):
        make_phantom_dataset(tmp_path / "y", 1, query_weights={"nodule": 0.0})
