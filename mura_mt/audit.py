"""The audit trail of patient data: who did what to which study, one JSON line an event.

Each line names the time (UTC, ISO 8601), the user (the login name on the web side; the calling AE title for
DICOM), the remote address, the action and the study where there is one, and is written, flushed and fsynced
BEFORE the action completes (the caller records, then answers). Never a picture, never a password: callers pass
names, addresses and UIDs only. The file is owner-only and only ever appended to. Past ``max_bytes`` it is rotated
beside itself: ``audit.jsonl`` becomes ``audit.jsonl.1``, the next time ``.2``, ... (the highest number the newest
rotated file; no file is ever renamed again or deleted), and ``read_audit`` reads them all in order. Shared by the
DICOM node and the web app, so it lives below both; it imports nothing from the package.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

ACTIONS = (
    "worklist listed",
    "study opened",
    "study marked read",
    "study marked unread",
    "read recorded",
    "label received",
    "instance received",
    "answer sent",
    "association refused",
    "login",
    "login failed",
    "login throttled",
    "logout",
    "access refused",
    "identity header refused",
    "connection refused",
)
FIELDS = ("time", "user", "remote", "action", "study_uid", "detail")
MAX_MB = 100.0  # --audit-max-mb's default: a year at a busy site is a few hundred MB of lines


class AuditLog:
    """Appends events to ``path`` (created owner-only); safe to share between threads. ``max_bytes``: rotate before
    the file would grow past it (None: never)."""

    def __init__(self, path: str | Path, max_bytes: int | None = int(MAX_MB * 2**20)):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.chmod(self.path, 0o600)  # an existing file too: it names patients' studies

    def record(
        self, action: str, user: str, remote: str | None = None, study_uid: str | None = None, detail: str = ""
    ) -> None:
        """One event, durable when this returns."""
        if action not in ACTIONS:
            raise ValueError(f"audit action must be one of {ACTIONS}, got {action!r}")
        event = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "user": user or "anonymous",
            "remote": remote,
            "action": action,
            "study_uid": study_uid,
            "detail": detail,
        }
        line = (json.dumps(event, ensure_ascii=False) + "\n").encode()
        with self._lock:  # one write of the whole line, then to the disk, before the caller goes on
            self._rotate_if_full(len(line))
            os.write(self._fd, line)
            os.fsync(self._fd)

    def _rotate_if_full(self, adding: int) -> None:
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        if current is None or current.st_ino != os.fstat(self._fd).st_ino:  # another process rotated it
            os.close(self._fd)
            self._open()
            current = os.stat(self.path)
        if self.max_bytes is None or current.st_size == 0 or current.st_size + adding <= self.max_bytes:
            return
        numbers = [n for n, _ in _rotated(self.path)]
        target = self.path.with_name(f"{self.path.name}.{max(numbers, default=0) + 1}")
        os.fsync(self._fd)
        os.rename(self.path, target)  # never over an existing file: the number is new
        _fsync_folder(self.path.parent)
        os.close(self._fd)
        self._open()

    def close(self) -> None:
        os.close(self._fd)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rotated(path: Path) -> list[tuple[int, Path]]:
    found = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            found.append((int(suffix), candidate))
    return sorted(found)


def audit_files(path: str | Path) -> list[Path]:
    """The rotated files of ``path``, oldest first, then ``path`` itself (when it exists)."""
    path = Path(path)
    files = [file for _, file in _rotated(path)]
    return files + [path] if path.exists() or not files else files


def default_audit_path(store_dir: str | Path | None, worklist_db: str | None) -> Path:
    """``audit.jsonl`` in the node's store folder; for an app without a node, beside a SQLite worklist file, else
    (a PostgreSQL worklist) in the working folder."""
    if store_dir:
        return Path(store_dir) / "audit.jsonl"
    if worklist_db and "://" not in worklist_db:
        return Path(worklist_db).parent / "audit.jsonl"
    return Path("audit.jsonl")


def read_audit(
    path: str | Path, study: str | None = None, user: str | None = None, since: datetime | None = None
) -> Iterator[dict]:
    """The events of an audit file and its rotated files, oldest first, that match every filter given (``since``:
    at or after, timezone-aware)."""
    for file in audit_files(path):
        with open(file, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"{file} line {number} is not an audit event (JSON)") from None
                if study and event.get("study_uid") != study:
                    continue
                if user and event.get("user") != user:
                    continue
                if since and datetime.fromisoformat(event["time"].replace("Z", "+00:00")) < since:
                    continue
                yield event
