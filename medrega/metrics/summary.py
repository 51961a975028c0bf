"""One results table for every task of MedRegA, Med-MAT and Med-MIM.

:func:`summarize` takes one dict per evaluated sample and aggregates it per task, overall and by
language, dataset, Med-MAT triplet and Med-MIM ability. Per-sample scores are averaged; corpus
metrics (BLEU, ROUGE-L, CIDEr, macro-F1, multi-label F1, COCO AP) are recomputed on each group from
the raw predictions the rows carry, so a group's BLEU is a real corpus BLEU, not a mean of sentence BLEUs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from medrega.metrics.classification import accuracy, macro_f1, multilabel_f1
from medrega.metrics.detection import detection_ap
from medrega.metrics.text import text_metrics_tokens, tokenize_corpus

__all__ = ["GROUP_KEYS", "Summary", "summarize"]

GROUP_KEYS = ("lang", "dataset", "triplet", "ability")
_FIRST = ("closed_accuracy", "open_recall", "token_f1", "exact_match", "accuracy", "macro_f1", "multilabel_macro_f1", "multilabel_micro_f1",
          "bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "acc@0.25", "acc@0.5", "acc@0.75", "miou", "region_accuracy", "phrase_alignment",
          "object_f1", "region_f1", "alignment_f1",
          "AP", "AP50", "AP75")  # fmt: skip


@dataclass
class Summary:
    """The aggregated table: ``rows`` of ``{"task", "by", "group", "n", <metric>: value}``.

    ``by`` is ``"all"`` (every sample of the task) or one of :data:`GROUP_KEYS`; ``columns`` lists the
    metric names in display order.
    """

    rows: list[dict] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """``{"columns": [...], "rows": [...]}`` (JSON-ready)."""
        return {"columns": list(self.columns), "rows": [dict(r) for r in self.rows]}

    def to_json(self, indent: int | None = 2) -> str:
        """The table as JSON (Chinese kept as is)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    def to_markdown(self, digits: int = 4) -> str:
        """One Markdown table; a metric a row does not have shows as ``-``."""
        head = ["task", "by", "group", "n", *self.columns]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
        for row in self.rows:
            cells = [str(row["task"]), str(row["by"]), str(row["group"]), str(row["n"])]
            cells += [f"{row[c]:.{digits}f}" if c in row else "-" for c in self.columns]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _group_value(row: dict, key: str) -> str | None:
    if key == "triplet":
        if "triplet" in row:
            return "/".join(str(v) for v in row["triplet"])
        parts = [row.get(k) for k in ("modality", "area", "mat_task")]
        return "/".join("-" if p is None else str(p) for p in parts) if any(p is not None for p in parts) else None
    value = row.get(key)
    return None if value is None else str(value)


def _mean_metrics(rows: Sequence[dict]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for row in rows:
        for name, value in row.get("metrics", {}).items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                sums.setdefault(name, []).append(float(value))
    return {name: sum(v) / len(v) for name, v in sums.items()}


def _corpus_metrics(rows: Sequence[dict], tokens: dict[int, tuple]) -> dict[str, float]:
    out: dict[str, float] = {}
    texts = [tokens[id(r)] for r in rows if id(r) in tokens]
    if texts:
        out.update(text_metrics_tokens([h for h, _ in texts], [r for _, r in texts]))
    labelled = [r for r in rows if "label" in r]
    if labelled:
        preds, golds = [r.get("pred_label") for r in labelled], [r["label"] for r in labelled]
        out["accuracy"] = accuracy(preds, golds)
        out["macro_f1"] = macro_f1(preds, golds)
    multi = [r for r in rows if "labels" in r]
    if multi:
        preds, golds = [r.get("pred_labels") for r in multi], [r["labels"] for r in multi]
        out["multilabel_macro_f1"] = multilabel_f1(preds, golds, "macro")
        out["multilabel_micro_f1"] = multilabel_f1(preds, golds, "micro")
    detected = [r for r in rows if "objects" in r]
    if detected:
        ap = detection_ap([r.get("detections", []) for r in detected], [r["objects"] for r in detected])
        out.update({k: ap[k] for k in ("AP", "AP50", "AP75")})
    return out


def summarize(rows: Iterable[dict]) -> Summary:
    """Aggregate per-sample results into one table grouped by task, and by language / dataset /
    Med-MAT triplet / Med-MIM ability within each task.

    Args:
        rows: one dict per evaluated sample. Keys:

            * ``task`` (str, required): e.g. ``"vqa"``, ``"report"``, ``"classification"``,
              ``"text_to_region"``, ``"detection"``, ``"grounded_report"``, ``"choice"``.
            * grouping (all optional): ``lang`` (``"en"``/``"zh"``, default ``"en"`` for tokenising),
              ``dataset``, the Med-MAT triplet as ``triplet`` (``(modality, area, task)``) or as
              ``modality`` / ``area`` / ``mat_task``, and ``ability`` (Med-MIM).
            * ``metrics``: ``{name: float}`` per-sample scores (e.g. from ``vqa_scores``,
              ``grounding_scores``, ``{"acc@0.5": ...}``); averaged per group, ``None``/NaN skipped.
            * corpus payloads, each recomputed per group over the rows that carry it:
              ``prediction`` + ``reference`` (str or list of str) -> BLEU-1..4, ROUGE-L, CIDEr;
              ``pred_label`` + ``label`` -> accuracy, macro-F1; ``pred_labels`` + ``labels`` (lists)
              -> multi-label macro / micro F1; ``detections`` (``[(box_xyxy, score, label)]``) +
              ``objects`` (``[(box_xyxy, label)]``) -> COCO AP, AP50, AP75.

            A corpus metric overrides a per-sample metric of the same name.

    Returns:
        A :class:`Summary`; ``.to_markdown()`` and ``.to_json()`` render it.
    """
    rows = list(rows)
    for i, row in enumerate(rows):
        if "task" not in row:
            raise ValueError(f"row {i} has no 'task': {sorted(row)}")
    with_text = [r for r in rows if "prediction" in r and "reference" in r]
    hyps, refs = tokenize_corpus(
        [r["prediction"] for r in with_text], [r["reference"] for r in with_text], [r.get("lang", "en") for r in with_text]
    )
    tokens = {id(r): (h, rs) for r, h, rs in zip(with_text, hyps, refs)}
    table: list[dict] = []
    for task in sorted({str(r["task"]) for r in rows}):
        task_rows = [r for r in rows if str(r["task"]) == task]
        groups = [("all", "all", task_rows)]
        for key in GROUP_KEYS:
            values = sorted({v for r in task_rows if (v := _group_value(r, key)) is not None})
            groups += [(key, v, [r for r in task_rows if _group_value(r, key) == v]) for v in values]
        for by, value, members in groups:
            metrics = {**_mean_metrics(members), **_corpus_metrics(members, tokens)}
            table.append({"task": task, "by": by, "group": value, "n": len(members), **metrics})
    names = {k for row in table for k in row} - {"task", "by", "group", "n"}
    columns = [c for c in _FIRST if c in names] + sorted(names - set(_FIRST))
    return Summary(table, columns)
