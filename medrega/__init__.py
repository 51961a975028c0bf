"""medrega: region-aware, bilingual medical multimodal LLMs (MedRegA, Med-MAT, Med-MIM).

Boxes everywhere are ``(x1, y1, x2, y2)`` in pixels of the original image (see :mod:`medrega.boxes`).
Importing ``medrega`` registers the model with transformers' ``Auto*`` classes.
"""

from medrega.boxes import BoxError, iou
from medrega.grounding import Grounding, LocTokenCodec, ParseResult, TextBoxCodec
from medrega.image_processing import MedRegAImageProcessor
from medrega.models import MedRegAConfig, MedRegAForConditionalGeneration
from medrega.processing import MedRegAProcessor

__version__ = "0.1.0"

__all__ = [
    "Assistant",
    "BoxError",
    "Grounding",
    "LocTokenCodec",
    "MedRegAConfig",
    "MedRegAForConditionalGeneration",
    "MedRegAImageProcessor",
    "MedRegAProcessor",
    "ParseResult",
    "TextBoxCodec",
    "convert",
    "iou",
    "__version__",
]


def __getattr__(name: str):
    if name == "Assistant":  # imported on first use: drawing and generation helpers are not needed to train
        from medrega.inference import Assistant

        return Assistant
    if name == "convert":  # checkpoint conversion, on first use
        from medrega.converters import convert

        return convert
    raise AttributeError(f"module 'medrega' has no attribute {name!r}")
