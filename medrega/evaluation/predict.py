"""Batched, resumable generation: evaluation samples -> a predictions JSONL file.

Design choices:

* One JSON line per sample (:data:`FIELDS`): the raw output, the text without region markup, the
  groundings parsed in original-image pixels (and the parser's ``problems``), the reference answer and
  its groundings. Lines are appended and flushed after every batch.
* Resume: lines already in the file are kept and their keys are not generated again. A line torn by
  an interruption (no final newline, or not JSON) is dropped; skipped samples are checked again on
  every run (an image may have been restored), so their lines are rewritten, never duplicated.
* Prompts are every turn before the answer (so regional chain-of-thought keeps its first round),
  rendered with the processor's chat template; text boxes of the records are rewritten into the
  model's codec with the images' real sizes. Greedy decoding.
* Batches hold samples of similar prompt length and image count (less padding). Images are loaded
  one batch at a time; a sample whose image cannot be read is written as skipped, not raised.
* Generation is :func:`medrega.inference.generation.generate_answers`, the Assistant's path.
  ``constrained=True`` adds :class:`~medrega.inference.BoxConstraintLogitsProcessor`. It acts only inside
  ``<box>``, so it changes the answers that write boxes (detection, grounded reports) and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

from medrega.data.images import ImageLoadError, load_image
from medrega.data.loading import JsonLineError, parse_json_line
from medrega.data.records import Record, Turn
from medrega.evaluation.benchmarks import Sample, reference_turn
from medrega.grounding import BOX_START, Grounding, RegionCodec, TextBoxCodec
from medrega.inference.generation import generate_answers

__all__ = ["FIELDS", "predict", "prompt_turns", "read_predictions", "reference_groundings"]

logger = logging.getLogger(__name__)

FIELDS = (
    "key", "id", "task", "lang", "dataset", "ability", "split", "triplet", "prompt",
    "raw_output", "text", "groundings", "problems", "reference", "gt_groundings", "skipped", "skip_reason",
)  # fmt: skip


_IDENTITY = ("task", "lang", "dataset", "ability", "split", "triplet")


def read_predictions(path: str | Path) -> dict[str, dict]:
    """Finished (not skipped) prediction lines of a file, by key. A torn line (cut by an interruption,
    even inside a multi-byte character), invalid JSON or a foreign line (no string ``key``) is dropped
    with a warning naming its line, and its sample is predicted again.

    Args:
        path: the predictions JSONL (a missing file gives ``{}``).
    """
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    if not data.endswith(b"\n"):
        if lines[-1].strip():
            logger.warning("%s:%d: cut by an interruption, predicted again", path, len(lines))
        lines = lines[:-1]
    done: dict[str, dict] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = parse_json_line(line)
        except JsonLineError as err:
            logger.warning("%s:%d: not valid JSON (%s), predicted again", path, number, err)
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
            logger.warning("%s:%d: not a prediction line (no string 'key'), dropped", path, number)
            continue
        if not obj.get("skipped"):
            done[obj["key"]] = obj
    return done


def _dump(line: dict) -> str:
    return json.dumps(line, ensure_ascii=False) + "\n"


def _rewrite(path: Path, lines: Sequence[dict]) -> None:
    """Replace the file with ``lines`` (atomically): drops torn lines and skipped samples' lines."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(_dump(line) for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def reference_groundings(record: Record, sizes: Sequence[tuple[int, int]] | None) -> list[Grounding]:
    """The groundings of the answer to predict, in pixels.

    Read from the answer's region markup with the real image sizes; an answer without markup keeps
    the record's own ``groundings`` when it has a single answer (medrega files may carry them).

    Args:
        record: the record.
        sizes: ``(width, height)`` of its images (``None`` when unknown).
    """
    end = reference_turn(record)
    answer = record.conversation[end].content if end < len(record.conversation) else ""
    if BOX_START in answer:
        return list(TextBoxCodec(scale=record.box_scale).parse(answer, sizes)) if sizes else []
    single = sum(t.role == "assistant" for t in record.conversation) == 1
    return list(record.groundings) if single else []


def prompt_turns(record: Record, sizes: Sequence[tuple[int, int]], codec: RegionCodec) -> list[Turn]:
    """Every turn before the answer to predict, its text boxes rewritten into the model's codec.

    Args:
        record: the record (text boxes on ``0..record.box_scale``).
        sizes: ``(width, height)`` of its images.
        codec: the model's region codec (``processor.codec``).
    """
    source = TextBoxCodec(scale=record.box_scale)
    turns = record.conversation[: reference_turn(record)]
    return [Turn(t.role, source.transcode(t.content, sizes or [(1, 1)], codec) if BOX_START in t.content else t.content) for t in turns]


def _base(sample: Sample) -> dict:
    r = sample.record
    line = dict.fromkeys(FIELDS)
    line.update(key=sample.key, task=sample.task, dataset=sample.dataset, groundings=[], problems=[], gt_groundings=[])
    if r is not None:
        end = reference_turn(r)
        question = next((t.content for t in reversed(r.conversation[:end]) if t.role == "user"), "")
        line.update(
            id=r.id,
            lang=r.lang,
            ability=sample.ability,
            split=sample.split,
            triplet=list(sample.triplet) if sample.triplet else None,
            prompt=question,
            reference=r.conversation[end].content if end < len(r.conversation) else "",
        )
    return line


def _skipped(sample: Sample, message: str, reason: str) -> dict:
    """The line of a skipped sample: ``skipped`` says why in full, ``skip_reason`` is what it is counted under."""
    line = _base(sample)
    line.update(skipped=message, skip_reason=reason)
    if sample.record is not None:
        line["gt_groundings"] = [g.to_dict() for g in reference_groundings(sample.record, sample.record.image_sizes)]
    return line


class _Generator:
    """Generation over a batch of evaluation samples whose images are loaded (prompts in the model's codec)."""

    def __init__(self, model, processor, max_new_tokens: int, constrained: bool, generate_kwargs: dict):
        self.model, self.processor = model.eval(), processor
        self.options = {"max_new_tokens": max_new_tokens, "constrained": constrained, "generate_kwargs": generate_kwargs}

    def __call__(self, records: Sequence[Record], images: Sequence[list]) -> list:
        """Decoded answers (:class:`~medrega.processing.Decoded`) of one batch."""
        codec = self.processor.codec
        turns = [prompt_turns(r, [im.size for im in ims], codec) for r, ims in zip(records, images, strict=True)]
        return generate_answers(self.model, self.processor, turns, images, **self.options)


def _load(sample: Sample) -> tuple[list | None, str | None]:
    try:
        return [load_image(p).image for p in sample.record.images], None
    except (ImageLoadError, ValueError) as err:
        return None, f"image not readable: {err}"


def _predict_batch(generator: _Generator, batch: Sequence[Sample]) -> list[dict]:
    """Prediction lines of one batch; samples whose images do not load come back skipped."""
    chunk, images, lines = [], [], []
    for sample in batch:
        loaded, reason = _load(sample)
        if loaded is None:
            lines.append(_skipped(sample, reason, "image not readable"))
        else:
            chunk.append(sample)
            images.append(loaded)
    decoded = generator([s.record for s in chunk], images) if chunk else []
    for sample, ims, d in zip(chunk, images, decoded, strict=True):
        gt = reference_groundings(sample.record, [im.size for im in ims])
        line = _base(sample)
        line.update(raw_output=d.raw_text, text=d.text, groundings=[g.to_dict() for g in d.groundings], problems=list(d.groundings.problems), gt_groundings=[g.to_dict() for g in gt])
        lines.append(line)
    return lines


def predict(
    model,
    processor,
    samples: Sequence[Sample],
    path: str | Path,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    constrained: bool = False,
    progress: bool = True,
    generate_kwargs: dict | None = None,
) -> list[dict]:
    """Generate the answers of ``samples`` into ``path``, resuming from the lines already there.

    Args:
        model: a :class:`~medrega.MedRegAForConditionalGeneration` (on its device).
        processor: its :class:`~medrega.MedRegAProcessor`.
        samples: from :func:`~medrega.evaluation.benchmarks.load_benchmarks`.
        path: the predictions JSONL (created, or resumed).
        batch_size: samples per ``generate`` call.
        max_new_tokens: generation budget per answer.
        constrained: constrain boxes to well-formed loc-token groups (a text-codec model decodes unconstrained).
        progress: show a progress bar over samples.
        generate_kwargs: more ``model.generate`` options (e.g. ``num_beams``).

    Returns:
        One line per sample, in the order of ``samples`` (skipped ones carry ``"skipped"``).
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = read_predictions(path)
    generator = _Generator(model, processor, max_new_tokens, constrained, dict(generate_kwargs or {}))
    _rewrite(path, list(done.values()))
    pending = [s for s in samples if s.key not in done]
    if done:
        logger.info("%s: %d prediction(s) kept, %d to go", path, len(samples) - len(pending), len(pending))
    results = {}
    for sample in samples:  # kept lines take the current names (a config may rename a dataset)
        if sample.key in done:
            base = _base(sample)
            results[sample.key] = {**done[sample.key], **{k: base[k] for k in _IDENTITY}}
    ready = [s for s in pending if s.skip is None]
    ready.sort(key=lambda s: (len(s.record.images), sum(len(t.content) for t in s.record.conversation[: reference_turn(s.record)])))
    with open(path, "a", encoding="utf-8") as out, tqdm(total=len(samples), initial=len(results), desc="eval", disable=not progress, unit="sample") as bar:
        generated = (_predict_batch(generator, ready[i : i + batch_size]) for i in range(0, len(ready), batch_size))
        for lines in chain([[_skipped(s, s.skip, s.skip_reason) for s in pending if s.skip is not None]], generated):  # lazily, batch by batch
            results.update((line["key"], line) for line in lines)
            out.write("".join(_dump(line) for line in lines))
            out.flush()
            bar.update(len(lines))
    return [results[s.key] for s in samples]
