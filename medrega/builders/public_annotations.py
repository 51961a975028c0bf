"""Readers for public annotation files: they give the inputs of :mod:`medrega.builders.annotations`.

* IU X-Ray (Open-i NLMCXR) radiology reports, XML in a ``.tgz`` -> :class:`ReportEntry` (findings,
  impression, image ids);
* NIH ChestX-ray14 finding boxes (``BBox_List_2017.csv``) -> :class:`Annotated`;
* VinDr-CXR finding boxes, per radiologist (``image_id, class_name, ..., x_max, y_max`` CSV) ->
  :class:`Annotated`, the radiologists' overlapping boxes optionally fused;
* lung masks (the v7labs zip of mask images) -> :class:`Annotated`, one box per lung.

Only the annotation files are read: the images of those datasets are not included and are not
opened; the items name image paths under an ``image_dir`` the user supplies. These are annotations of
real studies, unlike the synthetic phantoms of :mod:`medrega.data.phantoms` (drawings, not medical
images). VinDr's CSV carries no image sizes, so pass them (``image_sizes``, e.g. from the DICOM
headers with :func:`medrega.builders.annotations.dicom_size`).
"""

from __future__ import annotations

import csv
import gzip
import io
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from medrega import boxes as B
from medrega.builders.annotations import Annotated, ReportEntry, Size, mask_boxes, sizes_lookup

__all__ = ["read_iu_xray_reports", "read_nih_boxes", "read_vindr_boxes", "read_lung_masks"]


def _csv_rows(path: str | Path) -> Iterator[list[str]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        yield from csv.reader(f)


def read_iu_xray_reports(path: str | Path, image_dir: str | Path = "images", ext: str = ".png") -> list[ReportEntry]:
    """IU X-Ray (Open-i NLMCXR) reports from the ``.tgz`` of XML files: findings, impression, image ids.

    Args:
        path: the archive (``NLMCXR_reports.tgz``).
        image_dir, ext: image paths are ``image_dir/<parentImage id><ext>``.
    """
    out = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if not member.name.endswith(".xml"):
                continue
            root = ET.parse(tar.extractfile(member)).getroot()
            sections = {el.get("Label", "").upper(): (el.text or "").strip() for el in root.iter("AbstractText")}
            images = [str(Path(image_dir) / f"{el.get('id')}{ext}") for el in root.iter("parentImage")]
            uid = root.find("uId")
            out.append(
                ReportEntry(
                    uid.get("id") if uid is not None else Path(member.name).stem,
                    images,
                    sections.get("FINDINGS") or None,
                    sections.get("IMPRESSION") or None,
                )
            )
    return out


def read_nih_boxes(path: str | Path, image_dir: str | Path = "images", image_size: Size = (1024, 1024)) -> list[Annotated]:
    """NIH ChestX-ray14 boxes (``BBox_List_2017.csv``: image, label, ``x, y, w, h`` on the released 1024x1024 PNGs)."""
    items: dict[str, Annotated] = {}
    rows = _csv_rows(path)
    next(rows)
    for row in rows:
        name, label, x, y, w, h = row[:6]
        item = items.setdefault(name, Annotated(str(Path(image_dir) / name), image_size))
        item.objects.append((label, B.from_xywh([float(x), float(y), float(w), float(h)])))
    return list(items.values())


def _fuse(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Merge boxes that overlap by ``iou`` or more (connected groups) into their mean box."""
    if len(boxes) == 1:
        return boxes
    reach = B.iou_matrix(boxes, boxes) >= iou  # (n, n) links, then transitive closure by squaring
    while True:
        wider = (reach.astype(np.int32) @ reach.astype(np.int32)) > 0
        if (wider == reach).all():
            break
        reach = wider
    group = reach.argmax(axis=1)  # lowest index reachable: one id per connected group
    return np.stack([boxes[group == g].mean(axis=0) for g in np.unique(group)])


def read_vindr_boxes(
    path: str | Path,
    image_sizes: Mapping[str, Size] | Callable[[str], Size | None] | None = None,
    image_dir: str | Path = "train",
    ext: str = ".dicom",
    fuse_iou: float | None = 0.5,
) -> list[Annotated]:
    """VinDr-CXR boxes (``image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max``).

    Each image was read by several radiologists. With ``fuse_iou`` the boxes of one finding that
    overlap by at least that IoU (across radiologists) are merged into their mean box; ``None`` keeps
    every radiologist's box. "No finding" rows carry no box; such images get no objects
    (``meta["no_finding"] = True``). The CSV has no image sizes: pass ``image_sizes`` keyed by
    ``image_id`` (e.g. from :func:`medrega.builders.annotations.dicom_size`); without it ``size`` stays
    ``None`` and :func:`medrega.builders.annotations.region_records` skips the image.
    """
    size_of = sizes_lookup(image_sizes)
    per_image: dict[str, dict[str, list]] = {}
    rads: dict[str, set] = {}
    rows = _csv_rows(path)
    next(rows)
    for image_id, name, _cls, rad, *coords in rows:
        per_image.setdefault(image_id, {})
        rads.setdefault(image_id, set()).add(rad)
        if all(coords):
            per_image[image_id].setdefault(name, []).append([float(c) for c in coords])
    out = []
    for image_id, findings in per_image.items():
        item = Annotated(str(Path(image_dir) / f"{image_id}{ext}"), size_of(image_id), meta={"radiologists": sorted(rads[image_id])})
        for name, boxes in findings.items():
            arr = np.asarray(boxes)
            for box in _fuse(arr, fuse_iou) if fuse_iou is not None else arr:
                item.objects.append((name, tuple(float(v) for v in box)))
        item.meta["no_finding"] = not item.objects
        out.append(item)
    return out


def read_lung_masks(path: str | Path, image_dir: str | Path = "images", limit: int | None = None, split_components: bool = True) -> list[Annotated]:
    """Lung masks from a zip of mask images (the v7labs set: white = lung); image paths reuse the mask names.

    Args:
        path: the zip (``semantic_masks_v7labs_lungs.zip``).
        image_dir: folder of the matching images.
        limit: read only the first ``limit`` masks.
        split_components: one box per lung (connected component) instead of one box around both.
    """
    out = []
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")][:limit]
        for name in names:
            mask = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("L")) >= 128  # JPEG masks: threshold
            item = Annotated(str(Path(image_dir) / Path(name).name), (mask.shape[1], mask.shape[0]), meta={"mask": name})
            if mask.any():
                item.objects = [("lung", box) for box in mask_boxes(mask, split_components)]
            out.append(item)
    return out
