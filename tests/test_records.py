import json
from pathlib import Path

import pytest

from medrega.data import Record, RecordError, Turn, load_records

MIM_FILES = {
    "Med_MIM_benchmark_Held_in_Temporal.json": (933, "Temporal", "held_in"),
    "Med_MIM_benchmark_Held_in_Reasoning.json": (484, "Reasoning", "held_in"),
    "Med_MIM_benchmark_Held_in_Comparison.json": (344, "Comparison", "held_in"),
    "Med_MIM_benchmark_Held_in_Coreference.json": (1463, "Coreference", "held_in"),
    "Med_MIM_benchmark_Held_out_ODIR.json": (600, None, "held_out"),
    "Med_MIM_benchmark_Held_out_RAD.json": (366, None, "held_out"),
}


def test_medrega_demo_records(fixtures_dir):
    demo = fixtures_dir / "medrega-demo"
    records = load_records(demo / "data_file.jsonl", image_root=demo / "images", on_error="skip")
    assert len(records) == 9 and len(records.skipped) == 2
    assert all("image not found" in e.reason and e.field == "images[0]" for e in records.skipped)
    assert {e.line for e in records.skipped} == {5, 10}
    assert "2 x images[0]: image not found" in records.report()
    by_id = {r.id: r for r in records}
    (g,) = by_id["10"].groundings
    assert g.phrase == "胰腺癌" and by_id["10"].lang == "zh"
    assert g.boxes[0] == pytest.approx((661 / 999 * 512, 528 / 999 * 512, 743 / 999 * 512, 599 / 999 * 512))
    assert len(by_id["8"].groundings[0].boxes) == 2
    with pytest.raises(RecordError, match=r"data_file.jsonl:5: field 'images\[0\]': image not found"):
        load_records(demo / "data_file.jsonl", image_root=demo / "images")


@pytest.mark.parametrize("name", sorted(MIM_FILES))
def test_med_mim_benchmarks_load(fixtures_dir, name):
    count, ability, split = MIM_FILES[name]
    records = load_records(fixtures_dir / "med-mim" / name, check_images=False)
    assert len(records) == count and not records.skipped
    assert records[0].meta.get("ability") == ability and records[0].meta["split"] == split
    assert all(len(r.images) == r.prompt.count("<image>") >= 1 for r in records)
    ids = [r.id for r in records]
    assert len(set(r.location for r in records)) == len(records)  # ids repeat; locations do not
    assert len(ids) == count


def test_medmat_record(tmp_path):
    row = {"id": 1, "caption": "Cyst", "image": "kidney/cyst.jpg", "Question": "Review this kidney CT scan.",
           "Answer": "Cyst", "Question-choice": "Review this kidney CT scan.\nA: Stone\nB: Cyst\nC: Normal\nD: Tumor\nAnswer with the option's letter.",
           "Answer-choice": "B", "data-no": "2"}
    path = tmp_path / "mat.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (rec,) = load_records(path, check_images=False)
    assert rec.answer == "B" and rec.prompt.startswith("<image>\n") and rec.task == "classification"
    assert rec.meta["data-no"] == "2" and rec.images[0] == str(tmp_path / "kidney" / "cyst.jpg")


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = {"id": "a", "images": [], "lang": "en", "conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}


@pytest.mark.parametrize(
    "mutate, field, reason",
    [
        (lambda r: r["conversation"][1].update(role="doctor"), "conversation[1].role", "unknown role"),
        (lambda r: r["conversation"][1].update(content=" "), "conversation[1].content", "empty answer"),
        (lambda r: r.update(images=["x.png"]), "images", "0 <image> placeholder(s) but 1 image(s)"),
        (lambda r: r.update(image_sizes=[[100, 100]], images=["x.png"], conversation=[{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "<ref>a</ref><box>[[10, 10, 2000, 20]]</box>"}]),
         "conversation[1].content", "outside 0..1000"),
        (lambda r: r.update(groundings=[{"phrase": "a", "boxes": [[0, 0, 500, 50]]}], image_sizes=[[100, 100]], images=["x.png"], conversation=[{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "a"}]),
         "groundings", "outside the image"),
        (lambda r: r.pop("conversation"), "conversation", "missing"),
    ],
)
def test_bad_record_names_file_line_and_field(tmp_path, mutate, field, reason):
    bad = json.loads(json.dumps(GOOD))
    mutate(bad)
    path = _write(tmp_path, [json.dumps(GOOD), json.dumps(bad)])
    with pytest.raises(RecordError) as err:
        load_records(path, check_images=False)
    assert err.value.line == 2 and err.value.field == field and reason in err.value.reason
    assert f"bad.jsonl:2: field '{field}'" in str(err.value)
    lenient = load_records(path, check_images=False, on_error="skip")
    assert len(lenient) == 1 and len(lenient.skipped) == 1


def test_malformed_json_line_is_reported(tmp_path):
    path = _write(tmp_path, [json.dumps(GOOD), "{not json", json.dumps(GOOD)])
    records = load_records(path, on_error="skip")
    assert len(records) == 2 and records.skipped[0].line == 2 and "not valid JSON" in records.skipped[0].reason


def test_round_trip_through_own_format(tmp_path):
    rec = Record("r1", [], [Turn("user", "你好"), Turn("assistant", "好")], lang="zh", task="vqa")
    path = tmp_path / "own.jsonl"
    path.write_text(json.dumps(rec.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")
    (back,) = load_records(path)
    assert back.to_dict() == rec.to_dict()
