"""Streaming text: generation runs in a thread and its text arrives in chunks as tokens are decoded."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from transformers import TextIteratorStreamer

from medrega.inference.results import Result

__all__ = ["TextStream"]


class TextStream:
    """Text chunks of one answer while it is generated; then the full :class:`Result`.

    Iterate to receive the chunks (``for chunk in assistant.report(image, stream=True): print(chunk, end="")``);
    ``result`` waits for the end of generation and returns the same :class:`Result` a non-streaming call gives.

    Args:
        tokenizer: decodes the new tokens (special tokens skipped, region markup kept).
        generate: runs generation with the given streamer and returns its decoded output (the
            :class:`~medrega.inference.assistant.Assistant` returns the answer's :class:`~medrega.processing.Decoded`).
        finish: turns that output into the :class:`Result`.
        timeout: seconds to wait for the next chunk before giving up (``None``: forever).
    """

    def __init__(self, tokenizer, generate: Callable[[TextIteratorStreamer], Any], finish: Callable[[Any], Result], timeout: float | None = None):
        self._streamer = TextIteratorStreamer(
            tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        self._finish = finish
        self._output: Any = None
        self._error: BaseException | None = None
        self._result: Result | None = None
        self._chunks: list[str] = []
        self._done = False

        def run() -> None:
            try:
                self._output = generate(self._streamer)
            except BaseException as err:  # re-raised in the consuming thread
                self._error = err
                self._streamer.end()

        self._thread = threading.Thread(target=run, name="medrega-generate", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[str]:
        if self._done:
            self._raise_if_failed()
            return
        for chunk in self._streamer:
            if chunk:
                self._chunks.append(chunk)
                yield chunk
        self._thread.join()
        self._done = True
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError("generation failed while streaming") from self._error

    @property
    def text(self) -> str:
        """The text received so far (region markup included)."""
        return "".join(self._chunks)

    @property
    def result(self) -> Result:
        """The finished :class:`Result`; consumes the remaining chunks first."""
        if self._result is None:
            for _ in self:
                pass
            self._result = self._finish(self._output)
        return self._result
