"""Output pictures as PNG files with unique names, encoded in the request's own thread.

Gradio would write a returned PIL image to a content-addressed cache path in place, so two requests with the
same picture could truncate the file while a client downloads it (seen as a broken download under
concurrency). A file path is instead copied into the cache under a temporary name and renamed. Our files
are removed after a few minutes, so the folder does not grow; the sweep runs at most once a minute, not per
request (under load the folder holds thousands of files).
"""

from __future__ import annotations

import threading
import time
import uuid

from mura_mt.scratch import process_folder


class PictureFiles:
    """A private folder of PNG files that the app's answers point to; see the module docstring for why."""

    KEEP_S = 300
    SWEEP_EVERY_S = 60

    def __init__(self):
        self.folder = process_folder("pictures")  # deleted with the process
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY_S
        self._sweep_lock = threading.Lock()

    def write(self, image) -> str:
        if time.monotonic() >= self._next_sweep and self._sweep_lock.acquire(blocking=False):
            try:  # one request sweeps; the others do not wait for it
                self._next_sweep = time.monotonic() + self.SWEEP_EVERY_S
                self._sweep()
            finally:
                self._sweep_lock.release()
        path = self.folder / f"{uuid.uuid4().hex}.png"
        image.save(path, format="PNG", compress_level=1)  # 2x faster to encode than the default; loopback-sized
        return str(path)

    def _sweep(self) -> None:
        now = time.time()
        for old in self.folder.glob("*.png"):
            try:
                if now - old.stat().st_mtime > self.KEEP_S:
                    old.unlink()
            except FileNotFoundError:  # removed meanwhile
                pass
