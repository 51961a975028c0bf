"""COCO-style detection AP, computed by pycocotools' ``COCOeval`` on boxes held in memory.

Boxes come in as ``(x1, y1, x2, y2)`` pixels and go to COCO as ``(x, y, width, height)``; a reference
box's area is ``width * height``. Labels (any hashable: str or int) become category ids ``1..K`` in
sorted order of their string form; ``None`` labels mean one class. COCOeval's printing is captured.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Hashable, Sequence

from medrega.boxes import to_xywh

__all__ = ["COCO_STATS", "detection_ap"]

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

Prediction = tuple[Sequence[float], float, Hashable]
Reference = tuple[Sequence[float], Hashable]


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def detection_ap(
    predictions: Sequence[Sequence[Prediction]], ground_truths: Sequence[Sequence[Reference]]
) -> dict[str, float]:
    """COCO AP of detections over a set of images, as pycocotools' ``COCOeval`` (bbox) reports it.

    Args:
        predictions: per image, ``(box_xyxy, score, label)`` tuples.
        ground_truths: per image, ``(box_xyxy, label)`` tuples.

    Returns:
        The twelve COCO statistics ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl``
        (AP averaged over IoU 0.50:0.95 and 100 detections per image). COCOeval's ``-1`` (no reference
        of that size) is kept; with no reference box at all every statistic is ``-1``.
    """
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(ground_truths):
        raise ValueError(f"got predictions for {len(predictions)} images but references for {len(ground_truths)}")
    labels = {lab for img in ground_truths for _, lab in img} | {lab for img in predictions for _, _, lab in img}
    cat_ids = {lab: i for i, lab in enumerate(sorted(labels, key=str), start=1)}
    categories = [{"id": i, "name": str(lab)} for lab, i in cat_ids.items()]
    images = [{"id": i, "width": 0, "height": 0} for i in range(1, len(ground_truths) + 1)]
    gt_anns, dt_anns = [], []
    for img_id, (dets, refs) in enumerate(zip(predictions, ground_truths), start=1):
        for box, label in refs:
            x, y, w, h = to_xywh(box)
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": img_id, "category_id": cat_ids[label], "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        for box, score, label in dets:
            x, y, w, h = to_xywh(box)
            dt_anns.append({"id": len(dt_anns) + 1, "image_id": img_id, "category_id": cat_ids[label], "bbox": [x, y, w, h], "area": w * h, "score": float(score), "iscrowd": 0})
    if not gt_anns:
        return dict.fromkeys(COCO_STATS, -1.0)
    evaluator = COCOeval(_coco(images, categories, gt_anns), _coco(images, categories, dt_anns), iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_STATS, evaluator.stats)}
