"""What every decoder shares: the error a person reads, the limits checked before decoding, and the scaling of deep
pixel data to 8 bits. ``io`` (PNG, JPEG, arrays) and ``dicom`` both import this module and never each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class InvalidImageError(ValueError):
    """The input is not a radiograph this project can read; the message says why in plain words."""


@dataclass(frozen=True)
class ImageLimits:
    """Limits checked before decoding (decompression bombs, absurd shapes)."""

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 32
    max_aspect: float = 10.0


DEFAULT_LIMITS = ImageLimits()


def check_geometry(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"the image has zero size ({width}x{height})")
    if width * height > limits.max_pixels:
        raise InvalidImageError(
            f"the image is too large ({width}x{height} pixels; at most {limits.max_pixels / 1e6:.0f} megapixels)"
        )
    if min(width, height) < limits.min_side:
        raise InvalidImageError(f"the image is too small ({width}x{height}; each side needs {limits.min_side}+ px)")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise InvalidImageError(f"the image is too elongated ({width}x{height}) to be a radiograph")


def scale_to_uint8(array: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Map ``[low, high]`` (default: the array's own range) linearly to 0..255; a constant image becomes 0."""
    values = array.astype(np.float64)
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.clip(values, low, high) - low) * (255.0 / (high - low))
    return np.round(scaled).astype(np.uint8)
