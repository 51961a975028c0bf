"""Text metrics against nltk, sacrebleu, rouge-score and pycocoevalcap, on real IU X-Ray reports."""

import math
import os
import re
import tarfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrega.metrics import bleu, bleu_scores, cider, rouge_l, rouge_l_scores, text_metrics, tokenize
from medrega.metrics.text import _lcs_length

_SECTION = re.compile(r'<AbstractText Label="(FINDINGS|IMPRESSION)">(.*?)</AbstractText>', re.S)


def read_iu_xray_reports(limit: int | None = None) -> list[dict[str, str]]:
    """FINDINGS / IMPRESSION of the IU X-Ray reports shipped in torchxrayvision (reports with both)."""
    import torchxrayvision

    path = os.path.join(os.path.dirname(torchxrayvision.__file__), "data", "NLMCXR_reports.tgz")
    out = []
    with tarfile.open(path) as tf:
        for member in tf:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            sections = dict(_SECTION.findall(tf.extractfile(member).read().decode("utf-8")))
            if sections.get("FINDINGS", "").strip() and sections.get("IMPRESSION", "").strip():
                out.append({"findings": sections["FINDINGS"].strip(), "impression": sections["IMPRESSION"].strip()})
            if limit is not None and len(out) >= limit:
                break
    return out


@pytest.fixture(scope="module")
def iu_corpus():
    """A retrieval baseline on 300 real reports: each prediction is the next report's findings."""
    reports = read_iu_xray_reports(limit=301)
    assert len(reports) == 301
    preds = [r["findings"] for r in reports[1:]]
    refs = [r["findings"] for r in reports[:-1]]
    multi = [[r["findings"], r["impression"]] for r in reports[:-1]]
    return preds, refs, multi


def test_tokenize_follows_rouge_score_and_keeps_chinese():
    from rouge_score import tokenize as rs_tokenize

    text = "Heart size is NORMAL; no effusion (3.5 cm) x-XXXX."
    assert tokenize(text) == rs_tokenize.tokenize(text, None)
    assert tokenize("左肺上叶可见结节，心影不大。", "zh") == ["左肺", "上叶", "可见", "结节", "心影", "不大"]
    with pytest.raises(ValueError, match="lang"):
        tokenize("x", "fr")


def test_bleu_matches_nltk_and_sacrebleu_on_iu_xray(iu_corpus):
    from nltk.translate.bleu_score import corpus_bleu
    from sacrebleu.metrics import BLEU

    preds, refs, multi = iu_corpus
    hyp_tok = [tokenize(p) for p in preds]
    ours = bleu_scores(preds, refs)
    ours_multi = bleu_scores(preds, multi)
    for n in range(1, 5):
        weights = (1 / n,) * n
        nltk_single = corpus_bleu([[tokenize(r)] for r in refs], hyp_tok, weights=weights)
        nltk_multi = corpus_bleu([[tokenize(r) for r in rs] for rs in multi], hyp_tok, weights=weights)
        sacre = BLEU(tokenize="none", smooth_method="none", max_ngram_order=n, effective_order=False).corpus_score(
            [" ".join(h) for h in hyp_tok], [[" ".join(tokenize(r)) for r in refs]]
        )
        assert ours[f"bleu{n}"] == pytest.approx(nltk_single, abs=1e-6)
        assert ours[f"bleu{n}"] == pytest.approx(sacre.score / 100, abs=1e-6)
        assert ours_multi[f"bleu{n}"] == pytest.approx(nltk_multi, abs=1e-6)
    assert 0.05 < ours["bleu4"] < ours["bleu1"] < 1.0
    assert bleu(preds, refs, n=2) == ours["bleu2"]


def test_bleu_without_matching_ngrams_is_zero_like_nltk():
    from nltk.translate.bleu_score import corpus_bleu

    preds, refs = ["heart normal lungs clear"], ["lungs normal heart clear"]  # no 3-gram in common
    expected = corpus_bleu([[tokenize(refs[0])]], [tokenize(preds[0])])
    assert bleu(preds, refs) == pytest.approx(expected, abs=1e-12) == pytest.approx(0.0)
    assert bleu(["a"], [["b"]], n=1) == 0.0
    assert bleu([""], ["heart"]) == 0.0


def test_bleu_and_cider_match_pycocoevalcap(iu_corpus):
    import pycocoevalcap  # noqa: F401  (a dev dependency: fail, do not skip, when it is missing)
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    preds, _, multi = iu_corpus
    res = {i: [" ".join(tokenize(p))] for i, p in enumerate(preds)}
    gts = {i: [" ".join(tokenize(r)) for r in rs] for i, rs in enumerate(multi)}
    coco_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    coco_cider, _ = Cider().compute_score(gts, res)
    ours = text_metrics(preds, multi)
    for n in range(1, 5):
        assert ours[f"bleu{n}"] == pytest.approx(coco_bleu[n - 1], abs=1e-6)
    assert ours["cider"] == pytest.approx(coco_cider, abs=1e-6)
    assert ours["cider"] > 0.05


def test_rouge_l_matches_rouge_score_on_iu_xray(iu_corpus):
    from rouge_score import rouge_scorer

    preds, refs, multi = iu_corpus
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]
    np.testing.assert_allclose(rouge_l_scores(preds, refs), expected, atol=1e-9)
    assert rouge_l(preds, refs) == pytest.approx(float(np.mean(expected)), abs=1e-9)
    expected_multi = [scorer.score_multi(rs, p)["rougeL"].fmeasure for p, rs in zip(preds, multi)]
    np.testing.assert_allclose(rouge_l_scores(preds, multi), expected_multi, atol=1e-9)


def test_chinese_rouge_l_hand_checked_and_not_rouge_1():
    from rouge_score import rouge_scorer

    # pred [左肺, 可见, 结节], ref [左肺, 上叶, 可见, 结节]: LCS 3, P = 1, R = 3/4, F = 6/7
    assert rouge_l(["左肺可见结节"], ["左肺上叶可见结节"], lang="zh") == pytest.approx(6 / 7)
    # the reversed words share every unigram (ROUGE-1 = 1) but only one in order: LCS 1 -> F = 1/3
    assert rouge_l(["结节可见左肺"], ["左肺可见结节"], lang="zh") == pytest.approx(1 / 3)
    # rouge-score's default tokenizer deletes every Chinese character; ours does not
    assert rouge_scorer.RougeScorer(["rougeL"]).score("左肺上叶可见结节", "左肺可见结节")["rougeL"].fmeasure == 0.0

    class Jieba:
        def tokenize(self, text):
            return tokenize(text, "zh")

    with_jieba = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Jieba())
    assert with_jieba.score("左肺上叶可见结节", "左肺可见结节")["rougeL"].fmeasure == pytest.approx(6 / 7)


def test_chinese_bleu_matches_nltk_on_jieba_tokens():
    from nltk.translate.bleu_score import corpus_bleu

    preds = ["双肺纹理清晰，心影大小正常。", "右肺下叶见斑片状高密度影。"]
    refs = ["双肺纹理清晰，心影不大。", "右肺下叶见斑片状模糊影。"]
    expected = corpus_bleu([[tokenize(r, "zh")] for r in refs], [tokenize(p, "zh") for p in preds], weights=(0.5, 0.5))
    assert bleu(preds, refs, n=2, lang="zh") == pytest.approx(expected, abs=1e-9)
    assert expected > 0.3


def test_cider_hand_checked():
    refs = ["a b c d e", "f g h i j"]
    # every n-gram has df 1 of 2 samples: idf = log 2; an exact copy scores 10, no overlap scores 0
    assert cider(["a b c d e", "a b"], refs) == pytest.approx(5.0)
    # "a b c" vs "a b c d e": cosines 3/sqrt(15), 2/sqrt(8), 1/sqrt(3), 0; bigram lengths 2 vs 4
    first = 10 * math.exp(-4 / 72) * (3 / math.sqrt(15) + 2 / math.sqrt(8) + 1 / math.sqrt(3)) / 4
    assert cider(["a b c", "f g h i j"], refs) == pytest.approx((first + 10) / 2)
    assert cider(["a b c"], ["a b c"]) == 0.0  # one sample: every idf is log(1/1) = 0


def test_mixed_language_corpus_and_errors():
    preds, refs = ["the heart is normal", "左肺可见结节"], ["the heart is normal", "左肺上叶可见结节"]
    out = text_metrics(preds, refs, lang=["en", "zh"])
    # 4 + 3 predicted unigrams all match; hypothesis 7 tokens, references 4 + 4: BP = exp(1 - 8/7)
    assert out["bleu1"] == pytest.approx(math.exp(1 - 8 / 7))
    assert out["rouge_l"] == pytest.approx((1 + 6 / 7) / 2)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no reference"):
        rouge_l(["a"], [[]])
    with pytest.raises(TypeError):
        bleu("a b", "a b")


def _lcs_dp(a, b):
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1, j + 1] = table[i, j] + 1 if x == y else max(table[i, j + 1], table[i + 1, j])
    return int(table[-1, -1])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=30), st.lists(st.sampled_from("abcd"), max_size=30))
def test_bit_parallel_lcs_equals_dynamic_programming(a, b):
    assert _lcs_length(a, b) == _lcs_dp(a, b) == _lcs_length(b, a)
