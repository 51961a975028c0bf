"""Records and data: loading, validation and (in submodules) datasets, phantoms and builders."""

from medrega.data.loading import FORMATS, RecordList, detect_format, load_records
from medrega.data.records import Record, RecordError, Turn, detect_lang

__all__ = ["FORMATS", "Record", "RecordError", "RecordList", "Turn", "detect_format", "detect_lang", "load_records"]
