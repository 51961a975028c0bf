"""Names that differ between the transformers releases medrega supports.

transformers 5.24 renamed the KV-cache keyword and output field from ``past_key_values`` to
``cache`` (the old keyword still reads, with a deprecation warning, until 5.40). medrega speaks the
name of the installed release, found once from the Llama decoder's signature, so generation passes
the cache to ``forward`` and reads it back from the output under the same name.
"""

from __future__ import annotations

import inspect

from transformers import LlamaModel

__all__ = ["CACHE_NAME", "pop_cache"]

CACHE_NAME = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def pop_cache(kwargs: dict):
    """Remove and return the KV cache from ``kwargs``, whichever name the caller used."""
    cache = kwargs.pop("cache", None)
    legacy = kwargs.pop("past_key_values", None)
    if cache is not None and legacy is not None:
        raise ValueError("give the KV cache as `cache` or `past_key_values`, not both")
    return cache if cache is not None else legacy
