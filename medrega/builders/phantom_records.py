"""Records of synthetic phantoms for every task, and the dataset writer.

THESE DATA ARE SYNTHETIC. The images are phantoms drawn by :mod:`medrega.data.phantoms` (numpy
drawings, not medical images and not derived from any); the questions, answers and reports here are
read off the ground truth of each drawing. Records say so in ``source`` (``"synthetic-phantom"``) and
``meta["synthetic"]``. One writer per task turns a phantom into a record in English or Chinese;
:func:`make_phantom_dataset` writes the PNGs and one JSONL of records.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrega.data.phantoms import _SIDE_ZH, SOURCE, VOCAB, Phantom, make_phantom, make_prior
from medrega.data.records import Record
from medrega.grounding import Grounding
from medrega.tasks import TASKS, get_task
from medrega.tasks.classification import STYLES
from medrega.tasks.grounded_report import GroundedSentence
from medrega.tasks.multi_image import ABILITIES

__all__ = ["make_phantom_dataset"]


# Question and answer texts of the records: key -> (English, Chinese); ``{side}`` is "right"/"左"-style.
_TEXT = {
    "nodule_in": ("Is there a nodule in the {side} lung?", "{side}肺有结节吗？"),
    "heart_enlarged": ("Is the heart enlarged?", "心脏是否增大？"),
    "liver_lesion": ("Is there a lesion in the liver?", "肝脏内有病灶吗？"),
    "how_many": ("How many nodules are visible?", "图中可见几个结节？"),
    "bright_organ": (
        "Which organ is the bright round structure between the lungs?",
        "两肺之间明亮的圆形结构是什么器官？",
    ),
    "which_lung": ("Which lung contains the nodule?", "结节位于哪侧肺？"),
    "lung": ("{side} lung", "{side}肺"),
    "the_lung": ("The {side} lung.", "{side}肺。"),
    "both_lungs": ("Both lungs.", "双肺。"),
    "heart_yes": ("Yes, the heart is enlarged.", "是，心脏增大。"),
    "heart_no": ("No, the heart size is normal.", "否，心脏大小正常。"),
    "yes": ("Yes.", "是。"),
    "no": ("No.", "否。"),
    "heart_status": ("What does the heart show?", "心脏表现如何？"),
    "which_findings": ("Which findings are present?", "存在哪些异常？"),
    "where": ("Where is the {name}?", "{name}在哪里？"),
    "temporal": ("How has the nodule changed between the two studies?", "两次检查之间结节有何变化？"),
    "grown": ("The nodule in the {side} lung has grown.", "{side}肺结节较前增大。"),
    "new": ("A new nodule has appeared in the {side} lung.", "{side}肺新见一个结节。"),
    "stable": ("No significant change.", "较前无明显变化。"),
    "comparison": ("Which image shows more or larger nodules?", "哪张图像中的结节更多或更大？"),
    "second": ("The second image.", "第二张图像。"),
    "same": ("Neither; the images look the same.", "两张图像无明显差异。"),
    "reasoning": ("Considering both studies, does the nodule need follow-up?", "综合两次检查，结节是否需要随访？"),
    "follow_up": ("Yes, the nodule is new or growing and needs follow-up.", "是，结节为新发或增大，需要随访。"),
    "no_follow_up": ("No, the findings are stable.", "否，表现稳定。"),
}
_LABELS = {
    "count": (("none", "one", "two", "three"), ("无", "一个", "两个", "三个")),
    "heart": (("normal heart size", "cardiomegaly"), ("心脏大小正常", "心脏增大")),
    "findings": (
        ("pulmonary nodule", "cardiomegaly", "liver lesion", "no finding"),
        ("肺结节", "心脏增大", "肝脏病灶", "未见异常"),
    ),
}


def _t(key: str, lang: str, side: str = "", name: str = "") -> str:
    """The text of ``key`` in ``lang``; ``side`` ("right"/"left") and ``name`` (English) are translated."""
    if lang == "en":
        return _TEXT[key][0].format(side=side, name=name)
    return _TEXT[key][1].format(side=_SIDE_ZH.get(side, ""), name=VOCAB.get(name, ""))


@dataclass
class _Sample:
    ph: Phantom
    image: str
    lang: str
    rng: random.Random
    prior: tuple[Phantom, str, str, int | None] | None  # (prior phantom, its image path, change, changed nodule)
    multi_object_rate: float
    negative_rate: float = 0.0
    negative_rng: random.Random | None = None  # its own draws: a rate of 0 leaves every other record as it was
    query_weights: Mapping[str, float] | None = None

    def make(self, task: str, **kwargs) -> Record:
        """The task's record for this phantom's image."""
        return get_task(task).make_record(
            image=self.image, image_size=self.ph.size, lang=self.lang, rng=self.rng, **kwargs
        )


def _identification(s: _Sample, **kw) -> Record:
    en, zh, box = s.rng.choice(s.ph.structures)
    return s.make("identification", region=box, label=en if s.lang == "en" else zh, **kw)


def _weighted_sample(rng: random.Random, names: list[str], weights: Mapping[str, float], k: int) -> list[str]:
    """``k`` distinct names, each draw proportional to its weight (1 for a name not in ``weights``)."""
    left, out = list(names), []
    for _ in range(min(k, len(left))):
        out.append(left.pop(rng.choices(range(len(left)), [weights.get(n, 1.0) for n in left])[0]))
    return out


def _detection(s: _Sample, **kw) -> Record:
    """The structures asked for; with ``negative_rate``, a phantom lacking a nodule or a liver lesion is
    asked for it instead (a two-structure query keeps one structure that is there)."""
    names = s.ph.names()
    k = 2 if s.rng.random() < s.multi_object_rate else 1
    picked = set(s.rng.sample(names, k) if s.query_weights is None else _weighted_sample(s.rng, names, s.query_weights, k))
    absent = s.ph.absent()
    if absent and s.negative_rate > 0 and s.negative_rng.random() < s.negative_rate:
        missing = s.negative_rng.choice(absent)
        kept = [n for n in names if n in picked][: len(picked) - 1]
        phrase = missing if s.lang == "en" else VOCAB[missing]
        return s.make("detection", groundings=s.ph.groundings(kept, s.lang), absent=[phrase], **kw)
    return s.make("detection", groundings=s.ph.groundings([n for n in names if n in picked], s.lang), **kw)


def _grounded_report(s: _Sample, **kw) -> Record:
    """Per-organ sentences ("cxr": lungs and heart) or, with headings, per-lesion ones ("ct")."""
    style, ph = s.rng.choice(["cxr", "ct"]), s.ph
    sentences = []
    for i, organ in enumerate(["right lung", "left lung", "heart", "liver"][: 3 if style == "cxr" else 4]):
        target = ph.groundings([organ], s.lang)[0]
        if style == "ct" and organ == "liver" and ph.liver_lesion:
            target = ph.groundings(["lesion"], s.lang)[0]
        elif style == "ct" and organ.endswith("lung") and ph.nodule_boxes(organ.split()[0]):
            target = Grounding(VOCAB["nodule"] if s.lang == "zh" else "nodule", ph.nodule_boxes(organ.split()[0]))
        sentences.append(GroundedSentence([target], ph.findings[s.lang][i]))
    impression = ph.impression[s.lang] if style == "ct" else None
    return s.make(
        "grounded_report",
        sentences=sentences,
        style=style,
        impression=impression,
        name_phrases=s.rng.random() < 0.5,
        **kw,
    )


def _vqa(s: _Sample, **kw) -> Record:
    ph, lang, n = s.ph, s.lang, len(s.ph.nodule_sides)
    items = [(_t("nodule_in", lang, side), side in ph.nodule_sides) for side in ("right", "left")]
    items += [(_t("heart_enlarged", lang), ph.heart_enlarged), (_t("liver_lesion", lang), ph.liver_lesion)]
    count = ("none", "one", "two") if lang == "en" else ("没有", "一个", "两个")
    items += [(_t("how_many", lang), count[n]), (_t("bright_organ", lang), "heart" if lang == "en" else VOCAB["heart"])]
    if n and len(set(ph.nodule_sides)) == 1:
        items.append((_t("which_lung", lang), _t("lung", lang, ph.nodule_sides[0])))
    question, answer = s.rng.choice(items)
    return s.make("vqa", question=question, answer=answer, **kw)


def _report(s: _Sample, **kw) -> Record:
    findings = (" " if s.lang == "en" else "").join(s.ph.findings[s.lang])
    section = s.rng.choice(["both", "both", "findings", "impression"])
    return s.make("report", findings=findings, impression=s.ph.impression[s.lang], section=section, **kw)


def _classification(s: _Sample, **kw) -> Record:
    """Nodule count (letter choices), heart status (label list) or all findings (multi-label)."""
    ph, i = s.ph, int(s.lang == "zh")
    style = s.rng.choice(STYLES)
    if style in ("choice", "choice_text"):
        question, labels = _t("how_many", s.lang), _LABELS["count"][i]
        answer: str | list[str] = labels[len(ph.nodule_sides)]
    elif style == "list":
        question, labels = _t("heart_status", s.lang), _LABELS["heart"][i]
        answer = labels[ph.heart_enlarged]
    else:
        question, labels = _t("which_findings", s.lang), _LABELS["findings"][i]
        present = (bool(ph.nodule_sides), ph.heart_enlarged, ph.liver_lesion)
        answer = [lab for lab, on in zip(labels, present) if on] or [labels[3]]
    return s.make("classification", answer=answer, candidates=labels, style=style, question=question, **kw)


def _multi_image(s: _Sample, **kw) -> Record:
    """A prior and the current study: the change (temporal, comparison, reasoning) or one image's structure."""
    prior, prior_image, change, j = s.prior  # type: ignore[misc]
    lang, groundings, target = s.lang, [], None
    ability = s.rng.choice(ABILITIES)
    if ability == "coreference":
        target = s.rng.randrange(2)
        shown = (prior, s.ph)[target]
        name = s.rng.choice(shown.names())
        question, answer, groundings = _t("where", lang, name=name), None, shown.groundings([name], lang, target)
    elif ability == "temporal":
        question = _t("temporal", lang)
        answer = _t(change, lang, s.ph.nodule_sides[j] if j is not None else "")
        if j is not None:
            groundings = [Grounding(VOCAB["nodule"] if lang == "zh" else "nodule", [s.ph.nodule_boxes()[j]], 1)]
    elif ability == "comparison":
        question, answer = _t("comparison", lang), _t("same" if j is None else "second", lang)
    else:
        question, answer = _t("reasoning", lang), _t("no_follow_up" if j is None else "follow_up", lang)
    return get_task("multi_image").make_record(
        images=[prior_image, s.image],
        image_sizes=[prior.size, s.ph.size],
        question=question,
        answer=answer,
        lang=lang,
        rng=s.rng,
        ability=ability,
        target_image=target,
        groundings=groundings,
        **{**kw, "meta": {**kw["meta"], "change": change}},
    )


def _regional_cot(s: _Sample, **kw) -> Record:
    """Heart size, liver lesion or nodule side, with the relevant structures as regions."""
    ph, lang = s.ph, s.lang
    items = [
        (_t("heart_enlarged", lang), ["heart"], _t("heart_yes" if ph.heart_enlarged else "heart_no", lang)),
        (
            _t("liver_lesion", lang),
            ["liver", "lesion"][: 1 + ph.liver_lesion],
            _t("yes" if ph.liver_lesion else "no", lang),
        ),
    ]
    if ph.nodule_sides:
        sides = sorted(set(ph.nodule_sides), reverse=True)  # "right" before "left"
        answer = _t("both_lungs", lang) if len(sides) == 2 else _t("the_lung", lang, sides[0])
        items.append((_t("which_lung", lang), ["nodule", *(f"{x} lung" for x in sides)], answer))
    question, names, answer = s.rng.choice(items)
    return s.make("regional_cot", question=question, regions=ph.groundings(names, lang), answer=answer, **kw)


_BUILDERS = {
    "identification": _identification,
    "detection": _detection,
    "grounded_report": _grounded_report,
    "vqa": _vqa,
    "report": _report,
    "classification": _classification,
    "multi_image": _multi_image,
    "regional_cot": _regional_cot,
}


def make_phantom_dataset(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    tasks: Sequence[str] = tuple(TASKS),
    langs: Sequence[str] = ("en", "zh"),
    size: tuple[int, int] = (128, 128),
    *,
    multi_object_rate: float = 0.25,
    negative_rate: float = 0.0,
    query_weights: Mapping[str, float] | None = None,
    preamble: bool = False,
    filename: str = "phantoms.jsonl",
) -> Path:
    """Write ``n`` synthetic phantoms as PNGs and one record per phantom, task and language as JSONL.

    Images go to ``out_dir/images/phantom_00000.png`` (and ``..._prior.png``, the earlier study of
    multi-image records); records (``source="synthetic-phantom"``, ``meta["synthetic"] = True``)
    name images relative to the JSONL. The same arguments give byte-identical files, and the
    phantoms of ``n`` are the first ``n`` of any larger ``n`` with the same seed.

    Args:
        out_dir: output folder (created).
        n: number of phantoms.
        seed: dataset seed (use different seeds for training and held-out sets).
        tasks: task names (see :data:`medrega.tasks.TASKS`).
        langs: ``"en"`` and/or ``"zh"``.
        size: ``(width, height)`` of every phantom.
        multi_object_rate: share of detection records asking for two structures at once.
        negative_rate: share of the detection records of phantoms lacking a nodule or a liver lesion
            that ask for one that is absent (a negative query, answered "not found", the structure
            listed in ``meta["absent"]``; a two-structure query keeps one that is there). Phantoms with
            every structure never give one. ``0`` (the default) writes the same files as before.
        query_weights: how often a detection record asks for each structure present, relative to the
            others (English names, default 1 each; e.g. ``{"nodule": 3, "lesion": 3}`` asks for the small
            structures three times as often). ``None`` (the default) draws uniformly, as before.
        preamble: add the tasks' system-style preambles to prompts.
        filename: name of the JSONL file.

    Returns:
        The JSONL path (load it with :func:`medrega.data.load_records`).
    """
    if not 0.0 <= negative_rate <= 1.0:
        raise ValueError(f"negative_rate must lie in [0, 1], got {negative_rate}")
    if query_weights is not None:
        wrong = {name: w for name, w in query_weights.items() if name not in VOCAB or not w > 0}
        if wrong:
            raise ValueError(f"query_weights need known structures ({list(VOCAB)}) with positive weights, got {wrong}")
    unknown = [t for t in tasks if t not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {list(_BUILDERS)}")
    bad = [lang for lang in langs if lang not in ("en", "zh")]
    if bad or not langs:
        raise ValueError(f"langs must be a non-empty subset of ('en', 'zh'), got {list(langs)}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).generate_state(n) if n > 0 else []
    lines = []
    for index, ph_seed in enumerate(int(v) for v in seeds):
        ph = make_phantom(ph_seed, size)
        image = f"images/phantom_{index:05d}.png"
        ph.image.save(out / image, format="PNG", compress_level=0)
        prior = None
        if "multi_image" in tasks:
            prior_ph, change, nodule = make_prior(ph, ph_seed)
            prior = (prior_ph, f"images/phantom_{index:05d}_prior.png", change, nodule)
            prior_ph.image.save(out / prior[1], format="PNG", compress_level=0)
        for task in tasks:
            for lang in langs:
                sample = _Sample(
                    ph,
                    image,
                    lang,
                    random.Random(f"{seed}:{index}:{task}:{lang}"),
                    prior,
                    multi_object_rate,
                    negative_rate,
                    random.Random(f"{seed}:{index}:{task}:{lang}:negative"),
                    query_weights,
                )
                meta = {"synthetic": True, "phantom_seed": ph_seed}
                record = _BUILDERS[task](
                    sample, id=f"phantom-{seed}-{index:05d}-{task}-{lang}", preamble=preamble, source=SOURCE, meta=meta
                )
                lines.append(json.dumps(record.to_dict(), ensure_ascii=False))
    path = out / filename
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
