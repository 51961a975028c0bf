import json

import pytest

from medrega.data import load_records
from medrega.data.medmat import Subset, read_mat_table, select_training_subsets, tag_records


@pytest.fixture(scope="module")
def tables(fixtures_dir):
    root = fixtures_dir / "med-mat"
    return read_mat_table(root / "subsets.tsv"), read_mat_table(root / "datasets.tsv")


def test_tables_are_read_and_normalised(tables):
    subsets, datasets = tables
    assert len(subsets) == 53 and len(datasets) == 109
    assert subsets[2] == Subset(3, "CT", "Lung", "COVID-19 Classification")
    assert [d.no for d in datasets] == list(range(1, 110))  # the blank number of row 57 is filled in
    assert datasets[56].name == "COVIDGR" and datasets[56].modality == "X-ray"
    assert {d.modality for d in datasets} == {s.modality for s in subsets}  # "X-Ray" / "Ultrasound" aliases


def test_selection_covers_every_element_and_prefers_two_shared(tables):
    subsets, _ = tables
    selection = select_training_subsets(3, subsets)  # CT / Lung / COVID-19 Classification
    assert all(s.no != 3 for s in selection.subsets)
    assert [c.subset.no for c in selection.chosen if len(c.covers) == 2] == [4]  # CT / Lung / Lung Cancer
    assert selection.uncovered == ["task"]  # no other subset names this exact task
    coarse = select_training_subsets(3, subsets, task_key=lambda t: "covid" if "covid" in t.lower() else t)
    assert {c.subset.no: c.covers for c in coarse.chosen} == {4: ("modality", "area"), 28: ("area", "task")}
    assert not coarse.uncovered and "28 X-ray / Lung" in coarse.report()

    unseen = select_training_subsets(("MRI", "Lung", "Tuberculosis Classification"), subsets)
    covers = {e for c in unseen.chosen for e in c.covers}
    assert covers == {"modality", "area", "task"} and not unseen.uncovered
    assert [c.subset.no for c in unseen.chosen if len(c.covers) == 2] == [30]  # X-ray / Lung / Tuberculosis
    single = [c for c in unseen.chosen if len(c.covers) == 1]
    assert [c.covers for c in single] == [("modality",)] and single[0].subset.modality == "MRI"

    kept = select_training_subsets(3, subsets, exclude_target=False)
    assert [c.covers for c in kept.chosen if c.subset.no == 3] == [("modality", "area", "task")]
    assert select_training_subsets(Subset(0, "x-ray", "Lung", "Tuberculosis Classification"), subsets).target[0] == "X-ray"


def test_records_are_tagged_by_data_no(tmp_path, tables):
    _, datasets = tables
    record = {
        "id": 1,
        "caption": "Cyst",
        "image": "med-mat/CT_Kindney_Dataset/Cyst- (561).jpg",
        "Question": "Review this kidney CT scan and determine the possible condition it represents.",
        "Answer": "Cyst",
        "Question-choice": "Review this kidney CT scan.\nA: Stone\nB: Cyst\nC: Normal\nD: Tumor\nAnswer with the option's letter.",
        "Answer-choice": "B",
        "data-no": "2",
    }
    path = tmp_path / "medmat.jsonl"
    path.write_text("\n".join(json.dumps({**record, "id": i, "data-no": no}) for i, no in enumerate(["2", "54", "999"])) + "\n")
    records = load_records(path, check_images=False)
    with pytest.raises(ValueError, match="data-no '999'"):
        tag_records(records, datasets)
    tagged = tag_records(records, datasets, on_missing="skip")
    assert [(r.modality, r.area, r.mat_task) for r in tagged] == [
        ("CT", "Kidney", "Normal or Cyst or Tumor"),
        ("X-ray", "Lung", "COVID19, Classification Dataset."),
        (None, None, None),
    ]
