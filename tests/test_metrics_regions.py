"""Region metrics: Acc@IoU, Hungarian region matching, grounding F1s, COCO AP and grounded reports."""

import contextlib
import io

import numpy as np
import pytest

from medrega.grounding import Grounding
from medrega.metrics import (
    detection_ap,
    grounded_report_metrics,
    grounding_f1,
    grounding_scores,
    region_accuracy,
    region_match,
    region_to_text_accuracy,
)
from medrega.metrics.regions import match_pairs


def test_region_accuracy_thresholds_and_missing_predictions():
    gt = [(0, 0, 10, 10)] * 4
    pred = [(0, 0, 10, 10), (0, 0, 10, 5), (0, 0, 10, 2), None]  # IoU 1, 0.5, 0.2, 0
    out = region_accuracy(pred, gt)
    assert out == pytest.approx({"acc@0.25": 0.5, "acc@0.5": 0.5, "acc@0.75": 0.25, "miou": (1 + 0.5 + 0.2) / 4})
    with pytest.raises(ValueError, match="3 predicted boxes but 4"):
        region_accuracy(pred[:3], gt)


def test_region_match_precision_is_over_predictions_and_recall_over_references():
    gt = [(0, 0, 10, 10)]
    pred = [(0, 0, 10, 10), (50, 50, 60, 60), (70, 70, 80, 80)]
    out = region_match(pred, gt)
    assert out["matched"] == 1
    assert out["precision"] == pytest.approx(1 / 3) and out["recall"] == pytest.approx(1.0)
    swapped = region_match(gt, pred)
    assert swapped["precision"] == pytest.approx(1.0) and swapped["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(0.5)
    # one-to-one: two predictions on one reference match once
    assert region_match([(0, 0, 10, 10), (0, 0, 10, 9)], gt)["matched"] == 1


def test_region_match_empty_cases():
    both = region_match([], [])
    assert (both["precision"], both["recall"], both["f1"], both["matched"]) == (1.0, 1.0, 1.0, 0)
    only_pred = region_match([(0, 0, 1, 1)], [])
    assert (only_pred["precision"], only_pred["recall"], only_pred["f1"]) == (0.0, 1.0, 0.0)
    only_gt = region_match([], [(0, 0, 1, 1)])
    assert (only_gt["precision"], only_gt["recall"], only_gt["f1"]) == (1.0, 0.0, 0.0)


def test_matching_maximises_the_number_of_valid_pairs():
    # the largest IoU total (1.0 + 0.0) would keep one pair; two pairs of 0.45 are both valid at 0.4
    ious = np.array([[1.0, 0.45], [0.45, 0.0]])
    assert len(match_pairs(ious, 0.4)) == 2
    assert len(match_pairs(ious, 0.5)) == 1
    assert len(match_pairs(ious, 0.4, allowed=np.array([[True, False], [True, True]]))) == 1


def test_grounding_f1_object_region_alignment():
    ref = [Grounding("left lung", [(0, 0, 10, 10)]), Grounding("heart", [(20, 20, 30, 30)])]
    pred = [
        Grounding("Left lung.", [(0, 0, 10, 10)]),  # right phrase, right box
        Grounding("nodule", [(20, 20, 30, 30)]),  # wrong phrase on the heart's box
        Grounding("heart", [(50, 50, 60, 60), (20, 20, 30, 30)], image_index=1),  # boxes on another image
    ]
    out = grounding_f1(pred, ref)
    assert out["object_precision"] == pytest.approx(2 / 3) and out["object_recall"] == pytest.approx(1.0)
    assert out["region_precision"] == pytest.approx(2 / 4) and out["region_recall"] == pytest.approx(1.0)
    assert out["alignment_precision"] == pytest.approx(1 / 4) and out["alignment_recall"] == pytest.approx(1 / 2)
    assert out["alignment_f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)


def test_grounding_scores_region_accuracy_and_phrase_alignment():
    ref = [
        Grounding("right lung", [(0, 0, 10, 10)]),
        Grounding("left lung", [(20, 0, 30, 10)]),
        Grounding("right lung", [(0, 0, 10, 10)]),  # repeated in a later sentence: merged
        Grounding("pleural effusion", [(0, 20, 10, 30), (20, 20, 30, 30)]),
    ]
    pred = [
        Grounding("Right lung", [(0, 0, 10, 9)]),  # IoU 0.9 -> aligned
        Grounding("heart", [(20, 0, 30, 10)]),  # the left lung's box under another phrase
        Grounding("pleural effusion", [(0, 20, 10, 30)]),  # one of its two boxes -> not aligned
    ]
    out = grounding_scores(pred, ref)
    assert out["region_accuracy"] == pytest.approx(3 / 4)
    assert out["phrase_alignment"] == pytest.approx(1 / 3)
    none = grounding_scores(pred, [])
    assert none["region_accuracy"] is None and none["phrase_alignment"] is None


def test_grounded_report_metrics_combines_text_and_regions():
    ref_g = [[Grounding("heart", [(0, 0, 10, 10)])], [Grounding("liver", [(0, 0, 10, 10)])]]
    pred_g = [[Grounding("heart", [(0, 0, 10, 10)])], []]
    texts = ["the heart is normal in size", "a low density lesion in the liver"]
    out = grounded_report_metrics(texts, texts, pred_g, ref_g)
    assert out["bleu4"] == pytest.approx(1.0) and out["rouge_l"] == pytest.approx(1.0)
    assert out["region_accuracy"] == pytest.approx(0.5) and out["phrase_alignment"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lengths differ"):
        grounded_report_metrics(texts, texts, pred_g[:1], ref_g)


def test_region_to_text_accuracy():
    preds = ["The region shows the left lung.", "右肺", "lungs", None, "Liver"]
    labels = ["left lung", "右肺", "lung", "heart", "liver"]
    assert region_to_text_accuracy(preds, labels) == pytest.approx(3 / 5)


def _independent_cocoeval(predictions, ground_truths, labels):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cat = {lab: i + 1 for i, lab in enumerate(labels)}
    gt = {"images": [{"id": i + 1} for i in range(len(ground_truths))], "categories": [{"id": v} for v in cat.values()], "annotations": []}
    for i, objs in enumerate(ground_truths):
        for (x1, y1, x2, y2), lab in objs:
            w, h = x2 - x1, y2 - y1
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": cat[lab], "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
    dets = [
        {"image_id": i + 1, "category_id": cat[lab], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
        for i, objs in enumerate(predictions)
        for (x1, y1, x2, y2), s, lab in objs
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_detection_ap_equals_cocoeval():
    rng = np.random.default_rng(0)
    labels = ["effusion", "nodule"]
    preds, gts = [], []
    for _ in range(12):
        objs = []
        for _ in range(rng.integers(1, 4)):
            x, y = rng.uniform(0, 400, 2)
            w, h = rng.uniform(10, 200, 2)
            objs.append(((float(x), float(y), float(x + w), float(y + h)), labels[rng.integers(2)]))
        dets = []
        for box, lab in objs:
            jitter = rng.normal(0, 8, 4)
            x1, y1, x2, y2 = np.asarray(box) + jitter
            dets.append(((float(x1), float(y1), float(max(x2, x1 + 1)), float(max(y2, y1 + 1))), float(rng.uniform()), lab))
        dets.append((tuple(float(v) for v in rng.uniform(0, 100, 2)) + (150.0, 150.0), float(rng.uniform()), labels[0]))
        preds.append(dets)
        gts.append(objs)
    ours = detection_ap(preds, gts)
    stats = _independent_cocoeval(preds, gts, labels)
    for name, value in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), stats):
        assert ours[name] == pytest.approx(value, abs=1e-6)
    assert 0.2 < ours["AP"] < ours["AP50"] <= 1.0


def test_detection_ap_edge_cases():
    gts = [[((0, 0, 50, 50), "a")]]
    assert detection_ap([[]], gts)["AP"] == 0.0
    assert detection_ap([[((0, 0, 50, 50), 0.9, "a")]], gts)["AP50"] == pytest.approx(1.0)
    assert detection_ap([[((0, 0, 50, 50), 0.9, "b")]], gts)["AP50"] == pytest.approx(0.0)  # wrong class
    assert detection_ap([[]], [[]])["AP"] == -1.0
    with pytest.raises(ValueError, match="2 images but references for 1"):
        detection_ap([[], []], gts)
