"""Hostile uploads for the soak tool: files a stranger might send, each of which the app must refuse with a
clear message (reliability.md, groups A and B), and the byte-level PNG forging they (and the decoding tests)
are built from. Generated in memory; nothing is read from disk."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes = b"", extra: bytes = b"") -> bytes:
    """A PNG with any IHDR (even one that lies about its size) and the given filtered scanlines."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = png_chunk(b"IDAT", zlib.compress(rows))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + idat + png_chunk(b"IEND", b"")


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    """An image's bytes in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def hostile_files(seed: int = 0) -> list[tuple[str, bytes]]:
    """(file name, bytes) pairs; the name's extension is what an attacker would claim."""
    rng = np.random.default_rng(seed)
    good = encode(Image.fromarray(rng.integers(0, 256, (256, 200), dtype=np.uint8)), "PNG")
    frames = [Image.new("L", (64, 64), v) for v in (0, 128, 255)]
    return [
        ("empty.png", b""),
        ("truncated.png", good[: len(good) // 2]),
        ("text.png", b"this is not an image\n" * 20),
        ("page.png", b"<html><script>alert(1)</script></html>"),
        ("vector.png", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        ("zero-width.png", raw_png(0, 64, 8, 0)),
        ("sliver.png", raw_png(1, 100_000, 8, 0, rows=b"\0\0" * 1000)),
        ("bomb.png", raw_png(20_000, 20_000, 8, 0, rows=b"\0" * 20_000)),
        (
            "huge-text-chunk.png",
            raw_png(
                16,
                16,
                8,
                0,
                rows=(b"\0" + b"\x80" * 16) * 16,
                extra=png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"A" * 5_000_000)),
            ),
        ),
        ("animated.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        ("scan.tiff", encode(frames[0], "TIFF")),
        ("random.dcm", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()),
        ("preamble-only.dcm", b"\0" * 128 + b"DICM"),
        ("random.jpg", b"\xff\xd8\xff" + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()),
    ]
