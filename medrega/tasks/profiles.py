"""Prompt profiles: the wording the :class:`~medrega.Assistant` sends for each task.

A profile turns a task's inputs (phrases, a box, options, a question...) into the user turn, ``<image>``
placeholder included. Two profiles ship:

* ``"default"``: medrega's task library (:mod:`medrega.tasks`) with the fixed template seed the Assistant
  always used (no preambles), what medrega's own models are trained on.
* ``"medrega"``: MedRegA's own prompts, what its released weights were trained on: a system-style task
  description (preamble) before the image, then the question. The wording is taken verbatim from the
  release's demo records, ``demo_data/data_file.jsonl`` of github.com/xmed-lab/MedRegA (a copy is the
  ``medrega-demo`` fixture). The release shows, per task and language:

  ==============  ===============================================================  ==============
  task            English                                                          Chinese
  ==============  ===============================================================  ==============
  vqa             records 0, 1                                                     records 2, 3
  report          record 4 (chest X-ray)                                           record 5
  classification  record 6 (diagnosis among listed labels)                         --
  identification  record 7                                                         --
  detection       record 8                                                         --
  grounded        record 9 (organs of a chest X-ray, phrases given)                record 10 (lesions)
  ==============  ===============================================================  ==============

  The combinations the release does not show (Chinese identification, detection and classification;
  grounded reports without phrases) are composed from the same pieces (the Chinese region description of
  record 10, the task sentences of the English records) and say so in :data:`MEDREGA_COMPOSED`. Multi-image
  questions and regional chain-of-thought have no MedRegA wording in the release: the ``"medrega"``
  profile uses the default one for them.

The region description names the coordinate range of the model's codec: ``0 to 999`` for MedRegA's text
boxes (``TextBoxCodec(999)``), ``0 to scale`` for another text codec, ``0 to bins - 1`` for loc tokens.

Select a profile with ``Assistant(..., prompt_profile="medrega")`` (or ``from_pretrained(path,
prompt_profile=...)``); without one the Assistant takes ``config.prompt_profile`` of the model (a converted
MedRegA checkpoint sets ``"medrega"``), else ``"default"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from medrega import boxes as B
from medrega.grounding import IMAGE_TOKEN, MEDREGA_BOX_SCALE, LocTokenCodec, RegionCodec, TextBoxCodec
from medrega.tasks import get_task
from medrega.tasks.base import check_lang, image_noun, refs

__all__ = ["PromptProfile", "MedRegAProfile", "PROFILES", "get_profile", "MEDREGA_COMPOSED", "SEED"]

SEED = 0  # template choice of every prompt of the default profile (the Assistant's seed)


class PromptProfile:
    """The ``"default"`` profile: medrega's task templates with seed :data:`SEED`, no preambles.

    Subclass it and override the methods of the tasks whose wording differs. ``classification_style`` is the
    answer style its classification prompts ask for (:data:`medrega.tasks.classification.STYLES`), which
    the Assistant reads the answer with.
    """

    name = "default"
    classification_style = "choice"

    def detection(self, phrases: str | Sequence[str], lang: str = "en", *, modality: str | None = None, codec: RegionCodec | None = None) -> str:
        """Ask for the regions of ``phrases``."""
        return get_task("detection").build_prompt(phrases, lang, SEED, modality=modality)

    def identification(
        self, region: B.Box | Sequence[B.Box], image_size: tuple[int, int], lang: str = "en", *, modality: str | None = None, codec: RegionCodec | None = None
    ) -> str:
        """Ask what lies inside ``region`` (pixels of an image of ``image_size``), the box written in ``codec``."""
        return get_task("identification").build_prompt(region, image_size, lang, SEED, modality=modality, codec=codec)

    def report(self, lang: str = "en", *, modality: str | None = None) -> str:
        """Ask for a report (findings and impression)."""
        return get_task("report").build_prompt(lang, SEED, modality=modality)

    def grounded_report(
        self, lang: str = "en", *, phrases: Sequence[str] | None = None, style: str = "cxr", modality: str | None = None, codec: RegionCodec | None = None
    ) -> str:
        """Ask for a grounded report (of ``phrases`` when given)."""
        return get_task("grounded_report").build_prompt(lang, SEED, phrases=phrases, style=style, modality=modality)

    def vqa(self, question: str, lang: str = "en", *, closed: bool = False) -> str:
        """A VQA question in the task's short-answer layout (dataset style)."""
        return get_task("vqa").build_prompt(question, lang, SEED, closed=closed)

    def ask(self, question: str, lang: str = "en", n_images: int = 1) -> str:
        """A free question sent verbatim (what :meth:`~medrega.Assistant.ask` sends)."""
        task = get_task("vqa" if n_images == 1 else "multi_image")
        return task.user_turn(question, lang, n_images=n_images)

    def classification(self, options: Sequence[str], lang: str = "en", *, question: str | None = None, modality: str | None = None) -> str:
        """A single-choice question among ``options`` (answered in :attr:`classification_style`)."""
        return get_task("classification").build_prompt(options, lang, SEED, style=self.classification_style, question=question, modality=modality)

    def __repr__(self) -> str:
        return f"<prompt profile {self.name!r}>"


# -- MedRegA's wording (demo_data/data_file.jsonl of the release; record numbers are its "id") ---------------
_EN_ASSISTANT = "You are a helpful medical assistant."
_ZH_ASSISTANT = "你是一个医疗助手，"
_EN_REGION = (  # records 7, 8, 9
    "The region is represented in the form of bounding box, [x1, y1, x2, y2], with integers ranging from 0 to {top}. "
    "These values correspond to the top left x, top left y, bottom right x, and bottom right y."
)
_EN_FORMAT = 'For each object, please utilize this format to represent the region with its bounding box: "<ref>object</ref><box>[[x1, y1, x2, y2]]</box>".'  # 8, 9
_ZH_REGION = "区域用边界框的形式表示，[x1, y1, x2, y2]，整数范围从0到{top}。这些值分别对应左上角的x，左上角的y，右下角的x和右下角的y。"  # record 10 ("病种区域...")
_MEDREGA = {
    # vqa: records 0-3
    ("vqa", "en"): _EN_ASSISTANT + " You are required to answer the question based on the medical image.",
    ("vqa", "zh"): _ZH_ASSISTANT + "你需要根据医学图像回答问题。",
    ("vqa_suffix", "en"): " Answer the question using a single word or phrase.",
    ("vqa_suffix", "zh"): "请用词或短语回答问题。",
    # report: records 4 (the English reports are chest X-rays) and 5 ("影响结论" is the release's own typo, kept)
    ("report", "en"): _EN_ASSISTANT + " Your task is report generation. You are given {a_image}, and you are required to generate a medical report "
    "consisting of findings and impressions based on the image.",
    ("report", "zh"): _ZH_ASSISTANT + "你的任务是生成诊断报告。请为这张{image}撰写诊断报告，需包括影像诊断和影像结论两部分。影像诊断描述可见信息，影响结论列举最终的诊断结果。",
    # classification: record 6
    ("classification", "en"): _EN_ASSISTANT + " Your task is disease diagnosis. You are given {a_image}. The possible diagnoses are:\n{labels}\n",
    ("classification_question", "en"): "Please diagnose the disease in the {image}.",
    # identification: record 7
    ("identification", "en"): _EN_ASSISTANT + " Your task is object recognition. You are required to recognize the object in the given region. " + _EN_REGION,
    ("identification_question", "en"): "What is <ref>this</ref>{box} in this {scan}?",
    # detection: record 8
    ("detection", "en"): _EN_ASSISTANT + " Your task is object detection. You are required to find all the regions of the given objects. " + _EN_REGION + " " + _EN_FORMAT,
    ("detection_question", "en"): "Please locate {objects} in this {scan}.",
    # grounded report: records 9 (English, organs of a chest X-ray) and 10 (Chinese, lesions)
    ("grounded_report", "en"): _EN_ASSISTANT + " Your task is report phrase grounding. You are given {a_image}, and you are required to locate the region "
    "and generate a report for the given organ. " + _EN_REGION + " " + _EN_FORMAT,
    ("grounded_report_question", "en"): "Please locate the region and describe the condition of {objects}",
    ("grounded_report", "zh"): _ZH_ASSISTANT + "你的任务是定位并描述病种。病种" + _ZH_REGION + '对于每个病种，请使用这种格式用边界框表示区域："<ref>病种</ref><box>[[x1, y1, x2, y2]]</box>：诊断"。',
    ("grounded_report_question", "zh"): "请定位并描述这张{image}中的{objects}",
}
# composed from the pieces above: the release shows no such record (see the module docstring)
_COMPOSED = {
    ("identification", "zh"): _ZH_ASSISTANT + "你的任务是目标识别。你需要识别给定区域中的目标。" + _ZH_REGION,
    ("identification_question", "zh"): "这张{image}中<ref>这个区域</ref>{box}是什么？",
    ("detection", "zh"): _ZH_ASSISTANT + "你的任务是目标检测。你需要找出给定目标的所有区域。" + _ZH_REGION
    + '对于每个目标，请使用这种格式用边界框表示区域："<ref>目标</ref><box>[[x1, y1, x2, y2]]</box>"。',
    ("detection_question", "zh"): "请在这张{image}中定位{objects}。",
    ("classification", "zh"): _ZH_ASSISTANT + "你的任务是疾病诊断。给定一张{image}。可能的诊断有：\n{labels}\n",
    ("classification_question", "zh"): "请诊断这张{image}中的疾病。",
    ("grounded_report_all", "en"): "Please locate the regions and describe the condition of the organs in this {scan}.",
    ("grounded_report_all", "zh"): "请定位并描述这张{image}中的病种",
}
MEDREGA_COMPOSED = tuple(sorted(_COMPOSED))
"""``(piece, lang)`` of the ``"medrega"`` wording composed here rather than shown by the release."""

_AN = set("AEFHILMNORSX")  # letters read with a leading vowel sound: "an MRI", "an OCT", "an X-ray"


def _a(noun: str) -> str:
    first = noun.split(" ", 1)[0]
    vowel = first[:1].lower() in "aeiou" if not first.isupper() else first[:1] in _AN
    return ("an " if vowel else "a ") + noun


def _en_image(modality: str | None, chest_default: bool) -> str:
    """``"OCT image"``; without a modality ``"chest x-ray image"`` (report tasks, MedRegA's English reports) or
    ``"medical image"``."""
    if modality:
        return f"{modality} image"
    return "chest x-ray image" if chest_default else "medical image"


class MedRegAProfile(PromptProfile):
    """The ``"medrega"`` profile: MedRegA's preambles and questions (see the module docstring)."""

    name = "medrega"
    classification_style = "list"  # record 6: the labels listed, answered by the label

    @staticmethod
    def _piece(key: str, lang: str) -> str:
        lang = check_lang(lang)
        return _MEDREGA.get((key, lang)) or _COMPOSED[(key, lang)]

    @staticmethod
    def _turn(preamble: str, question: str, lang: str) -> str:
        """``preamble + " " + "<image>\\n" + question`` in English; no space in Chinese, nor after a preamble
        that ends a line (records 2-6, 10)."""
        sep = "" if lang == "zh" or preamble.endswith("\n") else " "
        return f"{preamble}{sep}{IMAGE_TOKEN}\n{question}"

    @staticmethod
    def _top(codec: RegionCodec | None) -> int:
        """The largest coordinate the codec writes (MedRegA's 999 without one)."""
        if isinstance(codec, TextBoxCodec):
            return codec.scale
        if isinstance(codec, LocTokenCodec):
            return codec.bins - 1
        return MEDREGA_BOX_SCALE

    def detection(self, phrases, lang="en", *, modality=None, codec=None) -> str:
        preamble = self._piece("detection", lang).format(top=self._top(codec))
        question = self._piece("detection_question", lang).format(objects=refs(phrases, lang), scan=image_noun(modality, "en"), image=image_noun(modality, lang))
        return self._turn(preamble, question, lang)

    def identification(self, region, image_size, lang="en", *, modality=None, codec=None) -> str:
        codec = codec or TextBoxCodec(MEDREGA_BOX_SCALE)
        boxes = [tuple(region)] if len(region) == 4 and all(isinstance(v, (int, float)) for v in region) else [tuple(b) for b in region]
        box = codec.format_box(boxes, image_size)
        preamble = self._piece("identification", lang).format(top=self._top(codec))
        question = self._piece("identification_question", lang).format(box=box, scan=image_noun(modality, "en"), image=image_noun(modality, lang))
        return self._turn(preamble, question, lang)

    def report(self, lang="en", *, modality=None) -> str:
        preamble = self._piece("report", lang).format(a_image=_a(_en_image(modality, True)), image=image_noun(modality, lang))
        return self._turn(preamble, "", lang)

    def grounded_report(self, lang="en", *, phrases=None, style="cxr", modality=None, codec=None) -> str:
        preamble = self._piece("grounded_report", lang).format(top=self._top(codec), a_image=_a(_en_image(modality, True)))
        fields = {"scan": image_noun(modality, "en"), "image": image_noun(modality, lang)}
        if phrases:
            question = self._piece("grounded_report_question", lang).format(objects=refs(phrases, lang), **fields)
        else:
            question = self._piece("grounded_report_all", lang).format(**fields)
        return self._turn(preamble, question, lang)

    def vqa(self, question, lang="en", *, closed=False) -> str:
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"a VQA prompt needs a question, got {question!r}")
        suffix = get_task("vqa").templates("closed", lang)[0].format(question="") if closed else self._piece("vqa_suffix", lang)
        return self._turn(self._piece("vqa", lang), question.strip() + suffix, lang)

    def ask(self, question, lang="en", n_images=1) -> str:
        if n_images != 1:  # no MedRegA wording for several images
            return super().ask(question, lang, n_images)
        return self._turn(self._piece("vqa", lang), question, lang)

    def classification(self, options, lang="en", *, question=None, modality=None) -> str:
        options = [str(o) for o in options]
        if not options:
            raise ValueError("a classification prompt needs options")
        image = _en_image(modality, False) if lang == "en" else image_noun(modality, lang)
        preamble = self._piece("classification", lang).format(a_image=_a(image), image=image, labels="\n".join(options))
        asked = question.strip() if question else self._piece("classification_question", lang).format(image=image)
        return self._turn(preamble, asked, lang)


PROFILES: dict[str, PromptProfile] = {p.name: p for p in (PromptProfile(), MedRegAProfile())}


def get_profile(profile: str | PromptProfile | None) -> PromptProfile:
    """The profile named ``profile`` (``None``: ``"default"``); a :class:`PromptProfile` is returned as is.

    Raises:
        KeyError: an unknown name; the message lists the known ones.
    """
    if isinstance(profile, PromptProfile):
        return profile
    try:
        return PROFILES[profile or "default"]
    except KeyError:
        raise KeyError(f"unknown prompt profile {profile!r}; known: {', '.join(PROFILES)}") from None
