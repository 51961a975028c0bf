"""Benchmark files -> evaluation samples.

Any file :func:`medrega.data.load_records` reads is a benchmark: medrega JSONL (phantoms), MedRegA's
region-to-text / text-to-region / report JSONL (InternVL schema, boxes on 0..999), Med-MAT question
files (tagged with their Modality / Area / Task triplet from a Med-MAT table) and the Med-MIM
benchmark files (ability and held-in / held-out split from the file name).

Design choices:

* Every line of a file becomes one :class:`Sample`, in file order. A record the loader rejects, or
  whose image file is missing, is still a sample: it carries ``skip`` (the reason) so the runner
  writes it to the predictions as skipped and counts it, instead of dropping it.
* A sample's ``key`` is the record's ``file:line`` with the file's absolute path, so a resumed run
  finds its predictions whatever the working directory (Med-MIM ids are not unique).
* Records without a task (imported MedRegA / LLaVA files) get one from :func:`infer_task`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from medrega.data import Record, load_records, read_mat_table, tag_records
from medrega.grounding import BOX_START, TextBoxCodec
from medrega.metrics import parse_choice, parse_options
from medrega.tasks.base import prose

__all__ = ["BenchmarkFile", "Sample", "infer_task", "load_benchmark", "load_benchmarks", "reference_turn"]

logger = logging.getLogger(__name__)

_CHOICE_LIST = re.compile(r"possible diagnoses|candidate (?:findings|labels)|choose one of|可能的诊断|候选|从以下选项", re.I)
_REPORT = re.compile(r"\breport\b|报告", re.I)


@dataclass(frozen=True)
class BenchmarkFile:
    """One benchmark file of an evaluation.

    Args:
        path: the file (JSONL or a JSON array) in any format ``load_records`` reads.
        name: the dataset name in the results table (default: the file name without extension).
        format: record format, ``"auto"`` by default.
        image_root: directory image paths are relative to (default: the file's directory).
        mat_table: a Med-MAT table (``subsets.tsv`` / ``datasets.tsv``) to tag records by ``data-no``.
        box_scale: coordinate range of text boxes (default: the loader's, 999 for MedRegA files).
        confine_images: skip (and report) samples whose image paths resolve outside the image root
            (``../`` escapes, absolute paths); on by default, set ``false`` for files with absolute paths.
    """

    path: str
    name: str | None = None
    format: str = "auto"
    image_root: str | None = None
    mat_table: str | None = None
    box_scale: int | None = None
    confine_images: bool = True

    @property
    def dataset(self) -> str:
        """The dataset name shown in the table."""
        return self.name or Path(self.path).stem


@dataclass
class Sample:
    """One evaluation sample.

    Args:
        key: ``"/abs/path/file.jsonl:line"``, unique across an evaluation.
        dataset: the benchmark's name.
        record: the record (``None`` when the loader rejected the line).
        task: the task name (the record's, or inferred).
        skip: why the sample cannot be evaluated (``None`` when it can).
        line: its line (or array index) in the file, 1-based.
        skip_reason: what a skip is counted under in the metrics table (the rejected field, ``"image not found"``).
    """

    key: str
    dataset: str
    record: Record | None
    task: str | None = None
    skip: str | None = None
    line: int = 0
    skip_reason: str | None = None

    @property
    def ability(self) -> str | None:
        """The Med-MIM ability (lower case), when the record has one."""
        value = self.record.meta.get("ability") if self.record else None
        return str(value).lower() if value else None

    @property
    def split(self) -> str | None:
        """``"held_in"`` / ``"held_out"`` for Med-MIM files."""
        return self.record.meta.get("split") if self.record else None

    @property
    def triplet(self) -> tuple[str | None, str | None, str | None] | None:
        """The Med-MAT ``(modality, area, task)``, or ``None`` when the record has no tag."""
        r = self.record
        if r is None or (r.modality is None and r.area is None and r.mat_task is None):
            return None
        return (r.modality, r.area, r.mat_task)


def reference_turn(record: Record) -> int:
    """Index of the answer to predict: the last assistant turn (``len(conversation)`` when there is none)."""
    for i in range(len(record.conversation) - 1, -1, -1):
        if record.conversation[i].role == "assistant":
            return i
    return len(record.conversation)


def _holds_a_box(text: str, record: Record) -> bool:
    """Whether ``text`` holds a ``<box>`` that decodes (not a prompt describing the format)."""
    if BOX_START not in text:
        return False
    scale = record.box_scale  # coordinates are on 0..scale whatever the image size
    return bool(TextBoxCodec(scale=scale).parse(text, [(scale, scale)] * max(1, len(record.images))))


def infer_task(record: Record) -> str:
    """The task of a record that names none (imported MedRegA / LLaVA files), read from its turns.

    Rules, first match wins (``question`` is the user turn before the answer):

    1. two or more images -> ``multi_image``;
    2. several answers, the first holding region markup -> ``regional_cot``;
    3. region markup in the answer -> ``grounded_report`` when prose remains once the groundings
       are removed, else ``detection``;
    4. a box with coordinates in the question -> ``identification``;
    5. lettered options (``A: ...``), a listed choice ("The possible diagnoses are:", "可能的诊断"),
       or a bare letter as the answer -> ``classification``;
    6. "report" / "报告" in the question -> ``report``;
    7. otherwise ``vqa``.

    Args:
        record: the record (its ``task`` is ignored).
    """
    answers = [t.content for t in record.conversation if t.role == "assistant"]
    end = reference_turn(record)
    question = next((t.content for t in reversed(record.conversation[:end]) if t.role == "user"), "")
    answer = answers[-1] if answers else ""
    if len(record.images) > 1:
        return "multi_image"
    if len(answers) > 1 and BOX_START in answers[0]:
        return "regional_cot"
    if BOX_START in answer:
        return "grounded_report" if prose(answer) else "detection"
    if _holds_a_box(question, record):
        return "identification"
    if parse_options(question) or _CHOICE_LIST.search(question) or (answer and parse_choice(answer.strip()) and len(answer.strip()) <= 3):
        return "classification"
    if _REPORT.search(question):
        return "report"
    return "vqa"


def _line_of(location: str) -> int:
    return int(location.rsplit(":", 1)[1])


def load_benchmark(spec: BenchmarkFile | str, limit: int | None = None) -> list[Sample]:
    """Read one benchmark file into samples, in file order.

    Args:
        spec: the file, or a :class:`BenchmarkFile` with its options.
        limit: keep only the first ``limit`` lines of the file (rejected lines count too).

    Returns:
        One :class:`Sample` per line; rejected records and records with a missing image have ``skip`` set.
    """
    spec = BenchmarkFile(str(spec)) if not isinstance(spec, BenchmarkFile) else spec
    path = Path(spec.path).resolve()
    records = load_records(
        path, spec.format, image_root=spec.image_root, box_scale=spec.box_scale, check_images=False, on_error="skip",
        confine_images=spec.confine_images,
    )
    if spec.mat_table is not None:
        tag_records(records, read_mat_table(spec.mat_table), on_missing="skip")
    samples = [
        Sample(f"{path}:{err.line}", spec.dataset, None, skip=f"{err.field}: {err.reason}", line=err.line or 0, skip_reason=err.field)
        for err in records.skipped
    ]
    for record in records:
        task = record.task or infer_task(record)
        missing = next((p for p in record.images if not Path(p).is_file()), None)
        skip, reason = (f"image not found: {missing}", "image not found") if missing is not None else (None, None)
        samples.append(Sample(record.location, spec.dataset, record, task, skip, _line_of(record.location), reason))
    samples.sort(key=lambda s: s.line)
    if limit is not None:
        samples = samples[:limit]
    skipped = sum(s.skip is not None for s in samples)
    logger.info("%s: %d sample(s), %d to skip", path.name, len(samples), skipped)
    return samples


def load_benchmarks(specs, limit: int | None = None) -> list[Sample]:
    """:func:`load_benchmark` over several files; raises on a key seen twice (the same file listed twice).

    Args:
        specs: files or :class:`BenchmarkFile` s.
        limit: per file, as in :func:`load_benchmark`.
    """
    samples: list[Sample] = []
    seen: set[str] = set()
    for spec in specs:
        for sample in load_benchmark(spec, limit):
            if sample.key in seen:
                raise ValueError(f"sample {sample.key} is listed twice; is the same benchmark file given twice?")
            seen.add(sample.key)
            samples.append(sample)
    return samples
