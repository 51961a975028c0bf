"""MedRegA models, native to transformers: importing this registers them, and their processor, with the
``Auto*`` classes (so ``AutoProcessor`` and ``pipeline`` find them), and registers the attention
implementation ``"medrega_segments"`` (:mod:`medrega.models.segment_attention`)."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor

from medrega.image_processing import MedRegAImageProcessor
from medrega.models.configuration import MedRegAConfig, TimmVisionConfig
from medrega.models.conversion import INTERNVL_KEY_MAPPING, LLAVA_KEY_MAPPING, convert_state_dict
from medrega.models.modeling import MedRegAForConditionalGeneration, MedRegAOutput, MedRegAPreTrainedModel
from medrega.models.segment_attention import SEGMENT_ATTENTION, use_segment_attention_
from medrega.models.stages import STAGES
from medrega.models.tiny import tiny_config
from medrega.models.vision import image_token_count
from medrega.processing import MedRegAProcessor
from medrega.tiling import TilePlan, plan_tiles

AutoConfig.register(TimmVisionConfig.model_type, TimmVisionConfig, exist_ok=True)
AutoConfig.register(MedRegAConfig.model_type, MedRegAConfig, exist_ok=True)
AutoModel.register(MedRegAConfig, MedRegAForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(MedRegAConfig, MedRegAForConditionalGeneration, exist_ok=True)
_IMAGE_BACKENDS = {"pil": MedRegAImageProcessor, "torchvision": MedRegAImageProcessor}  # one class: it does its own resizing
AutoImageProcessor.register(MedRegAConfig, image_processor_classes=_IMAGE_BACKENDS, exist_ok=True)
AutoProcessor.register(MedRegAConfig, MedRegAProcessor, exist_ok=True)

__all__ = [
    "INTERNVL_KEY_MAPPING",
    "LLAVA_KEY_MAPPING",
    "STAGES",
    "MedRegAConfig",
    "MedRegAForConditionalGeneration",
    "MedRegAOutput",
    "MedRegAPreTrainedModel",
    "SEGMENT_ATTENTION",
    "TilePlan",
    "TimmVisionConfig",
    "convert_state_dict",
    "image_token_count",
    "plan_tiles",
    "tiny_config",
    "use_segment_attention_",
]
