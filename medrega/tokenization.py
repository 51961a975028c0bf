"""Train a small byte-level BPE tokenizer locally (for the tiny preset, tests and offline demos)."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["train_bpe_tokenizer"]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2):
    """Train a byte-level BPE on ``texts`` and wrap it as a transformers fast tokenizer.

    Byte-level BPE never meets an unknown character, so Chinese text round-trips through
    ``decode`` even when the corpus is small. Special tokens: ``<|bos|>``, ``<|eos|>``, ``<|pad|>``.

    Args:
        texts: training text (English and Chinese lines).
        vocab_size: target vocabulary size, special tokens included.
        min_frequency: minimum pair frequency for a merge.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|bos|>", "<|eos|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>", clean_up_tokenization_spaces=False
    )
