"""The worklist store: what the node has received, and the state of every study. SQLite (standard library) in WAL
mode, one connection per thread, every change in a transaction: after a kill -9 the file holds exactly the
instances whose success status went back.

A study row is created by its first instance and counts its views; an instance is recorded once by its
SOPInstanceUID (the same instance sent again changes nothing). A study that receives a new instance after it was
answered goes back to "receiving", so it is analysed and answered again. The file is readable by its owner only:
it holds patient names and ids.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("receiving", "waiting", "analysed", "skipped", "failed", "delivered")
SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    accession TEXT,
    patient_id TEXT,
    patient_name TEXT,
    received REAL NOT NULL,        -- first instance, unix seconds
    last_instance REAL NOT NULL,   -- newest instance: the quiet period counts from here
    views INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'receiving',
    body_part TEXT,
    abnormal_prob REAL,
    is_abnormal INTEGER,
    warnings TEXT,                 -- JSON list
    delivery TEXT,
    detail TEXT,                   -- why a study was skipped or failed
    read INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    series_uid TEXT,
    sop_class TEXT,
    modality TEXT,
    body_part TEXT,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid);
CREATE INDEX IF NOT EXISTS studies_by_status ON studies(status, last_instance);
"""


@dataclass(frozen=True)
class Instance:
    """One received instance, as the receiver describes it to the store."""

    sop_uid: str
    study_uid: str
    series_uid: str
    sop_class: str
    modality: str
    body_part: str
    path: str
    size: int
    accession: str = ""
    patient_id: str = ""
    patient_name: str = ""


class WorklistStore:
    """The node's SQLite file (``path``), safe to use from the receiver's and the worker's threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            # Created owner-only before anything is written into it (names and ids are patient data).
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(self.path, 0o600)
        self._local = threading.local()
        self._db().executescript(SCHEMA)

    def _connection(self) -> _Transaction:
        return _Transaction(self._db())

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # an acknowledged instance survives a power cut
            db.execute("PRAGMA foreign_keys=ON")
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    def add_instance(self, instance: Instance, now: float | None = None) -> bool:
        """Record a received instance; False (and nothing changed) when its SOPInstanceUID is already known."""
        now = time.time() if now is None else now
        with self._connection() as db:
            if db.execute("SELECT 1 FROM instances WHERE sop_uid = ?", (instance.sop_uid,)).fetchone():
                return False
            db.execute(
                "INSERT INTO studies (study_uid, accession, patient_id, patient_name, received, last_instance) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(study_uid) DO NOTHING",
                (instance.study_uid, instance.accession, instance.patient_id, instance.patient_name, now, now),
            )
            db.execute(
                "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (instance.sop_uid, instance.study_uid, instance.series_uid, instance.sop_class, instance.modality,
                 instance.body_part, instance.path, instance.size, now),
            )  # fmt: skip
            # A new view re-opens an answered study: it is analysed and answered again.
            db.execute(
                "UPDATE studies SET last_instance = ?, views = views + 1, status = 'receiving' WHERE study_uid = ?",
                (now, instance.study_uid),
            )
        return True

    def instances_known(self, sop_uids: list[str]) -> set[str]:
        """Which of these SOPInstanceUIDs the store already holds."""
        with self._connection() as db:
            marks = ",".join("?" * len(sop_uids))
            rows = db.execute(f"SELECT sop_uid FROM instances WHERE sop_uid IN ({marks})", sop_uids).fetchall()
        return {r[0] for r in rows}

    def study(self, study_uid: str) -> dict | None:
        with self._connection() as db:
            row = db.execute("SELECT * FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        return dict(row) if row else None

    def instances(self, study_uid: str) -> list[dict]:
        with self._connection() as db:
            rows = db.execute(
                "SELECT * FROM instances WHERE study_uid = ? ORDER BY received, sop_uid", (study_uid,)
            ).fetchall()
        return [dict(r) for r in rows]

    def stored_bytes(self) -> int:
        """Bytes of received pixel data the store still references (the disk budget counts these)."""
        with self._connection() as db:
            return int(db.execute("SELECT COALESCE(SUM(size), 0) FROM instances").fetchone()[0])

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _Transaction:
    """``with`` block = one IMMEDIATE transaction (the write lock is taken at once, so two writers never deadlock)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, traceback) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
