"""``JsonlDataset``: indexed, lazily parsed records that keep worker memory flat.

A DataLoader forks its workers; a Python list of dicts is copied page by page into every worker as
reference counts are touched. This dataset keeps only numpy arrays (the byte offset, byte length, line
number and, after a scan, image count of each record: 18 bytes a record), opens the file lazily in each
process and parses one line per ``__getitem__`` with the same conversion as :func:`medrega.data.load_records`.

Validation: ``scan=True`` (the default) parses every line once at construction, so a bad record is
reported with its ``file:line`` before training starts; with ``on_error="skip"`` bad lines are left
out of the index and kept in ``skipped``. ``scan=False`` starts instantly and raises on a bad line
when it is first read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medrega.data.loading import FORMATS, JsonLineError, detect_format, parse_json_line, record_from_raw, skip_reason
from medrega.data.records import Record, RecordError

__all__ = ["JsonlDataset", "line_index"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 24
BYTES_PER_TOKEN = 4  # JSONL bytes per text token, roughly, for length estimates


def line_index(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte offsets, byte lengths and 1-based line numbers of the non-blank lines of a text file.

    The file is scanned in 16 MiB chunks with numpy, so memory stays bounded for any file size.

    Returns:
        ``(starts int64, lengths int32, lines int32)``, one entry per non-blank line.
    """
    newlines = []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pos = 0
        while chunk := f.read(_CHUNK):
            newlines.append(np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10) + pos)
            pos += len(chunk)
    ends = np.concatenate([*newlines, np.array([size], dtype=np.int64)]).astype(np.int64)
    if ends.size > 1 and ends[-1] == ends[-2] + 1:  # the file ends with a newline: no line after it
        ends = ends[:-1]
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts
    lines = np.arange(1, starts.size + 1, dtype=np.int64)
    keep = lengths > 0
    with open(path, "rb") as f:  # lines of a few bytes may be whitespace only: check just those
        for i in np.flatnonzero(keep & (lengths <= 4)):
            f.seek(starts[i])
            keep[i] = bool(f.read(int(lengths[i])).strip())
    return starts[keep], lengths[keep].astype(np.int32), lines[keep].astype(np.int32)


class JsonlDataset:
    """A map-style dataset of :class:`~medrega.data.Record` s read from a JSONL file on demand.

    Args:
        path: a JSONL file (JSON arrays are not indexable line by line; use ``load_records``).
        format: ``"auto"`` or one of :data:`medrega.data.FORMATS`.
        image_root: directory image paths are relative to (default: the file's directory).
        box_scale: coordinate range of text boxes (as ``load_records``).
        check_images: require every image file to exist (checked when a record is parsed).
        confine_images: refuse image paths outside the image root (as ``load_records``).
        on_error: ``"raise"`` or ``"skip"`` (needs ``scan``): bad lines leave the index and are
            listed in :attr:`skipped` with ``file:line``.
        scan: validate every line at construction.
        transform: applied to each record by ``__getitem__`` (e.g. the processor's encoding).
    """

    def __init__(
        self,
        path: str | Path,
        format: str = "auto",
        *,
        image_root: str | Path | None = None,
        box_scale: int | None = None,
        check_images: bool = False,
        confine_images: bool = False,
        on_error: str = "raise",
        scan: bool = True,
        transform: Callable[[Record], Any] | None = None,
    ):
        if format != "auto" and format not in FORMATS:
            raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if on_error == "skip" and not scan:
            raise ValueError("on_error='skip' needs scan=True: a map-style dataset cannot skip a line it has already indexed")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such record file: {self.path}")
        self.format = format
        self.image_root = Path(image_root).resolve() if image_root is not None else None
        self.box_scale = box_scale
        self.check_images = check_images
        self.confine_images = confine_images
        self.transform = transform
        self.skipped: list[RecordError] = []
        self.image_counts: np.ndarray | None = None  # images per record, known after a scan
        self._fd: int | None = None
        self._pid: int | None = None
        self.starts, self.lengths, self.lines = line_index(self.path)
        if self.starts.size and self._read(0).lstrip().startswith(b"["):
            raise ValueError(f"{self.path} is a JSON array, not JSONL; read it with medrega.data.load_records")
        self.file_format = self._file_format()
        if scan:
            self._scan(on_error)

    # -- index ----------------------------------------------------------------------------------
    def _file_format(self) -> str | None:
        """The format of the first record that can be recognised: used for records too broken to recognise."""
        if self.format != "auto":
            return self.format
        for i in range(min(len(self.starts), 100)):
            try:
                return detect_format(parse_json_line(self._read(i)))
            except (ValueError, TypeError, AttributeError):
                continue
        return None

    def _scan(self, on_error: str) -> None:
        keep = np.ones(len(self.starts), dtype=bool)
        images = np.zeros(len(self.starts), dtype=np.int16)
        for i in range(len(self.starts)):
            try:
                images[i] = len(self._record(i).images)
            except RecordError as err:
                if on_error == "raise":
                    raise
                keep[i] = False
                self.skipped.append(err)
        self.image_counts = images[keep]
        if self.skipped:
            self.starts, self.lengths, self.lines = self.starts[keep], self.lengths[keep], self.lines[keep]
            logger.warning("%s: %s", self.path, self.report())

    def report(self, max_locations: int = 5) -> str:
        """Kept and skipped counts, one line per skip reason with its count and first ``file:line`` s."""
        if not self.skipped:
            return f"{len(self)} record(s) indexed, none skipped"
        by_reason: dict[str, list[str]] = {}
        for err in self.skipped:
            by_reason.setdefault(skip_reason(err), []).append(f"{err.source}:{err.line}")
        lines = [f"{len(self)} record(s) indexed, {len(self.skipped)} skipped:"]
        for reason, where in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            more = f" (+{len(where) - max_locations} more)" if len(where) > max_locations else ""
            lines.append(f"  {len(where)} x {reason} at {', '.join(where[:max_locations])}{more}")
        return "\n".join(lines)

    # -- reading --------------------------------------------------------------------------------
    def _read(self, i: int) -> bytes:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:  # first read in this process (a fresh worker)
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), pid
        return os.pread(self._fd, int(self.lengths[i]), int(self.starts[i]))

    def _record(self, i: int) -> Record:
        line = int(self.lines[i])
        where = str(self.path)
        try:
            obj = parse_json_line(self._read(i))
        except JsonLineError as err:
            raise RecordError(where, line, "<json>", f"not valid JSON: {err}") from None
        return record_from_raw(
            obj,
            self.path,
            line,
            format=self.format,
            file_format=self.file_format,
            image_root=self.image_root,
            box_scale=self.box_scale,
            check_images=self.check_images,
            confine_images=self.confine_images,
        )

    def __len__(self) -> int:
        return int(self.starts.size)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records of {self.path}")
        record = self._record(index % len(self))
        return self.transform(record) if self.transform is not None else record

    @property
    def byte_lengths(self) -> np.ndarray:
        """Each record's line length in bytes."""
        return self.lengths

    def token_lengths(self, tokens_per_image: int, bytes_per_token: float = BYTES_PER_TOKEN) -> np.ndarray:
        """Each record's estimated token length, for length grouping, without tokenising: its line's
        bytes over ``bytes_per_token`` plus ``tokens_per_image`` placeholder tokens per image.

        Raises:
            ValueError: without a scan (``scan=False``), as image counts are read by the scan.
        """
        if self.image_counts is None:
            raise ValueError(f"{self.path}: token lengths need the image counts of a scan (scan=True)")
        return np.ceil(self.lengths / bytes_per_token).astype(np.int64) + self.image_counts.astype(np.int64) * int(tokens_per_image)

    # -- pickling (DataLoader workers with spawn) -----------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"] = state["_pid"] = None
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)
