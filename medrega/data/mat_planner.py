"""Compositional-generalization (CG) plans: which training mixes test a held-out Med-MAT triplet.

For a target ``(modality, area, task family)`` compared on the registry's coarse elements
(:mod:`medrega.data.mat_registry`), :func:`plan_cg` holds out every entry with the target's exact
triplet and builds:

* **related** mixes: pairs and triples of entries that each share at least one element with the
  target and together cover all three, minimal (dropping any member loses an element). Each mix is
  tagged with its *directions*, as Med-MAT's experiments group them:

  ==============  ====================================================================
  direction       every member ...
  ==============  ====================================================================
  fixed_modality  has the target's modality (areas and tasks vary)
  fixed_area      has the target's area
  fixed_task      has the target's task family
  modality_area   (not every member:) one member pairs the target's modality and area
                  (e.g. CT / Lung / cancer for CT / Lung / COVID), the others bring the task
  separate        (none of the above:) the elements come from different members
  ==============  ====================================================================

  Mixes are ordered smallest first, then by how many target elements their members share, then by
  entry number; ``per_direction`` mixes are kept per direction.
* one **control** per related mix: as many entries, none sharing any element with the target
  (seeded choice).
* **ablations** of the first related mix, one per element: each member that shares the element is
  replaced by an entry sharing the member's other target elements but not that one (an unrelated
  entry when nothing else is left); an ablation that can no longer cover the two other elements is
  left out, with a note.

Mixes are of equal size in entries; cap the records per entry (the Med-MAT question builder's
``cap``) to make them equal in samples too. When no entry outside the held-out target has one of
the target's elements, :func:`plan_cg` raises :class:`CoverageError` naming that element.
"""

from __future__ import annotations

import csv
import itertools
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medrega.data.mat_registry import MatEntry, MatRegistry
from medrega.data.medmat import ELEMENTS

__all__ = ["DIRECTIONS", "CGPlan", "CoverageError", "Mix", "plan_cg", "write_mixes"]

DIRECTIONS = ("fixed_modality", "fixed_area", "fixed_task", "modality_area", "separate")


class CoverageError(ValueError):
    """The registry cannot cover an element of the target; ``element`` and ``value`` name it."""

    def __init__(self, element: str, value: str, message: str):
        self.element, self.value = element, value
        super().__init__(message)


@dataclass(frozen=True)
class Mix:
    """A training mix of registry entries.

    Args:
        name: ``"related-1"``, ``"control-1"``, ``"ablation-no-area"`` ...
        role: ``"related"``, ``"control"`` or ``"ablation"``.
        entries: the members; shares: per member, the target elements it shares.
        directions: the related directions the mix belongs to (see the module docstring).
        of: the related mix a control or ablation matches; dropped: the element an ablation leaves out.
    """

    name: str
    role: str
    entries: tuple[MatEntry, ...]
    shares: tuple[tuple[str, ...], ...]
    directions: tuple[str, ...] = ()
    of: str | None = None
    dropped: str | None = None

    @property
    def covers(self) -> tuple[str, ...]:
        """Target elements some member shares, in ``ELEMENTS`` order."""
        have = {e for s in self.shares for e in s}
        return tuple(e for e in ELEMENTS if e in have)


@dataclass
class CGPlan:
    """The mixes for one target; ``notes`` say what could not be built."""

    target: tuple[str, str, str]
    held_out: list[MatEntry]
    related: list[Mix] = field(default_factory=list)
    controls: list[Mix] = field(default_factory=list)
    ablations: list[Mix] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def mixes(self) -> list[Mix]:
        return [*self.related, *self.controls, *self.ablations]

    def by_direction(self, direction: str) -> list[Mix]:
        """The related mixes of one direction (``DIRECTIONS``)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        return [m for m in self.related if direction in m.directions]

    def rows(self) -> list[dict[str, str]]:
        """One row per mix: name, role, of, directions, size, covered elements, members."""
        return [
            {
                "mix": m.name,
                "role": m.role,
                "of": m.of or m.dropped or "",
                "directions": ",".join(m.directions),
                "size": str(len(m.entries)),
                **{el: "yes" if el in m.covers else "no" for el in ELEMENTS},
                "entries": "; ".join(f"{e.label} [{'+'.join(s) or '-'}]" for e, s in zip(m.entries, m.shares)),
            }
            for m in self.mixes
        ]

    def table(self) -> str:
        """A plain-text table of what each mix covers (with the notes under it)."""
        rows = self.rows()
        head = [f"target {' / '.join(self.target)}; held out: {', '.join(e.label for e in self.held_out) or 'none'}"]
        cols = ["mix", "role", "of", "directions", "size", *ELEMENTS, "entries"]
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) if rows else len(c) for c in cols}
        lines = ["  ".join(c.ljust(widths[c]) for c in cols).rstrip()]
        lines += ["  ".join(r[c].ljust(widths[c]) for c in cols).rstrip() for r in rows]
        return "\n".join([*head, *lines, *(f"note: {n}" for n in self.notes)])


def _target(registry: MatRegistry, target) -> tuple[str, str, str]:
    if isinstance(target, MatEntry):
        return target.mat
    if isinstance(target, str):
        return registry[target].mat
    return registry.normalize(*target)


def plan_cg(
    registry: MatRegistry,
    target: tuple[str, str, str] | MatEntry | str,
    *,
    kind: str | None = "subset",
    max_size: int = 3,
    per_direction: int = 2,
    seed: int = 0,
) -> CGPlan:
    """The related mixes, controls and ablations for a held-out target (rules in the module docstring).

    Args:
        registry: the entries to plan with.
        target: ``(modality, area, task)`` in any spelling (task: a name or a family), an entry, or its key.
        kind: plan with entries of this kind only (``"subset"``, ``"dataset"``, ``"user"``; ``None``: all).
        max_size: largest related mix (2 or 3).
        per_direction: related mixes kept per direction.
        seed: the controls' and ablation pads' choice of unrelated entries.

    Raises:
        CoverageError: no entry outside the held-out target has one of the target's elements.
    """
    if max_size not in (2, 3):
        raise ValueError(f"max_size must be 2 or 3, got {max_size}")
    mat = _target(registry, target)
    entries = sorted(registry.entries(kind), key=lambda e: (e.no is None, e.no or 0, e.key))
    held_out = [e for e in entries if e.mat == mat]
    pool = [e for e in entries if e.mat != mat]

    def shares(e: MatEntry) -> tuple[str, ...]:
        return tuple(el for el, a, b in zip(ELEMENTS, e.mat, mat) if a == b)

    for i, el in enumerate(ELEMENTS):
        if not any(el in shares(e) for e in pool):
            known = ", ".join(registry.values(el, kind))
            only = f" (only the held-out {', '.join(e.label for e in held_out)} has it)" if held_out else ""
            raise CoverageError(el, mat[i], f"the registry cannot cover the target's {el} {mat[i]!r}: no {kind or 'registry'} "
                                f"entry outside the target has it{only}; known {el} values: {known}")

    plan = CGPlan(mat, held_out)
    related = [e for e in pool if shares(e)]
    unrelated = [e for e in pool if not shares(e)]
    candidates = []
    for size in range(2, max_size + 1):
        for combo in itertools.combinations(related, size):
            sets = [set(shares(e)) for e in combo]
            if set().union(*sets) != set(ELEMENTS):
                continue
            if any(set().union(*(s for j, s in enumerate(sets) if j != i)) == set(ELEMENTS) for i in range(size)):
                continue  # not minimal
            candidates.append(combo)
    candidates.sort(key=lambda c: (len(c), -sum(len(shares(e)) for e in c), [e.no or 0 for e in c]))

    def directions(combo) -> tuple[str, ...]:
        out = [f"fixed_{el}" for el in ELEMENTS if all(el in shares(e) for e in combo)]
        if any(set(shares(e)) == {"modality", "area"} for e in combo):
            out.append("modality_area")
        return tuple(out) or ("separate",)

    kept: list[tuple] = []
    for direction in DIRECTIONS:
        for combo in [c for c in candidates if direction in directions(c)][:per_direction]:
            if combo not in kept:
                kept.append(combo)
        if not any(direction in directions(c) for c in candidates):
            plan.notes.append(f"no {direction} combination covers the target with at most {max_size} entries")
    kept.sort(key=candidates.index)
    for k, combo in enumerate(kept, 1):
        plan.related.append(Mix(f"related-{k}", "related", combo, tuple(shares(e) for e in combo), directions(combo)))

    for mix in plan.related:
        n = len(mix.entries)
        if len(unrelated) < n:
            plan.notes.append(f"control of {mix.name}: only {len(unrelated)} unrelated entries, {n} needed")
            continue
        pick = random.Random(f"{seed}-{mix.name}").sample(unrelated, n)
        plan.controls.append(Mix(f"control-{mix.name.split('-')[1]}", "control", tuple(pick), tuple(() for _ in pick), of=mix.name))

    if plan.related:
        plan.ablations = [a for el in ELEMENTS if (a := _ablation(plan, plan.related[0], el, pool, unrelated, shares, seed))]
    return plan


def _ablation(plan: CGPlan, base: Mix, drop: str, pool, unrelated, shares, seed: int) -> Mix | None:
    rng = random.Random(f"{seed}-ablation-{drop}")
    chosen: list[MatEntry] = []
    for member, s in zip(base.entries, base.shares):
        if drop not in s:
            chosen.append(member)
            continue
        want = set(s) - {drop}
        free = [e for e in pool if e not in chosen and e not in base.entries and drop not in shares(e)]
        exact = [e for e in free if set(shares(e)) == want and want]
        partial = sorted((e for e in free if shares(e) and set(shares(e)) <= want), key=lambda e: -len(shares(e)))
        spare = [e for e in unrelated if e not in chosen]
        pick = exact[0] if exact else partial[0] if partial else rng.choice(spare) if spare else None
        if pick is None:
            plan.notes.append(f"ablation without {drop}: no entry left to replace {member.label}")
            return None
        chosen.append(pick)
    covered = {el for e in chosen for el in shares(e)}
    missing = [el for el in ELEMENTS if el != drop and el not in covered]
    if missing:
        plan.notes.append(
            f"ablation without {drop}: no entry without the target's {drop} covers its {' and '.join(missing)}; left out"
        )
        return None
    return Mix(f"ablation-no-{drop}", "ablation", tuple(chosen), tuple(shares(e) for e in chosen), of=base.name, dropped=drop)


def write_mixes(plan: CGPlan, out_dir: str | Path, base_config: dict[str, Any] | None = None, runs_dir: str = "runs/cg") -> list[Path]:
    """Write one training YAML per mix (the format ``train/train.py`` and ``medrega train`` read) and ``plan.tsv``.

    Every member needs a record file (``MatEntry.path``; see :meth:`MatRegistry.with_paths`); data
    paths are written relative to ``out_dir``, as ``load_config`` resolves them.

    Args:
        plan: from :func:`plan_cg`.
        out_dir: folder for ``<mix>.yaml`` and ``plan.tsv`` (created).
        base_config: other ``TrainConfig`` fields for every mix (``model``, ``max_steps``, ...).
        runs_dir: each mix trains into ``<runs_dir>/<mix>`` (this replaces any ``output_dir`` of ``base_config``).

    Returns:
        The YAML paths, in plan order.
    """
    missing = sorted({e.label for m in plan.mixes for e in m.entries if not e.path})
    if missing:
        raise ValueError(f"entries without a record file (use MatRegistry.with_paths): {', '.join(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for mix in plan.mixes:
        config = {**(base_config or {}), "output_dir": f"{runs_dir}/{mix.name}"}
        config["data"] = [{"path": os.path.relpath(Path(e.path).resolve(), out.resolve()), "weight": 1.0} for e in mix.entries]
        path = out / f"{mix.name}.yaml"
        header = f"# CG mix {mix.name} ({mix.role}) for target {' / '.join(plan.target)}; covers {', '.join(mix.covers) or 'nothing'}\n"
        path.write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        written.append(path)
    rows = plan.rows()
    with open(out / "plan.tsv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["mix"], delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return written
