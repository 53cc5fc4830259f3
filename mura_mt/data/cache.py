"""The prepared-image cache: every indexed image decoded once, letterboxed, stored as uint8 [N, 1, S, S].

Decoding 512-px PNGs in the training loop would compete with the model for the machine's cores; the cache
makes each epoch a memory read. Building it is also the pre-scan: images that cannot be decoded are collected
(never silently dropped) and returned, and the caller decides whether to abort.

The cache is shared: by default it lives in one folder per user (``$MURA_MT_CACHE``, else
``$XDG_CACHE_HOME/mura_mt/images``, else ``~/.cache/mura_mt/images``) and its files are keyed by the source
files (paths, sizes, modification times), the image size and the cache format, so every run on the same data
reuses it and any change to the data makes a new one. Files are written under temporary names and renamed when
complete (the array last), so a killed build never leaves a half-written cache behind, and builders on several
machines sharing one filesystem cannot corrupt each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mura_mt.imaging.io import InvalidImageError, load_radiograph
from mura_mt.imaging.preprocessing import letterbox

CACHE_ENV = "MURA_MT_CACHE"
CACHE_FORMAT = 2  # bump when what a cached pixel means changes (decoder, letterbox)


class CacheBuildError(RuntimeError):
    """The process building the image cache failed; the processes waiting for it stop with its message."""


def default_cache_dir() -> Path:
    """The shared cache folder of this user (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mura_mt" / "images"


def cache_key(paths: list[str], size: int) -> str:
    """Changes when any image, its order, its size on disk or its modification time changes."""
    digest = hashlib.sha256(f"format{CACHE_FORMAT}|{size}\n".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _files(cache_dir: Path, key: str) -> tuple[Path, Path, Path]:
    host = socket.gethostname()
    return cache_dir / f"images-{key}.npy", cache_dir / f"failures-{key}.json", cache_dir / f".failed-{key}-{host}"


def build_image_cache(
    paths: list[str], size: int, cache_dir: str | Path, workers: int | None = None, progress: bool = True
) -> tuple[np.ndarray, dict[str, str]]:
    """Return (uint8 array [N, 1, size, size] in the order of ``paths``, {path: reason} for unreadable images),
    decoding only when no complete cache for exactly these files exists.

    Unreadable images are left black in the array; callers must not train on them (see ``failures``).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size)
    array_file, failures_file, failed_marker = _files(cache_dir, key)
    if array_file.exists() and failures_file.exists():
        return np.load(array_file, mmap_mode="r"), json.loads(failures_file.read_text())
    failed_marker.unlink(missing_ok=True)
    try:
        return _build(paths, size, array_file, failures_file, workers, progress)
    except BaseException as err:
        failed_marker.write_text(f"{type(err).__name__}: {err}")  # the waiting processes stop with this message
        raise


def _build(paths, size, array_file: Path, failures_file: Path, workers, progress) -> tuple[np.ndarray, dict]:
    unique = f"{socket.gethostname()}.{os.getpid()}"
    tmp_array = array_file.with_name(f".{array_file.stem}.{unique}.npy")
    tmp_failures = failures_file.with_name(f".{failures_file.name}.{unique}")
    array = np.lib.format.open_memmap(tmp_array, mode="w+", dtype=np.uint8, shape=(len(paths), 1, size, size))
    failures: dict[str, str] = {}

    def decode(i: int) -> None:
        try:
            pixels, _ = letterbox(load_radiograph(paths[i]), size)
            array[i] = pixels.numpy()
        except InvalidImageError as err:
            failures[paths[i]] = str(err)

    try:
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
        tmp_failures.write_text(json.dumps(failures, indent=1))
        os.replace(tmp_failures, failures_file)
        os.replace(tmp_array, array_file)  # last: its presence means the cache is complete
    finally:
        tmp_array.unlink(missing_ok=True)
        tmp_failures.unlink(missing_ok=True)
    return np.load(array_file, mmap_mode="r"), failures


def wait_for_image_cache(
    paths: list[str], size: int, cache_dir: str | Path, timeout_s: float, poll_s: float = 1.0
) -> tuple[np.ndarray, dict[str, str]]:
    """Wait (by polling the filesystem, not in a collective that could time out) until another process of this
    machine has built the cache, then open it. Raises ``CacheBuildError`` if that process failed."""
    started = time.time()
    array_file, failures_file, failed_marker = _files(Path(cache_dir), cache_key(paths, size))
    while not (array_file.exists() and failures_file.exists()):
        if failed_marker.exists() and failed_marker.stat().st_mtime >= started - 5:
            raise CacheBuildError(f"building the image cache failed in another process: {failed_marker.read_text()}")
        if time.time() - started > timeout_s:
            raise CacheBuildError(f"no image cache {array_file} after {timeout_s:.0f} s (data.cache_wait_minutes)")
        time.sleep(poll_s)
    return np.load(array_file, mmap_mode="r"), json.loads(failures_file.read_text())
