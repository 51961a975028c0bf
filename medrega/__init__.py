"""medrega: region-aware, bilingual medical multimodal LLMs (MedRegA, Med-MAT, Med-MIM).

Boxes everywhere are ``(x1, y1, x2, y2)`` in pixels of the original image (see :mod:`medrega.boxes`).
"""

from medrega.boxes import BoxError, iou
from medrega.grounding import Grounding, LocTokenCodec, ParseResult, TextBoxCodec

__version__ = "0.1.0"

__all__ = ["BoxError", "Grounding", "LocTokenCodec", "ParseResult", "TextBoxCodec", "iou", "__version__"]
