"""The results table and the optional metrics' clear refusals."""

import json
import shutil

import pytest

from medrega.metrics import (
    MetricUnavailable,
    bertscore,
    bleu_scores,
    chexbert_f1,
    macro_f1,
    meteor,
    radgraph_f1,
    summarize,
    vqa_scores,
)


def _rows():
    rows = [
        {"task": "vqa", "lang": "en", "dataset": "vqa-rad", "metrics": vqa_scores("yes", "yes", closed=True)},
        {"task": "vqa", "lang": "zh", "dataset": "pmc-vqa-zh", "metrics": vqa_scores("没有", "是", closed=True)},
        {"task": "vqa", "lang": "en", "dataset": "vqa-rad", "metrics": vqa_scores("left lobe", "left lung", closed=False)},
        {"task": "report", "lang": "en", "prediction": "the heart is normal in size", "reference": "the heart is normal in size"},
        {"task": "report", "lang": "en", "prediction": "no pleural effusion is seen", "reference": ["no effusion", "there is no pleural effusion"]},
        {"task": "report", "lang": "zh", "prediction": "双肺纹理清晰，心影不大。", "reference": "双肺纹理清晰，心影大小正常。"},
    ]
    for i, (pred, gold) in enumerate([("A", "A"), ("B", "A"), (None, "C"), ("C", "C")]):
        rows.append({"task": "classification", "triplet": ("CT", "chest", "lesion" if i < 2 else "organ"), "pred_label": pred, "label": gold})
    rows.append({"task": "choice", "ability": "temporal", "metrics": {"accuracy": 1.0}})
    rows.append({"task": "choice", "ability": "comparison", "metrics": {"accuracy": 0.0}})
    rows.append({"task": "detection", "modality": "X-ray", "detections": [((0, 0, 10, 10), 0.9, "nodule")], "objects": [((0, 0, 10, 10), "nodule")]})
    return rows


def test_summarize_groups_and_recomputes_corpus_metrics():
    rows = _rows()
    table = summarize(rows)
    by = {(r["task"], r["by"], r["group"]): r for r in table.rows}
    assert by[("vqa", "all", "all")]["n"] == 3
    assert by[("vqa", "all", "all")]["closed_accuracy"] == pytest.approx(0.5)  # the open row has no closed score
    assert by[("vqa", "lang", "zh")]["closed_accuracy"] == 0.0
    assert by[("vqa", "dataset", "vqa-rad")]["open_recall"] == pytest.approx(0.5)
    english = [r for r in rows if r["task"] == "report" and r["lang"] == "en"]
    expected = bleu_scores([r["prediction"] for r in english], [r["reference"] for r in english])
    assert by[("report", "lang", "en")]["bleu4"] == pytest.approx(expected["bleu4"])
    assert by[("report", "lang", "zh")]["rouge_l"] > 0.5
    assert by[("classification", "all", "all")]["macro_f1"] == pytest.approx(macro_f1(["A", "B", None, "C"], ["A", "A", "C", "C"]))
    assert by[("classification", "triplet", "CT/chest/organ")]["accuracy"] == pytest.approx(0.5)
    assert by[("choice", "ability", "temporal")]["accuracy"] == 1.0
    assert by[("detection", "triplet", "X-ray/-/-")]["AP"] == pytest.approx(1.0)
    assert table.columns[:2] == ["closed_accuracy", "open_recall"]


def test_summary_renders_markdown_and_json():
    table = summarize(_rows())
    md = table.to_markdown(digits=3).splitlines()
    assert md[0].startswith("| task | by | group | n | closed_accuracy |")
    assert len(md) == len(table.rows) + 2
    assert all(line.count("|") == md[0].count("|") for line in md)
    assert "| report | lang | zh | 1 |" in "\n".join(md)
    data = json.loads(table.to_json())
    assert data["columns"] == table.columns and len(data["rows"]) == len(table.rows)
    with pytest.raises(ValueError, match="no 'task'"):
        summarize([{"metrics": {}}])


def test_optional_metrics_say_what_is_missing(monkeypatch):
    for metric, args, package in [
        (bertscore, (["a"], ["a"]), "bert-score"),
        (radgraph_f1, (["a"], ["a"]), "radgraph"),
        (chexbert_f1, (["a"], ["a"]), "f1chexbert"),
    ]:
        try:
            __import__(package.replace("-", "_"))
        except ImportError:
            with pytest.raises(MetricUnavailable, match=f"pip install {package}"):
                metric(*args)
    import pycocoevalcap  # noqa: F401  (a dev dependency: fail, do not skip, when it is missing)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MetricUnavailable, match="java"):
        meteor(["a"], ["a"])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_runs_with_java():
    import pycocoevalcap  # noqa: F401  (a dev dependency: fail, do not skip, when it is missing)
    preds = ["the heart is normal in size", "a large left pleural effusion", "左肺可见结节"]
    refs = ["heart size is normal", "there is no pleural effusion", "左肺上叶可见结节"]
    score = meteor(preds, refs, lang=["en", "en", "zh"])
    assert 0.1 < score < 1.0
