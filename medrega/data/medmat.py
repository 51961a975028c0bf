"""Med-MAT: Modality / Area / Task tags and training-subset selection for compositional generalization.

Med-MAT organises its data by MAT triplets: 106 source datasets (``datasets.tsv``) merged into 53
subsets (``subsets.tsv``), each with a modality (CT, X-ray, ...), an anatomical area and a task. Its
finding: a model reaches an unseen combination ``(M, A, T)`` when it was trained on data covering
each element, e.g. "CT / Lung / COVID-19" from "CT / Lung / cancer" (shares M and A) plus
"X-ray / Lung / COVID-19" (shares A and T).

Selection rule of :func:`select_training_subsets`:

1. Take every subset that shares exactly two elements with the target: these combinations are the
   closest neighbours of the target. Subsets equal to the target on all three elements are left out
   (``exclude_target``, the compositional-generalization setting) or taken as well.
2. For each element still uncovered, add the subsets sharing one element that cover the most
   uncovered elements, lowest subset number first, until each of M, A and T is covered or no subset
   can cover it (reported in ``uncovered``).

Elements match after normalisation (case, spaces, modality aliases such as "X-Ray" -> "X-ray",
"Ultrasound" -> "US"). Subset task names are specific ("COVID-19 Classification" vs "COVID-19 and
Pneumonia Classification"); pass ``task_key`` to match tasks more coarsely.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medrega.data.records import Record

__all__ = ["Subset", "Choice", "Selection", "ELEMENTS", "normalize_modality", "read_mat_table", "select_training_subsets", "tag_records"]

ELEMENTS = ("modality", "area", "task")
_MODALITY_ALIASES = {"x-ray": "X-ray", "xray": "X-ray", "ultrasound": "US", "us": "US", "mri": "MRI", "ct": "CT", "oct": "OCT"}


def normalize_modality(modality: str) -> str:
    """Med-MAT's modality spelling: ``"X-Ray"`` and ``"xray"`` -> ``"X-ray"``, ``"Ultrasound"`` -> ``"US"``."""
    key = modality.strip()
    return _MODALITY_ALIASES.get(key.lower(), key)


@dataclass(frozen=True)
class Subset:
    """One row of a Med-MAT table: a subset (or a source dataset, with its ``name``)."""

    no: int
    modality: str
    area: str
    task: str
    name: str | None = None

    @property
    def mat(self) -> tuple[str, str, str]:
        return (self.modality, self.area, self.task)


def read_mat_table(path: str | Path) -> list[Subset]:
    """Read ``subsets.tsv`` (``no, modality, area, task``) or ``datasets.tsv`` (``no, name, url, modality, area, task``).

    Modalities are normalised (:func:`normalize_modality`). A blank number (row 57 of the published
    dataset table) takes the previous row's number plus one.
    """
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or not {"no", "modality", "area", "task"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a tab-separated table with columns no, modality, area, task")
    out: list[Subset] = []
    for line, row in enumerate(rows, 2):
        raw = (row["no"] or "").strip()
        if raw and not raw.isdigit():
            raise ValueError(f"{path}:{line}: subset number {raw!r} is not an integer")
        no = int(raw) if raw else (out[-1].no + 1 if out else 1)
        out.append(Subset(no, normalize_modality(row["modality"]), row["area"].strip(), row["task"].strip(), (row.get("name") or "").strip() or None))
    numbers = [s.no for s in out]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"{path}: repeated subset numbers")
    return out


@dataclass(frozen=True)
class Choice:
    """A chosen subset and the target elements it covers (``("modality", "area")`` ...)."""

    subset: Subset
    covers: tuple[str, ...]


@dataclass
class Selection:
    """The subsets chosen to reach ``target``; ``uncovered`` lists elements no subset covers."""

    target: tuple[str, str, str]
    chosen: list[Choice] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)

    @property
    def subsets(self) -> list[Subset]:
        return [c.subset for c in self.chosen]

    def report(self) -> str:
        """One line per chosen subset with the elements it covers."""
        lines = [f"target {' / '.join(self.target)}: {len(self.chosen)} subset(s)"]
        lines += [f"  {c.subset.no:02d} {' / '.join(c.subset.mat)}  covers {', '.join(c.covers)}" for c in self.chosen]
        if self.uncovered:
            lines.append(f"  uncovered: {', '.join(self.uncovered)}")
        return "\n".join(lines)


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def select_training_subsets(
    target: tuple[str, str, str] | Subset | int,
    subsets: Sequence[Subset],
    exclude_target: bool = True,
    task_key: Callable[[str], str] | None = None,
) -> Selection:
    """Pick subsets whose elements cover the target combination (rule in the module docstring).

    Args:
        target: ``(modality, area, task)``, a :class:`Subset`, or a subset number.
        subsets: the candidates (e.g. ``read_mat_table("subsets.tsv")``).
        exclude_target: leave out subsets with the target's exact combination.
        task_key: maps a task name to the key tasks are compared by (default: case and spaces only).
    """
    if isinstance(target, int):
        found = [s for s in subsets if s.no == target]
        if not found:
            raise ValueError(f"no subset number {target} among {len(subsets)} subsets")
        target = found[0]
    mat = target.mat if isinstance(target, Subset) else tuple(target)
    mat = (normalize_modality(mat[0]), mat[1], mat[2])
    task_of = task_key or (lambda t: t)
    want = (_key(mat[0]), _key(mat[1]), _key(task_of(mat[2])))

    def shared(s: Subset) -> tuple[str, ...]:
        have = (_key(s.modality), _key(s.area), _key(task_of(s.task)))
        return tuple(e for e, a, b in zip(ELEMENTS, have, want) if a == b)

    candidates = [(s, shared(s)) for s in sorted(subsets, key=lambda s: s.no)]
    chosen = [Choice(s, c) for s, c in candidates if len(c) == 2 or (len(c) == 3 and not exclude_target)]
    covered = {e for ch in chosen for e in ch.covers}
    singles = [(s, c) for s, c in candidates if len(c) == 1]
    while True:
        gains = [(len(set(c) - covered), -s.no, s, c) for s, c in singles if set(c) - covered]
        if not gains:
            break
        _, _, best, covers = max(gains, key=lambda g: (g[0], g[1]))
        chosen.append(Choice(best, covers))
        covered |= set(covers)
    return Selection(mat, sorted(chosen, key=lambda c: c.subset.no), [e for e in ELEMENTS if e not in covered])


def tag_records(records: Iterable[Record], table: Sequence[Subset] | Mapping[int, Subset], on_missing: str = "raise") -> list[Record]:
    """Fill ``modality``, ``area`` and ``mat_task`` of Med-MAT records from ``meta["data-no"]``.

    Args:
        records: records read with ``load_records`` (Med-MAT format keeps ``data-no`` in ``meta``).
        table: the table the numbers refer to (``datasets.tsv`` rows for per-dataset files,
            ``subsets.tsv`` rows for subset files), as a list or a mapping by number.
        on_missing: ``"raise"`` or ``"skip"`` (leave the record untagged) for a number not in the table.

    Returns:
        The same records, tagged in place.
    """
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}")
    by_no = dict(table) if isinstance(table, Mapping) else {s.no: s for s in table}
    out = []
    for record in records:
        raw = record.meta.get("data-no")
        entry = by_no.get(int(raw)) if raw is not None and str(raw).strip().isdigit() else None
        if entry is None:
            if on_missing == "raise":
                raise ValueError(f"{record.location or record.id}: data-no {raw!r} is not in the MAT table")
        else:
            record.modality, record.area, record.mat_task = entry.modality, entry.area, entry.task
        out.append(record)
    return out
