"""Draw groundings on their images: coloured boxes, phrase labels (English or Chinese), one panel per image.

Labels use Noto Sans SC from the ``pylopdf-fonts-zh-cn`` package (a runtime dependency that installs
from PyPI with the font inside), which covers Latin and Chinese. Without it, a CJK font known to
matplotlib's font manager is used, and as a last resort Pillow's default font, with a warning that
Chinese labels will not render.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from medrega.grounding import Grounding

__all__ = ["PALETTE", "cjk_font_path", "load_font", "draw_groundings", "colour_for", "place_label"]

logger = logging.getLogger(__name__)

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)
MAX_LABEL = 40  # characters of a phrase shown on a box
_CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei")


@functools.lru_cache(maxsize=1)
def cjk_font_path() -> str | None:
    """Path of a font file that renders Chinese and Latin text, or ``None`` (see the module docstring)."""
    try:
        import pylopdf_fonts_zh_cn

        path = pylopdf_fonts_zh_cn.sans_path()
        if Path(path).is_file():
            return str(path)
    except ImportError:
        pass
    try:
        from matplotlib import font_manager
    except ImportError:
        font_manager = None
    for family in _CJK_FAMILIES if font_manager else ():
        try:
            return font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        except ValueError:
            continue
    logger.warning("no CJK font found (install pylopdf-fonts-zh-cn): Chinese labels will render as empty boxes")
    return None


@functools.lru_cache(maxsize=16)
def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The label font (:func:`cjk_font_path`) at ``size`` pixels; Pillow's default font without a CJK font."""
    path = cjk_font_path()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


def colour_for(index: int) -> tuple[int, int, int]:
    """The ``index``-th colour of :data:`PALETTE` (cycling)."""
    return PALETTE[index % len(PALETTE)]


def _fit(image: Image.Image, min_size: int, max_size: int) -> tuple[Image.Image, float]:
    """Resize so that the longer side lies in ``[min_size, max_size]``; returns the image and its scale."""
    longest = max(image.size)
    scale = 1.0
    if min_size and longest < min_size:
        scale = min_size / longest
    elif max_size and longest > max_size:
        scale = max_size / longest
    if scale == 1.0:
        return image, scale
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS), scale


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(
    size: tuple[float, float], box: tuple[float, float, float, float], taken: Sequence[tuple[float, float, float, float]], bounds: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Where a label of ``size = (w, h)`` for ``box`` goes: above its top-left corner, else inside it, else
    below it, else the first free slot stacked downwards; never over a label already ``taken`` while a
    free slot exists inside ``bounds`` (so a true and a predicted label never hide each other)."""
    w, h = size
    x = min(max(0.0, box[0]), max(0.0, bounds[0] - w))
    starts = [box[1] - h, box[1], box[3]]
    starts += [box[1] + k * h for k in range(1, int(bounds[1] // max(h, 1)) + 1)]
    fallback = None
    for y in starts:
        if y < 0 or y + h > bounds[1]:
            continue
        rect = (x, y, x + w, y + h)
        fallback = fallback or rect
        if not any(_overlaps(rect, other) for other in taken):
            return rect
    return fallback or (x, max(0.0, box[1]), x + w, max(0.0, box[1]) + h)


def _label(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], text: str, colour, font, bounds: tuple[int, int], taken: list) -> None:
    """A filled tag with ``text`` at :func:`place_label`'s place; the place is added to ``taken``."""
    if len(text) > MAX_LABEL:
        text = text[: MAX_LABEL - 1] + "…"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, getattr(font, "size", 10) // 6)
    x, y, x2, y2 = place_label((right - left + 2 * pad, bottom - top + 2 * pad), box, taken, bounds)
    taken.append((x, y, x2, y2))
    draw.rectangle((x, y, x2, y2), fill=colour)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    draw.text((x + pad - left, y + pad - top), text, fill=(0, 0, 0) if luminance > 150 else (255, 255, 255), font=font)


def _panel(image: Image.Image, groundings: Sequence[Grounding], colours: dict[str, tuple], min_size, max_size, line_width, font_size) -> Image.Image:
    canvas, scale = _fit(image.convert("RGB"), min_size, max_size)
    canvas = canvas.copy()
    draw = ImageDraw.Draw(canvas)
    width = line_width or max(2, round(max(canvas.size) / 250))
    font = load_font(font_size or max(12, round(max(canvas.size) / 32)))
    labels = []
    for g in groundings:
        colour = colours[g.phrase]
        for x1, y1, x2, y2 in g.boxes:
            # box edges are pixel edges: the outline covers the pixels just inside the box
            sx1, sy1 = round(max(0.0, x1) * scale), round(max(0.0, y1) * scale)
            sx2, sy2 = round(min(image.width, x2) * scale) - 1, round(min(image.height, y2) * scale) - 1
            if sx2 < sx1 or sy2 < sy1:
                continue
            draw.rectangle((sx1, sy1, sx2, sy2), outline=colour, width=width)
            if g.phrase:
                labels.append(((sx1, sy1, sx2, sy2), g.phrase, colour))
    taken: list = []
    for box, phrase, colour in labels:  # after every box, so no outline crosses a label
        _label(draw, box, phrase, colour, font, canvas.size, taken)
    return canvas


def draw_groundings(
    images: Image.Image | Sequence[Image.Image],
    groundings: Sequence[Grounding] = (),
    *,
    titles: Sequence[str] | None = None,
    min_size: int = 384,
    max_size: int = 1024,
    line_width: int | None = None,
    font_size: int | None = None,
    gap: int = 8,
) -> Image.Image:
    """Draw boxes and phrases on their images, one panel per image side by side.

    Args:
        images: the original image(s); ``Grounding.image_index`` picks the panel.
        groundings: boxes in original-image pixels (clipped to the image for drawing).
        titles: a header per panel (default ``"Image k"`` when there are several images, none for one).
        min_size, max_size: each panel is scaled so its longer side lies in this range (0 disables a bound).
        line_width, font_size: in panel pixels (default: from the panel size).
        gap: pixels between panels.

    Returns:
        An RGB image; the same phrase has the same colour in every panel.
    """
    images = [images] if isinstance(images, Image.Image) else list(images)
    if not images:
        raise ValueError("draw_groundings needs at least one image")
    bad = [g.image_index for g in groundings if not 0 <= g.image_index < len(images)]
    if bad:
        raise ValueError(f"grounding image_index {bad[0]} but only {len(images)} image(s) were given")
    colours: dict[str, tuple] = {}
    for g in groundings:
        colours.setdefault(g.phrase, colour_for(len(colours)))
    panels = [
        _panel(im, [g for g in groundings if g.image_index == k], colours, min_size, max_size, line_width, font_size)
        for k, im in enumerate(images)
    ]
    if titles is None and len(images) == 1:
        return panels[0]
    titles = list(titles) if titles is not None else [f"Image {k + 1}" for k in range(len(images))]
    if len(titles) != len(panels):
        raise ValueError(f"{len(titles)} titles for {len(panels)} images")
    font = load_font(font_size or max(14, round(max(p.height for p in panels) / 28)))
    header = round(getattr(font, "size", 10) * 1.6)
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    sheet = Image.new("RGB", (width, header + max(p.height for p in panels)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x = 0
    for panel, title in zip(panels, titles):
        sheet.paste(panel, (x, header))
        draw.text((x + 2, header // 2), title, fill=(0, 0, 0), font=font, anchor="lm")
        x += panel.width + gap
    return sheet
