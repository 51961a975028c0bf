"""The multi-image phantom records (``medrega.builders.mim_phantoms``) and the pieces of ``bench/multi_image.py``."""

import json
import random
import runpy
from collections import Counter
from pathlib import Path

import pytest

from medrega.builders import mim_phantoms as M
from medrega.data import load_records
from medrega.grounding import IMAGE_TOKEN

ROOT = Path(__file__).resolve().parents[1]
SIZE = (48, 48)


def _answer_texts() -> dict[str, set[str]]:
    return {a: {M._TEXT[k][i] for k in keys for i in (0, 1)} for a, keys in M.ANSWERS.items()}


def test_dataset_records_images_answers_and_determinism(tmp_path):
    path = M.make_mim_dataset(tmp_path / "a", 6, seed=3, size=SIZE)
    records = load_records(path)
    assert len(records) == 4 * 6 * 2
    assert Counter((r.meta["ability"], r.lang) for r in records) == {(a, lang): 6 for a in M.ANSWERS for lang in ("en", "zh")}
    texts = _answer_texts()
    for r in records:
        assert r.task == "multi_image" and r.source == "synthetic-phantom" and r.meta["synthetic"]
        assert len(r.images) == 2 and all(Path(p).is_file() for p in r.images) and r.image_sizes == [SIZE, SIZE]
        assert r.prompt.count(IMAGE_TOKEN) == 2
        assert r.answer in texts[r.meta["ability"]] and M._TEXT[r.meta["answer"]][r.lang == "zh"] == r.answer
    coref = [r for r in records if r.meta["ability"] == "coreference"]
    assert all(("first" in r.prompt or "second" in r.prompt) if r.lang == "en" else "张图像" in r.prompt for r in coref)
    again = M.make_mim_dataset(tmp_path / "b", 6, seed=3, size=SIZE)
    assert again.read_bytes() == path.read_bytes()
    assert M.make_mim_dataset(tmp_path / "c", 6, seed=4, size=SIZE).read_bytes() != path.read_bytes()
    with pytest.raises(ValueError, match="abilities"):
        M.make_mim_dataset(tmp_path / "d", 1, abilities=("counting",))


def test_pairs_are_drawn_as_their_answers_say():
    rng = random.Random(0)
    for _ in range(12):
        (prior, current), _, change, _, _ = M._temporal(rng, SIZE)
        n0, n1 = len(prior.nodule_sides), len(current.nodule_sides)
        assert n1 - n0 == {"appeared": 1, "disappeared": -1, "grown": 0, "stable": 0}[change]
        areas = [sorted(int(m.sum()) for (name, _, _), m in zip(p.structures, p.masks) if name == "nodule") for p in (prior, current)]
        if change == "grown":
            assert sum(areas[1]) - sum(areas[0]) > 0.8 * max(areas[0])  # 1.6 x the radius: ~2.6 x the area
        if change == "stable":
            assert areas[0] == areas[1]
        images, _, answer, _, meta = M._comparison(rng, SIZE)
        assert tuple(int(M._has(p, meta["finding"])) for p in images) == M._PAIR[M.ANSWERS["comparison"].index(answer)]
        images, _, answer, target, meta = M._coreference(rng, SIZE)
        assert answer == ("yes" if M._has(images[target], meta["finding"]) else "no")
        views, _, answer, _, meta = M._reasoning(rng, SIZE)
        assert [bool(v.nodule_sides) for v in views] == [bool(s) for s in meta["views_with_nodule"]]
        assert answer == ("yes" if any(meta["views_with_nodule"]) else "no")


def test_answers_are_balanced():
    rng = random.Random(1)
    comparison = Counter(M._comparison(rng, SIZE)[2] for _ in range(80))
    assert set(comparison) == set(M.ANSWERS["comparison"]) and min(comparison.values()) >= 10
    changes = Counter(M._temporal(rng, SIZE)[2] for _ in range(80))
    assert set(changes) == set(M.CHANGES) and min(changes.values()) >= 10
    reasoning = Counter(M._reasoning(rng, SIZE)[2] for _ in range(80))
    assert min(reasoning.values()) >= 25


def test_first_image_only_keeps_the_question_and_one_image(tmp_path):
    path = M.make_mim_dataset(tmp_path, 2, seed=0, abilities=("coreference",), size=SIZE)
    for r in load_records(path):
        one = M.first_image_only(r)
        assert one.images == r.images[:1] and one.image_sizes == r.image_sizes[:1] and one.answer == r.answer
        assert one.prompt.count(IMAGE_TOKEN) == 1 and ("Image 2" not in one.prompt and "图2" not in one.prompt)
        assert one.prompt.split(IMAGE_TOKEN + "\n")[-1] == r.prompt.split(IMAGE_TOKEN + "\n")[-1]  # the question as it was
        with pytest.raises(ValueError, match="needs 2 or more"):
            M.first_image_only(one)
    first = M.write_first_image_only(path)
    rows = [json.loads(x) for x in first.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4 and all(len(row["images"]) == 1 and not Path(row["images"][0]).is_absolute() for row in rows)
    assert [r.images[0] for r in load_records(first)] == [r.images[0] for r in load_records(path)]


def test_bench_scores_exact_answers_and_prints_the_names(tmp_path, capsys):
    bench = runpy.run_path(str(ROOT / "bench" / "multi_image.py"))
    lines = [
        {"key": "a", "ability": "comparison", "text": "the second image", "reference": "The second image."},
        {"key": "b", "ability": "comparison", "text": "Both images.", "reference": "Neither image."},
        {"key": "c", "ability": "temporal", "text": "结节较前增大。", "reference": "结节较前增大。"},
        {"key": "d", "ability": "temporal", "text": None, "reference": "No change."},
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    multi = bench["accuracy_by_ability"](path)
    assert multi == {"comparison": 0.5, "temporal": 0.5, "overall": 0.5}
    first = {"comparison": 0.25, "temporal": 0.5, "overall": 0.375}
    bench["report"]({0: {"multi": multi, "first_image": first}, 1: {"multi": multi, "first_image": first}})
    out = capsys.readouterr().out
    assert "mim_gain[comparison]: 25.0" in out and "mim_gain[temporal]: 0.0" in out and "mim_gain[overall,seed=1]: 12.5" in out
    assert "mim_multi_accuracy[overall]: 0.5000" in out and "mim_first_image_accuracy[comparison]: 0.2500" in out
    path.write_text(json.dumps({"key": "e", "skipped": "image not found: x.png"}) + "\n")
    with pytest.raises(RuntimeError, match="skipped"):
        bench["accuracy_by_ability"](path)
