"""Synthetic phantom data: deterministic grayscale drawings with organ- and lesion-like shapes.

THESE DATA ARE SYNTHETIC. A phantom is a drawing made with numpy, not a medical image and not
derived from one; it exists to test and demonstrate the library (a tiny model learns to detect its
structures on a CPU in minutes). Records say so in ``source`` (``"synthetic-phantom"``) and
``meta["synthetic"]``.

Layout (the patient's right on the image's left, as radiographs are read); organs never overlap:

==============  ======  ===========================================================
structure       中文     appearance
==============  ======  ===========================================================
right lung      右肺     dark tall ellipse, upper left (always present)
left lung       左肺     dark tall ellipse, upper right (always present)
heart           心脏     bright disc between the lungs; clearly larger when enlarged
liver           肝脏     light-gray wide ellipse, lower left (always present)
nodule          结节     small very bright disc inside a lung (0, 1 or 2)
lesion          病灶     small dark disc inside the liver (present or not)
==============  ======  ===========================================================

Positions and sizes jitter with the seed; every box is the tight box (:func:`medrega.boxes.from_mask`)
of the drawn mask. Images get a 3-tap blur and mild Gaussian noise. Records and datasets for every task
are written by :func:`medrega.builders.phantom_records.make_phantom_dataset`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from medrega import boxes as B
from medrega.grounding import Grounding

__all__ = ["OPTIONAL", "Phantom", "VOCAB", "SOURCE", "make_phantom", "make_prior"]

SOURCE = "synthetic-phantom"
VOCAB = {
    "right lung": "右肺",
    "left lung": "左肺",
    "heart": "心脏",
    "liver": "肝脏",
    "nodule": "结节",
    "lesion": "病灶",
}
OPTIONAL = ("nodule", "lesion")  # the structures a phantom may lack (the organs are always drawn)
_INTENSITY = {"body": 95, "liver": 150, "right lung": 35, "left lung": 35, "heart": 195, "nodule": 240, "lesion": 75}
_SIDE_ZH = {"right": "右", "left": "左"}


@dataclass(frozen=True)
class _Disc:
    """An axis-aligned ellipse in pixels (a disc when ``rx == ry``)."""

    name: str
    cx: float
    cy: float
    rx: float
    ry: float

    def mask(self, w: int, h: int) -> np.ndarray:
        """The pixels whose centres lie inside, ``(H, W)`` bool (computed on the bounding window only)."""
        x0, x1 = max(int(self.cx - self.rx) - 1, 0), min(int(self.cx + self.rx) + 2, w)
        y0, y1 = max(int(self.cy - self.ry) - 1, 0), min(int(self.cy + self.ry) + 2, h)
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - self.cx) / self.rx  # (x1 - x0,)
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - self.cy) / self.ry  # (y1 - y0,)
        out = np.zeros((h, w), dtype=bool)
        out[y0:y1, x0:x1] = ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0
        return out


@dataclass(frozen=True)
class _Layout:
    size: tuple[int, int]
    organs: tuple[_Disc, ...]  # right lung, left lung, heart, liver
    nodules: tuple[tuple[_Disc, str], ...]  # (disc, lung side)
    lesion: _Disc | None
    heart_enlarged: bool
    shades: tuple[float, ...]  # intensity jitter per drawn shape


@dataclass
class Phantom:
    """One synthetic phantom (not a medical image).

    Args:
        image: grayscale PIL image (mode ``"L"``).
        structures: ``(name_en, name_zh, box)`` per drawn structure, box ``(x1, y1, x2, y2)`` in pixels.
        masks: the drawn mask of each structure, ``(H, W)`` bool, aligned with ``structures``.
        findings: per language, one sentence per organ (right lung, left lung, heart, liver).
        impression: per language, the summary line.
        seed: the seed it was drawn from.
        heart_enlarged, nodule_sides, liver_lesion: the ground truth behind the text.
    """

    image: Image.Image
    structures: list[tuple[str, str, B.Box]]
    masks: list[np.ndarray]
    findings: dict[str, list[str]]
    impression: dict[str, str]
    seed: int
    heart_enlarged: bool
    nodule_sides: list[str]
    liver_lesion: bool
    layout: _Layout = field(repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.image.size

    def names(self) -> list[str]:
        """English names of the structures present, each once, in :data:`VOCAB` order."""
        present = {s[0] for s in self.structures}
        return [n for n in VOCAB if n in present]

    def absent(self) -> list[str]:
        """English names of the :data:`OPTIONAL` structures this phantom does not contain (asked for by
        negative detection queries), in :data:`VOCAB` order."""
        present = set(self.names())
        return [n for n in OPTIONAL if n not in present]

    def nodule_boxes(self, side: str | None = None) -> list[B.Box]:
        """Boxes of the nodules, of one lung (``"right"``/``"left"``) or of both."""
        nodules = [st for st in self.structures if st[0] == "nodule"]
        return [box for (_, _, box), sd in zip(nodules, self.nodule_sides, strict=True) if side in (None, sd)]

    def groundings(self, names: Sequence[str], lang: str = "en", image_index: int = 0) -> list[Grounding]:
        """One grounding per name (English), holding every box of that structure; phrase in ``lang``."""
        out = []
        for name in names:
            boxes = [box for en, _, box in self.structures if en == name]
            if not boxes:
                raise ValueError(f"phantom {self.seed} has no {name!r}; it has {self.names()}")
            out.append(Grounding(name if lang == "en" else VOCAB[name], boxes, image_index))
        return out


def _fit_disc(rng: np.random.Generator, host: _Disc, radius: float, name: str, avoid: Sequence[_Disc], w: int, h: int):
    """A disc of ``radius`` placed at random wholly inside ``host``, 2 px clear of ``avoid``; ``None`` if none fits."""
    host_mask = host.mask(w, h)
    for _ in range(40):
        angle, rho = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1))
        cx = host.cx + rho * np.cos(angle) * max(host.rx - radius - 1, 0)
        cy = host.cy + rho * np.sin(angle) * max(host.ry - radius - 1, 0)
        disc = _Disc(name, cx, cy, radius, radius)
        clear = all(np.hypot(cx - o.cx, cy - o.cy) >= radius + o.rx + 2 for o in avoid)
        if clear and not (disc.mask(w, h) & ~host_mask).any():
            return disc
    return None


def _sample_layout(rng: np.random.Generator, w: int, h: int) -> _Layout:
    m = min(w, h)
    u = rng.uniform
    lungs = (
        _Disc("right lung", w * u(0.20, 0.24), h * u(0.30, 0.36), w * u(0.085, 0.11), h * u(0.17, 0.21)),
        _Disc("left lung", w * u(0.76, 0.80), h * u(0.30, 0.36), w * u(0.085, 0.11), h * u(0.17, 0.21)),
    )
    enlarged = bool(rng.random() < 0.3)
    r = m * (u(0.095, 0.105) if enlarged else u(0.065, 0.08))
    heart = _Disc("heart", w * u(0.48, 0.52), h * u(0.40, 0.46), r, r)
    liver = _Disc("liver", w * u(0.30, 0.36), h * u(0.76, 0.80), w * u(0.15, 0.19), h * u(0.08, 0.10))
    nodules: list[tuple[_Disc, str]] = []
    for _ in range(int(rng.choice(3, p=[0.25, 0.5, 0.25]))):
        side = int(rng.integers(2))
        disc = _fit_disc(rng, lungs[side], m * u(0.05, 0.065), "nodule", [d for d, _ in nodules], w, h)
        if disc is not None:
            nodules.append((disc, ("right", "left")[side]))
    lesion = _fit_disc(rng, liver, m * u(0.045, 0.06), "lesion", [], w, h) if rng.random() < 0.4 else None
    shades = tuple(rng.uniform(-8, 8, size=8))
    return _Layout((w, h), (*lungs, heart, liver), tuple(nodules), lesion, enlarged, shades)


def _blur(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge padding; ``img`` is ``(H, W)``."""
    p = np.pad(img, 1, mode="edge")  # (H+2, W+2)
    p = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]  # (H, W+2)
    return 0.25 * p[:, :-2] + 0.5 * p[:, 1:-1] + 0.25 * p[:, 2:]  # (H, W)


def _texts(layout: _Layout) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Per-organ findings and the impression, in English and Chinese."""
    sides = [s for _, s in layout.nodules]
    en, zh = [], []
    for side in ("right", "left"):
        k, z = sides.count(side), _SIDE_ZH[side]
        en.append(
            [
                f"The {side} lung is clear.",
                f"A nodule is seen in the {side} lung.",
                f"Two nodules are seen in the {side} lung.",
            ][k]
        )
        zh.append([f"{z}肺清晰，未见结节。", f"{z}肺见一个结节。", f"{z}肺见两个结节。"][k])
    en.append("The heart is enlarged." if layout.heart_enlarged else "The heart size is normal.")
    zh.append("心脏增大。" if layout.heart_enlarged else "心脏大小正常。")
    en.append("A low-density lesion is seen in the liver." if layout.lesion else "The liver is unremarkable.")
    zh.append("肝脏见一低密度病灶。" if layout.lesion else "肝脏未见异常。")
    imp_en, imp_zh = [], []
    if sides:
        both = len(set(sides)) == 2
        imp_en.append(
            "Nodules in both lungs" if both else f"{'Nodules' if len(sides) > 1 else 'Nodule'} in the {sides[0]} lung"
        )
        imp_zh.append("双肺结节" if both else f"{_SIDE_ZH[sides[0]]}肺结节")
    for present, item_en, item_zh in (
        (layout.heart_enlarged, "Cardiomegaly", "心脏增大"),
        (layout.lesion, "Liver lesion", "肝脏病灶"),
    ):
        if present:
            imp_en.append(item_en)
            imp_zh.append(item_zh)
    impression = {
        "en": "; ".join(imp_en) + "." if imp_en else "No abnormality.",
        "zh": "；".join(imp_zh) + "。" if imp_zh else "未见明显异常。",
    }
    return {"en": en, "zh": zh}, impression


@functools.lru_cache(maxsize=8)
def _body_mask(w: int, h: int) -> np.ndarray:
    """The body outline, a superellipse filling the frame, ``(H, W)`` bool (read-only, cached per size)."""
    xs = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (0.47 * w)  # (W,)
    ys = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (0.48 * h)  # (H,)
    mask = ys[:, None] ** 4 + xs[None, :] ** 4 <= 1.0  # (H, W)
    mask.flags.writeable = False
    return mask


def _render(layout: _Layout, seed: int, rng: np.random.Generator) -> Phantom:
    """Draw ``layout``; ``rng`` draws the noise, ``seed`` is recorded on the phantom."""
    w, h = layout.size
    img = np.full((h, w), 8.0, dtype=np.float32)
    img[_body_mask(w, h)] = _INTENSITY["body"] + layout.shades[0]
    shapes = [*layout.organs, *(d for d, _ in layout.nodules), *([layout.lesion] if layout.lesion else [])]
    masks = [d.mask(w, h) for d in shapes]
    for i, (disc, mask) in enumerate(zip(shapes, masks)):
        img[mask] = _INTENSITY[disc.name] + layout.shades[1 + min(i, 6)]
    noise = 4.0 * rng.standard_normal((h, w), dtype=np.float32)
    pixels = np.clip(np.rint(_blur(img) + noise), 0, 255).astype(np.uint8)
    findings, impression = _texts(layout)
    return Phantom(
        image=Image.fromarray(pixels),
        structures=[(d.name, VOCAB[d.name], B.from_mask(m)) for d, m in zip(shapes, masks)],
        masks=masks,
        findings=findings,
        impression=impression,
        seed=seed,
        heart_enlarged=layout.heart_enlarged,
        nodule_sides=[s for _, s in layout.nodules],
        liver_lesion=layout.lesion is not None,
        layout=layout,
    )


def make_phantom(seed: int, size: tuple[int, int] = (128, 128)) -> Phantom:
    """Draw the synthetic phantom of ``seed`` (the same seed gives the same pixels).

    Args:
        seed: non-negative integer seed.
        size: ``(width, height)`` in pixels, each at least 32 (need not be square).
    """
    w, h = (int(v) for v in size)
    if min(w, h) < 32:
        raise ValueError(f"phantom size must be at least 32x32, got {w}x{h}")
    rng = np.random.default_rng(seed)
    return _render(_sample_layout(rng, w, h), seed, rng)


def make_prior(phantom: Phantom, seed: int) -> tuple[Phantom, str, int | None]:
    """An earlier study of the same synthetic patient, and how ``phantom`` changed since.

    One nodule of ``phantom`` was smaller (``"grown"``) or absent (``"new"``) in the prior, or
    nothing changed (``"stable"``, always so without nodules). The prior has its own noise.

    Args:
        phantom: the current study.
        seed: picks the change and the prior's noise.

    Returns:
        ``(prior, change, nodule)``: ``nodule`` indexes the changed nodule among the nodules of
        ``phantom`` (``None`` when stable).
    """
    rng = np.random.default_rng([seed, 11])
    layout = phantom.layout
    change = str(rng.choice(["grown", "new", "stable"])) if layout.nodules else "stable"
    nodules = list(layout.nodules)
    j = int(rng.integers(len(nodules))) if change != "stable" else None
    if j is not None:
        disc, side = nodules.pop(j)
        if change == "grown":
            nodules.insert(j, (replace(disc, rx=disc.rx * 0.6, ry=disc.ry * 0.6), side))
    return _render(replace(layout, nodules=tuple(nodules)), phantom.seed, rng), change, j
