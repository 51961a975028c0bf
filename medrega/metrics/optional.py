"""Optional report metrics that need Java, extra packages or model weights.

Each function either returns a real score or raises :class:`MetricUnavailable` saying what is
missing (Java not on PATH, a package not installed, weights not available offline). None of them
downloads anything by itself when the machine is offline, and none returns a placeholder number.

* ``meteor``: pycocoevalcap's METEOR 1.5 (``pip install pycocoevalcap``, Java on PATH). Texts are
  tokenised with :func:`~medrega.metrics.text.tokenize` first; for Chinese, METEOR's English stemmer
  and synonyms do not apply, so only exact jieba-word matches count.
* ``bertscore``: ``bert-score`` with a model already in the Hugging Face cache.
* ``radgraph_f1``: the ``radgraph`` package (RadGraph partial-reward F1); weights from its cache.
* ``chexbert_f1``: the ``f1chexbert`` package (CheXbert label F1, 14 and 5 observations).
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Sequence

from medrega.metrics.text import tokenize_corpus

__all__ = ["MetricUnavailable", "meteor", "bertscore", "radgraph_f1", "chexbert_f1"]

BERTSCORE_MODELS = {"en": "roberta-large", "zh": "bert-base-chinese"}


class MetricUnavailable(RuntimeError):
    """An optional metric cannot run here; the message says what is missing."""


def _require(module: str, pip_name: str, metric: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MetricUnavailable(f"{metric} needs the package {pip_name!r}, which is not installed (pip install {pip_name})") from err


def _single_refs(references: Sequence[str | Sequence[str]], metric: str) -> list[str]:
    out = []
    for i, ref in enumerate(references):
        if isinstance(ref, str):
            out.append(ref)
        elif len(ref) == 1:
            out.append(ref[0])
        else:
            raise ValueError(f"{metric} takes one reference per sample; sample {i} has {len(ref)}")
    return out


def meteor(predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str | Sequence[str] = "en") -> float:
    """Corpus METEOR (pycocoevalcap, METEOR 1.5, ``-l en -norm``) in ``[0, 1]``.

    Args:
        predictions: one generated text per sample.
        references: one reference text, or a list of them, per sample.
        lang: ``"en"``, ``"zh"``, or one of them per sample.

    Raises:
        MetricUnavailable: pycocoevalcap is not installed or ``java`` is not on PATH.
    """
    _require("pycocoevalcap", "pycocoevalcap", "METEOR")
    if shutil.which("java") is None:
        raise MetricUnavailable("METEOR runs a Java jar, but no 'java' executable is on PATH (install a JRE >= 8)")
    from pycocoevalcap.meteor.meteor import Meteor

    hyps, refs = tokenize_corpus(predictions, references, lang)
    if not hyps:
        return 0.0
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    except ValueError as err:  # the jar exited and answered nothing
        stderr = scorer.meteor_p.stderr.read().decode(errors="replace")[-500:]
        raise MetricUnavailable(f"the METEOR jar failed under this Java: {stderr}") from err
    return float(score)


def bertscore(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str = "en", model_type: str | None = None
) -> dict[str, float]:
    """Mean BERTScore precision, recall and F1 (``bert-score``, no baseline rescaling).

    Args:
        predictions: one generated text per sample.
        references: one reference text per sample.
        lang: ``"en"`` or ``"zh"``; picks the default model.
        model_type: a Hugging Face model id overriding the default (``roberta-large`` / ``bert-base-chinese``).

    Raises:
        MetricUnavailable: ``bert-score`` is not installed or the model is not in the local cache.
    """
    bert_score = _require("bert_score", "bert-score", "BERTScore")
    from huggingface_hub import try_to_load_from_cache

    model = model_type or BERTSCORE_MODELS[lang]
    if not isinstance(try_to_load_from_cache(model, "config.json"), str):
        raise MetricUnavailable(f"BERTScore needs the weights of {model!r}, which are not in the local Hugging Face cache")
    p, r, f = bert_score.score(list(predictions), _single_refs(references, "BERTScore"), model_type=model, lang=lang, verbose=False)
    return {"bertscore_precision": float(p.mean()), "bertscore_recall": float(r.mean()), "bertscore_f1": float(f.mean())}


def radgraph_f1(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """RadGraph F1 (partial reward) of English chest X-ray reports.

    Args:
        predictions: one generated report per sample.
        references: one reference report per sample.

    Raises:
        MetricUnavailable: ``radgraph`` is not installed or its weights cannot be loaded.
    """
    radgraph = _require("radgraph", "radgraph", "RadGraph F1")
    try:
        scorer = radgraph.F1RadGraph(reward_level="partial")
    except (OSError, ValueError) as err:
        raise MetricUnavailable(f"RadGraph F1 needs the RadGraph weights, which could not be loaded: {err}") from err
    mean_reward, *_ = scorer(hyps=list(predictions), refs=_single_refs(references, "RadGraph F1"))
    return float(mean_reward)


def chexbert_f1(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """CheXbert label F1 of English chest X-ray reports: micro / macro over 14 and over 5 observations.

    Args:
        predictions: one generated report per sample.
        references: one reference report per sample.

    Raises:
        MetricUnavailable: ``f1chexbert`` is not installed or its weights cannot be loaded.
    """
    f1chexbert = _require("f1chexbert", "f1chexbert", "CheXbert F1")
    try:
        scorer = f1chexbert.F1CheXbert(device="cpu")
    except (OSError, ValueError) as err:
        raise MetricUnavailable(f"CheXbert F1 needs the CheXbert weights, which could not be loaded: {err}") from err
    _, _, report14, report5 = scorer(hyps=list(predictions), refs=_single_refs(references, "CheXbert F1"))
    return {
        "chexbert_micro_f1_14": float(report14["micro avg"]["f1-score"]),
        "chexbert_macro_f1_14": float(report14["macro avg"]["f1-score"]),
        "chexbert_micro_f1_5": float(report5["micro avg"]["f1-score"]),
        "chexbert_macro_f1_5": float(report5["macro avg"]["f1-score"]),
    }
