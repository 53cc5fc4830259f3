"""Decoding: reliability.md groups A (PNG/JPEG) and B (DICOM), through load_radiograph."""

import io
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mura_mt.imaging.io import InvalidImageError, load_radiograph
from tests.images import encode, png16, png_chunk, ramp, raw_png


def test_8bit_grayscale_png_is_bit_exact():
    pixels = ramp()
    assert np.array_equal(np.asarray(load_radiograph(encode(Image.fromarray(pixels)))), pixels)


@pytest.mark.parametrize("high", [65535, 4095])  # full 16-bit range, and 12-bit data stored in 16 bits
def test_16bit_png_keeps_its_levels(high):
    data = np.tile(np.linspace(0, high, 512).astype(np.uint16), (64, 1))
    out = np.asarray(load_radiograph(png16(data)))
    assert len(np.unique(out)) > 200
    assert (out == 255).mean() < 0.05 and (out == 0).mean() < 0.05


def test_16bit_rgb_png_is_accepted():
    data = np.stack([np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (64, 1))] * 3, axis=2)
    out = np.asarray(load_radiograph(png16(data)))
    assert out.shape == (64, 128) and out[:, 0].max() < 5 and out[:, -1].min() > 250


def test_rgb_with_equal_channels_equals_its_grayscale():
    pixels = ramp()
    rgb = Image.fromarray(np.stack([pixels] * 3, axis=2))
    assert np.array_equal(np.asarray(load_radiograph(encode(rgb))), pixels)


def test_transparency_is_composited_on_black():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:, 32:, 3] = 255  # right half opaque white, left half transparent white
    out = np.asarray(load_radiograph(encode(Image.fromarray(rgba, "RGBA"))))
    assert out[:, :32].max() == 0 and out[:, 32:].min() == 255
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    assert np.array_equal(np.asarray(load_radiograph(encode(la))), out)


def test_palette_one_bit_and_cmyk_become_gray():
    pixels = ramp()
    palette = Image.fromarray(pixels).convert("P")
    assert np.abs(np.asarray(load_radiograph(encode(palette))).astype(int) - pixels).max() <= 2
    bits = Image.fromarray((pixels > 127).astype(np.uint8) * 255).convert("1")
    assert set(np.unique(np.asarray(load_radiograph(encode(bits))))) == {0, 255}
    cmyk = Image.fromarray(np.stack([pixels] * 3, axis=2)).convert("CMYK")
    out = np.asarray(load_radiograph(encode(cmyk, "JPEG", quality=95))).astype(int)
    assert np.abs(out - pixels).mean() < 6


@pytest.mark.parametrize("orientation, size", [(3, (96, 64)), (6, (64, 96)), (8, (64, 96))])
def test_exif_orientation_is_applied_once(orientation, size):
    pixels = ramp()  # 64 high, 96 wide, dark on the left
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = load_radiograph(encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95))
    assert out.size == size
    arr = np.asarray(out).astype(int)
    if orientation == 3:  # 180 degrees: dark side moves right
        assert arr[:, -5:].mean() < arr[:, :5].mean()
    elif orientation == 6:  # displayed rotated 90 degrees clockwise: dark side goes to the top
        assert arr[:5].mean() < arr[-5:].mean()
    else:
        assert arr[-5:].mean() < arr[:5].mean()


def test_multi_frame_images_are_refused():
    frames = [Image.fromarray(ramp()), Image.fromarray(255 - ramp())]
    apng = io.BytesIO()
    frames[0].save(apng, format="PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImageError, match="multi-frame"):
        load_radiograph(apng.getvalue())
    for fmt in ("GIF", "TIFF"):
        data = io.BytesIO()
        frames[0].save(data, format=fmt, save_all=True, append_images=frames[1:])
        with pytest.raises(InvalidImageError, match="not a PNG, JPEG or DICOM"):
            load_radiograph(data.getvalue())


@pytest.mark.parametrize(
    "width, height, message",
    [
        (0, 64, "zero size"),
        (1, 1, "too small"),
        (1, 100000, "too small"),
        (16, 16, "too small"),
        (64, 5000, "too elongated"),
        (20000, 20000, "too large"),
        (12000, 12000, "too large"),
    ],
)
def test_bad_geometry_is_refused_before_decoding(width, height, message):
    data = raw_png(width, height, 8, 0, b"\x00" * 1024)  # the header lies: almost no pixel data follows
    start = time.perf_counter()
    with pytest.raises(InvalidImageError, match=message):
        load_radiograph(data)
    assert time.perf_counter() - start < 1.0  # refused from the header, not after decoding


def test_decompression_bomb_is_refused_fast():
    rows = zlib_rows = None  # noqa: F841  (built lazily below)
    import zlib

    compressor = zlib.compressobj(9)
    line = b"\x00" + b"\x00" * 12000
    body = b"".join(compressor.compress(line) for _ in range(200)) + compressor.flush()
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", __import__("struct").pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0))
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )
    assert len(data) < 200_000
    start = time.perf_counter()
    with pytest.raises(InvalidImageError, match="too large"):
        load_radiograph(data)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_and_empty_files(fmt):
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)), fmt)
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        load_radiograph(data[: len(data) // 2])
    with pytest.raises(InvalidImageError, match="empty"):
        load_radiograph(b"")


@pytest.mark.parametrize(
    "payload",
    [
        b"hello, this is text",
        b"<html><script>alert(1)</script></html>",
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>',
        b"II*\x00" + b"\x00" * 200,
        b"8BPS" + b"\x00" * 200,
        b"SIMPLE  =                    T" + b" " * 200,
        b"%!PS-Adobe-3.0 EPSF-3.0\n" + b"\x00" * 200,
        b"%PDF-1.7\n" + b"\x00" * 200,
    ],
)
def test_other_formats_named_png_are_refused(payload, tmp_path):
    path = tmp_path / "upload.png"
    path.write_bytes(payload)
    with pytest.raises(InvalidImageError, match="not a PNG, JPEG or DICOM"):
        load_radiograph(path)


def test_huge_text_chunk_is_a_user_error():
    rows = b"".join(b"\x00" + bytes(64) for _ in range(64))
    text = png_chunk(b"zTXt", b"Comment\x00\x00" + __import__("zlib").compress(b"A" * 20_000_000))
    with pytest.raises(InvalidImageError):
        load_radiograph(raw_png(64, 64, 8, 0, rows, extra=text))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InvalidImageError, match="not found"):
        load_radiograph(tmp_path / "nope.png")
    with pytest.raises(InvalidImageError, match="folder"):
        load_radiograph(tmp_path)


def test_mutated_images_raise_only_invalid_image_error():
    """A bounded fuzz: random byte flips and cuts of valid PNG/JPEG files."""
    rng = np.random.default_rng(0)
    seeds = [encode(Image.fromarray(ramp(80, 80)), "PNG"), encode(Image.fromarray(ramp(80, 80)), "JPEG")]
    outcomes = {"ok": 0, "refused": 0}
    for i in range(400):
        data = bytearray(seeds[i % 2])
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(8, len(data)))] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(8, len(data)))]
        start = time.perf_counter()
        try:
            image = load_radiograph(bytes(data))
            assert image.mode == "L"
            outcomes["ok"] += 1
        except InvalidImageError:
            outcomes["refused"] += 1
        assert time.perf_counter() - start < 5.0
    assert outcomes["refused"] > 0 and outcomes["ok"] > 0


def test_numpy_arrays():
    assert load_radiograph(ramp()).mode == "L"
    assert len(np.unique(np.asarray(load_radiograph(np.linspace(0, 1, 64 * 64).reshape(64, 64))))) > 200
    with pytest.raises(InvalidImageError, match="NaN"):
        load_radiograph(np.full((64, 64), np.nan))
    with pytest.raises(InvalidImageError, match="shape"):
        load_radiograph(np.zeros((4, 64, 64, 3)))


# --- DICOM -------------------------------------------------------------------------------------------


def _dicom(pixels: np.ndarray | None, **attrs) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-1234"
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_real_monochrome1_radiograph_shows_bone_bright():
    path = get_testdata_file("RG3_UNCR.dcm")  # a real CR of a lower leg, 10-bit, MONOCHROME1
    image = np.asarray(load_radiograph(path)).astype(float)
    h, w = image.shape
    tibia = image[int(0.2 * h) : int(0.4 * h), int(0.47 * w) : int(0.53 * w)].mean()
    air = image[int(0.2 * h) : int(0.4 * h), int(0.29 * w) : int(0.32 * w)].mean()
    assert tibia > air + 80, (tibia, air)


def test_compressed_dicom_decodes_like_uncompressed():
    plain = np.asarray(load_radiograph(get_testdata_file("RG1_UNCR.dcm"))).astype(int)
    j2k = np.asarray(load_radiograph(get_testdata_file("RG1_J2KR.dcm"))).astype(int)  # lossless JPEG 2000
    assert np.abs(plain - j2k).max() <= 1


def test_dicom_without_window_uses_the_percentile_range():
    pixels = np.tile(np.linspace(100, 1100, 128), (64, 1)).astype(np.uint16)
    out = np.asarray(load_radiograph(_dicom(pixels)))
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 100


def test_dicom_rescale_window_and_signed_pixels():
    pixels = np.tile(np.linspace(-1000, 1000, 128), (64, 1)).astype(np.int16)
    data = _dicom(pixels, RescaleSlope=1, RescaleIntercept=0, WindowCenter=0, WindowWidth=1000)
    out = np.asarray(load_radiograph(data)).astype(int)
    assert out[:, :30].max() == 0 and out[:, -30:].min() == 255  # outside the window: clipped to black/white
    assert 100 < out[:, 64].mean() < 155  # the window centre sits mid-grey
    inverted = np.asarray(load_radiograph(_dicom(pixels, PhotometricInterpretation="MONOCHROME1"))).astype(int)
    assert inverted[:, 0].mean() > 250 and inverted[:, -1].mean() < 5


def _display_pixel_by_pixel(dataset) -> np.ndarray:
    """The grey-scale pipeline as the standard states it, on every pixel (what the lookup table must equal)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from mura_mt.imaging.pixels import scale_to_uint8

    values = apply_modality_lut(dataset.pixel_array, dataset)
    if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
        display = scale_to_uint8(apply_voi_lut(values, dataset, prefer_lut=True))
    else:
        low, high = np.percentile(values, [0.5, 99.5])
        display = scale_to_uint8(values, float(low), float(high))
    return 255 - display if dataset.PhotometricInterpretation == "MONOCHROME1" else display


@pytest.mark.parametrize(
    "source",
    ["RG3_UNCR.dcm", "RG1_UNCR.dcm", "CT_small.dcm", "MR_small.dcm", "vlut_04.dcm", "mlut_18.dcm", "signed", "sigmoid"],
)
def test_the_lookup_table_gives_the_bytes_of_the_pixel_by_pixel_pipeline(source):
    """Real CRs (MONOCHROME1, 10-bit), a signed CT with rescale, an MR, a VOI LUT and a modality LUT sequence, signed
    pixels with a window, a sigmoid VOI function: every byte equal."""
    if source == "signed":
        pixels = np.random.default_rng(0).integers(-2000, 3000, (300, 200)).astype(np.int16)
        data = _dicom(pixels, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=500, WindowWidth=3000)
    elif source == "sigmoid":
        pixels = np.random.default_rng(1).integers(0, 4096, (200, 300)).astype(np.uint16)
        data = _dicom(pixels, WindowCenter=2000, WindowWidth=1500, VOILUTFunction="SIGMOID")
    else:
        data = Path(get_testdata_file(source)).read_bytes()
    dataset = pydicom.dcmread(io.BytesIO(data))
    assert np.array_equal(np.asarray(load_radiograph(data)), _display_pixel_by_pixel(dataset))


def test_dicom_faults_give_clear_errors_without_phi():
    no_pixels = _dicom(None)
    huge = _dicom(np.zeros((64, 64), np.uint16))
    ds = pydicom.dcmread(io.BytesIO(huge))
    ds.Rows = ds.Columns = 60000
    buffer = io.BytesIO()
    ds.save_as(buffer)
    multi = pydicom.dcmread(io.BytesIO(_dicom(np.zeros((64, 64), np.uint16))))
    multi.NumberOfFrames = 2
    multi_buffer = io.BytesIO()
    multi.save_as(multi_buffer)
    cases = {
        "no image": no_pixels,
        "too large": buffer.getvalue(),
        "multi-frame": multi_buffer.getvalue(),
        "truncated or": _dicom(np.zeros((256, 256), np.uint16))[:-20000],
        "not a PNG, JPEG or DICOM": b"\x00" * 300,
    }
    for message, data in cases.items():
        with pytest.raises(InvalidImageError, match=message) as err:
            load_radiograph(data)
        assert "Doe" not in str(err.value) and "SECRET" not in str(err.value)


def test_png_named_dcm_is_decoded_by_content(tmp_path):
    path = tmp_path / "scan.dcm"
    path.write_bytes(encode(Image.fromarray(ramp())))
    assert np.array_equal(np.asarray(load_radiograph(path)), ramp())
