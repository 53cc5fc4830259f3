"""The prepared-image cache: every indexed image decoded once, letterboxed, stored as uint8 [N, 1, S, S].

Decoding 512-px PNGs in the training loop would compete with the model for this machine's few cores; the
cache makes each epoch a memory read. Building it is also the pre-scan: images that cannot be decoded are
collected (never silently dropped) and returned, and the caller decides whether to abort. The cache file is
keyed by the image list, sizes and modification times, written to a temporary name and renamed when
complete, so a killed build never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mura_mt.data.transforms import letterbox
from mura_mt.io import InvalidImageError, load_radiograph


def cache_key(paths: list[str], size: int) -> str:
    """Changes when any image, its order, its size on disk or its modification time changes."""
    digest = hashlib.sha256(str(size).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def build_image_cache(
    paths: list[str], size: int, cache_dir: str | Path, workers: int | None = None, progress: bool = True
) -> tuple[np.ndarray, dict[str, str]]:
    """Return (uint8 array [N, 1, size, size] in the order of ``paths``, {path: reason} for unreadable images).

    Unreadable images are left black in the array; callers must not train on them (see ``failures``).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size)
    array_file, failures_file = cache_dir / f"images-{key}.npy", cache_dir / f"failures-{key}.json"
    if array_file.exists() and failures_file.exists():
        return np.load(array_file, mmap_mode="r"), json.loads(failures_file.read_text())

    tmp_file = cache_dir / f".images-{key}.{os.getpid()}.npy"
    array = np.lib.format.open_memmap(tmp_file, mode="w+", dtype=np.uint8, shape=(len(paths), 1, size, size))
    failures: dict[str, str] = {}

    def decode(i: int) -> None:
        try:
            pixels, _ = letterbox(load_radiograph(paths[i]), size)
            array[i] = pixels.numpy()
        except InvalidImageError as err:
            failures[paths[i]] = str(err)

    # PIL decoding and resizing release the GIL, so threads use every core without pickling images.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        list(
            tqdm(
                pool.map(decode, range(len(paths))),
                total=len(paths),
                desc=f"caching images at {size}px",
                disable=not progress,
                mininterval=2.0,
            )
        )
    array.flush()
    os.replace(tmp_file, array_file)  # the memory map stays valid across a rename on POSIX
    failures_file.write_text(json.dumps(failures, indent=1))
    return np.load(array_file, mmap_mode="r"), failures
