"""``load_image``: one entry point for every image a record may name, returned as an RGB PIL image.

Sources: a path (PNG, JPEG and anything PIL reads, recognised by content, so PNG data named ``.jpg``
loads; DICOM by the ``DICM`` magic or a ``.dcm`` name), a PIL image, a numpy array (``HxW`` or
``HxWxC``; uint8, uint16, bool or float) or a ``pydicom`` Dataset.

Design choices:

* DICOM grey levels: Rescale Slope/Intercept first (CT values become Hounsfield units), then a window
  chosen in this order: an explicit ``(center, width)``, a preset name (:data:`WINDOW_PRESETS`), the
  file's own first WindowCenter/WindowWidth, else the frame's min-max. ``MONOCHROME1`` is inverted
  after windowing so air is always dark. Colour DICOM (RGB, YBR, palette) is shown as stored.
* High bit-depth arrays and 16-bit PNGs take the explicit window when given, else min-max. Float
  arrays already on ``[0, 1]`` are read as intensities.
* The pixel grid is kept as stored: no EXIF rotation, so boxes drawn on the stored pixels stay valid.
* Every failure raises :class:`ImageLoadError` naming the source.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["MAX_PIXELS", "LoadedImage", "ImageLoadError", "ImageNotFoundError", "WINDOW_PRESETS", "load_image", "is_dicom", "window_array"]

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "abdomen": (40.0, 400.0),
    "soft_tissue": (50.0, 400.0),
    "liver": (60.0, 160.0),
}
"""CT windows as ``(center, width)`` in Hounsfield units."""

Window = tuple[float, float] | str | None


MAX_PIXELS = 100_000_000
"""Largest image (width x height) :func:`load_image` decodes from a file (a 10000 x 10000 scan);
larger ones raise :class:`ImageLoadError` before their pixels are decoded, which training and
evaluation count as a skip. Raise it per call with ``max_pixels=`` or for the process by setting
``medrega.data.images.MAX_PIXELS``; PIL itself refuses images over ``2 * PIL.Image.MAX_IMAGE_PIXELS``
(about 179 M pixels), and that refusal is reported the same way."""


class ImageLoadError(OSError):
    """An image that cannot be read; the message names the source."""


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """The image file does not exist."""


@dataclass
class LoadedImage:
    """An image ready for the processor.

    Args:
        image: RGB PIL image.
        original_size: ``(width, height)`` of the stored pixels (the frame for multi-frame DICOM).
        source: the path, or a description of an in-memory source.
        modality: DICOM Modality (``"CT"``, ``"MR"``...) or ``None``.
        window: the ``(center, width)`` applied to grey levels, or ``None`` when none was applied
            (8-bit and colour images).
        num_frames: frames in the source (1 except for multi-frame DICOM).
    """

    image: Image.Image
    original_size: tuple[int, int]
    source: str
    modality: str | None = None
    window: tuple[float, float] | None = None
    num_frames: int = 1


def is_dicom(path: str | Path) -> bool:
    """``True`` when the file carries the DICOM ``DICM`` magic at byte 128 or has a ``.dcm`` name."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def _resolve_window(window: Window, source: str) -> tuple[float, float] | None:
    if window is None:
        return None
    if isinstance(window, str):
        key = window.lower().replace("-", "_").replace(" ", "_")
        if key not in WINDOW_PRESETS:
            raise ValueError(f"{source}: unknown window preset {window!r}; known: {', '.join(WINDOW_PRESETS)}")
        return WINDOW_PRESETS[key]
    if len(window) != 2 or float(window[1]) <= 0:
        raise ValueError(f"{source}: window must be (center, width) with width > 0, got {window!r}")
    return float(window[0]), float(window[1])


def window_array(values: np.ndarray, window: tuple[float, float] | None) -> tuple[np.ndarray, tuple[float, float]]:
    """Map grey levels to uint8 through a linear window (min-max when ``window`` is ``None``).

    Args:
        values: array of grey levels (any numeric dtype).
        window: ``(center, width)``, or ``None`` for the array's own range.

    Returns:
        The uint8 array and the ``(center, width)`` used.
    """
    values = values.astype(np.float32, copy=False)
    if window is None:
        lo, hi = float(values.min()), float(values.max())
        window = ((lo + hi) / 2, max(hi - lo, 1e-6))
    center, width = window
    lower = center - width / 2
    out = np.clip((values - lower) / width, 0.0, 1.0) * 255.0
    return np.rint(out).astype(np.uint8), (float(center), float(width))


def _to_rgb(array: np.ndarray) -> Image.Image:
    """uint8 ``HxW`` or ``HxWxC`` (C in 1, 3, 4) -> RGB PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.shape[2] == 4:
        return Image.fromarray(array, mode="RGBA").convert("RGB")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def _from_array(array: np.ndarray, window: Window, source: str) -> LoadedImage:
    array = np.asarray(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageLoadError(f"{source}: expected an HxW or HxWxC (C in 1, 3, 4) array, got shape {array.shape}")
    if array.size == 0:
        raise ImageLoadError(f"{source}: empty image array of shape {array.shape}")
    explicit = _resolve_window(window, source)
    used = None
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint8 and explicit is None:
        pass
    elif np.issubdtype(array.dtype, np.floating) and explicit is None and array.min() >= 0 and array.max() <= 1:
        array = np.rint(array * 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.number):
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{source}: image array holds NaN or infinite values")
        array, used = window_array(array, explicit)
    else:
        raise ImageLoadError(f"{source}: unsupported array dtype {array.dtype}")
    h, w = array.shape[:2]
    return LoadedImage(_to_rgb(array), (w, h), source, window=used)


def _from_pil(image: Image.Image, window: Window, source: str) -> LoadedImage:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return _from_array(np.asarray(image), window, source)
    if window is not None and image.mode in ("L", "LA"):
        return _from_array(np.asarray(image.convert("L")), window, source)
    return LoadedImage(image.convert("RGB"), image.size, source)


def _first(value) -> float | None:
    """The first number of a DICOM value that may be multi-valued (``WindowCenter``); ``None`` when absent."""
    if isinstance(value, MutableSequence):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _check_size(width: int, height: int, source: str, max_pixels: int | None) -> None:
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{source}: empty image ({width} x {height} pixels)")
    if width * height > limit:
        raise ImageLoadError(f"{source}: {width} x {height} = {width * height:,} pixels is over the limit of {limit:,} (medrega.data.images.MAX_PIXELS)")


def _from_dicom(ds, window: Window, frame: int, source: str, max_pixels: int | None = None) -> LoadedImage:
    from pydicom.pixels import apply_color_lut, pixel_array

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageLoadError(f"{source}: DICOM file has no pixel data (Modality {ds.get('Modality', '?')})")
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError) as err:
        raise ImageLoadError(f"{source}: unreadable DICOM Rows/Columns: {err}") from err
    _check_size(columns, rows, source, max_pixels)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise ImageLoadError(f"{source}: frame {frame} requested but the file has {frames} frame(s) (0..{frames - 1})")
    try:
        pixels = pixel_array(ds, index=frame if frames > 1 else None)
    except Exception as err:  # decoders raise many types (missing plugin, truncated data)
        raise ImageLoadError(f"{source}: cannot decode DICOM pixel data: {err}") from err
    modality = str(ds.get("Modality")) if ds.get("Modality") else None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    h, w = pixels.shape[:2]
    if photometric == "PALETTE COLOR":
        try:
            pixels = apply_color_lut(pixels, ds)
        except Exception as err:  # a missing or malformed lookup table raises many types
            raise ImageLoadError(f"{source}: palette-colour DICOM without a usable colour lookup table: {err}") from err
    if pixels.ndim == 3:  # colour (RGB after pydicom's YBR conversion): shown as stored
        if pixels.dtype != np.uint8:
            pixels, _ = window_array(pixels, None)
        return LoadedImage(_to_rgb(pixels), (w, h), source, modality, None, frames)
    slope = _first(ds.get("RescaleSlope")) or 1.0
    intercept = _first(ds.get("RescaleIntercept")) or 0.0
    values = pixels.astype(np.float32) * slope + intercept
    chosen = _resolve_window(window, source)
    if chosen is None:
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        chosen = (center, width) if center is not None and width is not None and width > 0 else None
    grey, used = window_array(values, chosen)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return LoadedImage(_to_rgb(grey), (w, h), source, modality, used, frames)


def _from_path(path: Path, window: Window, frame: int, max_pixels: int | None) -> LoadedImage:
    source = str(path)
    if not path.is_file():
        raise ImageNotFoundError(f"image not found: {source}")
    if is_dicom(path):
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            ds = pydicom.dcmread(path, force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as err:
            raise ImageLoadError(f"{source}: not a readable DICOM file: {err}") from err
        return _from_dicom(ds, window, frame, source, max_pixels)
    if frame != 0:
        raise ImageLoadError(f"{source}: frame {frame} requested but the file is a single image")
    try:
        with Image.open(path) as image:
            _check_size(*image.size, source, max_pixels)
            image.load()
            loaded = _from_pil(image, window, source)
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"{source}: over PIL's pixel limit: {err}") from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(f"{source}: not a readable image (unknown or corrupt format)") from err
    except (OSError, SyntaxError, ValueError) as err:  # truncated or malformed data inside a known format
        raise ImageLoadError(f"{source}: corrupt image data: {err}") from err
    return loaded


def load_image(source, *, window: Window = None, frame: int = 0, max_pixels: int | None = None) -> LoadedImage:
    """Load an image as RGB with its original size and how its grey levels were mapped.

    Args:
        source: a path (str or ``Path``), a PIL image, a numpy array or a ``pydicom`` Dataset.
        window: ``(center, width)``, a preset name of :data:`WINDOW_PRESETS`, or ``None`` for the
            default (the DICOM file's own window, else min-max for high bit-depth data).
        frame: frame of a multi-frame DICOM (0-based).
        max_pixels: largest width x height decoded from a file (default :data:`MAX_PIXELS`).

    Returns:
        A :class:`LoadedImage`.

    Raises:
        ImageNotFoundError: the file does not exist.
        ImageLoadError: unreadable or corrupt data, an empty or over-limit image, an unsupported
            array, or a frame out of range.
        ValueError: an unknown window preset or a malformed window.
    """
    if isinstance(source, (str, Path)):
        return _from_path(Path(source), window, frame, max_pixels)
    if isinstance(source, Image.Image):
        if 0 in source.size:
            raise ImageLoadError(f"empty image ({source.size[0]} x {source.size[1]} pixels)")
        return _from_pil(source, window, f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>")
    if isinstance(source, np.ndarray):
        if source.size == 0:
            raise ImageLoadError(f"empty array of shape {tuple(source.shape)}")
        return _from_array(source, window, f"<array {source.dtype} {tuple(source.shape)}>")
    from pydicom.dataset import Dataset

    if isinstance(source, Dataset):
        name = getattr(source, "filename", None)
        return _from_dicom(source, window, frame, str(name) if isinstance(name, str) else "<DICOM dataset>", max_pixels)
    raise TypeError(f"cannot load an image from {type(source).__name__}; pass a path, PIL image, numpy array or pydicom Dataset")
