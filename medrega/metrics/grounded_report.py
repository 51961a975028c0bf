"""Grounded report metrics: the report text metrics plus how well its regions are placed.

Per report (texts are prose: strip region markup first, e.g. with ``codec.strip``):

* **region accuracy**: share of reference boxes matched one-to-one by a predicted box of the same
  image with IoU >= 0.5, whatever the phrases (:func:`~medrega.metrics.regions.region_match`'s recall).
* **phrase-box alignment**: share of reference phrases (normalised, per image; repeated phrases merged)
  whose predicted boxes *for the same phrase* match every one of the phrase's reference boxes with
  IoU >= 0.5. A phrase the prediction never grounds is not aligned.
* object / region / alignment F1 from :func:`~medrega.metrics.regions.grounding_f1`.

Reports with no reference grounding have no region accuracy or alignment (``None``); corpus means
skip them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medrega.answers import normalize_answer
from medrega.boxes import iou_matrix
from medrega.grounding import Grounding
from medrega.metrics.regions import grounding_f1, match_pairs
from medrega.metrics.text import text_metrics

__all__ = ["grounding_scores", "grounded_report_metrics"]


def _by_phrase(groundings: Sequence[Grounding]) -> dict[tuple[str, int], list]:
    merged: dict[tuple[str, int], list] = {}
    for g in groundings:
        boxes = merged.setdefault((normalize_answer(g.phrase), g.image_index), [])
        boxes.extend(b for b in g.boxes if b not in boxes)
    return merged


def grounding_scores(pred: Sequence[Grounding], ref: Sequence[Grounding], iou_threshold: float = 0.5) -> dict[str, float | None]:
    """Per-report region metrics.

    Args:
        pred: groundings parsed from the generated report.
        ref: groundings of the reference report.
        iou_threshold: boxes match when IoU >= this.

    Returns:
        ``{"region_accuracy", "phrase_alignment", "object_f1", "region_f1", "alignment_f1"}``;
        the first two are ``None`` when the reference has no box.
    """
    pred_groups, ref_groups = _by_phrase(pred), _by_phrase(ref)
    n_ref_boxes = sum(len(b) for b in ref_groups.values())
    f1s = grounding_f1(pred, ref, iou_threshold)
    out: dict[str, float | None] = {k: f1s[k] for k in ("object_f1", "region_f1", "alignment_f1")}
    if n_ref_boxes == 0:
        return {"region_accuracy": None, "phrase_alignment": None, **out}
    matched = 0
    for image in {img for _, img in ref_groups}:
        p = [b for (_, img), boxes in pred_groups.items() if img == image for b in boxes]
        r = [b for (_, img), boxes in ref_groups.items() if img == image for b in boxes]
        ious = iou_matrix(p, r)  # (predicted, reference) boxes of this image
        matched += len(match_pairs(ious, iou_threshold))
    aligned = 0
    for key, ref_boxes in ref_groups.items():
        ious = iou_matrix(pred_groups.get(key, []), ref_boxes)  # (predicted, reference) boxes of this phrase
        aligned += len(match_pairs(ious, iou_threshold)) == len(ref_boxes)
    return {"region_accuracy": matched / n_ref_boxes, "phrase_alignment": aligned / len(ref_groups), **out}


def grounded_report_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    pred_groundings: Sequence[Sequence[Grounding]],
    ref_groundings: Sequence[Sequence[Grounding]],
    lang: str | Sequence[str] = "en",
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Corpus metrics of grounded reports: BLEU-1..4, ROUGE-L, CIDEr and the mean region metrics.

    Args:
        predictions: generated report prose, one per sample.
        references: reference report prose.
        pred_groundings: groundings parsed from each generated report.
        ref_groundings: groundings of each reference report.
        lang: ``"en"``, ``"zh"``, or one of them per sample.
        iou_threshold: boxes match when IoU >= this.

    Returns:
        The keys of :func:`~medrega.metrics.text.text_metrics` plus ``region_accuracy``,
        ``phrase_alignment``, ``object_f1``, ``region_f1`` and ``alignment_f1`` (means over reports;
        the first two over reports with a reference box, 0.0 when there is none).
    """
    if not len(predictions) == len(references) == len(pred_groundings) == len(ref_groundings):
        raise ValueError(
            f"lengths differ: {len(predictions)} predictions, {len(references)} references, "
            f"{len(pred_groundings)} predicted and {len(ref_groundings)} reference grounding lists"
        )
    out = text_metrics(predictions, references, lang)
    per_report = [grounding_scores(p, r, iou_threshold) for p, r in zip(pred_groundings, ref_groundings)]
    for key in ("region_accuracy", "phrase_alignment", "object_f1", "region_f1", "alignment_f1"):
        values = [s[key] for s in per_report if s[key] is not None]
        out[key] = float(np.mean(values)) if values else 0.0
    return out
