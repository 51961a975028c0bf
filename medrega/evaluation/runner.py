"""``run_benchmark``: model + benchmark files -> predictions JSONL -> metrics table (Markdown and JSON).

Output directory:

* ``predictions.jsonl``: one line per sample (see :mod:`medrega.evaluation.predict`), resumable;
* ``metrics.md``: the table of :func:`medrega.metrics.summarize` (per task, and per language, dataset,
  Med-MAT triplet and Med-MIM ability within each task) and the count of skipped samples by reason;
* ``metrics.json``: the same table (``columns``, ``rows``) plus ``samples`` and ``skipped`` counts.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from medrega.evaluation.benchmarks import load_benchmarks
from medrega.evaluation.config import EvalConfig, load_eval_config
from medrega.evaluation.predict import predict
from medrega.evaluation.scoring import score_predictions
from medrega.metrics import summarize

__all__ = ["PREDICTIONS", "load_model", "run_benchmark"]

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"


def load_model(path: str | Path, device: str | None = None, dtype: str | None = None):
    """Load ``(model, processor)`` from a model directory, in eval mode.

    Args:
        path: a directory written by ``save_pretrained`` (model and processor).
        device: move the model there (e.g. ``"cuda"``).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (default: as saved).
    """
    import torch

    from medrega.models import MedRegAForConditionalGeneration
    from medrega.processing import MedRegAProcessor

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a model directory (no config.json); save one with model.save_pretrained and processor.save_pretrained")
    options = {"dtype": getattr(torch, dtype)} if dtype else {}
    model = MedRegAForConditionalGeneration.from_pretrained(path, **options)
    if device is not None:
        model = model.to(device)
    return model.eval(), MedRegAProcessor.from_pretrained(path)


def _skip_counts(lines: list[dict]) -> dict[str, int]:
    """Skipped samples by ``skip_reason`` (``"image not found"``, or the field a rejected record broke)."""
    return dict(Counter(line["skip_reason"] for line in lines if line.get("skipped")).most_common())


def _markdown(table: str, n: int, skipped: dict[str, int]) -> str:
    total = sum(skipped.values())
    lines = ["# Evaluation results", "", table, "", f"Samples: {n} ({n - total} scored, {total} skipped)."]
    if skipped:
        lines += ["", "Skipped:", *(f"- {count} x {reason}" for reason, count in skipped.items())]
    return "\n".join(lines) + "\n"


def run_benchmark(
    model=None,
    data=None,
    out: str | Path | None = None,
    *,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    config: str | Path | dict | EvalConfig | None = None,
    constrained: bool | None = None,
    progress: bool = True,
) -> str:
    """Evaluate a model on benchmark files: predictions, per-sample scores, one metrics table.

    Arguments that are ``None`` take the value of ``config`` (then the defaults of :class:`EvalConfig`).

    Args:
        model: a model directory, or an already built ``(model, processor)`` pair.
        data: benchmark file path(s) (or :class:`~medrega.evaluation.benchmarks.BenchmarkFile` s); replaces
            the config's list, a file also listed there keeping its options.
        out: output directory (``predictions.jsonl``, ``metrics.md``, ``metrics.json``).
        batch_size: samples per ``generate`` call.
        max_new_tokens: generation budget per answer.
        limit: evaluate only the first N lines of each file.
        config: an eval config (``eval/configs/*.yaml``), a mapping or an :class:`EvalConfig`.
        constrained: constrained box decoding.
        progress: show a progress bar.

    Returns:
        The Markdown written to ``metrics.md``.
    """
    path_model = str(model) if isinstance(model, (str, Path)) else None
    cfg = load_eval_config(
        config,
        {
            "model": path_model,
            "data": [data] if isinstance(data, (str, Path)) else data,
            "output_dir": str(out) if out is not None else None,
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "limit": limit,
            "constrained": constrained,
        },
    )
    if not cfg.data:
        raise ValueError("no benchmark files: pass data or a config that lists them")
    if cfg.output_dir is None:
        raise ValueError("no output directory: pass out or set output_dir in the config")
    if isinstance(model, (tuple, list)):
        if len(model) != 2:
            raise ValueError(f"model must be a directory or a (model, processor) pair, got {len(model)} items")
        net, processor = model
        if cfg.device is not None:
            net = net.to(cfg.device)
    elif cfg.model is not None:
        net, processor = load_model(cfg.model, cfg.device, cfg.dtype)
    else:
        raise ValueError("no model: pass a model directory, a (model, processor) pair, or set model in the config")
    out_dir = Path(cfg.output_dir)
    samples = load_benchmarks(cfg.data, cfg.limit)
    lines = predict(
        net, processor, samples, out_dir / PREDICTIONS,
        batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, constrained=cfg.constrained, progress=progress,
    )  # fmt: skip
    rows = score_predictions(lines, {s.key: s.record for s in samples if s.record is not None})
    summary = summarize(rows)
    skipped = _skip_counts(lines)
    markdown = _markdown(summary.to_markdown(), len(lines), skipped)
    (out_dir / "metrics.md").write_text(markdown, encoding="utf-8")
    payload = {**summary.to_dict(), "samples": {"total": len(lines), "scored": len(rows), "skipped": sum(skipped.values())}, "skipped": skipped}
    (out_dir / "metrics.json").write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")
    logger.info("%d sample(s) scored, %d skipped; metrics in %s", len(rows), sum(skipped.values()), out_dir / "metrics.md")
    return markdown
