"""Safe decoding of radiographs: PNG, JPEG or DICOM in, one 8-bit grayscale PIL image out.

This module owns every decision about turning bytes into pixels: which formats are accepted (sniffed by
content, never by file name), the size limits checked before any pixel is decoded, and how 16-bit data,
EXIF orientation, alpha, palettes, colour and DICOM grey-scale pipelines become one ``L`` image. It knows
nothing about tensors, models or the web app. Anything it cannot turn into a trustworthy image raises
``InvalidImageError`` with a message a person understands and that never echoes DICOM header values.

Rules:
    * 8-bit grayscale stays bit-exact (MURA's own PNGs must reach the model unchanged).
    * Colour becomes grey by ITU-R 601 luma (MURA's RGB files have three equal channels, so luma is exact).
    * Transparent pixels are composited on black: no signal, like the background of a radiograph.
    * Data deeper than 8 bits (16-bit PNG, float arrays, DICOM) is scaled by its real range, never clipped.
    * DICOM: modality LUT, then VOI LUT or window, then MONOCHROME1 inversion; without window information the
      0.5th..99.5th percentile range is used.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# The limits and helpers the DICOM path shares live in their own module, so io and dicom never import each other
# in a circle; io re-exports them (``mura_mt.imaging.io.InvalidImageError`` is a contract).
from mura_mt.imaging.pixels import DEFAULT_LIMITS, ImageLimits, InvalidImageError, check_geometry, scale_to_uint8

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


__all__ = ["DEFAULT_LIMITS", "ImageLimits", "ImageSource", "InvalidImageError", "load_radiograph", "scale_to_uint8"]

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray


def load_radiograph(source: ImageSource, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode a radiograph into one 8-bit grayscale image.

    Args:
        source: a file path, the file's bytes, a PIL image or a numpy array (H x W, or H x W x C).
        limits: size limits enforced before decoding.

    Returns:
        A PIL image in mode ``L``.

    Raises:
        InvalidImageError: unreadable, unsupported, too large, too small or otherwise unusable input.
    """
    if isinstance(source, Image.Image):
        check_geometry(source.width, source.height, limits)
        return _pil_to_gray(source)
    if isinstance(source, np.ndarray):
        return _array_to_gray(source, limits)
    data = _read_bytes(source, limits) if isinstance(source, (str, os.PathLike)) else bytes(source)
    if not data:
        raise InvalidImageError("the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidImageError(f"the file is larger than {limits.max_bytes // 2**20} MB")
    if data.startswith(PNG_MAGIC):
        if len(data) >= 24 and data[12:16] == b"IHDR":  # read the declared size ourselves: clearer than Pillow
            check_geometry(*struct.unpack(">II", data[16:24]), limits)
        return _decode_pil(data, limits)
    if data.startswith(JPEG_MAGIC):
        return _decode_pil(data, limits)
    if len(data) >= 132 and data[128:132] == b"DICM":
        from mura_mt.imaging.dicom import decode_dicom  # pydicom is imported only when a DICOM file arrives

        return decode_dicom(data, limits)
    raise InvalidImageError("this is not a PNG, JPEG or DICOM image (judged by its content, not its name)")


def _read_bytes(path: str | os.PathLike, limits: ImageLimits) -> bytes:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise InvalidImageError(f"the file is larger than {limits.max_bytes // 2**20} MB")
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidImageError(f"file not found: {path.name}") from None
    except IsADirectoryError:
        raise InvalidImageError(f"{path.name} is a folder, not an image") from None
    except PermissionError:
        raise InvalidImageError(f"no permission to read {path.name}") from None


def _decode_pil(data: bytes, limits: ImageLimits) -> Image.Image:
    try:
        # Only PNG and JPEG plugins may parse the bytes: no TIFF, PSD, EPS (Ghostscript) or anything else.
        image = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
        check_geometry(image.width, image.height, limits)  # header only: nothing decoded yet
        if getattr(image, "n_frames", 1) > 1:
            raise InvalidImageError("animated or multi-frame images are not accepted; upload a single view")
        image.load()
        image = ImageOps.exif_transpose(image)  # rotate once, as a viewer would show it
        return _pil_to_gray(image)
    except InvalidImageError:
        raise
    except Image.DecompressionBombError:
        raise InvalidImageError("the image declares too many pixels (decompression bomb)") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, IndexError, TypeError) as err:
        # Pillow signals truncation and corruption with several exception types, ValueError for huge chunks.
        raise InvalidImageError("the image file is truncated or corrupt and cannot be decoded") from err


def _pil_to_gray(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "L":
        return image.copy()
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(scale_to_uint8(np.asarray(image)), mode="L")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, image).convert("L")
    if mode in ("1", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB").convert("L") if mode != "1" else image.convert("L")
    raise InvalidImageError(f"unsupported pixel format ({mode})")


def _array_to_gray(array: np.ndarray, limits: ImageLimits) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidImageError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {tuple(array.shape)}")
    check_geometry(array.shape[1], array.shape[0], limits)
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise InvalidImageError(f"unsupported array type {array.dtype}")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if not np.all(np.isfinite(array)):
        raise InvalidImageError("the image array contains NaN or infinite values")
    if array.ndim == 3:
        if array.shape[2] == 4:  # composite on black, as for files
            alpha = array[:, :, 3:4].astype(np.float64) / (
                255.0 if array.dtype == np.uint8 else array[:, :, 3].max() or 1
            )
            array = array[:, :, :3] * alpha
        array = array[:, :, 0] * 0.299 + array[:, :, 1] * 0.587 + array[:, :, 2] * 0.114
        if np.issubdtype(array.dtype, np.floating) and array.max() <= 255 and array.min() >= 0:
            return Image.fromarray(np.round(array).astype(np.uint8), mode="L")
    if array.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(array), mode="L")
    return Image.fromarray(scale_to_uint8(array), mode="L")
