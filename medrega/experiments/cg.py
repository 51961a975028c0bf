"""Run a compositional-generalization (CG) plan: train every mix, evaluate on the target, tabulate.

:func:`run_cg` takes a plan (a folder written by :func:`medrega.data.mat_planner.write_mixes`, or a
:class:`~medrega.data.mat_planner.CGPlan`), and for every seed:

* evaluates the **untrained** model (the mixes' ``model``: a preset built with the seed, or a model
  directory) on the target benchmark;
* trains each mix (related, control = unrelated, ablation) with :func:`medrega.training.train`, the
  mix's YAML plus ``overrides`` with ``seed`` and ``output_dir`` set per run, and evaluates the
  exported model with :func:`medrega.evaluation.run_benchmark`.

Nothing is re-implemented: training, generation and scoring are the library's. The score of a run
is one metric (``accuracy`` by default) of the benchmark's ``by == "all"`` rows in ``metrics.json``,
averaged over tasks weighted by their sample counts.

Output folder::

    <out>/mixes/                       the mixes' YAMLs and plan.tsv (only when a CGPlan is passed)
    <out>/runs/<mix>/seed-<s>/         the training run (metrics.jsonl, model/), eval/ (predictions, metrics)
    <out>/runs/<mix>/seed-<s>/result.json   written last, atomically: the run is complete
    <out>/cg.md, cg.tsv, cg.json       the CG table (also printed)

**Resuming**: a run whose ``result.json`` exists, parses and was made with the same training
config, evaluation settings and target is kept. Any other run (never started, killed mid-way, or
made with other settings) is redone from scratch: its folder is emptied first, so no stale
checkpoint or prediction leaks into the new result.

The table has one row per mix and the untrained model: mean ± sample standard deviation over the
seeds, minimum, maximum and each seed's value; then one ``gap`` row per related mix and its control,
paired by seed (related minus control).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CGResult", "CGRun", "read_plan", "run_cg"]

logger = logging.getLogger(__name__)

RESULT = "result.json"
_HEADER = re.compile(r"^# CG mix \S+ \(\w+\) for target (.+?); covers")


@dataclass(frozen=True)
class CGRun:
    """One row of the plan: a mix (or ``untrained``) with its YAML and what it covers."""

    name: str
    role: str
    of: str = ""
    covers: tuple[str, ...] = ()
    config: Path | None = None


@dataclass
class CGResult:
    """The finished table: ``scores[name][seed]`` per run, in plan order, with the target's triplet."""

    target: str
    metric: str
    seeds: tuple[int, ...]
    runs: list[CGRun]
    scores: dict[str, dict[int, float]] = field(default_factory=dict)
    trained: list[tuple[str, int]] = field(default_factory=list)  # the runs this call (re)did

    def stats(self, values: Sequence[float]) -> dict[str, float]:
        return {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }

    def gaps(self) -> dict[str, dict[int, float]]:
        """Per related mix with a control: ``{"related-1 - control-1": {seed: gap}}``."""
        out = {}
        for run in self.runs:
            if run.role == "control" and run.of in self.scores:
                related, control = self.scores[run.of], self.scores[run.name]
                out[f"{run.of} - {run.name}"] = {s: related[s] - control[s] for s in self.seeds}
        return out

    def summary(self) -> dict[str, float]:
        """``cg_related_accuracy``, ``cg_unrelated_accuracy``, ``cg_gap`` and ``cg_gap_min`` (over seeds;
        each seed's value is the mean over the related mixes that have a control, and over those controls)."""
        pairs = [(r.of, r.name) for r in self.runs if r.role == "control"]
        if not pairs:
            return {}
        rel = {s: statistics.fmean(self.scores[a][s] for a, _ in pairs) for s in self.seeds}
        ctl = {s: statistics.fmean(self.scores[b][s] for _, b in pairs) for s in self.seeds}
        gap = [rel[s] - ctl[s] for s in self.seeds]
        return {
            f"cg_related_{self.metric}": statistics.fmean(rel.values()),
            f"cg_unrelated_{self.metric}": statistics.fmean(ctl.values()),
            "cg_gap": statistics.fmean(gap),
            "cg_gap_std": statistics.stdev(gap) if len(gap) > 1 else 0.0,
            "cg_gap_min": min(gap),
        }

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        named = [(r.name, r.role, r.of, ",".join(r.covers), self.scores[r.name]) for r in self.runs]
        named += [(name, "gap", "", "", values) for name, values in self.gaps().items()]
        for name, role, of, covers, values in named:
            per_seed = [values[s] for s in self.seeds]
            rows.append({"mix": name, "role": role, "of": of, "covers": covers, "seeds": len(per_seed),
                         **self.stats(per_seed), "per_seed": per_seed})  # fmt: skip
        return rows

    def to_markdown(self) -> str:
        """The table, values in points (x 100)."""
        seeds = ", ".join(map(str, self.seeds))
        lines = [
            f"CG on target {self.target}: {self.metric} (points) over seeds {seeds}",
            "",
            "| mix | role | of | covers | mean ± std | min | max | per seed |",
            "|---|---|---|---|---:|---:|---:|---|",
        ]
        for r in self.rows():
            per = " ".join(f"{100 * v:.1f}" for v in r["per_seed"])
            lines.append(
                f"| {r['mix']} | {r['role']} | {r['of']} | {r['covers']} | {100 * r['mean']:.1f} ± {100 * r['std']:.1f} "
                f"| {100 * r['min']:.1f} | {100 * r['max']:.1f} | {per} |"
            )
        summary = self.summary()
        if summary:
            lines += ["", ", ".join(f"{k} = {100 * v:.1f}" for k, v in summary.items())]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "metric": self.metric, "seeds": list(self.seeds), "rows": self.rows(), "summary": self.summary()}

    def write(self, out: str | Path) -> None:
        """``cg.md``, ``cg.tsv`` and ``cg.json`` into ``out``."""
        out = Path(out)
        (out / "cg.md").write_text(self.to_markdown(), encoding="utf-8")
        (out / "cg.json").write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
        with open(out / "cg.tsv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(["mix", "role", "of", "covers", "seeds", "mean", "std", "min", "max", *(f"seed_{s}" for s in self.seeds)])
            for r in self.rows():
                writer.writerow([r["mix"], r["role"], r["of"], r["covers"], r["seeds"],
                                 *(f"{r[k]:.6f}" for k in ("mean", "std", "min", "max")), *(f"{v:.6f}" for v in r["per_seed"])])  # fmt: skip


def read_plan(plan_dir: str | Path) -> tuple[str, list[CGRun]]:
    """The target (as written in the YAML headers) and the mixes of a folder from ``write_mixes``, in plan order."""
    plan_dir = Path(plan_dir)
    table = plan_dir / "plan.tsv"
    if not table.is_file():
        raise FileNotFoundError(f"{plan_dir} holds no plan.tsv: write the plan with medrega.data.mat_planner.write_mixes")
    with open(table, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise ValueError(f"{table}: the plan has no mix")
    runs, target = [], None
    for row in rows:
        path = plan_dir / f"{row['mix']}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{table} lists {row['mix']!r} but {path} is missing")
        if target is None:
            match = _HEADER.match(path.read_text(encoding="utf-8").split("\n", 1)[0])
            target = match.group(1) if match else "?"
        covers = tuple(el for el in ("modality", "area", "task") if row.get(el) == "yes")
        runs.append(CGRun(row["mix"], row["role"], row.get("of", ""), covers, path))
    return target, runs


def _metric(metrics: dict, name: str, where: Path) -> tuple[float, int]:
    rows = [r for r in metrics["rows"] if r["by"] == "all" and name in r]
    if not rows:
        raise ValueError(f"{where}: no task of the target benchmark has the metric {name!r}; columns: {metrics['columns']}")
    n = sum(r["n"] for r in rows)
    return sum(r[name] * r["n"] for r in rows) / n, n


def _load_result(path: Path, fingerprint: dict) -> dict | None:
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = None
    if not isinstance(result, dict) or result.get("fingerprint") != fingerprint or not isinstance(result.get("score"), (int, float)):
        logger.warning("%s is incomplete or was made with other settings; redoing the run", path)
        return None
    return result


def _write_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def run_cg(
    plan,
    target,
    out: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    overrides: dict[str, Any] | None = None,
    metric: str = "accuracy",
    eval_config=None,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    device: str | None = None,
    keep_checkpoints: bool = False,
    untrained: bool = True,
    progress: bool = True,
    echo: bool = True,
) -> CGResult:
    """Train every mix of a CG plan for every seed, evaluate on the target, write and print the table.

    Args:
        plan: a folder written by :func:`~medrega.data.mat_planner.write_mixes` (``plan.tsv`` and one
            YAML per mix), or a :class:`~medrega.data.mat_planner.CGPlan` (its mixes are written to
            ``<out>/mixes`` first; its entries need record files).
        target: the benchmark file(s) of the held-out target (paths or ``BenchmarkFile`` s), e.g.
            Med-MAT questions from :func:`medrega.builders.medmat_questions.mat_questions`.
        out: the experiment folder (see the module docstring); reuse it to resume.
        seeds: one training run per mix and seed (``TrainConfig.seed``: weights and data order).
        overrides: ``TrainConfig`` fields for every mix (``max_steps``, ``model``, ``lr`` ...);
            ``seed`` and ``output_dir`` are set per run.
        metric: the score taken from the evaluation table (``accuracy`` for single-choice questions).
        eval_config: an eval config (YAML, mapping or ``EvalConfig``) for everything not passed here.
        batch_size, max_new_tokens, limit: evaluation settings (see ``run_benchmark``).
        device: where evaluation runs (default: CUDA when available; training picks its own device).
        keep_checkpoints: keep each run's training checkpoints (default: only the exported model).
        untrained: add the untrained model's row.
        progress: one progress bar over every run of the plan.
        echo: print the table when done.

    Returns:
        The :class:`CGResult` (also written to ``cg.md``, ``cg.tsv`` and ``cg.json``).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    from medrega.evaluation import load_eval_config
    from medrega.training import load_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(plan, (str, Path)):
        from medrega.data.mat_planner import write_mixes

        write_mixes(plan, out / "mixes")
        plan = out / "mixes"
    target_name, runs = read_plan(plan)
    seeds = tuple(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ValueError("seeds: at least one seed is needed")
    overrides = {k: v for k, v in (overrides or {}).items() if k not in ("seed", "output_dir")}
    targets = [target] if isinstance(target, (str, Path)) or hasattr(target, "path") else list(target or [])
    device = device or ("cuda" if torch.cuda.is_available() else None)
    ecfg = load_eval_config(eval_config, {"data": targets or None, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                                          "limit": limit, "device": device, "output_dir": str(out)})  # fmt: skip
    if not ecfg.data:
        raise ValueError("no target benchmark: pass target or an eval_config that lists it")
    eval_print = {"data": [{**vars(d), "path": str(Path(d.path).resolve())} for d in ecfg.data],
                  **{k: getattr(ecfg, k) for k in ("max_new_tokens", "limit", "constrained", "dtype")}}  # fmt: skip
    base = load_config(runs[0].config, overrides)
    if untrained:
        runs = [CGRun("untrained", "untrained"), *runs]

    jobs = []
    for run in runs:
        for seed in seeds:
            folder = out / "runs" / run.name / f"seed-{seed}"
            config = None if run.config is None else load_config(run.config, {**overrides, "seed": seed, "output_dir": str(folder)})
            train_print = {k: v for k, v in json.loads(json.dumps((config or base).to_dict())).items() if k != "output_dir"}
            if config is None:  # the untrained model depends on the model and seed only
                train_print = {"model": base.model, "seed": seed}
            jobs.append((run, seed, folder, config, {"train": train_print, "eval": eval_print, "metric": metric}))

    result = CGResult(target_name, metric, seeds, list(runs))
    done = {}
    for run, seed, folder, _, fingerprint in jobs:
        kept = _load_result(folder / RESULT, fingerprint)
        if kept is not None:
            done[(run.name, seed)] = kept["score"]
    bar = tqdm(total=len(jobs), initial=len(done), desc="cg", unit="run", disable=not progress, dynamic_ncols=True)
    hf_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one bar over the plan: no per-run saving / loading bars
    try:
        for run, seed, folder, config, fingerprint in jobs:
            if (run.name, seed) in done:
                continue
            bar.set_postfix_str(f"{run.name} seed {seed}")
            done[(run.name, seed)] = _one_run(run, seed, folder, config, base, ecfg, fingerprint, metric, keep_checkpoints)
            result.trained.append((run.name, seed))
            bar.update(1)
    finally:
        bar.close()
        if hf_bars:
            hf_logging.enable_progress_bar()
    for run in runs:
        result.scores[run.name] = {s: done[(run.name, s)] for s in seeds}
    result.write(out)
    if echo:
        print(result.to_markdown())
    return result


def _one_run(run: CGRun, seed: int, folder: Path, config, base, ecfg, fingerprint: dict, metric: str, keep_checkpoints: bool) -> float:
    from medrega import presets
    from medrega.evaluation import load_model, run_benchmark
    from medrega.training import train

    if folder.exists():
        shutil.rmtree(folder)  # a run killed mid-way: start it over, nothing stale kept
    folder.mkdir(parents=True)
    start = time.perf_counter()
    info: dict[str, Any] = {}
    if config is None:
        if base.model in presets.PRESETS:
            model = presets.build(base.model, seed=seed)
        else:
            model = load_model(base.model, ecfg.device, ecfg.dtype)
        model[0].eval()
    else:
        trained = train(config, progress=False)
        info = {"steps": trained.last_step, "seconds": round(trained.seconds, 3),
                "final_loss": trained.losses.get(trained.last_step), "skipped": trained.skipped}  # fmt: skip
        if not keep_checkpoints:
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        model = str(folder / "model")
    eval_dir = folder / "eval"
    run_benchmark(model, out=eval_dir, config=ecfg, progress=False)
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    score, n = _metric(metrics, metric, eval_dir / "metrics.json")
    payload = {"mix": run.name, "role": run.role, "seed": seed, "score": score, "metric": metric, "n": n,
               "samples": metrics["samples"], "train": info, "seconds": round(time.perf_counter() - start, 3),
               "fingerprint": fingerprint}  # fmt: skip
    _write_atomic(folder / RESULT, payload)
    return score
