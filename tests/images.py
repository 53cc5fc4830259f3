"""Hand-built image bytes for decoding tests (PNG chunks are written directly to forge headers; the forging
helpers are the soak tool's own, in mura_mt.bench.hostile)."""

from __future__ import annotations

import numpy as np

from mura_mt.bench.hostile import encode, png_chunk, raw_png  # noqa: F401  (used by the tests)


def png16(array: np.ndarray) -> bytes:
    """16-bit grayscale (H x W) or RGB (H x W x 3) PNG from a uint16 array."""
    height, width = array.shape[:2]
    color_type = 2 if array.ndim == 3 else 0
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    return raw_png(width, height, 16, color_type, rows)


def ramp(height: int = 64, width: int = 96) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
