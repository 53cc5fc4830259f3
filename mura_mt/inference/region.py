"""Where the evidence is: one outline per view, drawn from its Grad-CAM map.

The region is the contour of the map at ``LEVEL`` (half) of its maximum around the map's peak: a closed polygon of
(x, y) points in the ORIGINAL image's pixel coordinates, DICOM's convention (x to the right along a row, y down; the
top-left corner of the top-left pixel is (0, 0), so pixel (row r, column c) has its centre at (c + 0.5, r + 0.5)).
It says where the model's evidence comes from, NOT where a lesion is: nothing delineated it.

The map is traced at most ``TRACE_SIDE`` points on its longer side (Grad-CAM's own resolution is 7x7 for ResNet-18
at 224 px: a finer grid adds no information, only points), bilinearly reduced; the outline's points are mapped back
to the image's own size. A map with no single region gets no outline (None): a flat map (no evidence anywhere), or
one whose half-maximum area covers more than ``MAX_SHARE`` of the image (the evidence is everywhere, so nowhere).
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.5  # of the map's maximum
TRACE_SIDE = 128
MAX_SHARE = 0.8
MIN_RANGE = 1e-3  # a map whose max - min is below this is flat


def evidence_region(heatmap: np.ndarray | None) -> list[list[float]] | None:
    """The closed outline (first point repeated last) around the peak of ``heatmap`` ([H, W], any scale), as
    [[x, y], ...] rounded to 0.1 px; None when the map carries no single region (see the module)."""
    if heatmap is None:
        return None
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2 or min(heatmap.shape) < 2:
        raise ValueError(f"a Grad-CAM map is 2-D and at least 2x2; got shape {heatmap.shape}")
    low, high = float(heatmap.min()), float(heatmap.max())
    if not np.isfinite(low + high) or high - low < MIN_RANGE:
        return None
    level = low + LEVEL * (high - low)
    small, scale = _reduced(heatmap)
    if float((small >= level).mean()) > MAX_SHARE:
        return None
    peak_row, peak_col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    peak = ((peak_col + 0.5) / scale[0], (peak_row + 0.5) / scale[1])  # in the reduced grid's cell units
    line = _outline_around(small, level, peak)
    if line is None:
        return None
    height, width = heatmap.shape
    # reduced grid point (i, j) is the centre of its cell: x = (j + 0.5) * scale_x in image pixels
    xs = np.clip((line[:, 0] + 0.5) * scale[0], 0.0, width)
    ys = np.clip((line[:, 1] + 0.5) * scale[1], 0.0, height)
    points = []
    for x, y in zip(xs, ys):  # clipping to the edge repeats points there: each once
        point = [round(float(x), 1), round(float(y), 1)]
        if not points or point != points[-1]:
            points.append(point)
    if points[0] != points[-1]:
        points.append(list(points[0]))
    return points


def contains(polygon: list[list[float]], x: float, y: float) -> bool:
    """Whether (x, y) lies inside the closed ``polygon`` (even-odd rule)."""
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _reduced(heatmap: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The map at most TRACE_SIDE on its longer side, and the image pixels per reduced cell (x, y)."""
    from PIL import Image

    height, width = heatmap.shape
    factor = max(height, width) / TRACE_SIDE
    if factor <= 1:
        return heatmap, (1.0, 1.0)
    size = (max(2, round(width / factor)), max(2, round(height / factor)))
    small = np.asarray(Image.fromarray(heatmap, mode="F").resize(size, Image.Resampling.BILINEAR))
    return small, (width / size[0], height / size[1])


def _outline_around(grid: np.ndarray, level: float, peak: tuple[float, float]) -> np.ndarray | None:
    """The closed contour of ``grid`` at ``level`` that encloses ``peak`` (grid units, cell centres at i + 0.5),
    the smallest if several nest; points as (x, y) in grid indices. A region touching the border must close along
    it: the grid is padded with a copy of its edge, then with its minimum, so the contour runs a cell outside the
    image (clipped to its edge by the caller) and a peak in a corner stays inside the corner's diagonal cut."""
    import contourpy

    padded = np.pad(np.pad(grid, 1, mode="edge"), 1, mode="constant", constant_values=float(grid.min()))
    lines = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate).lines(level)
    around = []
    for line in lines:
        points = np.asarray(line, dtype=np.float64) - 2.0  # undo the padding
        polygon = points.tolist() + [points[0].tolist()]
        if len(points) >= 3 and contains(polygon, peak[0] - 0.5, peak[1] - 0.5):
            around.append((_area(points), points))
    if not around:
        return None
    return min(around, key=lambda pair: pair[0])[1]


def _area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def outlined(image, region: list[list[float]] | None, colour: tuple[int, int, int] = (255, 221, 0)):
    """The radiograph in RGB with ``region`` drawn over it (a line about 0.4 % of the longer side wide); the image
    itself, in RGB, without a region."""
    from PIL import ImageDraw

    drawn = image.convert("RGB")
    if region:
        width = max(2, round(max(drawn.size) * 0.004))
        ImageDraw.Draw(drawn).line([tuple(point) for point in region], fill=colour, width=width, joint="curve")
    return drawn
