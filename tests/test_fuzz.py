"""Property-based fuzzing of the decoder (Hypothesis): whatever bytes arrive, load_radiograph returns one
grayscale image or raises InvalidImageError, quickly. CI runs a bounded number of examples; set
MURA_MT_FUZZ_EXAMPLES (for example 100000) for a long run (docs/reliability.md records one)."""

import io
import os
import time

import numpy as np
import pydicom
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mura_mt.imaging.io import InvalidImageError, load_radiograph

EXAMPLES = int(os.environ.get("MURA_MT_FUZZ_EXAMPLES", "2000"))
SLOWEST_ALLOWED_S = 5.0


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (96, 80), dtype=np.uint8)
    seeds = []
    for fmt, kwargs in (("PNG", {}), ("JPEG", {"quality": 80}), ("PNG", {"optimize": True})):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt, **kwargs)
        seeds.append(buffer.getvalue())
    with open(pydicom.data.get_testdata_file("CT_small.dcm"), "rb") as f:
        seeds.append(f.read())
    return seeds


SEEDS = _seeds()

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("erase"), st.integers(0, 10**6), st.integers(1, 64)),
)


def _mutate(data: bytes, mutations) -> bytes:
    data = bytearray(data)
    for kind, position, value in mutations:
        if not data:
            break
        at = position % len(data)
        if kind == "flip":
            data[at] ^= value
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([value]) * (1 + value % 8)
        else:
            del data[at : at + value]
    return bytes(data)


def _check(payload: bytes) -> None:
    start = time.perf_counter()
    try:
        image = load_radiograph(payload)
    except InvalidImageError:
        pass
    else:
        assert isinstance(image, Image.Image) and image.mode == "L" and min(image.size) > 0
    assert time.perf_counter() - start < SLOWEST_ALLOWED_S


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(seed=st.sampled_from(range(len(SEEDS))), mutations=st.lists(mutation, min_size=1, max_size=6))
# Found by the first 100,000-example run: damaged DICOM header values raised ValueError, TypeError and
# NotImplementedError from pydicom's lazy parsing instead of InvalidImageError.
@example(seed=3, mutations=[("flip", 3280, 1)])
@example(seed=3, mutations=[("flip", 3278, 17)])
@example(seed=3, mutations=[("flip", 3278, 8)])
@example(seed=3, mutations=[("flip", 3278, 1)])
def test_mutated_files_decode_or_raise_invalid_image_error(seed, mutations):
    _check(_mutate(SEEDS[seed], mutations))


@settings(max_examples=max(50, EXAMPLES // 4), deadline=None, derandomize=True)
@given(payload=st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_raise_invalid_image_error(payload):
    _check(payload)
