import importlib.util
from pathlib import Path

import numpy as np
import pytest

from medrega.builders.annotations import (
    Annotated,
    classification_records,
    from_coco,
    mask_boxes,
    region_records,
    report_records,
)
from medrega.builders.public_annotations import read_iu_xray_reports, read_lung_masks, read_nih_boxes, read_vindr_boxes
from medrega.grounding import TextBoxCodec

# the real annotation files ship inside the torchxrayvision wheel; found without importing it (and torch)
XRV = Path(importlib.util.find_spec("torchxrayvision").submodule_search_locations[0]) / "data"


def _codec(record):
    return TextBoxCodec(scale=record.box_scale)


def test_nih_boxes_to_detection_and_identification():
    items = read_nih_boxes(XRV / "BBox_List_2017.csv.gz")
    assert len(items) == 880 and sum(len(i.objects) for i in items) == 984
    first = items[0]
    assert first.image.endswith("00013118_008.png") and first.size == (1024, 1024)
    label, box = first.objects[0]
    assert label == "Atelectasis" and box == pytest.approx((225.0847, 547.0192, 311.8644, 626.2057), abs=1e-3)
    built = region_records(items[:40], lang="en", seed=1, source="nih-cxr14")
    detection = [r for r in built if r.task == "detection"]
    identification = [r for r in built if r.task == "identification"]
    assert len(identification) == sum(len(i.objects) for i in items[:40])
    rec = detection[0]
    parsed = _codec(rec).parse(rec.answer, rec.image_sizes)
    assert parsed[0].phrase == "Atelectasis"
    assert np.allclose(parsed[0].boxes[0], box, atol=1024 / 1000)
    assert "<ref>Atelectasis</ref>" in rec.prompt and rec.groundings[0].boxes[0] == box
    ident = identification[0]
    assert ident.answer == "Atelectasis" and _codec(ident).parse(ident.prompt, ident.image_sizes)
    zh = region_records(items[:2], lang="zh", label_names={"Atelectasis": "肺不张"}, tasks=("identification",))
    assert zh[0].lang == "zh" and zh[0].answer == "肺不张" and any("\u4e00" <= c <= "\u9fff" for c in zh[0].prompt)


def test_vindr_fuses_radiologists_and_needs_sizes():
    path = XRV / "vinbigdata-train.csv.gz"
    raw = read_vindr_boxes(path, fuse_iou=None)
    assert len(raw) == 15000 and sum(i.meta["no_finding"] for i in raw) > 5000
    built = region_records(raw[:50])
    assert len(built) == 0 and all(reason.startswith("image size unknown") for _, reason in built.skipped)
    with_boxes = [i for i in raw if i.objects][:30]
    # sizes come from the DICOM headers in practice; here: a size that holds every box of the image
    sizes = {Path(i.image).stem: (int(max(b[2] for _, b in i.objects)) + 1, int(max(b[3] for _, b in i.objects)) + 1) for i in with_boxes}
    fused = {i.image: i for i in read_vindr_boxes(path, image_sizes=sizes)}
    sized = [fused[i.image] for i in with_boxes]
    assert sum(len(i.objects) for i in sized) < sum(len(i.objects) for i in with_boxes)
    assert {label for i in sized for label, _ in i.objects} == {label for i in with_boxes for label, _ in i.objects}
    built = region_records(sized, tasks=("detection",), multi_object=True)
    assert len(built) == 30 and not built.skipped
    assert {g.phrase for g in built[0].groundings} == {label for label, _ in with_boxes[0].objects}


def test_lung_masks_give_one_box_per_lung():
    items = read_lung_masks(XRV / "semantic_masks_v7labs_lungs.zip", limit=25)
    with_lungs = [i for i in items if i.objects]
    assert len(items) == 25 and len(with_lungs) >= 15
    assert np.mean([len(i.objects) == 2 for i in with_lungs]) > 0.7
    for item in with_lungs:
        for _, (x1, y1, x2, y2) in item.objects:
            assert 0 <= x1 < x2 <= item.size[0] and 0 <= y1 < y2 <= item.size[1]
    built = region_records(with_lungs[:5], tasks=("detection",))
    assert all(len(r.groundings[0].boxes) == len(i.objects) for r, i in zip(built, with_lungs[:5]))


def test_mask_boxes_match_from_mask():
    mask = np.zeros((50, 60), bool)
    mask[5:20, 4:15] = True
    mask[10:40, 30:55] = True
    mask[0, 59] = True  # a speck
    assert mask_boxes(mask) == [(4.0, 0.0, 60.0, 40.0)]
    assert mask_boxes(mask, split_components=True) == [(4.0, 5.0, 15.0, 20.0), (30.0, 10.0, 55.0, 40.0)]


def test_iu_xray_reports_to_report_records():
    reports = read_iu_xray_reports(XRV / "NLMCXR_reports.tgz")
    assert len(reports) == 3955
    one = next(r for r in reports if r.id == "CXR1")
    assert one.findings.startswith("The cardiac silhouette") and one.impression == "Normal chest x-XXXX."
    assert one.images == ["images/CXR1_1_IM-0001-3001.png", "images/CXR1_1_IM-0001-4001.png"]
    built = report_records(reports[:300], seed=0, source="iu-xray")
    assert built.skipped and all("findings" in reason or "image" in reason for _, reason in built.skipped)
    assert len(built) + len(built.skipped) == 300
    rec = built[0]
    assert rec.task == "report" and rec.answer.startswith("Findings: ") and "Impression: " in rec.answer
    assert rec.image_sizes is None
    both = report_records(reports[:20], section="impression", all_images=True, lang="zh")
    assert both[0].answer.startswith("影像结论") and len(both) > 20


def test_classification_distractors_come_from_the_label_set():
    import csv
    import gzip

    with gzip.open(XRV / "Data_Entry_2017_v2020.csv.gz", "rt") as f:
        rows = list(csv.reader(f))[1:301]
    table = [(f"images/{r[0]}", r[1].split("|")) for r in rows]
    sizes = {f"images/{r[0]}": (int(r[7]), int(r[8])) for r in rows}
    built = classification_records(table, seed=2, image_sizes=sizes, modality="X-ray")
    labels = {lab for _, labs in table for lab in labs}
    assert len(built) == sum(len(labs) for _, labs in table)
    for rec in built[:100]:
        options = rec.meta["options"]
        assert 2 <= len(options) <= 4 and set(options) <= labels
        answer = options["ABCD".index(rec.answer)]
        assert answer in rec.meta["labels"]
        assert sum(o in rec.meta["labels"] for o in options) == 1  # other true labels are never distractors
        assert rec.image_sizes == [sizes[rec.images[0]]]
    again = classification_records(table, seed=2, image_sizes=sizes, modality="X-ray")
    assert [r.to_dict() for r in again] == [r.to_dict() for r in built]


def test_coco_boxes_and_polygons(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}, {"id": 2, "file_name": "b.png", "width": 50, "height": 50}],
        "categories": [{"id": 3, "name": "nodule"}, {"id": 4, "name": "liver"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 15]},
            {"id": 2, "image_id": 1, "category_id": 4, "segmentation": [[40, 10, 90, 10, 90, 60, 40, 60]]},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [40, 40, 30, 30]},
        ],
    }
    items = from_coco(coco, image_root=tmp_path)
    assert items[0].objects[0] == ("nodule", (10.0, 20.0, 40.0, 35.0))
    assert items[0].objects[1][1] == pytest.approx((40.0, 10.0, 91.0, 61.0), abs=1.0)
    built = region_records(items, tasks=("detection",))
    assert len(built) == 2 and built.skipped == [(str(tmp_path / "b.png"), "box outside the image or empty")]
    clipped = region_records(items, tasks=("detection",), clip=True)
    assert clipped[-1].groundings[0].boxes == [(40.0, 40.0, 50.0, 50.0)]
    assert "2 record(s) built, 1 item(s) skipped" in built.report()
    assert region_records([Annotated("c.png", (10, 10))]).skipped == [("c.png", "no boxes")]
