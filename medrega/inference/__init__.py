"""Notebook-first inference: :class:`Assistant` answers with boxes that draw themselves.

* :class:`Assistant` -- ``detect``, ``identify``, ``report``, ``ask``, ``classify``, ``regional_cot``, and
  batched ``detect_many`` / ``report_many``; ``stream=True`` for ``report`` and ``ask``.
* :class:`Result` -- ``.text``, ``.groundings`` (original-image pixels), ``.to_dict()``, ``.show()``.
* :func:`draw_groundings` -- boxes and English / Chinese labels, one panel per image.
* :class:`BoxConstraintLogitsProcessor` -- only well-formed boxes inside ``<box>``.
"""

from medrega.inference.assistant import Assistant
from medrega.inference.constrained import BoxConstraintLogitsProcessor
from medrega.inference.draw import draw_groundings
from medrega.inference.results import Result
from medrega.inference.streaming import TextStream

__all__ = ["Assistant", "BoxConstraintLogitsProcessor", "Result", "TextStream", "draw_groundings"]
