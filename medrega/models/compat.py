"""Names that differ between the transformers releases medrega supports.

transformers 5.24 renamed the KV-cache keyword and output field from ``past_key_values`` to
``cache`` (the old keyword still reads, with a deprecation warning, until 5.40). medrega speaks the
name of the installed release, found once from the Llama decoder's signature, so generation passes
the cache to ``forward`` and reads it back from the output under the same name.
"""

from __future__ import annotations

import inspect

from transformers import LlamaModel

__all__ = ["CACHE_NAME"]

CACHE_NAME = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"

