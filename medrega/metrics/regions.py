"""Region metrics: text-to-region (single and several boxes), grounding F1s and region-to-text accuracy.

Boxes are ``(x1, y1, x2, y2)`` pixels of the original image (:mod:`medrega.boxes`).

* **Single region**: IoU of each prediction with its reference (a missing prediction has IoU 0),
  Acc@IoU for 0.25 / 0.5 / 0.75 and the mean IoU.
* **Several regions** (:func:`region_match`): a one-to-one Hungarian matching that maximises the
  number of pairs with IoU >= threshold, then their total IoU. ``precision = matched / predicted``,
  ``recall = matched / reference``, ``f1`` their harmonic mean. Empty cases: no prediction and no
  reference -> 1.0 for all three (nothing to find, nothing claimed); predictions but no reference ->
  precision 0, recall 1, f1 0; references but no prediction -> precision 1, recall 0, f1 0.
* **Groundings** (:func:`grounding_f1`, MedRegA's object / region / alignment F1):
  object F1 compares the sets of normalised phrases; region F1 matches all boxes, phrases ignored;
  alignment F1 matches boxes only between groundings of the same normalised phrase. Boxes of
  different images (``image_index``) never match.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from medrega.answers import normalize_answer
from medrega.boxes import iou_matrix
from medrega.grounding import Grounding

__all__ = [
    "ACC_THRESHOLDS",
    "paired_iou",
    "region_accuracy",
    "region_match",
    "match_pairs",
    "prf",
    "grounding_f1",
    "region_to_text_correct",
    "region_to_text_accuracy",
]

ACC_THRESHOLDS = (0.25, 0.5, 0.75)


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def paired_iou(pred_boxes: Sequence[Sequence[float] | None], gt_boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """IoU of each prediction with its own reference, shape ``(n,)``; a ``None`` prediction gives 0.

    Args:
        pred_boxes: one predicted box (or ``None``) per sample.
        gt_boxes: one reference box per sample.
    """
    if len(pred_boxes) != len(gt_boxes):
        raise ValueError(f"got {len(pred_boxes)} predicted boxes but {len(gt_boxes)} reference boxes")
    present = np.array([b is not None for b in pred_boxes], dtype=bool)
    p = np.array([b if b is not None else (0.0, 0.0, 0.0, 0.0) for b in pred_boxes], dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(p[:, 2], g[:, 2]) - np.maximum(p[:, 0], g[:, 0]), 0, None)
    ih = np.clip(np.minimum(p[:, 3], g[:, 3]) - np.maximum(p[:, 1], g[:, 1]), 0, None)
    inter = iw * ih
    union = _area(p) + _area(g) - inter
    out = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return np.where(present, out, 0.0)


def region_accuracy(
    pred_boxes: Sequence[Sequence[float] | None], gt_boxes: Sequence[Sequence[float]], thresholds: Sequence[float] = ACC_THRESHOLDS
) -> dict[str, float]:
    """Single-region text-to-region metrics: ``{"acc@0.25", "acc@0.5", "acc@0.75", "miou"}``.

    Args:
        pred_boxes: one predicted box (``None`` when unreadable) per sample.
        gt_boxes: one reference box per sample.
        thresholds: IoU thresholds for the accuracies (a prediction counts when IoU >= threshold).
    """
    ious = paired_iou(pred_boxes, gt_boxes)
    out = {f"acc@{t:g}": float((ious >= t).mean()) if ious.size else 0.0 for t in thresholds}
    out["miou"] = float(ious.mean()) if ious.size else 0.0
    return out


def prf(matched: float, n_pred: float, n_gt: float) -> dict[str, float]:
    """Precision = matched / predicted, recall = matched / reference, F1; empty cases as in the module doc."""
    if n_pred == 0 and n_gt == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = matched / n_pred if n_pred else 1.0
    recall = matched / n_gt if n_gt else 1.0
    f1 = 2 * precision * recall / (precision + recall) if matched else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def match_pairs(ious: np.ndarray, threshold: float = 0.5, allowed: np.ndarray | None = None) -> np.ndarray:
    """One-to-one Hungarian matching that maximises the number of valid pairs, then their total IoU.

    Args:
        ious: ``(predicted, reference)`` IoU matrix.
        threshold: a pair is valid when its IoU >= this.
        allowed: optional boolean mask of the same shape; ``False`` pairs never match.

    Returns:
        The IoUs of the matched valid pairs.
    """
    if ious.size == 0:
        return np.zeros(0)
    valid = ious >= threshold if allowed is None else (ious >= threshold) & allowed
    big = min(ious.shape) + 1.0  # one more valid pair always outweighs any IoU total
    rows, cols = linear_sum_assignment(-(valid * (big + ious)))
    keep = valid[rows, cols]
    return ious[rows, cols][keep]


def region_match(
    pred_boxes: Sequence[Sequence[float]], gt_boxes: Sequence[Sequence[float]], iou_threshold: float = 0.5
) -> dict[str, float]:
    """Match one sample's predicted boxes to its reference boxes one-to-one (Hungarian on IoU).

    Args:
        pred_boxes: predicted ``(x1, y1, x2, y2)`` boxes.
        gt_boxes: reference boxes.
        iou_threshold: a pair matches when its IoU >= this.

    Returns:
        ``{"precision", "recall", "f1", "matched", "mean_iou"}``; ``mean_iou`` is over matched pairs
        (0.0 when none).
    """
    ious = iou_matrix(pred_boxes, gt_boxes)  # (predicted, reference)
    pairs = match_pairs(ious, iou_threshold)
    out = prf(len(pairs), ious.shape[0], ious.shape[1])
    return {**out, "matched": int(len(pairs)), "mean_iou": float(pairs.mean()) if len(pairs) else 0.0}


def _flatten(groundings: Sequence[Grounding]) -> tuple[list, list[str], list[int]]:
    boxes, phrases, images = [], [], []
    for g in groundings:
        for box in g.boxes:
            boxes.append(box)
            phrases.append(normalize_answer(g.phrase))
            images.append(g.image_index)
    return boxes, phrases, images


def grounding_f1(
    pred: Sequence[Grounding], ref: Sequence[Grounding], iou_threshold: float = 0.5
) -> dict[str, float]:
    """Object, region and alignment F1 of one sample's groundings (MedRegA's detection metrics).

    Args:
        pred: predicted groundings (phrase + boxes).
        ref: reference groundings.
        iou_threshold: boxes match when IoU >= this (and they lie on the same image).

    Returns:
        ``{"object_f1", "region_f1", "alignment_f1"}`` plus their precisions and recalls
        (``object_precision`` ...).
    """
    pred_phrases = {normalize_answer(g.phrase) for g in pred}
    ref_phrases = {normalize_answer(g.phrase) for g in ref}
    out: dict[str, float] = {}
    for key, value in prf(len(pred_phrases & ref_phrases), len(pred_phrases), len(ref_phrases)).items():
        out[f"object_{key}"] = value
    p_boxes, p_phr, p_img = _flatten(pred)
    r_boxes, r_phr, r_img = _flatten(ref)
    ious = iou_matrix(p_boxes, r_boxes)  # (predicted boxes, reference boxes)
    same_image = np.equal.outer(np.asarray(p_img, dtype=np.int64), np.asarray(r_img, dtype=np.int64))
    same_phrase = np.equal.outer(np.asarray(p_phr, dtype=object), np.asarray(r_phr, dtype=object)).astype(bool)
    for name, allowed in (("region", same_image), ("alignment", same_image & same_phrase)):
        matched = len(match_pairs(ious, iou_threshold, allowed.reshape(ious.shape)))
        for key, value in prf(matched, len(p_boxes), len(r_boxes)).items():
            out[f"{name}_{key}"] = value
    return out


def region_to_text_correct(prediction: str | None, label: str) -> bool:
    """Region-to-text: the normalised label equals the normalised answer or appears in it as a phrase."""
    answer, gold = normalize_answer(prediction), normalize_answer(label)
    if not gold or not answer:
        return False
    return answer == gold or f" {gold} " in f" {answer} " or (not gold.isascii() and gold in answer)


def region_to_text_accuracy(predictions: Sequence[str | None], labels: Sequence[str]) -> float:
    """Share of region-to-text answers that name their label (see :func:`region_to_text_correct`).

    Args:
        predictions: model answers naming the organ or lesion in the given region.
        labels: reference names.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"got {len(predictions)} predictions but {len(labels)} labels")
    hits = [region_to_text_correct(p, y) for p, y in zip(predictions, labels)]
    return float(np.mean(hits)) if hits else 0.0
