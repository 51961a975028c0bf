"""Med-MAT registry: datasets and subsets by (Modality, Area, Task), with coarse vocabularies and look-ups.

Med-MAT publishes two tables (read with :func:`medrega.data.medmat.read_mat_table`): the source
datasets (``datasets.tsv``, 109 rows, the paper's "106 datasets") and the 53 subsets they are merged
into (``subsets.tsv``). Their spellings vary ("X-Ray" / "X-ray", "Teeth" / "Mouth", "Canser",
"Pnemonia"), and task names are specific ("COVID-19 and Pneumonia Classification"). Compositional
generalization compares *coarse* elements, so every entry is read through three vocabularies:

* **Modality** (:data:`MODALITIES`): Med-MAT's abbreviations, each with aliases
  (``"Ultrasound"`` -> ``US``, ``"fundus photography"`` -> ``FP``, ``"histopathology"`` -> ``Mic``).
* **Area** (:data:`AREAS`): the anatomical areas of the tables, with aliases (``"Teeth"`` and
  ``"oral"`` -> ``Mouth``, ``"knee"`` / ``"spine"`` -> ``Bones``, ``"colon"`` -> ``Intestine``).
* **Task family** (:data:`TASK_FAMILIES`): the task name's family, by the first rule that matches
  (rules are tried in this order, case-insensitive):

  ==========  =======================================================================================
  family      the task name mentions
  ==========  =======================================================================================
  region      detection or segmentation (``Det``, ``Seg``, ``Detection``, ``Segmentation``)
  state       image or organ state: quality, cleanliness, screening type
  level       a grade: level, degree, grading, severity, bone age
  covid       COVID (``COVID-19``, ``COVID19``)
  cell        cell or sperm typing: cell type, blood / marrow cells, sperm morphology
  cancer      cancer or tumour: cancer (``Canser``), tumor, melanoma, malignant, glioma
  disease     other diseases and findings: disease, pneumonia, tuberculosis, fracture, lesion,
              glaucoma, ... and multi-class / multi-label lists of findings
  ==========  =======================================================================================

A value no vocabulary knows is kept as written (stripped) and listed by
:meth:`MatRegistry.uncovered`; the tables are covered completely. Users add their own datasets with
:meth:`MatRegistry.register` (one call) or :meth:`MatRegistry.register_table` (a TSV/CSV file with
``modality``, ``area``, ``task`` and optional ``name``, ``no``, ``family``, ``path`` columns), and
their own vocabulary words with :meth:`Vocabulary.add`.

The tables are not bundled with medrega (their licence is not stated): pass their paths.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from medrega.data.medmat import ELEMENTS, read_mat_table

__all__ = ["AREAS", "MODALITIES", "TASK_FAMILIES", "MatEntry", "MatRegistry", "Vocabulary", "task_family"]


def _key(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text.strip().lower())


@dataclass
class Vocabulary:
    """Canonical terms of one element with their aliases; :meth:`canonical` maps any spelling."""

    element: str
    terms: dict[str, tuple[str, ...]]  # canonical -> aliases (the canonical spelling itself is implied)
    descriptions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index: dict[str, str] = {}
        for term, aliases in self.terms.items():
            for word in (term, *aliases):
                self._index[_key(word)] = term

    def canonical(self, text: str) -> str | None:
        """The canonical term for ``text`` (any alias, any case), or ``None`` if unknown."""
        return self._index.get(_key(text))

    def add(self, term: str, aliases: Iterable[str] = (), description: str = "") -> None:
        """Add a term (or more aliases of an existing one)."""
        self.terms[term] = tuple(dict.fromkeys((*self.terms.get(term, ()), *aliases)))
        if description:
            self.descriptions[term] = description
        for word in (term, *aliases):
            self._index[_key(word)] = term

    def copy(self) -> Vocabulary:
        return Vocabulary(self.element, dict(self.terms), dict(self.descriptions))


_MOD = {  # canonical: (description, aliases)
    "Co": ("colposcopy", ("colposcopy",)),
    "CT": ("computed tomography", ("computed tomography", "cat")),
    "Der": ("dermoscopy", ("dermoscopy", "dermatoscopy", "dermoscopic")),
    "DP": ("digital photography", ("digital photography", "photo", "photograph", "clinical photo")),
    "End": ("endoscopy", ("endoscopy", "endoscopic", "colonoscopy", "cystoscopy")),
    "FP": ("fundus photography", ("fundus photography", "fundus photo", "fundus", "cfp")),
    "Mic": ("microscopy", ("microscopy", "microscope", "histopathology", "pathology", "cytology")),
    "MRI": ("magnetic resonance imaging", ("mr", "magnetic resonance", "magnetic resonance imaging")),
    "OCT": ("optical coherence tomography", ("optical coherence tomography",)),
    "US": ("ultrasound", ("ultrasound", "ultrasonography", "sonography", "echo")),
    "X-ray": ("radiography (incl. mammography)", ("x ray", "xray", "radiograph", "radiography", "cxr", "mammography")),
}
MODALITIES = Vocabulary("modality", {k: a for k, (_, a) in _MOD.items()}, {k: d for k, (d, _) in _MOD.items()})

AREAS = Vocabulary(
    "area",
    {
        "Bladder": ("urinary bladder",),
        "Bones": ("bone", "skeleton", "spine", "vertebrae", "knee", "hand", "musculoskeletal"),
        "Brain": ("head", "skull"),
        "Breast": ("mammary",),
        "Cell": ("cells", "tissue", "slide", "blood"),
        "Cervix": ("cervical",),
        "Chest": ("thorax", "thoracic"),
        "Fundus": ("eye fundus", "ocular fundus"),
        "Intestine": ("bowel", "colon", "colorectum", "gastrointestinal", "gi tract", "gut"),
        "Kidney": ("renal", "kidneys"),
        "Liver": ("hepatic",),
        "Lung": ("lungs", "pulmonary"),
        "Mouth": ("teeth", "tooth", "dental", "oral", "oral cavity"),
        "Retina": ("retinal",),
        "Skin": ("dermal", "cutaneous"),
        "Thyroid": ("thyroid gland",),
    },
)

# (family, description, pattern): tried in order, first match wins (see the module docstring).
TASK_FAMILIES: tuple[tuple[str, str, re.Pattern], ...] = tuple(
    (name, desc, re.compile(pattern, re.I))
    for name, desc, pattern in (
        ("region", "detection / segmentation of regions", r"\bdet\b|\bseg\b|detection|segmentation"),
        ("state", "image or organ state (quality, cleanliness, screening type)", r"quality|cleanliness|screening"),
        ("level", "grade / level / severity", r"level|degree|grading|severity|bone age"),
        ("covid", "COVID-19", r"covid"),
        ("cell", "cell / sperm typing", r"cell type|cell class|blood cell|marrow cell|sperm"),
        ("cancer", "cancer / tumour", r"cancer|canser|tumou?r|melanoma|malignan|glioma|lymphoma"),
        (
            "disease",
            "other diseases, findings and multi-class lists",
            r"disease|desease|pn[eu]{0,2}monia|tuberculosis|fractur|lesion|glaucoma|hemorrhage|toxoplasmosis"
            r"|degeneration|vertebrae|condition|monkeypox|multi",
        ),
    )
)


def task_family(task: str) -> str | None:
    """The coarse family of a task name (``"COVID-19 and Pneumonia Classification"`` -> ``"covid"``), or ``None``."""
    return next((name for name, _, pattern in TASK_FAMILIES if pattern.search(task)), None)


@dataclass(frozen=True)
class MatEntry:
    """One dataset or subset with its raw and coarse (Modality, Area, Task) elements.

    Args:
        key: unique key: ``"subset:03"``, ``"dataset:57"`` or ``"user:<name>"``.
        kind: ``"subset"``, ``"dataset"`` or ``"user"``.
        no: the table number (``None`` for user entries without one).
        name: dataset name (``None`` for subsets).
        modality, area, task: as written in the table (modality spelling normalised).
        family: the task family (:func:`task_family`), or the task as written when no rule matches.
        path: the record file of this entry, when known (used by the planner's training mixes).
    """

    key: str
    kind: str
    no: int | None
    name: str | None
    modality: str
    area: str
    task: str
    family: str
    path: str | None = None

    @property
    def mat(self) -> tuple[str, str, str]:
        """The coarse triplet ``(modality, area, family)`` compositional generalization compares."""
        return (self.modality, self.area, self.family)

    @property
    def label(self) -> str:
        """A short human label: ``"03 CT / Lung / COVID-19 Classification"``."""
        head = f"{self.no:02d}" if self.no is not None else self.key
        return f"{head} {self.modality} / {self.area} / {self.task}"


class MatRegistry:
    """Datasets and subsets by coarse (Modality, Area, Task); see the module docstring.

    Args:
        entries: initial entries (usually from :meth:`from_tables`).
        modalities, areas: vocabularies (default: copies of :data:`MODALITIES`, :data:`AREAS`).
    """

    def __init__(self, entries: Iterable[MatEntry] = (), modalities: Vocabulary | None = None, areas: Vocabulary | None = None):
        self.modalities = modalities or MODALITIES.copy()
        self.areas = areas or AREAS.copy()
        self._entries: dict[str, MatEntry] = {}
        for entry in entries:
            self._add(entry)

    @classmethod
    def from_tables(cls, subsets: str | Path | None = None, datasets: str | Path | None = None) -> MatRegistry:
        """A registry of Med-MAT's ``subsets.tsv`` and / or ``datasets.tsv``.

        Args:
            subsets: path of the subsets table (``no, modality, area, task``).
            datasets: path of the datasets table (``no, name, url, modality, area, task``).
        """
        registry = cls()
        for kind, path in (("subset", subsets), ("dataset", datasets)):
            for row in read_mat_table(path) if path is not None else ():
                registry.register(row.modality, row.area, row.task, name=row.name, no=row.no, kind=kind)
        return registry

    # -- building ------------------------------------------------------------------------------------
    def _add(self, entry: MatEntry) -> MatEntry:
        if entry.key in self._entries:
            raise ValueError(f"registry already holds {entry.key!r}")
        self._entries[entry.key] = entry
        return entry

    def register(
        self,
        modality: str,
        area: str,
        task: str,
        *,
        name: str | None = None,
        no: int | None = None,
        family: str | None = None,
        path: str | None = None,
        kind: str = "user",
    ) -> MatEntry:
        """Add one dataset; elements are mapped through the vocabularies (unknown ones kept as written).

        Args:
            modality, area, task: the dataset's elements, any spelling the vocabularies know.
            name: its name (needed for user entries without ``no``; it makes the key ``"user:<name>"``).
            no: its number; family: the task family (default: :func:`task_family` of ``task``).
            path: its record file, for training mixes.
            kind: ``"user"`` (default), ``"subset"`` or ``"dataset"``.
        """
        if kind not in ("user", "subset", "dataset"):
            raise ValueError(f"kind must be 'user', 'subset' or 'dataset', got {kind!r}")
        if not all(v and v.strip() for v in (modality, area, task)):
            raise ValueError(f"modality, area and task must be non-empty, got {(modality, area, task)!r}")
        if kind == "user":
            if not (name or no is not None):
                raise ValueError("a user dataset needs a name or a number")
            key = f"user:{name if name else no}"
        else:
            key = f"{kind}:{no:02d}"
        m = self.modalities.canonical(modality) or modality.strip()
        a = self.areas.canonical(area) or area.strip()
        fam = family.strip().lower() if family else (task_family(task) or task.strip())
        return self._add(MatEntry(key, kind, no, name, m, a, task.strip(), fam, path))

    def register_table(self, path: str | Path, kind: str = "user") -> list[MatEntry]:
        """Add the rows of a TSV (or ``.csv``) file: ``modality, area, task`` and optional ``name, no, family, path``.

        Relative ``path`` values are resolved against the table's folder.
        """
        path = Path(path)
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="," if path.suffix.lower() == ".csv" else "\t"))
        if not rows or not {"modality", "area", "task"} <= set(rows[0]):
            raise ValueError(f"{path}: expected columns modality, area, task (and optional name, no, family, path)")
        out = []
        for line, row in enumerate(rows, 2):
            raw_no = (row.get("no") or "").strip()
            if raw_no and not raw_no.isdigit():
                raise ValueError(f"{path}:{line}: number {raw_no!r} is not an integer")
            records = (row.get("path") or "").strip()
            if records and not Path(records).is_absolute():
                records = str(path.resolve().parent / records)
            try:
                out.append(
                    self.register(
                        row["modality"], row["area"], row["task"], name=(row.get("name") or "").strip() or None,
                        no=int(raw_no) if raw_no else None, family=(row.get("family") or "").strip() or None,
                        path=records or None, kind=kind,
                    )
                )
            except ValueError as err:
                raise ValueError(f"{path}:{line}: {err}") from None
        return out

    def with_paths(self, paths: Mapping[str, str] | str) -> MatRegistry:
        """A copy whose entries point at record files: a mapping by key, or a template such as
        ``"records/{kind}_{no:02d}.jsonl"`` formatted with each entry's fields (entries with a path keep it;
        an entry the template cannot format stays without one)."""
        out = MatRegistry(modalities=self.modalities, areas=self.areas)
        for entry in self:
            if isinstance(paths, str):
                try:
                    new = entry.path or paths.format(**entry.__dict__)
                except (TypeError, ValueError, KeyError):  # e.g. ``{no:02d}`` of a user entry without a number
                    new = None
            else:
                new = paths.get(entry.key, entry.path)
            out._add(replace(entry, path=new))
        return out

    # -- look-ups ------------------------------------------------------------------------------------
    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, key: str) -> MatEntry:
        try:
            return self._entries[key]
        except KeyError:
            raise KeyError(f"no entry {key!r} in the registry ({len(self)} entries)") from None

    def entries(self, kind: str | None = None) -> list[MatEntry]:
        """All entries, or those of one kind (``"subset"``, ``"dataset"``, ``"user"``)."""
        return [e for e in self if kind is None or e.kind == kind]

    def normalize(self, modality: str, area: str, task: str) -> tuple[str, str, str]:
        """The coarse triplet of any spelling: ``("X-Ray", "lungs", "COVID19")`` -> ``("X-ray", "Lung", "covid")``.

        ``task`` may be a task name or a family name.
        """
        fam = task.strip().lower() if task.strip().lower() in self.families() else (task_family(task) or task.strip())
        return (self.modalities.canonical(modality) or modality.strip(), self.areas.canonical(area) or area.strip(), fam)

    def families(self) -> set[str]:
        return {name for name, _, _ in TASK_FAMILIES} | {e.family for e in self}

    def find(
        self,
        modality: str | None = None,
        area: str | None = None,
        task: str | None = None,
        *,
        family: str | None = None,
        name: str | None = None,
        kind: str | None = None,
    ) -> list[MatEntry]:
        """Entries matching every element given (any alias; ``task`` matches a task family or a name).

        Args:
            modality, area: any spelling the vocabularies know.
            task: a family (``"covid"``) or a task name, mapped to its family (``"COVID-19 Classification"``).
            family: a family name, compared exactly.
            name: part of the dataset name (case-insensitive); kind: ``"subset"``, ``"dataset"`` or ``"user"``.
        """
        m = (self.modalities.canonical(modality) or modality.strip()) if modality else None
        a = (self.areas.canonical(area) or area.strip()) if area else None
        t = self.normalize("-", "-", task)[2] if task else None
        return [
            e
            for e in self
            if (m is None or e.modality == m)
            and (a is None or e.area == a)
            and (t is None or e.family == t)
            and (family is None or e.family == family.lower())
            and (name is None or (e.name is not None and name.lower() in e.name.lower()))
            and (kind is None or e.kind == kind)
        ]

    def uncovered(self) -> list[tuple[MatEntry, str, str]]:
        """``(entry, element, value)`` for every element value no vocabulary knows."""
        out = []
        for e in self:
            if self.modalities.canonical(e.modality) is None:
                out.append((e, "modality", e.modality))
            if self.areas.canonical(e.area) is None:
                out.append((e, "area", e.area))
            if e.family not in {name for name, _, _ in TASK_FAMILIES}:
                out.append((e, "task", e.task))
        return out

    def values(self, element: str, kind: str | None = None) -> list[str]:
        """The coarse values of ``element`` (``"modality"``, ``"area"``, ``"task"``) present, sorted."""
        index = ELEMENTS.index(element)
        return sorted({e.mat[index] for e in self.entries(kind)})
