"""``Assistant``: one object that takes scans and questions and gives back answers with boxes on the images.

Design choices:

* Prompts and parsers come from the task library (:mod:`medrega.tasks`) with a fixed template seed, so
  the same call always sends the same prompt. The wording is a prompt profile (:mod:`medrega.tasks.profiles`):
  ``prompt_profile=`` (``"default"`` or ``"medrega"``, MedRegA's own prompts), else the model's
  ``config.prompt_profile`` (a converted MedRegA checkpoint sets ``"medrega"``), else ``"default"``. ``ask`` sends the question verbatim in the task's layout.
  Boxes inside prompts are written directly in the model's region codec.
* ``Result.groundings`` are every grounding the output holds (the codec's parse); ``Result.answer`` is the
  task's structured reading (a report's sections, the chosen option, ...).
* Images are loaded once (:func:`medrega.data.images.load_image`: path, PIL, numpy or DICOM); the RGB
  originals travel with the result, and every box is in their pixels.
* Generation goes through :func:`~medrega.inference.generation.generate_answers` (the path ``medrega eval``
  uses too). Greedy decoding by default; box constraints (:class:`BoxConstraintLogitsProcessor`) are on by default
  for loc-token models (a text-codec model decodes unconstrained).
  They only act inside ``<box>``, so prose is generated exactly as without them.
* ``*_many`` methods batch prompts (left padding), loading images one batch at a time, with a progress bar.
* ``stream=True`` returns a :class:`~medrega.inference.streaming.TextStream` of text chunks whose
  ``.result`` is the same :class:`Result` as the non-streaming call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from medrega import boxes as B
from medrega.answers import normalize_answer
from medrega.grounding import Grounding
from medrega.inference.generation import generate_answers
from medrega.inference.results import Result
from medrega.inference.streaming import TextStream
from medrega.processing import Decoded
from medrega.tasks import get_task
from medrega.tasks.base import check_lang
from medrega.tasks.classification import LETTERS
from medrega.tasks.profiles import PromptProfile, get_profile

__all__ = ["Assistant"]

_MARKUP = re.compile(r"<image>|</?ref>|</?box>|<img_\d+>|<loc_\d+>|<\|im_(?:start|end)\|>")


def _plain(text: str, what: str) -> str:
    """``text`` from a user, refused when it holds model markup (it would be read as placeholders or boxes)."""
    found = _MARKUP.search(text)
    if found:
        raise ValueError(f"{what} contains {found.group()!r}, which is model markup (image placeholders, regions, chat turns); remove it from the text")
    return text

SEED = 0  # template choice of every prompt


def _absent(asked: Sequence[str], parsed) -> list[str]:
    """The phrases of ``asked`` a parsed detection answer says are not found and gives no box; with one
    phrase asked, a not-found statement names it however the model wrote it."""
    boxed = {normalize_answer(g.phrase) for g in parsed if g.boxes}
    said = {normalize_answer(p) for p in parsed.not_found}
    if len(asked) == 1:
        return list(asked) if said and not boxed else []
    return [p for p in asked if normalize_answer(p) in said and normalize_answer(p) not in boxed]


@dataclass
class _Job:
    """One generation: the conversation so far (ending with a user turn), its images, and how to read the answer."""

    turns: list[dict]
    images: list[Image.Image]
    finish: Callable[[Decoded], Result]


class Assistant:
    """Region-aware answers about medical images, in English or Chinese.

    Args:
        model: a :class:`~medrega.MedRegAForConditionalGeneration` (put in eval mode).
        processor: its :class:`~medrega.processing.MedRegAProcessor`.
        device: move the model there (default: leave it where it is).
        max_new_tokens: generation budget per answer.
        batch_size: default batch size of the ``*_many`` methods.
        window: DICOM / high bit-depth grey-level window for every image (see ``load_image``).
        prompt_profile: the prompts' wording, a name (``"default"``, ``"medrega"``) or a
            :class:`~medrega.tasks.profiles.PromptProfile`; ``None``: ``model.config.prompt_profile`` when set, else
            ``"default"``. Regional chain-of-thought keeps the default wording.
        **generate_kwargs: passed to ``model.generate`` (e.g. ``do_sample=True, temperature=0.7``).
    """

    def __init__(
        self, model, processor, *, device=None, max_new_tokens: int = 256, batch_size: int = 8, window=None, prompt_profile: str | PromptProfile | None = None, **generate_kwargs
    ):
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.window = window
        self.prompt_profile = get_profile(prompt_profile or getattr(getattr(model, "config", None), "prompt_profile", None))
        self.generate_kwargs = generate_kwargs

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device=None, dtype=None, **kwargs) -> Assistant:
        """Load a model directory written by ``save_pretrained`` (model + processor).

        Args:
            path: the directory.
            device: where to run (e.g. ``"cuda"``); default CPU.
            dtype: weights dtype (e.g. ``torch.bfloat16``); default as saved.
            **kwargs: the constructor's options (``max_new_tokens``, ``batch_size``, ``window``, ``prompt_profile``,
                generation kwargs).
        """
        from medrega.models import MedRegAForConditionalGeneration
        from medrega.processing import MedRegAProcessor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model directory (no config.json); save one with model.save_pretrained and processor.save_pretrained")
        model = MedRegAForConditionalGeneration.from_pretrained(path, **({"dtype": dtype} if dtype is not None else {}))
        return cls(model, MedRegAProcessor.from_pretrained(path), device=device, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def codec(self):
        """The model's region codec."""
        return self.processor.codec

    # -- tasks -------------------------------------------------------------------------------------
    def detect(self, image, phrases: str | Sequence[str], lang: str = "en", *, constrained: bool = True) -> Result:
        """Find the regions of one or several phrases.

        Args:
            image: a path (PNG, JPEG, DICOM...), PIL image, numpy array or pydicom Dataset.
            phrases: one object name or several (``"left lung"``, ``["肝脏", "胆囊"]``).
            lang: prompt language, ``"en"`` or ``"zh"``.
            constrained: only well-formed boxes can be generated (loc-token models; a text-codec
                model, e.g. a converted MedRegA, always decodes unconstrained).

        Returns:
            A :class:`Result` whose ``groundings`` hold the boxes (original-image pixels). A structure the
            model says is absent (``<ref>nodule</ref>: not found.``, ``<ref>结节</ref>：未发现。``; see
            :mod:`medrega.tasks.detection`) gets no grounding and is listed in ``Result.not_found``;
            ``Result.found`` is ``False`` when no region was found at all.
        """
        return self._run([lambda: self._detect_job(image, phrases, lang)], constrained=constrained)[0]

    def detect_many(
        self,
        images: Sequence,
        phrases: str | Sequence[str] | Sequence[str | Sequence[str]],
        lang: str = "en",
        *,
        per_image: bool = False,
        batch_size: int | None = None,
        progress: bool = True,
        constrained: bool = True,
    ) -> list[Result]:
        """:meth:`detect` over many images in batches, with a progress bar.

        Args:
            images: the images (any source :meth:`detect` takes).
            phrases: the phrase(s) asked of every image; with ``per_image=True``, one entry per image.
            lang: ``"en"`` or ``"zh"``.
            per_image: read ``phrases`` as one query per image.
            batch_size: prompts per ``generate`` call (default ``self.batch_size``).
            progress: show a tqdm progress bar.
            constrained: as in :meth:`detect`.
        """
        images = list(images)
        queries = list(phrases) if per_image else [phrases] * len(images)
        if len(queries) != len(images):
            raise ValueError(f"per_image=True needs one query per image: {len(queries)} queries for {len(images)} images")
        builders = [lambda im=im, q=q: self._detect_job(im, q, lang) for im, q in zip(images, queries)]
        return self._run(builders, batch_size=batch_size, progress=progress, desc="detect", constrained=constrained)

    def identify(self, image, box: Sequence[float], lang: str = "en") -> Result:
        """Name the structure or lesion inside ``box``.

        Args:
            image: any image source (see :meth:`detect`).
            box: ``(x1, y1, x2, y2)`` in pixels of the original image.
            lang: ``"en"`` or ``"zh"``.

        Returns:
            A :class:`Result`: ``text`` the name, ``groundings`` the queried box labelled with it.
        """
        task = get_task("identification")

        def build() -> _Job:
            im, modality = self._load(image)
            query = B.validate_box(box, im.size)
            prompt = self.prompt_profile.identification(query, im.size, lang, modality=modality, codec=self.codec)

            def finish(d: Decoded) -> Result:
                name = task.parse_answer(d.raw_text, codec=self.codec)
                return self._result("identification", d, [im], lang, {"box": list(query)}, [Grounding(name or "", [query])], name)

            return _Job(self._user(prompt), [im], finish)

        return self._run([build])[0]

    def report(self, image, grounded: bool = False, lang: str = "en", *, style: str = "cxr", stream: bool = False, constrained: bool = True):
        """Write a report, optionally with each sentence grounded to regions.

        Args:
            image: any image source (see :meth:`detect`).
            grounded: ask for a grounded report (sentences tied to boxes).
            lang: ``"en"`` or ``"zh"``.
            style: grounded report layout, ``"cxr"`` (one line per sentence) or ``"ct"`` (findings + impression).
            stream: return a :class:`TextStream` of text chunks instead of the finished :class:`Result`.
            constrained: as in :meth:`detect` (matters for grounded reports).
        """
        def job() -> _Job:
            return self._report_job(image, grounded, lang, style)

        return self._stream(job, constrained) if stream else self._run([job], constrained=constrained)[0]

    def report_many(
        self,
        images: Sequence,
        grounded: bool = False,
        lang: str = "en",
        *,
        style: str = "cxr",
        batch_size: int | None = None,
        progress: bool = True,
        constrained: bool = True,
    ) -> list[Result]:
        """:meth:`report` over many images in batches, with a progress bar (options as :meth:`report` / :meth:`detect_many`)."""
        builders = [lambda im=im: self._report_job(im, grounded, lang, style) for im in images]
        return self._run(builders, batch_size=batch_size, progress=progress, desc="report", constrained=constrained)

    def ask(self, images, question: str, lang: str = "en", *, stream: bool = False, constrained: bool = True):
        """Answer a free question about one image or several (compared, in order).

        Args:
            images: one image source, or a list of them (two or more: a multi-image question).
            question: asked verbatim.
            lang: ``"en"`` or ``"zh"`` (the layout of image tags; answer in the question's language).
            stream: return a :class:`TextStream` instead of the finished :class:`Result`.
            constrained: as in :meth:`detect`.
        """
        sources = list(images) if isinstance(images, (list, tuple)) else [images]
        if not sources:
            raise ValueError("ask needs at least one image")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"ask needs a question, got {question!r}")
        _plain(question, "the question")
        check_lang(lang)

        def build() -> _Job:
            loaded = [self._load(s)[0] for s in sources]
            query = {"question": question.strip()}
            if len(loaded) == 1:
                task = get_task("vqa")

                def finish(d: Decoded) -> Result:
                    answer = task.parse_answer(d.raw_text, codec=self.codec)
                    return self._result("vqa", d, loaded, lang, query, list(d.groundings), answer)
            else:
                task = get_task("multi_image")

                def finish(d: Decoded) -> Result:
                    parsed = task.parse_answer(d.raw_text, [im.size for im in loaded], codec=self.codec)
                    return self._result("multi_image", d, loaded, lang, query, list(parsed.groundings), parsed.text)

            return _Job(self._user(self.prompt_profile.ask(question.strip(), lang, n_images=len(loaded))), loaded, finish)

        return self._stream(build, constrained) if stream else self._run([build], constrained=constrained)[0]

    def classify(self, image, options: Sequence[str], lang: str = "en", *, question: str | None = None) -> Result:
        """Choose one of ``options`` (a lettered single-choice question, as in Med-MAT).

        Args:
            image: any image source (see :meth:`detect`).
            options: 2 to 16 labels (lettered A to P).
            lang: ``"en"`` or ``"zh"``.
            question: the question (default: a generic diagnosis question).

        Returns:
            A :class:`Result` whose ``answer`` is the chosen option (``None`` when the output names none).
        """
        task = get_task("classification")
        options = [_plain(str(o), "an option") for o in options]
        if question is not None:
            _plain(question, "the question")
        if len(options) < 2:
            raise ValueError(f"classify needs at least 2 options, got {options!r}")

        def build() -> _Job:
            im, modality = self._load(image)
            profile = self.prompt_profile
            prompt = profile.classification(options, lang, question=question, modality=modality)

            def finish(d: Decoded) -> Result:
                picked = task.parse_answer(d.raw_text, options=options, style=profile.classification_style, codec=self.codec)
                chosen = options[LETTERS.index(picked)] if profile.classification_style in ("choice", "choice_text") and picked else picked
                return self._result("classification", d, [im], lang, {"options": options, "question": question}, list(d.groundings), chosen)

            return _Job(self._user(prompt), [im], finish)

        return self._run([build])[0]

    def regional_cot(self, image, question: str, lang: str = "en", *, constrained: bool = True) -> Result:
        """Regional chain-of-thought: locate the regions relevant to ``question``, then answer with them given.

        Args:
            image: any image source (see :meth:`detect`).
            question: the question.
            lang: ``"en"`` or ``"zh"``.
            constrained: as in :meth:`detect` (for the first round's boxes).

        Returns:
            A :class:`Result`: ``groundings`` the regions of the first round, ``text`` the final answer,
            ``raw_text`` both rounds' outputs. When the first round finds no region the question is asked
            again plainly.
        """
        task = get_task("regional_cot")
        _plain(question, "the question")
        im, _ = self._load(image)
        first_turns = self._user(task.build_prompt(question, lang, SEED))
        first = self._run([lambda: _Job(first_turns, [im], lambda d: d)], constrained=constrained)[0]
        regions = list(task.parse_regions(first.raw_text, im.size, codec=self.codec))
        followup = task.build_followup(question, regions, im.size, lang, SEED, codec=self.codec) if regions else question.strip()
        turns = [*first_turns, {"role": "assistant", "content": first.raw_text}, {"role": "user", "content": followup}]

        def finish(d: Decoded) -> Result:
            answer = task.parse_answer(d.raw_text, codec=self.codec)
            out = self._result("regional_cot", d, [im], lang, {"question": question}, regions, answer)
            out.raw_text = f"{first.raw_text}\n\n{d.raw_text}"
            out.problems = [*first.groundings.problems, *out.problems]
            return out

        return self._run([lambda: _Job(turns, [im], finish)], constrained=constrained)[0]

    # -- jobs --------------------------------------------------------------------------------------
    def _detect_job(self, image, phrases, lang: str) -> _Job:
        task = get_task("detection")
        for phrase in [phrases] if isinstance(phrases, str) else phrases:
            _plain(phrase, "the phrase")
        im, modality = self._load(image)
        prompt = self.prompt_profile.detection(phrases, lang, modality=modality, codec=self.codec)
        query = {"phrases": [phrases] if isinstance(phrases, str) else list(phrases)}

        def finish(d: Decoded) -> Result:
            parsed = task.parse_answer(d.raw_text, im.size, codec=self.codec)
            result = self._result("detection", d, [im], lang, query, list(parsed))
            result.not_found = _absent(query["phrases"], parsed)
            return result

        return _Job(self._user(prompt), [im], finish)

    def _report_job(self, image, grounded: bool, lang: str, style: str) -> _Job:
        im, modality = self._load(image)
        if grounded:
            task = get_task("grounded_report")
            prompt = self.prompt_profile.grounded_report(lang, style=style, modality=modality, codec=self.codec)

            def finish(d: Decoded) -> Result:
                parsed = task.parse_answer(d.raw_text, im.size, codec=self.codec)
                return self._result("grounded_report", d, [im], lang, {"grounded": True}, list(d.groundings), parsed)
        else:
            task = get_task("report")
            prompt = self.prompt_profile.report(lang, modality=modality)

            def finish(d: Decoded) -> Result:
                return self._result("report", d, [im], lang, {"grounded": False}, list(d.groundings), task.parse_answer(d.raw_text, codec=self.codec))

        return _Job(self._user(prompt), [im], finish)

    # -- machinery ---------------------------------------------------------------------------------
    def _load(self, source) -> tuple[Image.Image, str | None]:
        from medrega.data.images import load_image

        loaded = load_image(source, window=self.window)
        return loaded.image, loaded.modality

    @staticmethod
    def _user(content: str) -> list[dict]:
        return [{"role": "user", "content": content}]

    @staticmethod
    def _result(task, d: Decoded, images, lang, query, groundings, answer=None) -> Result:
        return Result(task, d.text, list(groundings), images, d.raw_text, answer, list(d.groundings.problems), lang, query)

    def _generate(self, jobs: list[_Job], constrained: bool, streamer=None) -> list[Decoded]:
        """One ``generate`` call over a batch of jobs; the decoded new text of each."""
        return generate_answers(
            self.model, self.processor, [job.turns for job in jobs], [job.images for job in jobs],
            max_new_tokens=self.max_new_tokens, constrained=constrained, streamer=streamer, generate_kwargs=self.generate_kwargs,
        )

    def _run(self, builders: Sequence[Callable[[], _Job]], *, batch_size: int | None = None, progress: bool = False, desc: str = "", constrained: bool = True) -> list:
        """Build, generate and finish jobs in batches (images are loaded one batch at a time)."""
        from tqdm.auto import tqdm

        size = batch_size or self.batch_size
        results: list = []
        with tqdm(total=len(builders), desc=desc, disable=not progress) as bar:
            for start in range(0, len(builders), size):
                jobs = [build() for build in builders[start : start + size]]
                decoded = self._generate(jobs, constrained)
                results.extend(job.finish(d) for job, d in zip(jobs, decoded, strict=True))
                bar.update(len(jobs))
        return results

    def _stream(self, build: Callable[[], _Job], constrained: bool) -> TextStream:
        job = build()
        return TextStream(
            self.processor.tokenizer,
            generate=lambda streamer: self._generate([job], constrained, streamer)[0],
            finish=job.finish,
        )
