"""Benchmark evaluation: ``medrega eval`` and :func:`run_benchmark`.

* :mod:`~medrega.evaluation.benchmarks`: benchmark files (medrega, MedRegA, Med-MAT, Med-MIM) -> samples;
  :func:`infer_task` for records that name no task.
* :mod:`~medrega.evaluation.predict`: batched, resumable generation into a predictions JSONL.
* :mod:`~medrega.evaluation.scoring`: per-sample scores by task (all from :mod:`medrega.metrics`).
* :mod:`~medrega.evaluation.config`: :class:`EvalConfig`, read from ``eval/configs/*.yaml``.
* :mod:`~medrega.evaluation.runner`: :func:`run_benchmark`, the whole pipeline up to ``metrics.md`` / ``metrics.json``.
"""

from medrega.evaluation.benchmarks import BenchmarkFile, Sample, infer_task, load_benchmark, load_benchmarks
from medrega.evaluation.config import EvalConfig, load_eval_config
from medrega.evaluation.predict import predict, read_predictions
from medrega.evaluation.runner import PREDICTIONS, load_model, run_benchmark
from medrega.evaluation.scoring import score_prediction, score_predictions

__all__ = [
    "PREDICTIONS",
    "BenchmarkFile",
    "EvalConfig",
    "Sample",
    "infer_task",
    "load_benchmark",
    "load_benchmarks",
    "load_eval_config",
    "load_model",
    "predict",
    "read_predictions",
    "run_benchmark",
    "score_prediction",
    "score_predictions",
]
