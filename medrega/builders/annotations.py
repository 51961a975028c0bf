"""Builders: turn annotations people already have into records.

* boxes or masks with labels (COCO files, CSV tables, mask images) -> region-to-text
  (``identification``: one record per box) and text-to-region (``detection``: one record per image
  and label, all boxes of the label as its regions, or one per image with ``multi_object``);
* report text -> report generation;
* label tables -> classification with distractor options drawn from the same label set, Med-MAT
  style (letters A-D).

Prompts and answers come from the task library (:func:`medrega.tasks.get_task`), in English or
Chinese. Records name image paths the user supplies; images are not opened. Region records need the
image size (text boxes are relative to it): items without a known size are skipped and reported,
never guessed (:func:`dicom_size` reads it from a DICOM header). Readers for public annotation files
(IU X-Ray reports, NIH ChestX-ray14 and VinDr-CXR boxes, v7labs lung masks) that produce the inputs
of these builders are in :mod:`medrega.builders.public_annotations`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from medrega import boxes as B
from medrega.data.records import Record, Turn
from medrega.grounding import Grounding
from medrega.tasks import RECORD_SCALE, get_task

__all__ = [
    "Annotated", "Built", "ReportEntry", "from_coco", "mask_boxes", "region_records", "report_records",
    "classification_records", "dicom_size", "sizes_lookup",
]

Size = tuple[int, int]


@dataclass
class Annotated:
    """The labelled boxes of one image.

    Args:
        image: image path (as records will name it).
        size: ``(width, height)`` of the image, or ``None`` when unknown.
        objects: ``(label, (x1, y1, x2, y2))`` in pixels of the image.
        meta: anything worth keeping (e.g. radiologist ids).
    """

    image: str
    size: Size | None
    objects: list[tuple[str, B.Box]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


@dataclass
class ReportEntry:
    """One report: ``id``, its ``images`` (paths) and its sections."""

    id: str
    images: list[str]
    findings: str | None
    impression: str | None


class Built(list):
    """The records built (a ``list[Record]``) plus ``skipped``: ``(item, reason)`` for each item left out."""

    def __init__(self, records=(), skipped=()):
        super().__init__(records)
        self.skipped: list[tuple[str, str]] = list(skipped)

    def report(self) -> str:
        """Counts of records built and of skips per reason."""
        lines = [f"{len(self)} record(s) built, {len(self.skipped)} item(s) skipped"]
        lines += [f"  {n} x {reason}" for reason, n in Counter(r for _, r in self.skipped).most_common()]
        return "\n".join(lines)


def sizes_lookup(image_sizes: Mapping[str, Size] | Callable[[str], Size | None] | None) -> Callable[[str], Size | None]:
    """``image key -> (width, height) or None`` from a mapping, a function, or nothing (sizes unknown)."""
    if image_sizes is None:
        return lambda _: None
    if callable(image_sizes):
        return image_sizes
    return lambda key: image_sizes.get(key)


# -- generic inputs ------------------------------------------------------------------------------
def from_coco(coco: dict | str | Path, image_root: str | Path | None = None) -> list[Annotated]:
    """Read a COCO-style detection / segmentation file.

    Boxes come from ``bbox`` (``x, y, w, h``); an annotation without ``bbox`` uses the tight box of its
    ``segmentation`` (polygons or RLE, decoded with pycocotools).

    Args:
        coco: the parsed JSON or its path.
        image_root: prefixed to each ``file_name``.
    """
    if not isinstance(coco, dict):
        coco = json.loads(Path(coco).read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco.get("categories", [])}
    root = Path(image_root) if image_root is not None else None
    items: dict = {}
    for im in coco["images"]:
        path = str(root / im["file_name"]) if root else im["file_name"]
        size = (int(im["width"]), int(im["height"])) if "width" in im and "height" in im else None
        items[im["id"]] = Annotated(path, size, meta={"coco_id": im["id"]})
    for ann in coco.get("annotations", []):
        item = items.get(ann["image_id"])
        if item is None:
            raise ValueError(f"annotation {ann.get('id')} refers to unknown image_id {ann['image_id']}")
        label = names.get(ann["category_id"], str(ann["category_id"]))
        if ann.get("bbox"):
            box = B.from_xywh(ann["bbox"])
        elif ann.get("segmentation") and item.size:
            from pycocotools import mask as mask_utils

            w, h = item.size
            seg = ann["segmentation"]
            rles = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) or isinstance(seg.get("counts"), list) else seg
            box = B.from_mask(mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles))
        else:
            raise ValueError(f"annotation {ann.get('id')} has neither bbox nor a decodable segmentation")
        item.objects.append((label, box))
    return list(items.values())


def mask_boxes(mask: np.ndarray, split_components: bool = False, min_fraction: float = 0.002) -> list[B.Box]:
    """Boxes of a binary mask: its tight box, or one per connected component.

    Args:
        mask: 2-D array, nonzero = foreground.
        split_components: one box per 8-connected component (e.g. two lungs in one mask).
        min_fraction: components smaller than this fraction of the image are specks and are ignored
            (only with ``split_components``).
    """
    mask = np.asarray(mask) > 0
    if not split_components:
        return [B.from_mask(mask)]
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        raise B.BoxError("mask has no foreground pixel")
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    slices = ndimage.find_objects(labels)
    big = [k for k in range(n) if areas[k] >= min_fraction * mask.size]
    boxes = [(float(slices[k][1].start), float(slices[k][0].start), float(slices[k][1].stop), float(slices[k][0].stop)) for k in big]
    return sorted(boxes) or [B.from_mask(mask)]


# -- records ---------------------------------------------------------------------------------------
def region_records(
    items: Iterable[Annotated],
    *,
    tasks: Sequence[str] = ("detection", "identification"),
    lang: str = "en",
    seed: int = 0,
    multi_object: bool = False,
    label_names: Mapping[str, str] | None = None,
    clip: bool = False,
    modality: str | None = None,
    source: str | None = None,
) -> Built:
    """Detection and identification records from labelled boxes.

    Args:
        items: the images and their boxes.
        tasks: any of ``"detection"`` and ``"identification"``.
        lang: ``"en"`` or ``"zh"`` (templates; labels are used as given, or via ``label_names``).
        seed: template choice.
        multi_object: one detection record per image with every label, instead of one per label.
        label_names: display name per label (e.g. Chinese names).
        clip: clip boxes that leave the image instead of skipping the image.
        modality, source: written into prompts / records.
    """
    unknown = set(tasks) - {"detection", "identification"}
    if unknown:
        raise ValueError(f"region_records builds 'detection' and 'identification', not {sorted(unknown)}")
    rng = random.Random(seed)
    names = label_names or {}
    out = Built()
    for item in items:
        if item.size is None:
            out.skipped.append((item.image, "image size unknown (pass image_sizes)"))
            continue
        if not item.objects:
            out.skipped.append((item.image, "no boxes"))
            continue
        try:
            objects = [(names.get(label, label), B.validate_box(box, item.size, clip=clip)) for label, box in item.objects]
        except B.BoxError:
            out.skipped.append((item.image, "box outside the image or empty"))
            continue
        stem = Path(item.image).stem
        grouped: dict[str, list[B.Box]] = {}
        for label, box in objects:
            grouped.setdefault(label, []).append(box)
        groundings = [Grounding(label, boxes) for label, boxes in grouped.items()]
        common = {"lang": lang, "modality": modality, "source": source, "meta": dict(item.meta)}
        if "detection" in tasks:
            detection = get_task("detection")
            sets = [groundings] if multi_object else [[g] for g in groundings]
            for k, gs in enumerate(sets):
                out.append(detection.make_record(f"{stem}-det{k}", item.image, item.size, gs, rng=rng, **common))
        if "identification" in tasks:
            identification = get_task("identification")
            for k, (label, box) in enumerate(objects):
                out.append(identification.make_record(f"{stem}-id{k}", item.image, item.size, box, label, rng=rng, **common))
    return out


def _record(task: str, id: str, image: str, size: Size | None, prompt: str, answer: str, lang: str, source, meta) -> Record:
    record = Record(
        id=id,
        images=[image],
        conversation=[Turn("user", prompt), Turn("assistant", answer)],
        image_sizes=[size] if size else None,
        box_scale=RECORD_SCALE,
        lang=lang,
        task=task,
        source=source,
        meta=meta,
    )
    return record.validate(f"<{task} record {id}>")


def report_records(
    reports: Iterable[ReportEntry],
    *,
    lang: str = "en",
    seed: int = 0,
    section: str = "both",
    all_images: bool = False,
    image_sizes: Mapping[str, Size] | Callable[[str], Size | None] | None = None,
    modality: str | None = None,
    source: str | None = None,
) -> Built:
    """Report-generation records (the text is used as written, in its own language).

    Args:
        reports: the reports.
        lang: language of the prompt and headings (``"en"`` or ``"zh"``).
        seed: template choice.
        section: ``"both"``, ``"findings"`` or ``"impression"``; reports lacking it are skipped.
        all_images: one record per image of a report, instead of its first image only.
        image_sizes: sizes by image path, when known (reports need none).
        modality, source: written into prompts / records.
    """
    task = get_task("report")
    size_of = sizes_lookup(image_sizes)
    rng = random.Random(seed)
    out = Built()
    for rep in reports:
        if not rep.images:
            out.skipped.append((rep.id, "no image"))
            continue
        try:
            answer = task.format_answer(rep.findings, rep.impression, lang, section=section)
        except ValueError:
            out.skipped.append((rep.id, f"no {section if section != 'both' else 'findings and impression'}"))
            continue
        for k, image in enumerate(rep.images if all_images else rep.images[:1]):
            prompt = task.build_prompt(lang, rng, section=section, modality=modality)
            meta = {"section": section, "report_id": rep.id}
            out.append(_record("report", f"{rep.id}-{k}", image, size_of(image), prompt, answer, lang, source, meta))
    return out


def classification_records(
    rows: Iterable[tuple[str, str | Sequence[str]]],
    *,
    labels: Sequence[str] | None = None,
    lang: str = "en",
    seed: int = 0,
    question: str | None = None,
    max_options: int = 4,
    label_names: Mapping[str, str] | None = None,
    image_sizes: Mapping[str, Size] | Callable[[str], Size | None] | None = None,
    modality: str | None = None,
    source: str | None = None,
) -> Built:
    """Single-choice classification records (answer: a letter) with distractors from the label set.

    An image with several labels gives one record per label; its other true labels are never offered
    as distractors, so exactly one option is right.

    Args:
        rows: ``(image, label)`` or ``(image, [labels])``.
        labels: the label set distractors come from (default: every label in ``rows``).
        lang, seed, question: prompt language, template choice and an optional fixed question.
        max_options: options per question (answer included), 2..4 for A-D.
        label_names: display name per label.
        image_sizes: sizes by image path, when known.
        modality, source: written into prompts / records.
    """
    rows = [(image, [lab] if isinstance(lab, str) else list(lab)) for image, lab in rows]
    label_set = list(dict.fromkeys(labels if labels is not None else [lab for _, labs in rows for lab in labs]))
    task = get_task("classification")
    names = label_names or {}
    size_of = sizes_lookup(image_sizes)
    rng = random.Random(seed)
    out = Built()
    for image, true in rows:
        stray = [lab for lab in true if lab not in label_set]
        if not true or stray:
            out.skipped.append((image, f"label not in the label set: {stray}" if stray else "no label"))
            continue
        distractors = [lab for lab in label_set if lab not in true]
        for k, label in enumerate(true):
            if not distractors:
                out.skipped.append((image, "no distractor left in the label set"))
                break
            options = [names.get(o, o) for o in task.choose_options(label, [label, *distractors], rng, max_options)]
            prompt = task.build_prompt(options, lang, rng, question=question, modality=modality)
            answer = task.format_answer(names.get(label, label), options, lang=lang)
            meta = {"style": "choice", "options": options, "labels": true}
            out.append(_record("classification", f"{Path(image).stem}-cls{k}", image, size_of(image), prompt, answer, lang, source, meta))
    return out


# -- image sizes -----------------------------------------------------------------------------------
def dicom_size(path: str | Path) -> Size:
    """``(width, height)`` of a DICOM image from its header only (pixel data is not read)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return int(ds.Columns), int(ds.Rows)
