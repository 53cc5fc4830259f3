"""DICOM decoding for ``mura_mt.imaging.io`` (which calls it; this module imports only ``pixels``): header checks first,
then the standard grey-scale pipeline.

Owns only the DICOM path of ``load_radiograph``. The header is read without pixel data so that absurd sizes,
multi-frame files and files without an image are refused before anything is decoded. ``force=True`` is never
used, so a file without the DICOM preamble is refused. Error messages never contain header values: the
header of a clinical file carries patient data.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space

from mura_mt.imaging.pixels import ImageLimits, InvalidImageError, check_geometry, scale_to_uint8


def decode_dicom(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode one single-frame DICOM image to 8-bit grayscale (see ``mura_mt.imaging.io`` for the rules)."""
    try:
        return _decode(data, limits)
    except InvalidImageError:
        raise
    except Exception as err:
        # pydicom converts header elements lazily, on first access: a damaged value raises then, with whatever
        # type its parser used (ValueError, TypeError, NotImplementedError for an unknown VR...). Found by fuzzing.
        raise InvalidImageError("the DICOM header is damaged or inconsistent") from err


def _decode(data: bytes, limits: ImageLimits) -> Image.Image:
    header = _read(data, stop_before_pixels=True)
    rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    if rows == 0 or cols == 0:
        raise InvalidImageError("the DICOM file holds no image (no rows/columns); it may be a report or a state")
    check_geometry(cols, rows, limits)
    if int(header.get("NumberOfFrames", 1) or 1) > 1:
        raise InvalidImageError("multi-frame DICOM files are not accepted; export a single frame")
    dataset = _read(data, stop_before_pixels=False)
    if "PixelData" not in dataset:
        raise InvalidImageError("the DICOM file holds no pixel data; it may be a report or a presentation state")
    try:
        pixels = dataset.pixel_array
    except (NotImplementedError, RuntimeError) as err:
        raise InvalidImageError("the DICOM image uses an unsupported compression (transfer syntax)") from err
    except Exception as err:  # pydicom raises many types for truncated or inconsistent pixel data
        raise InvalidImageError("the DICOM pixel data is truncated or inconsistent with its header") from err
    return Image.fromarray(_to_display(pixels, dataset), mode="L")


def _read(data: bytes, stop_before_pixels: bool) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise InvalidImageError("this is not a valid DICOM file") from None
    except Exception as err:
        raise InvalidImageError("the DICOM file is truncated or corrupt") from err


def _to_display(pixels: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, dataset)
        photometric = "RGB"
    if photometric.startswith("YBR"):
        pixels = convert_color_space(pixels, photometric, "RGB")
        photometric = "RGB"
    if photometric == "RGB" or pixels.ndim == 3:
        luma = pixels[..., 0] * 0.299 + pixels[..., 1] * 0.587 + pixels[..., 2] * 0.114
        return scale_to_uint8(luma, 0.0, float(np.iinfo(pixels.dtype).max) if pixels.dtype.kind in "ui" else None)
    has_window = "WindowCenter" in dataset or "VOILUTSequence" in dataset
    if pixels.dtype.kind in "ui" and pixels.dtype.itemsize <= 2:
        # The modality and VOI LUTs map each stored value on its own, so they run once per possible value (at most
        # 65,536) and the image takes a lookup: 67 -> 13 ms for a 2,048 px CR, the same bytes (tests/test_io.py).
        offset = int(pixels.min())
        index = pixels.astype(np.int32) - offset if pixels.dtype.kind == "i" else pixels - offset
        stored = np.arange(offset, int(pixels.max()) + 1).astype(pixels.dtype)
        table = apply_modality_lut(stored, dataset)
        if has_window:
            table = apply_voi_lut(table, dataset, prefer_lut=True)
            steps = np.diff(table)
            if (steps >= 0).all() or (steps <= 0).all():  # monotonic (every window function): the ends are present
                present = table[[0, -1]]
            else:  # a VOI LUT may go up and down: the values the image really holds
                present = table[np.bincount(index.ravel(), minlength=len(stored)) > 0]
            lut = scale_to_uint8(table, float(present.min()), float(present.max()))
            return _inverted(lut, photometric)[index]
        values = table[index]
    else:
        values = apply_modality_lut(pixels, dataset)
        if has_window:
            return _inverted(scale_to_uint8(apply_voi_lut(values, dataset, prefer_lut=True)), photometric)
    low, high = np.percentile(values, [0.5, 99.5])  # documented fallback: robust range of the data itself
    return _inverted(scale_to_uint8(values, float(low), float(high)), photometric)


def _inverted(display: np.ndarray, photometric: str) -> np.ndarray:
    """Low values are white in MONOCHROME1."""
    return 255 - display if photometric == "MONOCHROME1" else display
