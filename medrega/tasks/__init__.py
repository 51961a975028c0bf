"""The bilingual task library: prompts, answer formats, parsers and record builders per task.

Every task (see :mod:`medrega.tasks.base` for the shared conventions) has English and Chinese
templates chosen with a seed, ``build_prompt`` (the user turn, ``<image>`` placeholders included),
``format_answer`` (the assistant turn), ``parse_answer`` (model output -> a structured result, never
raising) and ``make_record`` (a validated :class:`medrega.data.Record`).

==================  ===========================================================================
name                task
==================  ===========================================================================
identification      region-to-text: name the structure or lesion inside a given box
detection           text-to-region: single/multi object x single/multi region
grounded_report     per-organ or per-lesion sentences tied to regions (chest X-ray / CT style)
vqa                 open and closed visual question answering
report              report generation (findings / impression)
classification      single-label (letter, letter + text, label) and multi-label
multi_image         temporal change, multi-view reasoning, comparison, co-reference
regional_cot        regional chain-of-thought: regions first, then the answer
==================  ===========================================================================
"""

from medrega.tasks.base import LANGS, RECORD_SCALE, Task, as_rng, ordinal
from medrega.tasks.classification import ClassificationTask
from medrega.tasks.detection import DetectionTask
from medrega.tasks.grounded_report import GroundedReport, GroundedReportTask, GroundedSentence
from medrega.tasks.identification import IdentificationTask
from medrega.tasks.multi_image import ABILITIES, MultiImageAnswer, MultiImageTask
from medrega.tasks.regional_cot import RegionalCoTTask
from medrega.tasks.report import Report, ReportTask
from medrega.tasks.vqa import VQATask

__all__ = [
    "ABILITIES",
    "LANGS",
    "RECORD_SCALE",
    "TASKS",
    "ClassificationTask",
    "DetectionTask",
    "GroundedReport",
    "GroundedReportTask",
    "GroundedSentence",
    "IdentificationTask",
    "MultiImageAnswer",
    "MultiImageTask",
    "RegionalCoTTask",
    "Report",
    "ReportTask",
    "Task",
    "VQATask",
    "as_rng",
    "get_task",
    "ordinal",
]

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        IdentificationTask(),
        DetectionTask(),
        GroundedReportTask(),
        VQATask(),
        ReportTask(),
        ClassificationTask(),
        MultiImageTask(),
        RegionalCoTTask(),
    )
}


def get_task(name: str) -> Task:
    """The task registered under ``name`` (see the table above).

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
