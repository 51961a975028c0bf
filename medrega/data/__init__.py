"""Records and data: loading and validation, images (incl. DICOM), indexed datasets, mixing,
length-grouped sampling, padding / packing, box-aware augmentation and Med-MAT selection.

Synthetic phantoms are drawn in :mod:`medrega.data.phantoms`. Builders that write records with the
task library (from annotations, public annotation files and phantoms) sit above it, in :mod:`medrega.builders`.
"""

from medrega.data.augment import BoxAugment, augment_record
from medrega.data.collate import pack_samples, pad_collate
from medrega.data.dataset import JsonlDataset
from medrega.data.images import ImageLoadError, LoadedImage, load_image
from medrega.data.loading import FORMATS, RecordList, detect_format, load_records, record_from_raw
from medrega.data.medmat import read_mat_table, select_training_subsets, tag_records
from medrega.data.mixing import MixedDataset
from medrega.data.records import Record, RecordError, Turn, detect_lang
from medrega.data.sampling import LengthGroupedBatchSampler

__all__ = [
    "FORMATS",
    "BoxAugment",
    "ImageLoadError",
    "JsonlDataset",
    "LengthGroupedBatchSampler",
    "LoadedImage",
    "MixedDataset",
    "Record",
    "RecordError",
    "RecordList",
    "Turn",
    "augment_record",
    "detect_format",
    "detect_lang",
    "load_image",
    "load_records",
    "pack_samples",
    "pad_collate",
    "read_mat_table",
    "record_from_raw",
    "select_training_subsets",
    "tag_records",
]
