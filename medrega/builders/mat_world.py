"""A SYNTHETIC Med-MAT world: phantom modalities x areas x tasks, for compositional generalization on a CPU.

THESE DATA ARE SYNTHETIC. Every image is a numpy drawing (not a medical image and not derived from
one); the modality and area names are borrowed from Med-MAT's vocabularies only so that the registry,
the planner and the question builder treat the world as they treat Med-MAT. Records say so in
``source`` (``"synthetic-mat-world:<entry>"``) and ``meta["synthetic"] = True``.

Med-MAT's question (Cai et al., 2025) is whether a model trained on *related* (Modality, Area, Task)
combinations answers a combination it never saw better than one trained on unrelated ones. This
world has the three elements as independent parts of the drawing:

* **Modality** (:data:`MODALITIES`): how a drawing's tissue densities become pixels (contrast and
  rendering). ``CT``: linear window, sharp, little noise, lesions bright. ``MRI``: inverted contrast
  (lesions dark with a bright rim, dense tissue dark), mild blur, Rician-like noise. ``X-ray``: a
  projection look: strong blur, compressed contrast, a vertical exposure gradient, grain.
* **Area** (:data:`AREAS`): the anatomy lesions sit in. ``Lung``: two tall dark lungs in a body
  outline. ``Brain``: a skull ring around a large oval brain with two ventricles. ``Liver``: a wide
  liver on the left with a spine disc and a kidney on the right.
* **Task** (:data:`TASKS`): a question about the lesions, each with its own labels and Med-MAT
  question family. ``level`` (lesion size grading): one round lesion, mild / moderate / severe by its
  radius. ``cancer`` (lesion tumour type): one lesion, benign nodule (disc) / cystic lesion (ring) /
  malignant tumour (spiculated star). ``disease`` (lesion count): one, two or three small lesions.

Positions, sizes, tissue shades and noise jitter per image; labels are balanced. Questions are
Med-MAT single-choice questions (:func:`medrega.builders.medmat_questions.mat_questions`: the task's
labels as options, answer a letter, English and / or Chinese).

:func:`make_mat_world` writes one dataset per combination *except the target* (registered in a
:class:`~medrega.data.mat_registry.MatRegistry` as user entries with their record files, so
:func:`~medrega.data.mat_planner.plan_cg` plans on it directly) and a test set of the target drawn
from its own seed. Layout::

    <out>/<entry>/images/00000.png, <entry>/records.jsonl   one folder per combination (27 - 1 by default)
    <out>/target/images/..., target/records.jsonl           the held-out target's test questions
    <out>/registry.tsv                                       MatRegistry.register_table reads it
    <out>/world.json                                         settings, entries, counts; synthetic: true

The same arguments write byte-identical files.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from medrega.builders.medmat_questions import mat_questions
from medrega.data.mat_registry import MatEntry, MatRegistry

__all__ = ["AREAS", "MODALITIES", "SOURCE", "TASKS", "MatWorld", "WorldTask", "draw_scan", "make_mat_world"]

SOURCE = "synthetic-mat-world"
MODALITIES = ("CT", "MRI", "X-ray")
AREAS = ("Lung", "Brain", "Liver")


@dataclass(frozen=True)
class WorldTask:
    """One task of the world: its Med-MAT task name, family and labels (English, Chinese)."""

    family: str
    name: str
    labels: tuple[str, ...]
    labels_zh: tuple[str, ...]


TASKS: dict[str, WorldTask] = {
    "level": WorldTask("level", "Lesion size grading", ("mild", "moderate", "severe"), ("轻度", "中度", "重度")),
    "cancer": WorldTask(
        "cancer", "Lesion tumor type", ("benign nodule", "cystic lesion", "malignant tumor"), ("良性结节", "囊性病变", "恶性肿瘤")
    ),
    "disease": WorldTask(
        "disease", "Lesion count", ("single lesion", "two lesions", "three lesions"), ("单发病灶", "两个病灶", "三个病灶")
    ),
}

# Tissue densities (0..1) the modalities render; lesions are the densest tissue.
_DENSITY = {"air": 0.0, "body": 0.42, "lung": 0.12, "brain": 0.55, "ventricle": 0.25, "skull": 0.95,
            "liver": 0.62, "spine": 0.9, "kidney": 0.5, "lesion": 0.85}  # fmt: skip
_SUPER = 2  # drawings are made at twice the size and averaged down (smooth edges)


# -- anatomy ---------------------------------------------------------------------------------------
def _ellipse(xs, ys, cx, cy, rx, ry) -> np.ndarray:
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0


def _anatomy(area: str, rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray):
    """``(density map, host ellipses)``: the area's tissues on the unit square, and the ellipses
    ``(cx, cy, rx, ry)`` lesions may be placed in (coordinates in 0..1)."""
    u = rng.uniform
    dens = np.full(xs.shape, _DENSITY["air"], dtype=np.float32)
    jitter = lambda: u(-0.04, 0.04)  # noqa: E731 - a tissue's shade varies a little per image
    if area == "Lung":
        dens[((xs - 0.5) / 0.46) ** 4 + ((ys - 0.5) / 0.44) ** 4 <= 1.0] = _DENSITY["body"] + jitter()
        hosts = []
        for cx in (u(0.27, 0.31), u(0.69, 0.73)):
            host = (cx, u(0.44, 0.50), u(0.15, 0.18), u(0.27, 0.31))
            dens[_ellipse(xs, ys, *host)] = _DENSITY["lung"] + jitter()
            hosts.append(host)
    elif area == "Brain":
        cx, cy, rx, ry = u(0.48, 0.52), u(0.48, 0.52), u(0.38, 0.42), u(0.42, 0.45)
        dens[_ellipse(xs, ys, cx, cy, rx, ry)] = _DENSITY["skull"] + jitter()
        host = (cx, cy, rx - 0.05, ry - 0.05)
        dens[_ellipse(xs, ys, *host)] = _DENSITY["brain"] + jitter()
        for side in (-1, 1):
            dens[_ellipse(xs, ys, cx + side * 0.06, cy - 0.03, 0.035, 0.11)] = _DENSITY["ventricle"] + jitter()
        hosts = [(cx - 0.2, cy + 0.05, 0.135, 0.24), (cx + 0.2, cy + 0.05, 0.135, 0.24)]  # clear of the ventricles
    elif area == "Liver":
        dens[_ellipse(xs, ys, 0.5, 0.5, 0.47, 0.40)] = _DENSITY["body"] + jitter()
        host = (u(0.36, 0.40), u(0.46, 0.52), u(0.25, 0.28), u(0.20, 0.23))
        dens[_ellipse(xs, ys, *host)] = _DENSITY["liver"] + jitter()
        dens[_ellipse(xs, ys, u(0.72, 0.76), u(0.56, 0.60), 0.08, 0.11)] = _DENSITY["kidney"] + jitter()
        dens[_ellipse(xs, ys, 0.5, u(0.78, 0.81), 0.07, 0.06)] = _DENSITY["spine"] + jitter()
        hosts = [host]
    else:
        raise ValueError(f"unknown area {area!r}; known: {AREAS}")
    return dens, hosts


# -- lesions ---------------------------------------------------------------------------------------
def _lesion_mask(xs, ys, cx, cy, r, shape: str, phase: float) -> np.ndarray:
    d = np.hypot(xs - cx, ys - cy)
    if shape == "disc":
        return d <= r
    if shape == "ring":
        return (d <= r) & (d >= 0.5 * r)
    if shape == "star":  # five spicules
        theta = np.arctan2(ys - cy, xs - cx)
        return d <= r * (0.45 + 0.75 * np.maximum(np.cos(5 * theta + phase), 0.0) ** 3)
    raise ValueError(shape)


def _place(rng: np.random.Generator, hosts, r: float, placed: list[tuple[float, float, float]]):
    """A centre wholly inside one host ellipse, clear of ``placed`` lesions; ``None`` after 200 tries."""
    for _ in range(200):
        cx, cy, rx, ry = hosts[int(rng.integers(len(hosts)))]
        angle, rho = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1))
        px, py = cx + rho * np.cos(angle) * (rx - r - 0.01), cy + rho * np.sin(angle) * (ry - r - 0.01)
        if rx - r - 0.01 > 0 and ry - r - 0.01 > 0 and all(np.hypot(px - x, py - y) >= r + q + 0.03 for x, y, q in placed):
            return px, py
    return None


def _lesions(task: str, label: int, rng: np.random.Generator, hosts) -> list[tuple[float, float, float, str]]:
    """``(cx, cy, r, shape)`` per lesion for the task's label index (radii in units of the image side)."""
    u = rng.uniform
    if task == "level":
        specs = [(u(*((0.030, 0.040), (0.055, 0.065), (0.080, 0.095))[label]), "disc")]
    elif task == "cancer":
        specs = [(u(0.075, 0.09), ("disc", "ring", "star")[label])]
    elif task == "disease":
        specs = [(u(0.04, 0.05), "disc") for _ in range(label + 1)]
    else:
        raise ValueError(f"unknown task {task!r}; known: {tuple(TASKS)}")
    out: list[tuple[float, float, float, str]] = []
    for r, shape in specs:
        spot = _place(rng, hosts, r * (1.2 if shape == "star" else 1.0), [(x, y, q) for x, y, q, _ in out])
        if spot is None:  # cannot happen with the default anatomy; fail loudly rather than mislabel
            raise RuntimeError(f"no room for a lesion of radius {r:.3f} ({task}, label {label})")
        out.append((*spot, r, shape))
    return out


# -- modalities ------------------------------------------------------------------------------------
def _blur(img: np.ndarray, passes: int) -> np.ndarray:
    for _ in range(passes):
        p = np.pad(img, 1, mode="edge")
        p = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]
        img = 0.25 * p[:, :-2] + 0.5 * p[:, 1:-1] + 0.25 * p[:, 2:]
    return img


def _render(modality: str, dens: np.ndarray, lesion: np.ndarray, rim: np.ndarray, rng: np.random.Generator, ys: np.ndarray):
    """Pixels 0..1 of the density map ``dens`` with lesion mask ``lesion`` (and its outer rim ``rim``)."""
    u = rng.uniform
    if modality == "CT":
        img = np.where(lesion, _DENSITY["lesion"] + u(0.0, 0.1), dens)
        img = 0.05 + 0.9 * img
        img = _blur(img, 1) + rng.normal(0, 0.02, img.shape)
    elif modality == "MRI":
        img = 0.95 - 0.8 * dens  # inverted contrast: dense tissue dark, air bright...
        img[dens <= 0.01] = 0.03  # ...outside the body stays dark (no signal)
        img = np.where(rim, 0.97, img)  # lesions: a bright rim around a dark core
        img = np.where(lesion, 0.08 + u(0.0, 0.08), img)
        img = _blur(img, 2)
        img = np.hypot(img + rng.normal(0, 0.03, img.shape), rng.normal(0, 0.03, img.shape))  # Rician-like
    elif modality == "X-ray":
        img = np.where(lesion, dens + 0.28 + u(0.0, 0.06), dens)
        img = 0.2 + 0.6 * img ** 0.7 + u(0.08, 0.16) * (ys - 0.5)  # compressed contrast, exposure gradient
        img = _blur(img, 4) + rng.normal(0, 0.045, img.shape)
    else:
        raise ValueError(f"unknown modality {modality!r}; known: {MODALITIES}")
    return img


def draw_scan(modality: str, area: str, task: str, label: int, seed, size: int = 64) -> tuple[Image.Image, dict]:
    """One synthetic drawing (not a medical image) and its ground truth.

    Args:
        modality, area, task: one of :data:`MODALITIES`, :data:`AREAS`, :data:`TASKS` (a family).
        label: index into the task's labels.
        seed: anything ``numpy.random.default_rng`` takes (the same seed gives the same pixels).
        size: side in pixels (square; at least 32).

    Returns:
        ``(grayscale PIL image, truth)``: ``truth`` holds the label and the lesions
        ``[cx, cy, r, shape]`` (in units of the image side).
    """
    if size < 32:
        raise ValueError(f"size must be at least 32, got {size}")
    if not 0 <= label < len(TASKS[task].labels):
        raise ValueError(f"label index {label} out of range for task {task!r}")
    rng = np.random.default_rng(seed)
    n = size * _SUPER
    grid = (np.arange(n, dtype=np.float32) + 0.5) / n
    xs, ys = np.meshgrid(grid, grid)  # (n, n) each
    dens, hosts = _anatomy(area, rng, xs, ys)
    lesions = _lesions(task, label, rng, hosts)
    phase = float(rng.uniform(0, 2 * np.pi))
    lesion = np.zeros(xs.shape, dtype=bool)
    rim = np.zeros(xs.shape, dtype=bool)
    for cx, cy, r, shape in lesions:
        lesion |= _lesion_mask(xs, ys, cx, cy, r, shape, phase)
        envelope = "star" if shape == "star" else "disc"  # a ring's hole keeps its tissue
        rim |= _lesion_mask(xs, ys, cx, cy, r * 1.3 + 0.012, envelope, phase) & ~_lesion_mask(xs, ys, cx, cy, r, envelope, phase)
    img = _render(modality, dens, lesion, rim, rng, ys)
    img = img.reshape(size, _SUPER, size, _SUPER).mean(axis=(1, 3))  # (size, size)
    pixels = np.clip(np.rint(255 * img), 0, 255).astype(np.uint8)
    truth = {"label": TASKS[task].labels[label], "lesions": [[round(float(c), 4) for c in les[:3]] + [les[3]] for les in lesions]}
    return Image.fromarray(pixels), truth


# -- the world -------------------------------------------------------------------------------------
def _slug(modality: str, area: str, task: str) -> str:
    return f"{modality}-{area}-{task}".lower().replace("x-ray", "xray")


def _stream(seed: int, name: str, role: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(name.encode()), role])


@dataclass
class MatWorld:
    """What :func:`make_mat_world` wrote: the registry (no target entry), the target and its test file."""

    root: Path
    registry: MatRegistry
    target: tuple[str, str, str]
    target_entry: MatEntry
    target_path: Path
    counts: dict[str, int] = field(default_factory=dict)  # records per entry key (and "target")

    @property
    def entries(self) -> list[MatEntry]:
        return list(self.registry)


def _write_entry(folder: Path, entry: MatEntry, family: str, n_per_label: int, seed: int, role: int, size: int,
                 langs: Sequence[str], paraphrases: int) -> list[str]:  # fmt: skip
    task = TASKS[family]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows, truths = [], {}
    stream = _stream(seed, entry.name or entry.key, role)
    for i, child in enumerate(stream.spawn(n_per_label * len(task.labels))):
        label = i % len(task.labels)
        image, truth = draw_scan(entry.modality, entry.area, family, label, child, size)
        rel = f"images/{i:05d}.png"
        image.save(folder / rel, format="PNG", compress_level=0)
        rows.append((rel, task.labels[label]))
        truths[rel] = truth["lesions"]
    built = mat_questions(rows, entry, labels=task.labels, langs=langs, paraphrases=paraphrases, max_options=len(task.labels),
                          label_names={"zh": dict(zip(task.labels, task.labels_zh))}, seed=seed + 7919 * role)  # fmt: skip
    lines = []
    for record in built:
        meta = {**record.meta, "synthetic": True, "world_role": ("train", "test")[role], "lesions": truths[record.images[0]]}
        record = replace(record, source=f"{SOURCE}:{entry.name}", meta=meta)
        lines.append(json.dumps(record.to_dict(), ensure_ascii=False))
    (folder / "records.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return lines


def make_mat_world(
    out_dir: str | Path,
    target: tuple[str, str, str] = ("CT", "Lung", "level"),
    *,
    seed: int = 0,
    n_per_label: int = 60,
    n_test_per_label: int = 40,
    size: int = 64,
    langs: Sequence[str] = ("en",),
    paraphrases: int = 3,
    modalities: Sequence[str] = MODALITIES,
    areas: Sequence[str] = AREAS,
    tasks: Sequence[str] = tuple(TASKS),
) -> MatWorld:
    """Write the synthetic world (layout in the module docstring) and return its registry.

    Args:
        out_dir: output folder (created).
        target: the held-out ``(modality, area, task family)``: no training dataset has it; its test
            questions come from their own seed.
        seed: every drawing and question.
        n_per_label, n_test_per_label: images per label of each training dataset / of the target's test set.
        size: image side in pixels (the tiny preset reads 64).
        langs: ``"en"`` and / or ``"zh"``: one question per image and language.
        paraphrases: question wordings each dataset draws (Med-MAT's per-subset instructions).
        modalities, areas, tasks: the elements used (subsets of :data:`MODALITIES`, :data:`AREAS`, :data:`TASKS`).

    Returns:
        A :class:`MatWorld`; ``registry`` holds user entries numbered 1.. with their record files.
    """
    for values, known, what in ((modalities, MODALITIES, "modality"), (areas, AREAS, "area"), (tasks, tuple(TASKS), "task")):
        bad = [v for v in values if v not in known]
        if bad or not values:
            raise ValueError(f"{what} values must be a non-empty subset of {known}, got {list(values)}")
    target = tuple(target)
    if len(target) != 3 or target[0] not in modalities or target[1] not in areas or target[2] not in tasks:
        raise ValueError(f"target {target!r} must be (modality, area, task) of the world's {list(modalities)}, {list(areas)}, {list(tasks)}")
    if n_per_label < 1 or n_test_per_label < 1:
        raise ValueError("n_per_label and n_test_per_label must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    registry = MatRegistry()
    counts: dict[str, int] = {}
    rows = []
    number = 0
    for modality in modalities:
        for area in areas:
            for family in tasks:
                if (modality, area, family) == target:
                    continue
                number += 1
                name = _slug(modality, area, family)
                path = out / name / "records.jsonl"
                entry = registry.register(modality, area, TASKS[family].name, name=name, no=number, family=family, path=str(path))
                counts[entry.key] = len(_write_entry(out / name, entry, family, n_per_label, seed, 0, size, langs, paraphrases))
                rows.append((str(number), name, modality, area, TASKS[family].name, family, f"{name}/records.jsonl"))
    name = "target-" + _slug(*target)
    target_entry = MatEntry(f"user:{name}", "user", None, name, target[0], target[1], TASKS[target[2]].name, target[2])
    target_path = out / "target" / "records.jsonl"
    counts["target"] = len(_write_entry(out / "target", target_entry, target[2], n_test_per_label, seed, 1, size, langs, paraphrases))
    lines = ["no\tname\tmodality\tarea\ttask\tfamily\tpath", *("\t".join(r) for r in rows)]
    (out / "registry.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    info = {
        "synthetic": True,
        "note": "synthetic drawings (numpy), not medical images; modality / area names are borrowed from Med-MAT's vocabularies",
        "source": SOURCE,
        "target": list(target),
        "settings": {"seed": seed, "n_per_label": n_per_label, "n_test_per_label": n_test_per_label, "size": size,
                     "langs": list(langs), "paraphrases": paraphrases},  # fmt: skip
        "entries": [{"key": e.key, "mat": list(e.mat), "task": e.task, "path": f"{e.name}/records.jsonl", "records": counts[e.key]} for e in registry],
        "target_test": {"path": "target/records.jsonl", "records": counts["target"]},
    }
    (out / "world.json").write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return MatWorld(out, registry, target, target_entry, target_path, counts)
