"""This process's temporary folders: made under TMPDIR, named after the process, deleted when it exits (normally,
Ctrl-C or SIGTERM) and, after a kill -9, by the next mura-mt process that starts on the machine.

Each folder holds an ``.owner`` file with the process id and its start time (from /proc), so a folder whose process
is gone, or whose id now belongs to another process, is known for an orphan. Shared by the web app (its output
pictures, example cache and Gradio's uploads) and inference (a private ONNX graph); imports nothing of the package.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)
PREFIX = "mura-mt-"
OWNER = ".owner"
_made: list[tuple[Path, int]] = []  # (folder, the id of the process that made it)
_lock = threading.Lock()


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (macOS): only whether the id is alive
        except ProcessLookupError:
            return None
        except PermissionError:
            return "alive"
        return "alive"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in brackets may hold spaces


def process_folder(kind: str) -> Path:
    """A new folder ``mura-mt-<kind>-<pid>-*`` under TMPDIR, deleted when this process exits."""
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{os.getpid()}-"))
    (folder / OWNER).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    with _lock:
        if not _made:
            atexit.register(_remove_all)
        _made.append((folder, os.getpid()))
    return folder


def _remove_all() -> None:
    """At exit: this process's folders. A forked child (a worker pool, ZeroGPU's emulation) inherits the list and
    this handler; it must not delete its parent's folders while the parent still writes into them."""
    with _lock:
        folders, _made[:] = list(_made), []
    for folder, maker in folders:
        if maker == os.getpid():
            shutil.rmtree(folder, ignore_errors=True)


def sweep_orphans(root: str | Path | None = None) -> list[Path]:
    """Delete the folders of mura-mt processes that are gone (a kill -9, a power cut); the folders removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{PREFIX}*"):
        owner = folder / OWNER
        try:
            pid, started = owner.read_text().split()
        except (OSError, ValueError):
            continue  # not one of ours (no owner file yet, or another program's)
        if _start_time(int(pid)) in (started, "alive"):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        logger.info(f"removed {len(removed)} temporary folder(s) of mura-mt processes that were killed")
    return removed


def start_process() -> None:
    """At the start of a long-running process: clean up after killed ones, and exit cleanly on SIGTERM."""
    sweep_orphans()
    exit_cleanly_on_sigterm()


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM (systemd's stop, `kill`) ends the process with status 143 by ``SystemExit``, so that exit handlers run
    and the folders go (Python's default dies at once and leaves them), wherever the process is: starting, serving or
    stopping, and without a traceback."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, stop)
