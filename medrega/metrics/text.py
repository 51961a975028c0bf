"""Text metrics for report generation: tokenisation, corpus BLEU-1..4, ROUGE-L and CIDEr-D.

Design choices:

* **Tokenisation** (``tokenize``) is shared by every n-gram metric. English follows rouge-score's
  default tokenizer exactly (lowercase, every run of characters outside ``[a-z0-9]`` is a separator,
  no stemming). Chinese is segmented with jieba and keeps every token holding a letter, digit or CJK
  character (punctuation is dropped, Chinese characters never are). ``lang`` may be one language for
  the corpus or one per sample.
* **BLEU** is corpus BLEU (Papineni et al.): clipped n-gram counts and lengths are summed over the
  corpus, the brevity penalty uses the closest reference length (the shorter on ties), BLEU-n is the
  geometric mean of precisions 1..n with uniform weights. No smoothing: a corpus with no matching
  n-gram of some order scores 0 (nltk ``corpus_bleu`` without a smoothing function, sacrebleu with
  ``smooth_method="none"``, and pycocoevalcap up to its 1e-9 guard terms give the same numbers).
* **ROUGE-L** is rouge-score's sentence-level ``rougeL``: LCS precision / recall, F-measure with
  beta = 1; with several references, the best F-measure (rouge-score's ``score_multi``). The LCS is
  the bit-parallel algorithm of Hyyrö (2004): one big-integer update per predicted token.
* **CIDEr** is pycocoevalcap's CIDEr-D: TF-IDF n-gram vectors (n = 1..4) with document frequencies
  from the references of the evaluated corpus, hypothesis counts clipped by the reference's, a
  Gaussian length penalty (sigma = 6, length = number of bigrams, as pycocoevalcap counts it), mean
  over orders and references, times 10.
* **Speed**: n-grams get integer ids with one ``np.unique`` per order over the whole corpus, and
  BLEU's clipped counts and CIDEr's TF-IDF cosines are sparse-matrix operations (no per-n-gram Python).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence

import numpy as np
from scipy import sparse

__all__ = ["LANGS", "tokenize", "bleu", "bleu_scores", "rouge_l", "rouge_l_scores", "cider", "text_metrics", "text_metrics_tokens", "tokenize_corpus"]

LANGS = ("en", "zh")
_EN_SEPARATOR = re.compile(r"[^a-z0-9]+")
_WORD = re.compile(r"\w")

Tokens = list[str]


def _check_lang(lang: str) -> str:
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    return lang


def tokenize(text: str, lang: str = "en") -> Tokens:
    """Split a text into the tokens every n-gram metric uses.

    Args:
        text: the text.
        lang: ``"en"`` (rouge-score's rules: lowercase, ``[a-z0-9]+`` runs) or ``"zh"`` (jieba words,
            lowercased, punctuation and spaces dropped, CJK characters kept).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if _check_lang(lang) == "en":
        return _EN_SEPARATOR.sub(" ", text.lower()).split()
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [tok.strip() for tok in jieba.lcut(text.lower()) if _WORD.search(tok)]


def _langs(lang: str | Sequence[str], n: int) -> list[str]:
    if isinstance(lang, str):
        return [_check_lang(lang)] * n
    langs = [_check_lang(x) for x in lang]
    if len(langs) != n:
        raise ValueError(f"got {len(langs)} languages for {n} samples")
    return langs


def tokenize_corpus(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str | Sequence[str] = "en"
) -> tuple[list[Tokens], list[list[Tokens]]]:
    """Tokenised predictions and reference lists, checked for matching lengths.

    Args:
        predictions: one generated text per sample.
        references: one reference text, or a list of them, per sample.
        lang: ``"en"``, ``"zh"``, or one of them per sample.

    Returns:
        ``(hyps, refs)``: a token list per prediction and a list of token lists per sample.
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of texts, not a single str")
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    langs = _langs(lang, len(predictions))
    hyps, refs = [], []
    for i, (pred, ref, lg) in enumerate(zip(predictions, references, langs)):
        ref_list = [ref] if isinstance(ref, str) else list(ref)
        if not ref_list:
            raise ValueError(f"sample {i} has no reference")
        hyps.append(tokenize(pred, lg))
        refs.append([tokenize(r, lg) for r in ref_list])
    return hyps, refs


class _Corpus:
    """A tokenised corpus as sparse n-gram count matrices shared by BLEU and CIDEr.

    Rows ``0..n-1`` of each matrix are the predictions, the rest the references in sample order;
    ``owner[j]`` is the sample of reference ``j`` and ``slot[j]`` its position among that sample's references.
    """

    def __init__(self, hyps: list[Tokens], refs: list[list[Tokens]], max_n: int):
        self.hyps, self.flat_refs = hyps, [r for rs in refs for r in rs]
        self.n = len(hyps)
        counts = np.array([len(rs) for rs in refs], dtype=np.int64)
        self.owner = np.repeat(np.arange(self.n), counts)  # (num_refs,)
        self.slot = np.arange(len(self.owner)) - np.repeat(np.cumsum(counts) - counts, counts)  # (num_refs,)
        self.closest_ref_len = sum(_closest_length(len(h), [len(r) for r in rs]) for h, rs in zip(hyps, refs))
        self.matrices = _ngram_matrices(hyps + self.flat_refs, max_n)


def _closest_length(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length closest to the prediction's, the shorter on ties."""
    return min(ref_lens, key=lambda length: (abs(length - hyp_len), length))


def _ngram_matrices(sentences: list[Tokens], max_n: int) -> list[sparse.csr_matrix]:
    """Per order k = 1..max_n, the ``(num_sentences, num_kgram_ids)`` sparse count matrix.

    Tokens become integer ids; the id of the k-gram starting at each position is a compact id of
    (id of its (k-1)-gram prefix, its last token), so every order costs one ``np.unique``.
    """
    vocab: dict[str, int] = {}
    flat = np.fromiter((vocab.setdefault(t, len(vocab)) for s in sentences for t in s), dtype=np.int64)
    owner = np.repeat(np.arange(len(sentences)), [len(s) for s in sentences])  # (num_tokens,) sentence of each token
    gram = flat  # (num_tokens - k + 1,) id of the k-gram starting at each position
    out = []
    for k in range(1, max_n + 1):
        n_start = max(len(flat) - k + 1, 0)
        if k > 1:
            _, gram = np.unique(gram[:n_start] * (len(vocab) + 1) + flat[k - 1 :], return_inverse=True)
        inside = owner[:n_start] == owner[k - 1 :]  # the k-gram does not cross a sentence end
        width = int(gram.max()) + 1 if gram.size else 0
        rows, cols = owner[:n_start][inside], gram.reshape(-1)[inside]
        out.append(sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(sentences), width)))
    return out


# -- BLEU -------------------------------------------------------------------------------------------
def _bleu_corpus(corpus: _Corpus, max_n: int) -> list[float]:
    """Corpus BLEU-1..max_n."""
    n = corpus.n
    hyp_len = sum(len(h) for h in corpus.hyps)
    if hyp_len == 0:
        return [0.0] * max_n
    matches, totals = np.zeros(max_n), np.zeros(max_n)
    for k in range(1, max_n + 1):
        counts = corpus.matrices[k - 1]
        best = sparse.csr_matrix((n, counts.shape[1]))  # (samples, kgrams): max count over each sample's references
        for j in range(int(corpus.slot.max()) + 1 if corpus.slot.size else 0):
            refs = np.flatnonzero(corpus.slot == j)
            place = sparse.csr_matrix((np.ones(len(refs)), (corpus.owner[refs], n + refs)), shape=(n, counts.shape[0]))
            best = best.maximum(place @ counts)
        matches[k - 1] = counts[:n].minimum(best).sum()
        totals[k - 1] = sum(max(len(h) - k + 1, 0) for h in corpus.hyps)
    ref_len = corpus.closest_ref_len
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    log_p = np.log(np.divide(matches, totals, out=np.zeros(max_n), where=totals > 0), where=matches > 0, out=np.full(max_n, -np.inf))
    cumulative = np.cumsum(log_p) / np.arange(1, max_n + 1)  # mean log-precision of orders 1..n
    return [float(bp * math.exp(c)) if np.isfinite(c) else 0.0 for c in cumulative]


def bleu_scores(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], max_n: int = 4, lang: str | Sequence[str] = "en"
) -> dict[str, float]:
    """Corpus BLEU-1..``max_n`` in ``[0, 1]``: ``{"bleu1": ..., "bleu4": ...}``.

    Args:
        predictions: one generated text per sample.
        references: one reference text, or a list of them, per sample.
        max_n: the highest n-gram order.
        lang: ``"en"``, ``"zh"``, or one of them per sample.
    """
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    hyps, refs = tokenize_corpus(predictions, references, lang)
    return {f"bleu{k}": v for k, v in enumerate(_bleu_corpus(_Corpus(hyps, refs, max_n), max_n), start=1)}


def bleu(predictions: Sequence[str], references: Sequence[str | Sequence[str]], n: int = 4, lang: str | Sequence[str] = "en") -> float:
    """Corpus BLEU-``n`` in ``[0, 1]`` (uniform weights over orders 1..n, no smoothing).

    Args:
        predictions: one generated text per sample.
        references: one reference text, or a list of them, per sample.
        n: the highest n-gram order.
        lang: ``"en"``, ``"zh"``, or one of them per sample.
    """
    return bleu_scores(predictions, references, n, lang)[f"bleu{n}"]


# -- ROUGE-L ----------------------------------------------------------------------------------------
def _lcs_length(a: Tokens, b: Tokens) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): bit i of ``v`` tracks ``a[i]``."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def _rouge_l_pair(hyp: Tokens, ref: Tokens) -> float:
    lcs = _lcs_length(ref, hyp)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l_scores(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str | Sequence[str] = "en"
) -> list[float]:
    """ROUGE-L F-measure of each sample (best over its references), each in ``[0, 1]``.

    Args:
        predictions: one generated text per sample.
        references: one reference text, or a list of them, per sample.
        lang: ``"en"``, ``"zh"``, or one of them per sample.
    """
    hyps, refs = tokenize_corpus(predictions, references, lang)
    return [max(_rouge_l_pair(h, r) for r in rs) for h, rs in zip(hyps, refs)]


def rouge_l(predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str | Sequence[str] = "en") -> float:
    """Mean ROUGE-L F-measure in ``[0, 1]`` (rouge-score's ``rougeL``; 0.0 for an empty corpus).

    Args:
        predictions: one generated text per sample.
        references: one reference text, or a list of them, per sample.
        lang: ``"en"``, ``"zh"``, or one of them per sample.
    """
    scores = rouge_l_scores(predictions, references, lang)
    return float(np.mean(scores)) if scores else 0.0


# -- CIDEr-D ----------------------------------------------------------------------------------------
def _cider_corpus(corpus: _Corpus, sigma: float = 6.0) -> np.ndarray:
    """CIDEr-D of each sample over orders 1..4, shape ``(num_samples,)``."""
    n, owner = corpus.n, corpus.owner
    max_n = 4
    scores = np.zeros((len(owner), max_n))  # (num_refs, orders)
    group = sparse.csr_matrix((np.ones(len(owner)), (owner, np.arange(len(owner)))), shape=(n, len(owner)))
    for k in range(1, max_n + 1):
        counts = corpus.matrices[k - 1]
        hyp_m, ref_m = counts[:n], counts[n:]
        # document frequency: number of samples whose references hold the n-gram
        df = np.asarray(((group @ (ref_m > 0)) > 0).sum(axis=0)).ravel()
        idf = sparse.diags(np.log(float(n)) - np.log(np.maximum(df, 1.0)))
        hyp_v = (hyp_m @ idf).tocsr()[owner]  # (num_refs, kgrams): each reference's prediction
        ref_v = (ref_m @ idf).tocsr()
        dot = np.asarray(hyp_v.minimum(ref_v).multiply(ref_v).sum(axis=1)).ravel()
        norms = np.sqrt(np.asarray(hyp_v.multiply(hyp_v).sum(axis=1)).ravel() * np.asarray(ref_v.multiply(ref_v).sum(axis=1)).ravel())
        scores[:, k - 1] = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    hyp_len = np.array([max(len(h) - 1, 0) for h in corpus.hyps], dtype=float)[owner]  # bigram counts
    ref_len = np.array([max(len(r) - 1, 0) for r in corpus.flat_refs], dtype=float)
    per_ref = scores.mean(axis=1) * np.exp(-((hyp_len - ref_len) ** 2) / (2 * sigma**2)) * 10.0
    return np.bincount(owner, weights=per_ref, minlength=n) / np.bincount(owner, minlength=n)


def cider(predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str | Sequence[str] = "en") -> float:
    """Corpus CIDEr-D (pycocoevalcap's ``Cider``): mean over samples, 0..10 scale (0.0 for an empty corpus).

    Document frequencies come from the references of this corpus, so one sample alone always scores 0.

    Args:
        predictions: one generated text per sample.
        references: one reference text, or a list of them, per sample.
        lang: ``"en"``, ``"zh"``, or one of them per sample.
    """
    hyps, refs = tokenize_corpus(predictions, references, lang)
    return float(_cider_corpus(_Corpus(hyps, refs, 4)).mean()) if hyps else 0.0


def text_metrics(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str | Sequence[str] = "en"
) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr of a corpus, tokenised once.

    Args:
        predictions: one generated text per sample.
        references: one reference text, or a list of them, per sample.
        lang: ``"en"``, ``"zh"``, or one of them per sample.

    Returns:
        ``{"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"}``.
    """
    return text_metrics_tokens(*tokenize_corpus(predictions, references, lang))


def text_metrics_tokens(hyps: list[Tokens], refs: list[list[Tokens]]) -> dict[str, float]:
    """:func:`text_metrics` of a corpus already tokenised by :func:`tokenize_corpus`."""
    if not hyps:
        return {**{f"bleu{k}": 0.0 for k in range(1, 5)}, "rouge_l": 0.0, "cider": 0.0}
    corpus = _Corpus(hyps, refs, 4)
    out = {f"bleu{k}": v for k, v in enumerate(_bleu_corpus(corpus, 4), start=1)}
    out["rouge_l"] = float(np.mean([max(_rouge_l_pair(h, r) for r in rs) for h, rs in zip(hyps, refs)]))
    out["cider"] = float(_cider_corpus(corpus).mean())
    return out
