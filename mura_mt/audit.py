"""The audit trail of patient data: who did what to which study, one JSON line an event.

Each line names the time (UTC, ISO 8601), the user (the login name on the web side; the calling AE title for
DICOM), the remote address, the action and the study where there is one, and is written, flushed and fsynced
BEFORE the action completes (the caller records, then answers). Never a picture, never a password: callers pass
names, addresses and UIDs only. The file is owner-only and only ever appended to. Shared by the DICOM node and the
web app, so it lives below both; it imports nothing from the package.
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


class AuditLog:
    """Appends events to ``path`` (created owner-only); safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.chmod(self.path, 0o600)  # an existing file too: it names patients' studies
        self._lock = threading.Lock()

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
            os.write(self._fd, line)
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


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
    """The events of an audit file that match every filter given (``since``: at or after, timezone-aware)."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path} line {number} is not an audit event (JSON)") from None
            if study and event.get("study_uid") != study:
                continue
            if user and event.get("user") != user:
                continue
            if since and datetime.fromisoformat(event["time"].replace("Z", "+00:00")) < since:
                continue
            yield event
