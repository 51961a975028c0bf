"""The synthetic Med-MAT world: seeded files, a held-out target, loadable records, a plan that covers the target."""

import json

import numpy as np
import pytest
import yaml

from medrega.answers import LETTERS
from medrega.builders.mat_world import AREAS, MODALITIES, SOURCE, TASKS, draw_scan, make_mat_world
from medrega.data import load_records
from medrega.data.mat_planner import plan_cg, write_mixes
from medrega.data.mat_registry import MatRegistry
from medrega.data.medmat import ELEMENTS

TARGET = ("CT", "Lung", "level")
SMALL = {"n_per_label": 2, "n_test_per_label": 3, "size": 32, "langs": ("en", "zh")}


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_mat_world(tmp_path_factory.mktemp("world"), TARGET, seed=3, **SMALL)


def test_same_arguments_write_byte_identical_files_and_the_seed_changes_them(world, tmp_path):
    again = make_mat_world(tmp_path / "again", TARGET, seed=3, **SMALL)
    first, second = _tree(world.root), _tree(again.root)
    assert len(first) == 26 * (2 * 3 + 1) + (3 * 3 + 1) + 2  # images + records per entry, target, registry.tsv, world.json
    assert first == second
    other = _tree(make_mat_world(tmp_path / "other", TARGET, seed=4, **SMALL).root)
    assert other.keys() == first.keys()
    pngs = [k for k in first if k.endswith(".png")]
    assert sum(first[k] != other[k] for k in pngs) == len(pngs)  # every drawing comes from the seed


def test_the_target_combination_is_never_in_training_files(world):
    assert len(world.registry) == 26 and world.target == TARGET
    assert all(e.mat != TARGET for e in world.registry)
    assert {e.mat for e in world.registry} | {TARGET} == {(m, a, t) for m in MODALITIES for a in AREAS for t in TASKS}
    test_images = set()
    for record in load_records(world.target_path):
        assert (record.modality, record.area, record.meta["mat_family"]) == TARGET and record.meta["world_role"] == "test"
        test_images.add(record.images[0])
    for entry in world.registry:
        for record in load_records(entry.path):
            assert (record.modality, record.area, record.meta["mat_family"]) != TARGET
            assert record.meta["world_role"] == "train" and record.images[0] not in test_images
    info = json.loads((world.root / "world.json").read_text())
    assert info["synthetic"] is True and info["target"] == list(TARGET)
    assert all(tuple(e["mat"]) != TARGET for e in info["entries"])


def test_records_load_as_single_choice_questions_marked_synthetic(world):
    paths = [e.path for e in world.registry] + [world.target_path]
    for path in paths:
        records = load_records(path, confine_images=True)
        assert len(records) == {True: 3 * 3, False: 3 * 2}[path == world.target_path] * 2  # per label, times en + zh
        assert {r.lang for r in records} == {"en", "zh"}
        for r in records:
            assert r.task == "classification" and r.meta["synthetic"] is True and r.source.startswith(SOURCE + ":")
            options = r.meta["options"]
            assert len(options) == 3 and r.answer in LETTERS[:3] and options[LETTERS.index(r.answer)] == r.meta["labels"][0]
            assert all(f"{letter}: {o}" in r.prompt for letter, o in zip(LETTERS, options))
    zh = next(r for r in load_records(world.target_path) if r.lang == "zh")
    assert set(zh.meta["options"]) == set(TASKS["level"].labels_zh) and "肺部CT图像" in zh.prompt
    labels = {lab for e in world.registry for r in load_records(e.path) if r.lang == "en" for lab in [r.meta["label"]]}
    assert labels == {lab for t in TASKS.values() for lab in t.labels}


def test_planner_covers_the_target_with_world_entries_and_writes_mixes(world, tmp_path):
    plan = plan_cg(world.registry, world.target, kind="user")
    assert plan.held_out == [] and plan.related and plan.controls and len(plan.ablations) == 3
    assert {d for m in plan.related for d in m.directions} == {"fixed_modality", "fixed_area", "fixed_task", "modality_area", "separate"}
    for mix in plan.related:
        assert mix.covers == ELEMENTS
    for mix in plan.controls:
        assert all(not set(e.mat) & set(TARGET) for e in mix.entries)
    for mix in plan.ablations:
        assert mix.dropped not in mix.covers and all(e.mat != TARGET for e in mix.entries)
    yamls = write_mixes(plan, tmp_path / "mixes")
    for path in yamls:
        for source in yaml.safe_load(path.read_text())["data"]:
            assert (path.parent / source["path"]).resolve().is_file()
    again = MatRegistry()
    again.register_table(world.root / "registry.tsv")
    assert [(e.mat, e.no, e.path) for e in again] == [(e.mat, e.no, e.path) for e in world.registry]


def test_drawings_follow_their_labels_in_every_modality_and_area():
    for modality in MODALITIES:
        for area in AREAS:
            grades = [draw_scan(modality, area, "level", k, [7, k], 64)[1]["lesions"][0][2] for k in range(3)]
            assert grades == sorted(grades) and grades[2] > 2 * grades[0]
            for k in range(3):
                image, truth = draw_scan(modality, area, "disease", k, [9, k], 64)
                assert len(truth["lesions"]) == k + 1 and image.size == (64, 64) and image.mode == "L"
            image, truth = draw_scan(modality, area, "cancer", 0, 5, 64)
            cx, cy, r, shape = truth["lesions"][0]
            pixels = np.asarray(image, dtype=np.float32)
            d = np.hypot(*np.meshgrid((np.arange(64) + 0.5) / 64 - cx, (np.arange(64) + 0.5) / 64 - cy))
            inside, around = np.median(pixels[d < 0.6 * r]), np.median(pixels[(d > 1.6 * r) & (d < 2.2 * r)])
            assert shape == "disc" and abs(inside - around) > 20, (modality, area, inside, around)  # the lesion shows
    assert np.array_equal(np.asarray(draw_scan("MRI", "Brain", "cancer", 2, 1)[0]), np.asarray(draw_scan("MRI", "Brain", "cancer", 2, 1)[0]))


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="target"):
        make_mat_world(tmp_path, ("PET", "Lung", "level"))
    with pytest.raises(ValueError, match="area"):
        make_mat_world(tmp_path, TARGET, areas=("Lung", "Knee"))
    with pytest.raises(ValueError, match="label index"):
        draw_scan("CT", "Lung", "level", 3, 0)
