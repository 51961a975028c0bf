"""InternVL-style dynamic resolution: up to ``max_tiles`` square tiles plus an optional thumbnail.

Reference: InternVL ``dynamic_preprocess`` / ``find_closest_aspect_ratio``. The grid ``(cols, rows)``
with ``cols * rows <= max_tiles`` whose aspect ratio is closest to the image's wins; on a tie the
larger grid wins when the image has enough pixels for it. Tiles are crop boxes in pixels of the
original image (the resized image is split evenly, so each tile maps back to an equal slice of the
original). Region boxes stay relative to the original image: tiling changes no box coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TilePlan", "candidate_grids", "closest_grid", "plan_tiles"]


@dataclass(frozen=True)
class TilePlan:
    """Result of :func:`plan_tiles`.

    Attributes:
        grid: ``(cols, rows)`` of the chosen tiling.
        boxes: ``(x1, y1, x2, y2)`` crop boxes in original-image pixels, row by row; the thumbnail
            (the whole image) comes last when used.
        has_thumbnail: whether the last box is the whole-image thumbnail.
    """

    grid: tuple[int, int]
    boxes: list[tuple[float, float, float, float]]
    has_thumbnail: bool

    @property
    def num_tiles(self) -> int:
        """Crops fed to the vision tower, thumbnail included."""
        return len(self.boxes)


def candidate_grids(max_tiles: int, min_tiles: int = 1) -> list[tuple[int, int]]:
    """All ``(cols, rows)`` with ``min_tiles <= cols * rows <= max_tiles``, fewest tiles first."""
    grids = {(c, r) for n in range(min_tiles, max_tiles + 1) for c in range(1, n + 1) for r in range(1, n + 1) if min_tiles <= c * r <= max_tiles}
    return sorted(grids, key=lambda g: g[0] * g[1])


def closest_grid(width: float, height: float, tile_size: int, grids: list[tuple[int, int]]) -> tuple[int, int]:
    """InternVL's ``find_closest_aspect_ratio``."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    area = width * height
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def plan_tiles(image_size_wh: tuple[float, float], tile_size: int, max_tiles: int, use_thumbnail: bool = True, min_tiles: int = 1) -> TilePlan:
    """Plan the crops of one image.

    Args:
        image_size_wh: ``(width, height)`` of the original image in pixels.
        tile_size: side of a square tile (the vision tower's input size).
        max_tiles: most tiles (InternVL: 6 or 12); ``<= 1`` gives the whole image only.
        use_thumbnail: append the whole image when more than one tile is used (InternVL's rule).
        min_tiles: fewest tiles.

    Returns:
        a :class:`TilePlan`; boxes are in original-image pixels.
    """
    width, height = image_size_wh
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {image_size_wh!r}")
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    whole = (0.0, 0.0, float(width), float(height))
    if max_tiles <= 1:
        return TilePlan((1, 1), [whole], False)
    cols, rows = closest_grid(width, height, tile_size, candidate_grids(max_tiles, min_tiles))
    step_x, step_y = width / cols, height / rows
    boxes = [(c * step_x, r * step_y, (c + 1) * step_x, (r + 1) * step_y) for r in range(rows) for c in range(cols)]
    thumbnail = use_thumbnail and len(boxes) > 1
    if thumbnail:
        boxes.append(whole)
    return TilePlan((cols, rows), boxes, thumbnail)
