"""Per-sample scoring by task: a prediction line -> one row for :func:`medrega.metrics.summarize`.

Every score comes from :mod:`medrega.metrics`; this module only decides which metric fits which
task and what the prediction and the reference are.

============================  ==============================================================================
task (row name)               metrics
============================  ==============================================================================
detection                     object / region / alignment F1; Acc@0.25/0.5/0.75 and mIoU when the reference
                              is one box; COCO AP over the task (every detection scored 1.0, label = phrase);
                              negative_accuracy when the reference says objects are absent ("not found")
identification                region-to-text accuracy (the label named in the answer)
vqa, regional_cot             closed accuracy (yes/no references) or open recall, token F1, exact match
report                        BLEU-1..4, ROUGE-L, CIDEr on the report text (headings removed)
grounded_report               the report text metrics + region accuracy, phrase alignment, grounding F1s
classification                accuracy and macro-F1 over option texts (letters mapped to their option);
                              multi-label F1 for multi-label questions
multi_image/choice            Med-MIM multiple choice: accuracy and macro-F1 over option texts
multi_image/open              text metrics, open-answer scores (closed accuracy for yes/no), grounding F1s
============================  ==============================================================================

**Absent objects.** A detection reference that answers an object with the not-found form
(:mod:`medrega.tasks.detection`; else the record's ``meta["absent"]``) is a negative query for it: ``negative_accuracy`` is the share of
those objects the prediction also says are not found without writing a box for them (phrases compared
normalised); a box for an absent object (any box, when every object asked for is absent), or no
statement about it, is wrong; when one object is asked for, a not-found statement names it however
the model wrote the phrase (as ``Assistant.detect`` reads it). A box on a negative
also counts against the F1s (precision) and the AP (a false positive of that label); a reference with
no grounding at all, answered with none, has F1 1.0.

Any other task is scored like an open answer (text metrics and open-answer scores).
Predictions are the markup-free ``text`` of a line and its ``groundings``; references are the
record's answer with region markup removed and its ``gt_groundings``.
"""

from __future__ import annotations

from collections.abc import Callable

from medrega.answers import not_found
from medrega.data.records import Record
from medrega.grounding import Grounding
from medrega.metrics import (
    accuracy,
    grounding_f1,
    grounding_scores,
    map_to_option,
    normalize_answer,
    parse_choice,
    parse_options,
    region_accuracy,
    region_to_text_correct,
    vqa_scores,
    yes_no,
)
from medrega.tasks import get_task
from medrega.tasks.base import clean_answer, tidy

__all__ = ["score_prediction", "score_predictions"]

_F1S = ("object_f1", "region_f1", "alignment_f1")


def _groundings(items) -> list[Grounding]:
    return [Grounding.from_dict(g) for g in items or []]


def _first_box(pred: list[Grounding], phrase: str):
    """The first predicted box of ``phrase`` (normalised), else the first predicted box, else ``None``."""
    named = [g for g in pred if normalize_answer(g.phrase) == normalize_answer(phrase)] or pred
    return next((b for g in named for b in g.boxes), None)


def _report_text(text: str) -> str:
    """A report's findings and impression joined, headings removed (markup-free input)."""
    report = get_task("report").parse_answer(text)
    return " ".join(s for s in (report.findings, report.impression) if s)


def _open_answer(pred: str, ref: str, line: dict | None = None, record: Record | None = None) -> dict:
    """VQA scores of a free answer; closed when the reference starts with yes / no."""
    return {"metrics": vqa_scores(pred, ref, closed=yes_no(ref) is not None)}


def _detection(pred: str, ref: str, line: dict, record: Record | None) -> dict:
    pg, gg = _groundings(line.get("groundings")), _groundings(line.get("gt_groundings"))
    f1s = grounding_f1(pg, gg)
    metrics = {k: f1s[k] for k in _F1S}
    if len(gg) == 1 and len(gg[0].boxes) == 1:
        metrics.update(region_accuracy([_first_box(pg, gg[0].phrase)], [gg[0].boxes[0]]))
    absent = {normalize_answer(p) for p in not_found(ref) or (record.meta.get("absent") if record is not None else None) or []}
    if absent:
        boxed = {normalize_answer(g.phrase) for g in pg if g.boxes}
        # every object asked for is absent: any box answers the query with a region, which is wrong
        said = set() if boxed and not gg else {normalize_answer(p) for p in not_found(pred)} - boxed
        if said and not gg and len(absent) == 1:  # one object asked: the statement names it however written
            said = absent
        metrics["negative_accuracy"] = len(absent & said) / len(absent)
    return {
        "metrics": metrics,
        "detections": [(b, 1.0, normalize_answer(g.phrase)) for g in pg for b in g.boxes],
        "objects": [(b, normalize_answer(g.phrase)) for g in gg for b in g.boxes],
    }


def _identification(pred: str, ref: str, line: dict, record: Record | None) -> dict:
    answer = get_task("identification").parse_answer(pred)
    return {"metrics": {"accuracy": float(region_to_text_correct(answer, clean_answer(ref)))}}


def _vqa(pred: str, ref: str, line: dict, record: Record | None) -> dict:
    kind = record.meta.get("answer_type") if record is not None else None
    closed = kind == "closed" if kind in ("open", "closed") else yes_no(ref) is not None
    return {"metrics": vqa_scores(pred, ref, closed)}


def _report(pred: str, ref: str, line: dict, record: Record | None) -> dict:
    return {"prediction": _report_text(pred), "reference": _report_text(ref), "metrics": {}}


def _grounded_report(pred: str, ref: str, line: dict, record: Record | None) -> dict:
    scores = grounding_scores(_groundings(line.get("groundings")), _groundings(line.get("gt_groundings")))
    return {"prediction": _report_text(pred), "reference": _report_text(ref), "metrics": scores}


def _single_label(pred: str, ref: str, options: list[str] | None) -> dict:
    """Labels as option texts (letters mapped), so macro-F1 runs over class names; letters when the
    reference picks a letter the prompt does not list (a gap in the options), else the answers' text."""
    label = map_to_option(ref, options) if options else None
    if label is not None:
        guess = map_to_option(pred, options)
    elif options and parse_choice(ref) is not None:
        label, guess = parse_choice(ref), parse_choice(pred)
    else:
        label, guess = clean_answer(ref), clean_answer(pred) or None
    return {"pred_label": guess, "label": label, "metrics": {"accuracy": accuracy([guess], [label])}}


def _classification(pred: str, ref: str, line: dict, record: Record | None) -> dict:
    meta = record.meta if record is not None else {}
    options = meta.get("options") or parse_options(line.get("prompt") or "") or None
    if meta.get("style") == "multi_label":
        task = get_task("classification")
        guess = task.parse_answer(pred, options=options, style="multi_label") or []
        labels = meta.get("labels") or task.parse_answer(ref, options=options, style="multi_label") or []
        exact = {normalize_answer(x) for x in guess} == {normalize_answer(x) for x in labels}
        return {"pred_labels": list(guess), "labels": list(labels), "metrics": {"exact_match": float(exact)}}
    return _single_label(pred, ref, options)


def _multi_image(pred: str, ref: str, line: dict, record: Record | None) -> dict:
    options = parse_options(line.get("prompt") or "")
    if options and parse_choice(ref) is not None:
        return {"task": "multi_image/choice", **_single_label(pred, ref, options)}
    out = {"task": "multi_image/open", "prediction": pred, "reference": ref, **_open_answer(pred, ref)}
    gg = _groundings(line.get("gt_groundings"))
    if gg:
        f1s = grounding_f1(_groundings(line.get("groundings")), gg)
        out["metrics"].update({k: f1s[k] for k in _F1S})
    return out


def _other(pred: str, ref: str, line: dict, record: Record | None) -> dict:
    return {"prediction": pred, "reference": ref, **_open_answer(pred, ref)}


_SCORERS: dict[str, Callable[[str, str, dict, Record | None], dict]] = {
    "detection": _detection,
    "identification": _identification,
    "vqa": _vqa,
    "regional_cot": _open_answer,
    "report": _report,
    "grounded_report": _grounded_report,
    "classification": _classification,
    "multi_image": _multi_image,
}


def score_prediction(line: dict, record: Record | None = None) -> dict:
    """One :func:`~medrega.metrics.summarize` row for a prediction line (not a skipped one).

    Args:
        line: a line of the predictions file (see :mod:`medrega.evaluation.predict`).
        record: the sample's record, for what the line does not carry (option lists, closed / open
            VQA, multi-label answers); ``None`` reads everything from the line.

    Returns:
        ``{"task", "lang", "dataset", "ability", "triplet", "metrics", ...}`` with the corpus inputs
        the task has (``prediction``/``reference``, ``pred_label``/``label``, ``detections``/``objects``).
    """
    if line.get("skipped"):
        raise ValueError(f"{line.get('key')}: a skipped sample has no prediction to score ({line['skipped']})")
    task = line["task"]
    row = {"task": task, "lang": line.get("lang") or "en", "dataset": line.get("dataset")}
    if line.get("ability"):
        row["ability"] = line["ability"]
    if line.get("triplet"):
        row["triplet"] = tuple("-" if v is None else v for v in line["triplet"])
    pred, ref = tidy(line.get("text")), tidy(line.get("reference"))
    row.update(_SCORERS.get(task, _other)(pred, ref, line, record))
    return row


def score_predictions(lines, records: dict[str, Record] | None = None) -> list[dict]:
    """:func:`score_prediction` over the lines that were not skipped.

    Args:
        lines: prediction lines.
        records: the records by sample key (optional, see :func:`score_prediction`).
    """
    records = records or {}
    return [score_prediction(line, records.get(line["key"])) for line in lines if not line.get("skipped")]
