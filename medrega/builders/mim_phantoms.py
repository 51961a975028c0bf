"""Med-MIM-style multi-image records of synthetic phantoms: paired visits, two views, which-image questions.

THESE DATA ARE SYNTHETIC. Images are phantoms of :mod:`medrega.data.phantoms` (numpy drawings, not
medical images); questions and answers are read off how each pair was drawn. Records say so in
``source`` (``"synthetic-phantom"``) and ``meta["synthetic"]``.

One sample per ability and index, written in English and/or Chinese (the languages share the images):

=============  ===================================================================  ==========================
ability        images and question                                                  answers
=============  ===================================================================  ==========================
temporal       two visits of one patient; "How has the nodule changed between      appeared / grown /
               the two visits?"                                                     disappeared / no change
comparison     two studies; "Which image shows a nodule / an enlarged heart /       first / second / both /
               a liver lesion?"                                                     neither
reasoning      two views of one patient (the second mirrored), a nodule drawn in    yes / no
               one view, both or neither; "Considering both views, does the
               patient have a lung nodule?"
coreference    two studies; "In the second image, is the heart enlarged?"          yes / no
               (a nodule, an enlarged heart or a liver lesion, in either image)
=============  ===================================================================  ==========================

Answers are balanced by construction (each class, or each ``(first, second)`` pair of findings, is
drawn uniformly), so the first image alone cannot tell most of them: :func:`first_image_only` gives
that baseline's view of a record. Nodules keep their normal size in the earlier visit ("grown" makes
the later one 1.6 times larger), so the size of a nodule in the first image says nothing of the change.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import ImageOps

from medrega.data.loading import load_records
from medrega.data.phantoms import SOURCE, Phantom, _render, make_phantom
from medrega.data.records import Record, Turn
from medrega.grounding import IMAGE_TOKEN
from medrega.tasks import get_task
from medrega.tasks.multi_image import ABILITIES

__all__ = ["ANSWERS", "CHANGES", "first_image_only", "make_mim_dataset", "write_first_image_only"]

CHANGES = ("appeared", "grown", "disappeared", "stable")
_FINDINGS = ("nodule", "heart", "lesion")
_TEXT = {  # key -> (English, Chinese)
    "temporal": ("How has the nodule changed between the two visits?", "两次就诊之间结节有何变化？"),
    "appeared": ("A new nodule has appeared.", "新见一个结节。"),
    "grown": ("The nodule has grown.", "结节较前增大。"),
    "disappeared": ("The nodule has disappeared.", "结节已消失。"),
    "stable": ("No change.", "较前无变化。"),
    "which_nodule": ("Which image shows a lung nodule?", "哪张图像显示肺结节？"),
    "which_heart": ("Which image shows an enlarged heart?", "哪张图像显示心脏增大？"),
    "which_lesion": ("Which image shows a liver lesion?", "哪张图像显示肝脏病灶？"),
    "first": ("The first image.", "第一张图像。"),
    "second": ("The second image.", "第二张图像。"),
    "both": ("Both images.", "两张图像都有。"),
    "neither": ("Neither image.", "两张图像都没有。"),
    "reasoning": ("Considering both views, does the patient have a lung nodule?", "综合两个视角，患者有肺结节吗？"),
    "is_nodule": ("Is there a lung nodule?", "有肺结节吗？"),
    "is_heart": ("Is the heart enlarged?", "心脏是否增大？"),
    "is_lesion": ("Is there a liver lesion?", "肝脏有病灶吗？"),
    "yes": ("Yes.", "是。"),
    "no": ("No.", "否。"),
}
ANSWERS = {  # ability -> the keys of its possible answers
    "temporal": CHANGES,
    "comparison": ("first", "second", "both", "neither"),
    "reasoning": ("yes", "no"),
    "coreference": ("yes", "no"),
}
_PAIR = ((1, 0), (0, 1), (1, 1), (0, 0))  # "first", "second", "both", "neither" as (first has it, second has it)


def _t(key: str, lang: str) -> str:
    return _TEXT[key][lang == "zh"]


def _has(ph: Phantom, finding: str) -> bool:
    return {"nodule": bool(ph.nodule_sides), "heart": ph.heart_enlarged, "lesion": ph.liver_lesion}[finding]


def _draw(rng: random.Random, size: tuple[int, int], keep: Callable[[Phantom], bool]) -> Phantom:
    """A phantom of a fresh seed for which ``keep`` holds (rejection sampling)."""
    for _ in range(1000):
        ph = make_phantom(rng.randrange(2**31), size)
        if keep(ph):
            return ph
    raise RuntimeError("no phantom met the condition in 1000 draws")  # every condition holds for >= 25% of seeds


def _redraw(ph: Phantom, nodules, rng: random.Random) -> Phantom:
    """``ph``'s patient with other nodules, drawn with fresh noise."""
    return _render(replace(ph.layout, nodules=tuple(nodules)), ph.seed, np.random.default_rng(rng.randrange(2**31)))


def _temporal(rng: random.Random, size: tuple[int, int]):
    ph = _draw(rng, size, lambda p: bool(p.nodule_sides))
    change = rng.choice(CHANGES)
    nodules = list(ph.layout.nodules)
    j = rng.randrange(len(nodules))
    without = nodules[:j] + nodules[j + 1 :]
    disc, side = nodules[j]
    bigger = nodules[:j] + [(replace(disc, rx=disc.rx * 1.6, ry=disc.ry * 1.6), side)] + nodules[j + 1 :]
    prior, current = {
        "appeared": (without, nodules),
        "disappeared": (nodules, without),
        "grown": (nodules, bigger),
        "stable": rng.choice([(nodules, nodules), (without, without)]),
    }[change]
    return [_redraw(ph, prior, rng), _redraw(ph, current, rng)], "temporal", change, None, {"change": change}


def _comparison(rng: random.Random, size: tuple[int, int]):
    finding, answer = rng.choice(_FINDINGS), rng.choice(ANSWERS["comparison"])
    wanted = _PAIR[ANSWERS["comparison"].index(answer)]
    images = [_draw(rng, size, lambda p, w=w: _has(p, finding) == bool(w)) for w in wanted]
    return images, f"which_{finding}", answer, None, {"finding": finding}


def _reasoning(rng: random.Random, size: tuple[int, int]):
    ph = _draw(rng, size, lambda p: bool(p.nodule_sides))
    seen = rng.choice(((1, 0), (0, 1), (1, 1))) if rng.random() < 0.5 else (0, 0)  # "yes" and "no" equally often
    views = [_redraw(ph, ph.layout.nodules if s else (), rng) for s in seen]
    views[1].image = ImageOps.mirror(views[1].image)  # the second view looks from the other side (boxes not mirrored: unused)
    return views, "reasoning", "yes" if any(seen) else "no", None, {"views_with_nodule": list(seen)}


def _coreference(rng: random.Random, size: tuple[int, int]):
    finding, target = rng.choice(_FINDINGS), rng.randrange(2)
    wanted = (rng.randrange(2), rng.randrange(2))
    images = [_draw(rng, size, lambda p, w=w: _has(p, finding) == bool(w)) for w in wanted]
    return images, f"is_{finding}", "yes" if wanted[target] else "no", target, {"finding": finding}


_BUILDERS = {"temporal": _temporal, "comparison": _comparison, "reasoning": _reasoning, "coreference": _coreference}


def make_mim_dataset(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    abilities: Sequence[str] = ABILITIES,
    langs: Sequence[str] = ("en", "zh"),
    size: tuple[int, int] = (64, 64),
    *,
    filename: str = "mim.jsonl",
) -> Path:
    """Write ``n`` two-image phantom samples per ability as PNGs and JSONL records (one per language).

    Images go to ``out_dir/images/mim_<ability>_<index>_<k>.png``; records (task ``multi_image``,
    ``meta["ability"]``, ``meta["answer"]``: the answer's key in :data:`ANSWERS`) name them relative to
    the JSONL. The same arguments give the same files; use other seeds for training and test sets.

    Args:
        out_dir: output folder (created).
        n: samples per ability.
        seed: dataset seed.
        abilities: a subset of :data:`medrega.tasks.multi_image.ABILITIES`.
        langs: ``"en"`` and/or ``"zh"``.
        size: ``(width, height)`` of every image (at least 32 each).
        filename: name of the JSONL file.

    Returns:
        The JSONL path (load it with :func:`medrega.data.load_records`).
    """
    unknown = [a for a in abilities if a not in _BUILDERS]
    if unknown or not abilities:
        raise ValueError(f"abilities must be a non-empty subset of {ABILITIES}, got {list(abilities)}")
    bad = [lang for lang in langs if lang not in ("en", "zh")]
    if bad or not langs:
        raise ValueError(f"langs must be a non-empty subset of ('en', 'zh'), got {list(langs)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    task, lines = get_task("multi_image"), []
    for ability in abilities:
        for index in range(n):
            rng = random.Random(f"mim:{seed}:{ability}:{index}")
            phantoms, question, answer, target, extra = _BUILDERS[ability](rng, size)
            paths = [f"images/mim_{ability}_{index:05d}_{k}.png" for k in range(len(phantoms))]
            for ph, path in zip(phantoms, paths):
                ph.image.save(out / path, format="PNG", compress_level=0)
            for lang in langs:
                record = task.make_record(
                    id=f"mim-{seed}-{ability}-{index:05d}-{lang}",
                    images=paths,
                    image_sizes=[ph.size for ph in phantoms],
                    question=_t(question, lang),
                    answer=_t(answer, lang),
                    lang=lang,
                    rng=random.Random(f"mim:{seed}:{ability}:{index}:{lang}"),
                    ability=ability,
                    target_image=target,
                    source=SOURCE,
                    meta={"synthetic": True, "answer": answer, **extra},
                )
                lines.append(json.dumps(record.to_dict(), ensure_ascii=False))
    path = out / filename
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def first_image_only(record: Record) -> Record:
    """The record as a one-image model sees it: its first image, the other image tags removed from the
    prompt (the question text, "in the second image" included, is unchanged)."""
    if len(record.images) < 2:
        raise ValueError(f"record {record.id!r} has {len(record.images)} image(s); first_image_only needs 2 or more")
    label = "Image {k}: " if record.lang == "en" else "图{k}："
    turns = []
    for turn in record.conversation:
        content = turn.content
        for k in range(2, len(record.images) + 1):
            slot = label.format(k=k) + IMAGE_TOKEN + "\n"
            if turn.role == "user" and slot in content:
                content = content.replace(slot, "", 1)
        turns.append(Turn(turn.role, content))
    left = sum(t.content.count(IMAGE_TOKEN) for t in turns)
    if left != 1:
        raise ValueError(f"record {record.id!r}: expected tagged image slots (Image k: <image>), {left} placeholder(s) left")
    sizes = record.image_sizes[:1] if record.image_sizes else None
    return replace(record, images=record.images[:1], image_sizes=sizes, conversation=turns, meta={**record.meta, "images_dropped": len(record.images) - 1})



def write_first_image_only(path: str | Path, filename: str | None = None) -> Path:
    """Write :func:`first_image_only` of every record of a JSONL beside it (images stay relative).

    Args:
        path: a JSONL of multi-image records (e.g. from :func:`make_mim_dataset`).
        filename: the new file's name (default: ``<stem>_first_image.jsonl``).
    """
    path = Path(path)
    folder = path.parent.resolve()
    lines = []
    for record in load_records(path):
        row = first_image_only(record).to_dict()
        row["images"] = [os.path.relpath(p, folder) for p in row["images"]]
        lines.append(json.dumps(row, ensure_ascii=False))
    out = path.with_name(filename or f"{path.stem}_first_image.jsonl")
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out
