"""``medrega demo``: the whole pipeline offline on a CPU, on SYNTHETIC phantoms.

1. Writes synthetic phantom "scans" (grayscale images with organ- and lesion-like shapes at known
   places; they are not patient data) and records for every task, English and Chinese.
2. Trains the tiny preset (random init) on them for a time budget, with a progress bar.
3. Evaluates text-to-region grounding on held-out phantoms: ``grounding_acc@0.5`` and mean IoU; and
   held-out negative queries (a phantom without a nodule or liver lesion asked for it), whose right
   answer is "not found": ``metrics["negatives"]["not_found_rate"]``.
4. Draws predicted and true boxes (``grounding.png``) and runs the trained model on a real CT
   DICOM file that ships with pydicom (``dicom.png``), to show the real input path. The model has
   only ever seen phantoms, so its boxes on the real scan mean nothing medically.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from medrega import presets
from medrega.builders.phantom_records import make_phantom_dataset
from medrega.data import load_records
from medrega.data.phantoms import VOCAB
from medrega.evaluation import score_prediction
from medrega.grounding import Grounding
from medrega.tasks import TASKS
from medrega.training import DataSource, TrainConfig, Trainer

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)

OTHER_TASKS = tuple(t for t in TASKS if t != "detection")


def _calibrate(config: TrainConfig, seed: int, model_config: dict, steps: int = 6) -> float:
    """Seconds per optimizer step on this machine: the median over a few steps of a throwaway model
    on the same data and batch size (robust to a busy moment)."""
    model, processor = presets.build("tiny", seed=seed, **model_config)
    trainer = Trainer(TrainConfig(**{**config.to_dict(), "data": config.data, "max_steps": steps + 2, "output_dir": str(Path(config.output_dir) / "calibration")}), model, processor, progress=False)
    batches = trainer.data.batches()
    trainer.loss_step([next(batches)])  # warm up
    timings = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.loss_step([next(batches)])
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def _prediction_line(record, result) -> dict:
    """A detection answer as a prediction line of ``medrega eval``, so the evaluation code scores it."""
    return {
        "task": "detection",
        "lang": result.lang,
        "text": result.text,
        "reference": record.conversation[-1].content,
        "groundings": [g.to_dict() for g in result.groundings],
        "gt_groundings": [g.to_dict() for g in record.groundings],
    }


_ENGLISH = {zh: en for en, zh in VOCAB.items()}
DEMO_MODEL: dict = {}  # the demo's model: the tiny preset as it is
DEMO_QUERY_WEIGHTS: dict[str, float] = {}  # detection queries per structure: uniform
SMALL_AREA = 0.02  # a structure whose true box covers under 2% of the image is "small" (nodules, liver lesions)


def _structure(record) -> str:
    """The phantom structure a detection query asks for, by its English name."""
    phrase = record.groundings[0].phrase
    return _ENGLISH.get(phrase, phrase)


def _size_class(record) -> str:
    (x1, y1, x2, y2), (w, h) = record.groundings[0].boxes[0], record.image_sizes[0]
    return "small" if (x2 - x1) * (y2 - y1) < SMALL_AREA * w * h else "large"


def _mean(rows: list[dict], metric: str) -> float | None:
    values = [row["metrics"][metric] for row in rows if row["metrics"].get(metric) is not None]
    return sum(values) / len(values) if values else None


def _panel_grid(panels: list[Image.Image], columns: int = 4) -> Image.Image:
    width = max(p.width for p in panels)
    height = max(p.height for p in panels)
    rows = (len(panels) + columns - 1) // columns
    grid = Image.new("RGB", (columns * width, rows * height), "white")
    for k, panel in enumerate(panels):
        grid.paste(panel, ((k % columns) * width, (k // columns) * height))
    return grid


def run_demo(
    out: str | Path,
    *,
    train_minutes: float = 8.0,
    max_steps: int | None = None,
    seed: int = 0,
    n_train: int = 3000,
    n_heldout: int = 200,
    batch_size: int = 32,
    negative_rate: float = 0.25,
    query_weights: dict[str, float] | None = None,
    model_config: dict | None = None,
    stage: str = "full",
    lr: float = 1e-3,
    prepare_model: Callable[[torch.nn.Module, object], None] | None = None,
    progress: bool = True,
) -> dict:
    """Run the demo and write ``metrics.json``, ``grounding.png``, ``dicom.png`` and ``model/`` to ``out``.

    Args:
        out: output directory.
        train_minutes: training time budget (the step count is set from a short calibration).
        max_steps: a fixed number of steps instead of the time budget.
        seed: seeds data, model and training.
        n_train, n_heldout: phantoms for training and for the held-out evaluation.
        batch_size: samples per optimizer step.
        negative_rate: share of training detection records of phantoms lacking a nodule or a liver
            lesion that ask for it (answer: "not found"); see ``make_phantom_dataset``. The held-out
            negatives (``n_heldout // 2`` other phantoms, every one lacking a structure asked for it)
            are scored separately.
        query_weights: how often training detection records ask for each structure
            (``make_phantom_dataset``); ``None`` gives :data:`DEMO_QUERY_WEIGHTS`.
        model_config: overrides of the tiny preset's config (:func:`medrega.presets.build`), on top of
            :data:`DEMO_MODEL`.
        stage: training stage (``"full"``; ``"instruction"`` keeps the vision tower frozen).
        lr: peak learning rate.
        prepare_model: called as ``prepare_model(model, processor)`` on the freshly built model before
            training (for example a warm-up of the vision tower); not counted in the time budget.
        progress: show progress bars.

    Returns:
        The metrics written to ``metrics.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_config = {**DEMO_MODEL, **(model_config or {})}
    torch.manual_seed(seed)
    logger.info("writing synthetic phantoms to %s", out / "phantoms")
    detection = make_phantom_dataset(out / "phantoms", n_train, seed=seed + 1, tasks=("detection",), multi_object_rate=0.1, negative_rate=negative_rate, query_weights=DEMO_QUERY_WEIGHTS if query_weights is None else query_weights, filename="detection.jsonl")
    others = make_phantom_dataset(out / "phantoms", max(1, n_train // 10), seed=seed + 1, tasks=OTHER_TASKS, filename="other_tasks.jsonl")
    heldout = make_phantom_dataset(out / "heldout", n_heldout, seed=seed + 10_000, tasks=("detection",), multi_object_rate=0.0)
    negatives = make_phantom_dataset(out / "heldout_negatives", max(1, n_heldout // 2), seed=seed + 20_000, tasks=("detection",), multi_object_rate=0.0, negative_rate=1.0)

    config = TrainConfig(
        model="tiny",
        data=(DataSource(str(detection), 1.0), DataSource(str(others), 0.2)),
        output_dir=str(out / "run"),
        stage=stage,
        max_steps=max_steps or 1,
        max_minutes=None if max_steps else train_minutes,
        micro_batch_size=batch_size,
        lr=lr,
        warmup_steps=min(30, max(1, (max_steps or 300) // 10)),
        min_lr_ratio=0.05,
        save_every=10**9,
        max_length=256,
        seed=seed,
    )
    if max_steps is None:
        seconds_per_step = _calibrate(config, seed, model_config)
        steps = max(10, int(train_minutes * 60 / seconds_per_step))
        logger.info("%.2f s per step here: training %d steps in about %.1f minutes", seconds_per_step, steps, train_minutes)
        # the schedule runs its full course; the time limit only guards against a much slower machine
        config = TrainConfig(**{**config.to_dict(), "data": config.data, "max_steps": steps, "warmup_steps": min(30, steps // 10), "max_minutes": 1.5 * train_minutes})

    model, processor = presets.build("tiny", seed=seed, **model_config)
    if prepare_model is not None:
        prepare_model(model, processor)
    trainer = Trainer(config, model, processor, progress=progress)
    result = trainer.train()
    model_dir = trainer.export(out / "model")

    from medrega.inference import Assistant
    from medrega.inference.draw import draw_groundings

    assistant = Assistant(trainer.model, processor, max_new_tokens=48, batch_size=50)
    records = load_records(heldout)
    by_lang: dict[str, dict[str, float]] = {}
    by_structure: dict[str, list[dict]] = {}
    predictions = []
    start = time.perf_counter()
    for lang in ("en", "zh"):
        subset = [r for r in records if r.lang == lang]
        answers = assistant.detect_many([r.images[0] for r in subset], [r.groundings[0].phrase for r in subset], lang=lang, per_image=True, progress=progress)
        rows = [score_prediction(_prediction_line(r, a), r) for r, a in zip(subset, answers)]
        single = [row for row, r in zip(rows, subset) if len(r.groundings[0].boxes) == 1]
        several = [row for row, r in zip(rows, subset) if len(r.groundings[0].boxes) > 1]
        for row, r in zip(rows, subset):
            if len(r.groundings[0].boxes) == 1:
                by_structure.setdefault(_structure(r), []).append({**row, "size": _size_class(r)})
        scores = {key: _mean(single, key) for key in ("acc@0.25", "acc@0.5", "acc@0.75", "miou")}
        scores["multi_region_f1"] = _mean(several, "region_f1")
        by_lang[lang] = {**scores, "single_region_samples": len(single), "multi_region_samples": len(several)}
        predictions += list(zip(subset, answers))
    negative_rows: dict[str, list[dict]] = {}
    for lang in ("en", "zh"):
        subset = [r for r in load_records(negatives) if r.lang == lang and r.meta.get("absent") and not r.groundings]
        if subset:
            answers = assistant.detect_many([r.images[0] for r in subset], [r.meta["absent"][0] for r in subset], lang=lang, per_image=True, progress=progress)
            for r, a in zip(subset, answers):
                row = score_prediction(_prediction_line(r, a), r)
                negative_rows.setdefault(lang, []).append({**row, "boxed": a.found, "structure": _ENGLISH.get(r.meta["absent"][0], r.meta["absent"][0])})
    eval_seconds = time.perf_counter() - start
    every_negative = [row for rows in negative_rows.values() for row in rows]

    def _negative_summary(rows: list[dict]) -> dict:
        return {
            "not_found_rate": round(_mean(rows, "negative_accuracy") or 0.0, 4),
            "boxed_rate": round(sum(row["boxed"] for row in rows) / len(rows), 4) if rows else 0.0,
            "samples": len(rows),
        }
    n = {lang: by_lang[lang]["single_region_samples"] for lang in by_lang}
    total = sum(n.values())
    overall = {key: sum(by_lang[lang][key] * n[lang] for lang in by_lang) / total for key in ("acc@0.25", "acc@0.5", "acc@0.75", "miou")}

    panels = []
    for record, answer in predictions[:: max(1, len(predictions) // 8)][:8]:
        truth = record.groundings[0]
        shown = [Grounding(f"true: {truth.phrase}", truth.boxes)]
        shown += [Grounding(f"predicted: {g.phrase}", g.boxes) for g in answer.groundings]
        panels.append(draw_groundings(Image.open(record.images[0]).convert("RGB"), shown, min_size=256))
    _panel_grid(panels).save(out / "grounding.png")

    from pydicom.data import get_testdata_file

    dicom_path = get_testdata_file("CT_small.dcm")
    real = assistant.detect(dicom_path, ["nodule", "liver"])
    real.show(display=False).save(out / "dicom.png")

    metrics = {
        "data": "synthetic phantoms (not patient data); held-out phantoms use a different seed",
        "grounding_acc@0.5": round(overall["acc@0.5"], 4),
        "grounding_acc@0.25": round(overall["acc@0.25"], 4),
        "grounding_acc@0.75": round(overall["acc@0.75"], 4),
        "mean_iou": round(overall["miou"], 4),
        "by_structure": {
            name: {
                "size": Counter(row["size"] for row in rows).most_common(1)[0][0],
                "acc@0.5": round(_mean(rows, "acc@0.5"), 4),
                "mean_iou": round(_mean(rows, "miou"), 4),
                "samples": len(rows),
            }
            for name, rows in sorted(by_structure.items())
        },
        "by_language": {lang: {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()} for lang, scores in by_lang.items()},
        "negatives": {
            **_negative_summary(every_negative),
            "by_language": {lang: _negative_summary(rows) for lang, rows in sorted(negative_rows.items())},
            "by_structure": {
                name: _negative_summary([row for row in every_negative if row["structure"] == name])
                for name in sorted({row["structure"] for row in every_negative})
            },
            "note": "held-out queries for a structure the phantom lacks (nodule, liver lesion); not_found_rate: "
            "share answered 'not found' without a box (the scorer's negative_accuracy); boxed_rate: share that drew a box",
        },
        "metric_note": "scored by medrega eval's detection scorer: grounding_acc@t and mean_iou over single-region "
        "queries (one true box); queries whose structure has several regions (two nodules) report the region F1 "
        "in by_language.*.multi_region_f1",
        "heldout_samples": len(records),
        "single_region_samples": total,
        "train_steps": result.last_step,
        "train_batch_size": batch_size,
        "train_seconds": round(result.seconds, 1),
        "train_samples_per_second": round(result.samples_per_second, 1),
        "final_loss": round(result.losses[result.last_step], 4),
        "eval_seconds": round(eval_seconds, 1),
        "skipped_samples": result.skipped,
        "model_dir": str(model_dir),
        "real_dicom": {"file": Path(dicom_path).name, "query": ["nodule", "liver"], "output": real.raw_text, "boxes": [g.to_dict() for g in real.groundings]},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False), encoding="utf-8")
    return metrics
