"""Hostile uploads for the soak tool: files a stranger might send, each of which the app must refuse with a
clear message (reliability.md, groups A and B). Generated in memory; nothing is read from disk."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, rows: bytes = b"", extra: bytes = b"", bit_depth: int = 8, color: int = 0) -> bytes:
    """A PNG with any IHDR, even one that lies about its size."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    idat = _chunk(b"IDAT", zlib.compress(rows))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + idat + _chunk(b"IEND", b"")


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def hostile_files(seed: int = 0) -> list[tuple[str, bytes]]:
    """(file name, bytes) pairs; the name's extension is what an attacker would claim."""
    rng = np.random.default_rng(seed)
    good = _encode(Image.fromarray(rng.integers(0, 256, (256, 200), dtype=np.uint8)), "PNG")
    frames = [Image.new("L", (64, 64), v) for v in (0, 128, 255)]
    return [
        ("empty.png", b""),
        ("truncated.png", good[: len(good) // 2]),
        ("text.png", b"this is not an image\n" * 20),
        ("page.png", b"<html><script>alert(1)</script></html>"),
        ("vector.png", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        ("zero-width.png", _png(0, 64)),
        ("sliver.png", _png(1, 100_000, rows=b"\0\0" * 1000)),
        ("bomb.png", _png(20_000, 20_000, rows=b"\0" * 20_000)),
        (
            "huge-text-chunk.png",
            _png(
                16,
                16,
                rows=(b"\0" + b"\x80" * 16) * 16,
                extra=_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"A" * 5_000_000)),
            ),
        ),
        ("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        ("scan.tiff", _encode(frames[0], "TIFF")),
        ("random.dcm", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()),
        ("preamble-only.dcm", b"\0" * 128 + b"DICM"),
        ("random.jpg", b"\xff\xd8\xff" + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()),
    ]
