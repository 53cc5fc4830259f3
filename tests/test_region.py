"""The region of evidence (``inference.region``): the Grad-CAM map's contour at half its maximum around its peak, as
a closed outline in the image's own pixel coordinates; none where the map has no single region."""

import numpy as np
import pytest

from mura_mt.inference.region import contains, evidence_region, outlined


def _blob(height, width, x, y, sx, sy):
    rows, columns = np.mgrid[0:height, 0:width]
    centres_x, centres_y = columns + 0.5, rows + 0.5  # pixel (r, c) has its centre at (c + 0.5, r + 0.5)
    return np.exp(-(((centres_x - x) / sx) ** 2 + ((centres_y - y) / sy) ** 2) * np.log(2))


@pytest.mark.parametrize("height, width", [(96, 80), (1800, 1400), (600, 2400)])
def test_the_outline_is_the_half_maximum_contour_in_the_images_own_pixels(height, width):
    """An elliptic blob whose half maximum lies at (x +- sx, y +- sy): the outline finds those extremes, at the
    image's own size whatever the grid it was traced on."""
    x, y, sx, sy = 0.3 * width, 0.7 * height, 0.1 * width, 0.08 * height
    second = 0.4 * _blob(height, width, 0.8 * width, 0.2 * height, 0.05 * width, 0.05 * height)  # below half: no part
    outline = evidence_region(_blob(height, width, x, y, sx, sy) + second)
    assert outline[0] == outline[-1] and len(outline) >= 8
    xs, ys = np.array(outline).T
    cell = max(height, width) / 128  # the traced grid's cell, in image pixels
    tolerance = max(1.0, cell)
    assert xs.min() == pytest.approx(x - sx, abs=tolerance) and xs.max() == pytest.approx(x + sx, abs=tolerance)
    assert ys.min() == pytest.approx(y - sy, abs=tolerance) and ys.max() == pytest.approx(y + sy, abs=tolerance)
    assert contains(outline, x, y) and not contains(outline, 0.8 * width, 0.2 * height)


def test_a_region_at_the_border_closes_along_it_and_stays_inside_the_image():
    heatmap = np.zeros((100, 120), dtype=np.float32)
    heatmap[:30, :40] = 1.0
    outline = evidence_region(heatmap)
    xs, ys = np.array(outline).T
    assert outline[0] == outline[-1] and xs.min() == 0.0 and ys.min() == 0.0
    assert xs.max() <= 41 and ys.max() <= 31 and contains(outline, 0.5, 0.5)


def test_the_peak_is_inside_even_where_several_regions_pass_half_the_maximum():
    heatmap = 0.9 * _blob(200, 200, 50, 50, 15, 15) + _blob(200, 200, 150, 150, 15, 15)
    outline = evidence_region(heatmap)
    row, column = divmod(int(heatmap.argmax()), 200)
    assert contains(outline, column + 0.5, row + 0.5) and not contains(outline, 50, 50)


@pytest.mark.parametrize(
    "heatmap",
    [np.zeros((64, 64)), np.full((64, 64), 0.7), np.pad(np.ones((58, 58)), 3), None],
    ids=["zero", "flat", "everywhere", "none"],
)
def test_a_map_with_no_single_region_gets_no_outline(heatmap):
    assert evidence_region(heatmap) is None


def test_a_map_that_is_not_two_dimensional_is_a_clear_error():
    with pytest.raises(ValueError, match="2-D and at least 2x2"):
        evidence_region(np.zeros((3, 4, 4)))


def test_the_outline_is_drawn_on_the_original_and_nothing_else_changes():
    from PIL import Image

    gray = Image.fromarray(np.full((120, 100), 80, dtype=np.uint8))
    outline = evidence_region(_blob(120, 100, 50, 60, 20, 20))
    drawn = np.asarray(outlined(gray, outline))
    marked = (drawn != 80).any(axis=2)
    assert drawn.shape == (120, 100, 3) and marked.any()
    assert not marked[60, 50] and not marked[5, 5]  # the inside and the far outside are the radiograph as it was
    assert np.array_equal(np.asarray(outlined(gray, None)), np.asarray(gray.convert("RGB")))


@pytest.mark.parametrize("height, width", [(100, 100), (1760, 1760)])
def test_a_peak_in_a_corner_is_inside_its_outline(height, width):
    """A real CR's map peaked in its top-left pixel: the contour's cut across the corner must not leave it out."""
    heatmap = _blob(height, width, 0, 0, 0.2 * width, 0.2 * height)
    outline = evidence_region(heatmap)
    assert outline is not None and contains(outline, 0.5, 0.5)
    assert all(a != b for a, b in zip(outline, outline[1:]))  # no point twice in a row
