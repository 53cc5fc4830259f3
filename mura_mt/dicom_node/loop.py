"""The node's background passes: a thread that calls ``run_once`` every ``poll`` seconds, or at once when woken."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)


class PassLoop:
    """Subclasses implement ``run_once()``; a failing pass is logged and the next one runs (one bad study or an
    unreachable destination must not stop the node)."""

    name = "mura-mt-pass"
    poll = 0.5

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self):
        raise NotImplementedError

    def wake(self) -> None:
        """Run the next pass now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception(f"{self.name} pass failed")
            self._wake.wait(self.poll)
            self._wake.clear()
