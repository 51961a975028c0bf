"""Med-MAT-style single-choice questions from the labelled images of one subset.

Med-MAT turns every labelled image into a single-choice question: an instruction naming the image
("Review this kidney CT image and determine ..."), at most 4 options, the answer a letter.
:func:`mat_questions` writes such records with the classification task
(``get_task("classification")``: ``choose_options``, ``build_prompt``, ``format_answer``):

* **Options**: the true label and up to 3 distractors drawn from the *other labels of the same
  subset*, shuffled; the answer is the letter of the true label (:data:`medrega.answers.LETTERS`).
* **Instructions**: each subset draws ``paraphrases`` instructions (seeded by the subset's key) from
  a pool for its task family (:data:`QUESTIONS`, English and Chinese in parallel); every question
  uses one of them, so a subset reads consistently and the model still sees several wordings.
* **Balance and cap**: each label contributes ``min(quota, images of that label)`` images, with
  ``quota = per_label`` or ``cap // number of labels``; a rare label gives all it has (see
  ``counts`` on the result). Each image gives one record per language in ``langs``.
* **Seeded**: the same rows, entry and seed give the same records.

Chinese options use ``label_names["zh"]`` where given (else the label as written).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

from medrega.builders.annotations import Built
from medrega.data.mat_registry import MODALITIES, MatEntry
from medrega.data.records import Record, Turn
from medrega.tasks import RECORD_SCALE, get_task

__all__ = ["QUESTIONS", "mat_questions"]

_GENERIC = {
    "en": (
        "Review this {image} and determine the possible condition it represents.",
        "What does this {image} show?",
        "Which diagnosis best fits this {image}?",
        "Based on this {image}, what is the most likely finding?",
    ),
    "zh": ("请查看这张{image}，判断其可能的情况。", "这张{image}显示了什么？", "哪个诊断最符合这张{image}？", "根据这张{image}，最可能的发现是什么？"),
}
QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "disease": _GENERIC,
    "region": _GENERIC,
    "cancer": {
        "en": (
            "What type of tumor or cancer is shown in this {image}?",
            "Classify the lesion in this {image}.",
            "Which cancer category does this {image} belong to?",
            "Review this {image} and determine whether it shows a malignancy, and of which kind.",
        ),
        "zh": ("这张{image}中显示的是哪种肿瘤或癌症？", "请对这张{image}中的病变进行分类。", "这张{image}属于哪种癌症类别？", "请查看这张{image}，判断是否为恶性病变及其类型。"),
    },
    "covid": {
        "en": (
            "Does this {image} show signs of COVID-19 or another infection?",
            "What is the infection status shown in this {image}?",
            "Which finding fits this {image} best?",
        ),
        "zh": ("这张{image}是否显示新冠肺炎或其他感染的征象？", "这张{image}显示的感染状态是什么？", "哪个结果最符合这张{image}？"),
    },
    "level": {
        "en": ("What level does this {image} show?", "Grade the severity shown in this {image}.", "Which degree best describes this {image}?"),
        "zh": ("这张{image}显示的是哪个等级？", "请对这张{image}显示的严重程度分级。", "哪个程度最能描述这张{image}？"),
    },
    "state": {
        "en": ("What is the state shown in this {image}?", "How would you rate the quality or condition of this {image}?", "Which state does this {image} show?"),
        "zh": ("这张{image}显示的是什么状态？", "请评价这张{image}的质量或状态。", "这张{image}属于哪种状态？"),
    },
    "cell": {
        "en": ("What type of cell is shown in this {image}?", "Classify the cells in this {image}.", "Which cell category does this {image} show?"),
        "zh": ("这张{image}中显示的是哪种细胞？", "请对这张{image}中的细胞进行分类。", "这张{image}显示的是哪类细胞？"),
    },
}
_MOD_EN = {"CT": "CT", "MRI": "MRI", "OCT": "OCT", "X-ray": "X-ray", "US": "ultrasound", "DP": "photograph"}
_MOD_ZH = {
    "Co": "阴道镜", "CT": "CT", "Der": "皮肤镜", "DP": "照片", "End": "内镜", "FP": "眼底照相", "Mic": "显微镜",
    "MRI": "MRI", "OCT": "OCT", "US": "超声", "X-ray": "X线",
}
_AREA_ZH = {
    "Bladder": "膀胱", "Bones": "骨骼", "Brain": "脑部", "Breast": "乳腺", "Cell": "细胞", "Cervix": "宫颈", "Chest": "胸部",
    "Fundus": "眼底", "Intestine": "肠道", "Kidney": "肾脏", "Liver": "肝脏", "Lung": "肺部", "Mouth": "口腔",
    "Retina": "视网膜", "Skin": "皮肤", "Thyroid": "甲状腺",
}


def _image_noun(entry: MatEntry, lang: str) -> str:
    if lang == "zh":
        area, mod = _AREA_ZH.get(entry.area, ""), _MOD_ZH.get(entry.modality, entry.modality)
        return f"{'' if area and area in mod else area}{mod}图像"
    mod = _MOD_EN.get(entry.modality) or MODALITIES.descriptions.get(entry.modality, entry.modality)
    area = entry.area.lower()
    return f"{mod} image" if area in mod.lower() else f"{area} {mod} image"


def mat_questions(
    rows: Iterable[tuple[str, str]],
    entry: MatEntry,
    *,
    labels: Sequence[str] | None = None,
    langs: Sequence[str] = ("en",),
    cap: int | None = None,
    per_label: int | None = None,
    paraphrases: int = 3,
    max_options: int = 4,
    label_names: Mapping[str, Mapping[str, str]] | None = None,
    seed: int = 0,
) -> Built:
    """Med-MAT single-choice records for one subset (rules in the module docstring).

    Args:
        rows: ``(image, label)`` pairs of the subset.
        entry: the subset's registry entry (its modality, area and task family word the questions
            and tag the records; its number goes into ``meta["data-no"]``).
        labels: the subset's label set, distractors come from it (default: the labels in ``rows``).
        langs: ``"en"`` and / or ``"zh"``; one record per image and language.
        cap: most images taken from the subset; per_label: most images per label.
        paraphrases: instructions this subset draws from its family's pool.
        max_options: options per question, answer included (2..4).
        label_names: display names per language (``{"zh": {"Cyst": "囊肿"}}``).
        seed: all random choices.

    Returns:
        The records (a list) with ``counts`` (images taken per label) and ``skipped`` (rows left out and why).
    """
    if not 2 <= max_options <= 4:
        raise ValueError(f"Med-MAT questions have 2..4 options, got max_options={max_options}")
    if cap is not None and cap < 1 or per_label is not None and per_label < 1 or paraphrases < 1:
        raise ValueError("cap, per_label and paraphrases must be >= 1")
    bad = [lang for lang in langs if lang not in ("en", "zh")] or ([] if langs else ["(none)"])
    if bad:
        raise ValueError(f"langs must be 'en' and / or 'zh', got {list(langs)!r}")
    rows = list(rows)
    label_set = list(dict.fromkeys(labels if labels is not None else [lab for _, lab in rows]))
    if len(label_set) < 2:
        raise ValueError(f"{entry.label}: a single-choice question needs at least 2 labels, got {label_set!r}")
    task = get_task("classification")
    rng = random.Random(f"{seed}-{entry.key}")
    out = Built()
    by_label: dict[str, list[str]] = {lab: [] for lab in label_set}
    for image, label in rows:
        if label in by_label:
            by_label[label].append(image)
        else:
            out.skipped.append((image, f"label {label!r} not in the label set"))
    quotas = [q for q in (per_label, cap // len(label_set) if cap is not None else None) if q is not None]
    quota = min(quotas) if quotas else None
    if quota == 0:
        raise ValueError(f"cap {cap} is smaller than the {len(label_set)} labels of {entry.label}")
    chosen = []
    for label, images in by_label.items():
        take = images if quota is None or len(images) <= quota else rng.sample(images, quota)
        chosen += [(image, label) for image in take]
    out.counts = {label: sum(1 for _, lab in chosen if lab == label) for label in label_set}
    rng.shuffle(chosen)

    pool = QUESTIONS.get(entry.family, _GENERIC)
    picked = rng.sample(range(len(pool["en"])), min(paraphrases, len(pool["en"])))
    names = label_names or {}
    for k, (image, label) in enumerate(chosen):
        which = rng.choice(picked)
        options = task.choose_options(label, label_set, rng, max_options)
        for lang in langs:
            shown = [names.get(lang, {}).get(o, o) for o in options]
            question = pool[lang][which].format(image=_image_noun(entry, lang))
            prompt = task.build_prompt(shown, lang, rng, question=question)
            answer = task.format_answer(shown[options.index(label)], shown, lang=lang)
            meta = {"style": "choice", "options": shown, "labels": [shown[options.index(label)]], "label": label,
                    "question": question, "paraphrase": which, "data-no": entry.no, "mat_family": entry.family}
            record = Record(
                id=f"{entry.key}-{k}-{lang}", images=[image], conversation=[Turn("user", prompt), Turn("assistant", answer)],
                box_scale=RECORD_SCALE, lang=lang, task="classification", modality=entry.modality, area=entry.area,
                mat_task=entry.task, source=entry.name or entry.key, meta=meta,
            )
            out.append(record.validate(f"<med-mat question {record.id}>"))
    return out
