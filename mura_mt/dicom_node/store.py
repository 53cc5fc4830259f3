"""The worklist store: what the node has received, and the state of every study. SQLite (standard library) in WAL
mode, one connection per thread, every change in a transaction: after a kill -9 the file holds exactly the
instances whose success status went back.

A study row is created by its first instance and counts its views; an instance is recorded once by its
SOPInstanceUID (the same instance sent again changes nothing). A study that receives a new instance after it was
answered goes back to "receiving", so it is analysed and answered again. The file is readable by its owner only:
it holds patient names and ids.
"""

from __future__ import annotations

import json
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
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    sop_uid TEXT NOT NULL,         -- of the object sent (an SC or the SR)
    path TEXT NOT NULL,            -- written durably before the row exists
    destination TEXT NOT NULL,     -- "dimse" (C-STORE to --return-to) or "stow" (STOW-RS to --dicomweb)
    state TEXT NOT NULL DEFAULT 'pending',  -- pending, delivered, superseded
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, next_try);
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

    def _rows(self, sql: str, params: tuple) -> list[dict]:
        """A read, as a list of dicts."""
        with self._connection() as db:
            return [dict(r) for r in db.execute(sql, params).fetchall()]

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

    def quiet_studies(self, before: float) -> list[dict]:
        """Studies with nothing new since ``before``: received and not yet answered, or claimed by an analysis that
        never finished (the node was stopped or killed during it)."""
        return self._rows(
            "SELECT * FROM studies WHERE status IN ('receiving', 'waiting') AND last_instance <= ? "
            "ORDER BY last_instance",
            (before,),
        )

    def claim(self, study_uid: str, last_instance: float) -> bool:
        """Mark a quiet study as being analysed; False when a new instance arrived in the meantime."""
        with self._connection() as db:
            changed = db.execute(
                "UPDATE studies SET status = 'waiting' WHERE study_uid = ? AND last_instance = ? "
                "AND status IN ('receiving', 'waiting')",
                (study_uid, last_instance),
            ).rowcount
        return changed == 1

    def record_answer(self, study_uid: str, last_instance: float, answer: dict, outputs: list[tuple[str, str]],
                      destinations: list[str]) -> bool:  # fmt: skip
        """Store an analysed study's answer and queue its objects (``outputs``: (sop_uid, path), already written)
        for every destination, in one transaction. False, and nothing stored, when a new instance arrived while
        the study was analysed (it will be analysed again with it). Older undelivered answers are superseded."""
        with self._connection() as db:
            changed = db.execute(
                "UPDATE studies SET status = 'analysed', body_part = ?, abnormal_prob = ?, is_abnormal = ?, "
                "warnings = ?, delivery = 'pending', detail = NULL WHERE study_uid = ? AND last_instance = ? "
                "AND status = 'waiting'",
                (answer["body_part"], answer["abnormal_prob"], int(answer["is_abnormal"]),
                 json.dumps(answer["warnings"]), study_uid, last_instance),
            ).rowcount  # fmt: skip
            if changed != 1:
                return False
            db.execute(
                "UPDATE deliveries SET state = 'superseded' WHERE study_uid = ? AND state = 'pending'", (study_uid,)
            )
            db.executemany(
                "INSERT INTO deliveries (study_uid, sop_uid, path, destination) VALUES (?, ?, ?, ?)",
                [(study_uid, sop, path, dest) for sop, path in outputs for dest in destinations],
            )
            if not destinations:
                db.execute("UPDATE studies SET delivery = 'nowhere to send' WHERE study_uid = ?", (study_uid,))
        return True

    def record_outcome(self, study_uid: str, last_instance: float, status: str, detail: str) -> bool:
        """A study that was not answered: "skipped" (nothing to analyse) or "failed" (and why)."""
        if status not in ("skipped", "failed"):
            raise ValueError(f"status must be skipped or failed, got {status!r}")
        with self._connection() as db:
            changed = db.execute(
                "UPDATE studies SET status = ?, detail = ? WHERE study_uid = ? AND last_instance = ? "
                "AND status = 'waiting'",
                (status, detail, study_uid, last_instance),
            ).rowcount
        return changed == 1

    def due_deliveries(self, now: float | None = None) -> list[dict]:
        now = time.time() if now is None else now
        return self._rows("SELECT * FROM deliveries WHERE state = 'pending' AND next_try <= ? ORDER BY id", (now,))

    def mark_delivered(self, delivery_id: int) -> None:
        """One object arrived; when a study has nothing left to send, the study is "delivered"."""
        with self._connection() as db:
            study_uid = db.execute("SELECT study_uid FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()[0]
            db.execute("UPDATE deliveries SET state = 'delivered', last_error = NULL WHERE id = ?", (delivery_id,))
            left = db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE study_uid = ? AND state = 'pending'", (study_uid,)
            ).fetchone()[0]
            if left == 0:
                db.execute(
                    "UPDATE studies SET status = 'delivered', delivery = 'delivered' WHERE study_uid = ? "
                    "AND status = 'analysed'",
                    (study_uid,),
                )

    def mark_failed_attempt(self, delivery_id: int, error: str, next_try: float) -> None:
        with self._connection() as db:
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_try = ?, last_error = ? WHERE id = ?",
                (next_try, error[:500], delivery_id),
            )
            db.execute(
                "UPDATE studies SET delivery = ? WHERE study_uid = (SELECT study_uid FROM deliveries WHERE id = ?)",
                (f"retrying: {error[:200]}", delivery_id),
            )

    def deliveries(self, study_uid: str) -> list[dict]:
        return self._rows("SELECT * FROM deliveries WHERE study_uid = ? ORDER BY id", (study_uid,))

    def forget_pixels(self, before: float) -> int:
        """Delete the received files of studies delivered and quiet since ``before`` (``--retain-hours``); their
        worklist rows stay. Returns how many studies lost their pixel data."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT i.sop_uid, i.path, i.study_uid FROM instances i JOIN studies s ON s.study_uid = i.study_uid "
                "WHERE s.status = 'delivered' AND s.last_instance < ? AND i.path != ''",
                (before,),
            ).fetchall()
            for sop_uid, path, _ in rows:
                Path(path).unlink(missing_ok=True)
                db.execute("UPDATE instances SET path = '', size = 0 WHERE sop_uid = ?", (sop_uid,))
        return len({study_uid for _, _, study_uid in rows})

    def study(self, study_uid: str) -> dict | None:
        rows = self._rows("SELECT * FROM studies WHERE study_uid = ?", (study_uid,))
        return rows[0] if rows else None

    def instances(self, study_uid: str) -> list[dict]:
        return self._rows("SELECT * FROM instances WHERE study_uid = ? ORDER BY received, sop_uid", (study_uid,))

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
