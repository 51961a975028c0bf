"""Evaluation metrics for every task of MedRegA, Med-MAT and Med-MIM.

* :mod:`~medrega.metrics.text`: tokenisation (jieba for Chinese), corpus BLEU-1..4, ROUGE-L, CIDEr-D.
* :mod:`~medrega.metrics.vqa`: closed accuracy, open recall, token F1.
* :mod:`~medrega.metrics.classification`: accuracy, macro-F1, multi-label F1, answers -> options.
* :mod:`~medrega.metrics.choice`: Med-MAT letter and Med-MIM ``"A: text"`` multiple choice.
* :mod:`~medrega.metrics.regions`: Acc@IoU / mIoU, Hungarian region matching, grounding F1s, region-to-text.
* :mod:`~medrega.metrics.detection`: COCO AP through pycocotools.
* :mod:`~medrega.metrics.grounded_report`: report text metrics plus region accuracy and phrase-box alignment.
* :mod:`~medrega.metrics.optional`: METEOR, BERTScore, RadGraph F1, CheXbert F1 (raise ``MetricUnavailable``).
* :mod:`~medrega.metrics.summary`: one table (Markdown / JSON) over all tasks.

Answers (yes/no, choice letters, option text, normalisation) are read by :mod:`medrega.answers`,
the same readers as the task parsers; ``normalize_answer``, ``yes_no``, ``parse_choice``, ... are
re-exported here.
"""

from medrega.metrics.choice import choice_accuracy, match_option, parse_choice, parse_options
from medrega.metrics.classification import accuracy, macro_f1, map_to_option, multilabel_f1
from medrega.metrics.detection import detection_ap
from medrega.metrics.grounded_report import grounded_report_metrics, grounding_scores
from medrega.metrics.optional import MetricUnavailable, bertscore, chexbert_f1, meteor, radgraph_f1
from medrega.metrics.regions import (
    grounding_f1,
    paired_iou,
    region_accuracy,
    region_match,
    region_to_text_accuracy,
    region_to_text_correct,
)
from medrega.metrics.summary import Summary, summarize
from medrega.metrics.text import (
    bleu,
    bleu_scores,
    cider,
    rouge_l,
    rouge_l_scores,
    text_metrics,
    tokenize,
    tokenize_corpus,
)
from medrega.metrics.vqa import (
    closed_accuracy,
    closed_correct,
    normalize_answer,
    open_recall,
    token_f1,
    vqa_scores,
    yes_no,
)

__all__ = [
    "MetricUnavailable",
    "Summary",
    "accuracy",
    "bertscore",
    "bleu",
    "bleu_scores",
    "chexbert_f1",
    "choice_accuracy",
    "cider",
    "closed_accuracy",
    "closed_correct",
    "detection_ap",
    "grounded_report_metrics",
    "grounding_f1",
    "grounding_scores",
    "macro_f1",
    "map_to_option",
    "match_option",
    "meteor",
    "multilabel_f1",
    "normalize_answer",
    "open_recall",
    "paired_iou",
    "parse_choice",
    "parse_options",
    "radgraph_f1",
    "region_accuracy",
    "region_match",
    "region_to_text_accuracy",
    "region_to_text_correct",
    "rouge_l",
    "rouge_l_scores",
    "summarize",
    "text_metrics",
    "token_f1",
    "tokenize",
    "tokenize_corpus",
    "vqa_scores",
    "yes_no",
]
