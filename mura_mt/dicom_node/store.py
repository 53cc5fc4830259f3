"""The worklist store: what the nodes have received, the state of every study, and the worklist people read.

One SQLite file (one node, the default) or one PostgreSQL database (several nodes and the app on one list), with
the same SQL and the same behaviour (``database``). Every change is one transaction: after a kill -9 the store
holds exactly the instances whose success status went back.

A study row is created by its first instance and counts its views; an instance is recorded once by its
SOPInstanceUID (the same instance sent again changes nothing). Each node keeps its own copy of the files it
received (``copies``): a study sent to two nodes is held by both, and analysed by the one that claims it first,
which must hold every view; the other never touches it. A claim names its node, so a second node never takes a
study another is analysing; a claim older than ``CLAIM_LEASE_S`` (its node died) may be taken over. A study that
receives a new instance after it was answered goes back to "receiving", so it is analysed and answered again. A
SQLite file is readable by its owner only: it holds patient names and ids.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from mura_mt.dicom_node.database import Database

STATUSES = ("receiving", "waiting", "analysed", "skipped", "failed", "delivered")
CLAIM_LEASE_S = 600.0  # an analysis takes seconds; a claim this old belongs to a node that died
SCHEMA_VERSION = "4"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    accession TEXT,
    patient_id TEXT,
    patient_name TEXT,
    received DOUBLE PRECISION NOT NULL,        -- first instance, unix seconds
    last_instance DOUBLE PRECISION NOT NULL,   -- newest instance: the quiet period counts from here
    views INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'receiving',
    node TEXT,                                 -- the node that claimed (and answers) the study
    claimed DOUBLE PRECISION,
    body_part TEXT,
    abnormal_prob DOUBLE PRECISION,
    is_abnormal INTEGER,
    triage TEXT,                               -- "likely normal", "uncertain", "likely abnormal" or NULL
    warnings TEXT,                             -- JSON list
    answer TEXT,                               -- JSON: the whole answer, each view's included
    delivery TEXT,
    detail TEXT,                               -- why a study was skipped or failed
    read INTEGER NOT NULL DEFAULT 0,
    rev INTEGER NOT NULL DEFAULT 0,            -- counts the row's changes (meta.changes counts all: version())
    worklist_group INTEGER GENERATED ALWAYS AS (WORKLIST_GROUP) VIRTUAL,  -- the worklist's order, as columns
    worklist_key DOUBLE PRECISION GENERATED ALWAYS AS (WORKLIST_KEY) VIRTUAL  -- so that its index covers a page
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    series_uid TEXT,
    sop_class TEXT,
    modality TEXT,
    body_part TEXT,
    received DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS copies (
    sop_uid TEXT NOT NULL REFERENCES instances(sop_uid),
    node TEXT NOT NULL,                        -- the node whose disk holds the file
    path TEXT NOT NULL,                        -- '' once --retain-hours deleted it
    size BIGINT NOT NULL,
    PRIMARY KEY (sop_uid, node)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    node TEXT NOT NULL,                        -- the node that made the object and sends it
    sop_uid TEXT NOT NULL,                     -- of the object sent (an SC or the SR)
    path TEXT NOT NULL,                        -- written durably before the row exists
    destination TEXT NOT NULL,                 -- "dimse" (C-STORE to --return-to) or "stow" (STOW-RS to --dicomweb)
    state TEXT NOT NULL DEFAULT 'pending',     -- pending, delivered, superseded
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS labels (             -- ground truth that comes back: the reader, the RIS, a file
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT,                            -- NULL until a study with this accession arrives
    accession TEXT,
    label INTEGER NOT NULL,                    -- 1 abnormal, 0 normal
    body_part TEXT,                            -- the correct part, when the source names one
    source TEXT NOT NULL,                      -- reader, ris, import
    author TEXT NOT NULL,
    note TEXT,
    recorded DOUBLE PRECISION NOT NULL,
    message_id TEXT,                           -- the source's own id (HL7 MSH-10): the same message twice is one
    superseded INTEGER NOT NULL DEFAULT 0      -- a later label of the study replaced it (kept as history)
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid);
CREATE INDEX IF NOT EXISTS labels_by_study ON labels(study_uid, superseded);
CREATE INDEX IF NOT EXISTS labels_waiting ON labels(accession) WHERE study_uid IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS labels_once ON labels(source, message_id) WHERE message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS copies_by_node ON copies(node);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(node, state, next_try);
CREATE INDEX IF NOT EXISTS studies_by_status ON studies(status, last_instance);
CREATE INDEX IF NOT EXISTS studies_by_received ON studies(received);
CREATE INDEX IF NOT EXISTS studies_answered ON studies(received) WHERE status IN ('analysed', 'delivered');
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(node) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS studies_reading_order ON studies(read, worklist_group, worklist_key, study_uid)
"""
# The worklist's order: the group a study falls in, then its place in the group (ascending; read studies last).
ANSWERED = "status IN ('analysed', 'delivered')"
# A normal verdict in the "likely normal" triage group (below the rule-out threshold) reads after the other normals.
WORKLIST_GROUP = (
    f"CASE WHEN {ANSWERED} THEN (CASE WHEN warnings != '[]' THEN 1 WHEN is_abnormal = 1 THEN 0 "
    "WHEN triage = 'likely normal' THEN 4 ELSE 3 END) "
    "WHEN status IN ('receiving', 'waiting') THEN 2 ELSE 5 END"
)
WORKLIST_KEY = f"CASE WHEN {ANSWERED} AND warnings = '[]' AND is_abnormal = 1 THEN -abnormal_prob ELSE -received END"
WORKLIST_GROUPS = ("abnormal", "warning", "in progress", "normal", "likely normal", "not analysed")
# Each earlier schema's way to the next (a store is upgraded in place when it opens, in one transaction). Generated
# columns are VIRTUAL in SQLite (the only kind ALTER TABLE adds there) and STORED in PostgreSQL (the only kind it has).
# In PostgreSQL an index over expressions cannot answer a page by itself: every row skipped on the way to a late page
# was read from the table (0.9 s for page 5,000 of 1,000,000 studies); over the generated columns, 70 ms.
MIGRATIONS = {
    "2": ("ALTER TABLE studies ADD COLUMN triage TEXT", "DROP INDEX IF EXISTS studies_worklist_order"),
    "3": (
        "DROP INDEX IF EXISTS studies_worklist_order",
        "ALTER TABLE studies ADD COLUMN worklist_group INTEGER GENERATED ALWAYS AS (WORKLIST_GROUP) VIRTUAL",
        "ALTER TABLE studies ADD COLUMN worklist_key DOUBLE PRECISION GENERATED ALWAYS AS (WORKLIST_KEY) VIRTUAL",
    ),
}
CHANGED = "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE key = 'changes'"


def _with_order(sql: str) -> str:
    """``sql`` with the reading order's expressions in place of their names."""
    return sql.replace("WORKLIST_GROUP", WORKLIST_GROUP).replace("WORKLIST_KEY", WORKLIST_KEY)


SCHEMA = _with_order(SCHEMA)
MIGRATIONS = {version: tuple(map(_with_order, steps)) for version, steps in MIGRATIONS.items()}


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


class SchemaMismatch(RuntimeError):
    """The database was written by another version of the store."""


class WorklistStore:
    """The worklist at ``target`` (a SQLite file, or a ``postgresql://`` URL) as node ``node`` sees it; safe to use
    from the receiver's, the worker's and the deliverer's threads. The app, which reads and marks studies as read,
    may use any node name."""

    def __init__(self, target: str | Path, node: str = "node"):
        self.db = Database(target)
        self.node = node
        self._upgrade()
        self.db.create(SCHEMA)
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (key) DO NOTHING", (SCHEMA_VERSION,))
            tx.execute("INSERT INTO meta VALUES ('changes', '0') ON CONFLICT (key) DO NOTHING")
            found = tx.value("SELECT value FROM meta WHERE key = 'schema'")
        if found != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"the worklist store {self.db} has schema {found}, this mura-mt writes {SCHEMA_VERSION}; "
                "give the node a new store"
            )

    def _upgrade(self) -> None:
        """Bring a store written by an earlier schema up to this one (``MIGRATIONS``); a new store has no meta yet."""
        with self.db.transaction() as tx:
            if self.db.postgres:
                tx.execute("SELECT pg_advisory_xact_lock(7301)")  # two nodes starting together upgrade once
            if not tx.table_exists("meta"):
                return
            found = tx.value("SELECT value FROM meta WHERE key = 'schema'")
            if found not in MIGRATIONS:
                return  # current, or unknown: the check after create says so
            while found in MIGRATIONS:
                for statement in MIGRATIONS[found]:
                    tx.execute(self.db.portable(statement))
                found = str(int(found) + 1)
            tx.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (found,))

    def _rows(self, sql: str, params: tuple = ()) -> list[dict]:
        with self.db.transaction() as tx:
            return tx.rows(sql, params)

    # -- receiving ---------------------------------------------------------------------------------------------------

    def add_instance(self, instance: Instance, now: float | None = None) -> bool:
        """Record a received instance and this node's copy of it; False when its SOPInstanceUID was already known
        (the study is unchanged; the copy is recorded when this node did not hold one)."""
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            if (
                tx.execute(
                    "INSERT INTO studies (study_uid, accession, patient_id, patient_name, received, last_instance) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (study_uid) DO NOTHING",
                    (instance.study_uid, instance.accession, instance.patient_id, instance.patient_name, now, now),
                ).rowcount
                == 1
            ):
                count_change(tx)
            tx.lock_study(instance.study_uid)
            if instance.accession:  # a report that came before its study is attached now (labels.py)
                attach_waiting_labels(tx, instance.study_uid, instance.accession)
            new = tx.execute(
                "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sop_uid) DO NOTHING",
                (instance.sop_uid, instance.study_uid, instance.series_uid, instance.sop_class, instance.modality,
                 instance.body_part, now),
            ).rowcount == 1  # fmt: skip
            tx.execute(
                "INSERT INTO copies VALUES (?, ?, ?, ?) ON CONFLICT (sop_uid, node) DO NOTHING",
                (instance.sop_uid, self.node, instance.path, instance.size),
            )
            if new:  # a new view re-opens an answered study: it is analysed and answered again
                tx.execute(
                    "UPDATE studies SET rev = rev + 1, last_instance = ?, views = views + 1, status = 'receiving' "
                    "WHERE study_uid = ?",
                    (now, instance.study_uid),
                )
                count_change(tx)
        return new

    def instances_known(self, sop_uids: list[str]) -> set[str]:
        """Which of these SOPInstanceUIDs this node already holds a copy of."""
        marks = ",".join("?" * len(sop_uids))
        rows = self._rows(f"SELECT sop_uid FROM copies WHERE node = ? AND sop_uid IN ({marks})", (self.node, *sop_uids))
        return {r["sop_uid"] for r in rows}

    def stored_bytes(self) -> int:
        """Bytes of received pixel data this node's disk still holds (the disk budget counts these)."""
        with self.db.transaction() as tx:
            return int(tx.value("SELECT COALESCE(SUM(size), 0) FROM copies WHERE node = ?", (self.node,)))

    # -- analysing ---------------------------------------------------------------------------------------------------

    def quiet_studies(self, before: float, now: float | None = None) -> list[dict]:
        """Studies with nothing new since ``before`` that this node may claim: received and not yet answered, with
        every view on this node's disk; or claimed by an analysis that never finished (this node was stopped or
        killed during it, or another node's claim is older than the lease)."""
        now = time.time() if now is None else now
        return self._rows(
            "SELECT s.* FROM studies s WHERE s.last_instance <= ? AND (s.status = 'receiving' OR "
            "(s.status = 'waiting' AND (s.node = ? OR s.claimed < ?))) AND s.views = (SELECT COUNT(*) FROM copies c "
            "JOIN instances i ON i.sop_uid = c.sop_uid WHERE i.study_uid = s.study_uid AND c.node = ?) "
            "ORDER BY s.last_instance",
            (before, self.node, now - CLAIM_LEASE_S, self.node),
        )

    def split_studies(self, before: float) -> list[dict]:
        """Studies received and quiet since ``before`` whose views no single node holds (each node holds some): no
        node can analyse them. Each row has ``held``: {node: views it holds}."""
        rows = self._rows(
            "SELECT s.* FROM studies s WHERE s.status = 'receiving' AND s.last_instance <= ? AND NOT EXISTS "
            "(SELECT 1 FROM copies c JOIN instances i ON i.sop_uid = c.sop_uid WHERE i.study_uid = s.study_uid "
            "GROUP BY c.node HAVING COUNT(*) = s.views) ORDER BY s.last_instance",
            (before,),
        )
        for row in rows:
            held = self._rows(
                "SELECT c.node, COUNT(*) AS n FROM copies c JOIN instances i ON i.sop_uid = c.sop_uid "
                "WHERE i.study_uid = ? GROUP BY c.node ORDER BY c.node",
                (row["study_uid"],),
            )
            row["held"] = {h["node"]: int(h["n"]) for h in held}
        return rows

    def claim(self, study_uid: str, last_instance: float, now: float | None = None) -> bool:
        """Mark a quiet study as being analysed by this node; False when a new instance arrived in the meantime or
        another node claimed it first."""
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE studies SET rev = rev + 1, status = 'waiting', node = ?, claimed = ? WHERE study_uid = ? "
                "AND last_instance = ? "
                "AND (status = 'receiving' OR (status = 'waiting' AND (node = ? OR claimed < ?)))",
                (self.node, now, study_uid, last_instance, self.node, now - CLAIM_LEASE_S),
            ).rowcount
            if changed:
                count_change(tx)
        return changed == 1

    def instances(self, study_uid: str) -> list[dict]:
        """A study's instances, each with ``path``: this node's copy of the file ('' where it holds none)."""
        return self._rows(
            "SELECT i.*, COALESCE(c.path, '') AS path, COALESCE(c.size, 0) AS size FROM instances i "
            "LEFT JOIN copies c ON c.sop_uid = i.sop_uid AND c.node = ? WHERE i.study_uid = ? "
            "ORDER BY i.received, i.sop_uid",
            (self.node, study_uid),
        )

    def copies(self, study_uid: str) -> list[dict]:
        """Every node's copies of a study's files (the app shows a study from the node that holds it)."""
        return self._rows(
            "SELECT c.*, i.modality, i.sop_class, i.body_part FROM copies c JOIN instances i ON i.sop_uid = c.sop_uid "
            "WHERE i.study_uid = ? ORDER BY i.received, i.sop_uid, c.node",
            (study_uid,),
        )

    def record_answer(self, study_uid: str, last_instance: float, answer: dict, outputs: list[tuple[str, str]],
                      destinations: list[str]) -> bool:  # fmt: skip
        """Store an analysed study's answer (body_part, abnormal_prob, is_abnormal, triage, warnings, the whole answer
        as ``result``) and queue its objects (``outputs``: (sop_uid, path), already written)
        for every destination, in one transaction. False, and nothing stored, when a new instance arrived while
        the study was analysed (it will be analysed again with it) or the claim passed to another node. Older
        undelivered answers are superseded."""
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE studies SET rev = rev + 1, status = 'analysed', body_part = ?, abnormal_prob = ?, "
                "is_abnormal = ?, triage = ?, "
                "warnings = ?, answer = ?, delivery = ?, detail = NULL WHERE study_uid = ? AND last_instance = ? "
                "AND status = 'waiting' AND node = ?",
                (answer["body_part"], answer["abnormal_prob"], int(answer["is_abnormal"]), answer.get("triage"),
                 json.dumps(answer["warnings"]), json.dumps(answer.get("result"), default=float),
                 "pending" if destinations else "nowhere to send", study_uid,
                 last_instance, self.node),
            ).rowcount  # fmt: skip
            if changed:
                count_change(tx)
            if changed != 1:
                return False
            tx.execute(
                "UPDATE deliveries SET state = 'superseded' WHERE study_uid = ? AND state = 'pending'", (study_uid,)
            )
            tx.executemany(
                "INSERT INTO deliveries (study_uid, node, sop_uid, path, destination) VALUES (?, ?, ?, ?, ?)",
                [(study_uid, self.node, sop, path, dest) for sop, path in outputs for dest in destinations],
            )
        return True

    def record_outcome(self, study_uid: str, last_instance: float, status: str, detail: str) -> bool:
        """A study that was not answered: "skipped" (nothing to analyse) or "failed" (and why)."""
        if status not in ("skipped", "failed"):
            raise ValueError(f"status must be skipped or failed, got {status!r}")
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE studies SET rev = rev + 1, status = ?, detail = ?, warnings = '[]' WHERE study_uid = ? "
                "AND last_instance = ? AND status = 'waiting' AND node = ?",
                (status, detail, study_uid, last_instance, self.node),
            ).rowcount
            if changed:
                count_change(tx)
        return changed == 1

    # -- delivering --------------------------------------------------------------------------------------------------

    def due_deliveries(self, now: float | None = None) -> list[dict]:
        """This node's objects due to be sent."""
        now = time.time() if now is None else now
        return self._rows(
            "SELECT * FROM deliveries WHERE node = ? AND state = 'pending' AND next_try <= ? ORDER BY id",
            (self.node, now),
        )

    def mark_delivered(self, delivery_id: int) -> float | None:
        """One object arrived; when a study has nothing left to send, the study is "delivered" and its last
        instance's time is returned (the metrics' last-instance-to-delivered), else None."""
        with self.db.transaction() as tx:
            study_uid = tx.value("SELECT study_uid FROM deliveries WHERE id = ?", (delivery_id,))
            tx.lock_study(study_uid)
            tx.execute("UPDATE deliveries SET state = 'delivered', last_error = NULL WHERE id = ?", (delivery_id,))
            left = tx.value("SELECT COUNT(*) FROM deliveries WHERE study_uid = ? AND state = 'pending'", (study_uid,))
            if left == 0:
                done = tx.execute(
                    "UPDATE studies SET rev = rev + 1, status = 'delivered', delivery = 'delivered' "
                    "WHERE study_uid = ? "
                    "AND status = 'analysed'",
                    (study_uid,),
                ).rowcount
                if done:
                    count_change(tx)
                    return float(tx.value("SELECT last_instance FROM studies WHERE study_uid = ?", (study_uid,)))
        return None

    def mark_failed_attempt(self, delivery_id: int, error: str, next_try: float) -> None:
        with self.db.transaction() as tx:
            study_uid = tx.value("SELECT study_uid FROM deliveries WHERE id = ?", (delivery_id,))
            tx.lock_study(study_uid)
            tx.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_try = ?, last_error = ? WHERE id = ?",
                (next_try, error[:500], delivery_id),
            )
            tx.execute(
                "UPDATE studies SET rev = rev + 1, delivery = ? WHERE study_uid = ?",
                (f"retrying: {error[:200]}", study_uid),
            )
            count_change(tx)

    def deliveries(self, study_uid: str) -> list[dict]:
        return self._rows("SELECT * FROM deliveries WHERE study_uid = ? ORDER BY id", (study_uid,))

    def forget_pixels(self, before: float) -> int:
        """Delete this node's received files of studies delivered and quiet since ``before`` (``--retain-hours``);
        their worklist rows stay. Returns how many studies lost their pixel data here."""
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT c.sop_uid, c.path, i.study_uid FROM copies c JOIN instances i ON i.sop_uid = c.sop_uid "
                "JOIN studies s ON s.study_uid = i.study_uid WHERE c.node = ? AND s.status = 'delivered' "
                "AND s.last_instance < ? AND c.path != ''",
                (self.node, before),
            )
            for row in rows:
                Path(row["path"]).unlink(missing_ok=True)
                tx.execute(
                    "UPDATE copies SET path = '', size = 0 WHERE sop_uid = ? AND node = ?", (row["sop_uid"], self.node)
                )
        return len({row["study_uid"] for row in rows})

    # -- reading -----------------------------------------------------------------------------------------------------

    def study(self, study_uid: str) -> dict | None:
        """A study's row, its warnings as a list; None when the store has no such study."""
        rows = self._rows("SELECT * FROM studies WHERE study_uid = ?", (study_uid,))
        return _decoded(rows[0]) if rows else None

    def worklist(self, limit: int = 100, offset: int = 0, status: str | None = None,
                 since: float | None = None) -> tuple[list[dict], int]:  # fmt: skip
        """One page of the worklist in reading order, and how many studies match: abnormal without a warning (most
        probable first), then every answered study with a warning, then studies still arriving or being analysed,
        then normal, then normal and "likely normal" by the operating points, then skipped and failed (each of the
        last five newest first); read studies after all unread.
        ``status`` keeps one status; ``since`` keeps studies received at or after it (unix seconds)."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if since is not None:
            where.append("received >= ?")
            params.append(float(since))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "read, worklist_group, worklist_key, study_uid"
        with self.db.transaction() as tx:
            # The page's keys first, from the index alone (a late page skips its rows there), then their rows.
            rows = tx.rows(
                f"SELECT s.* FROM (SELECT {order} FROM studies {clause} ORDER BY {order} LIMIT ? OFFSET ?) page "
                f"{tx.join_in_order()} studies s ON s.study_uid = page.study_uid "
                f"ORDER BY page.read, page.worklist_group, page.worklist_key, page.study_uid",
                (*params, int(limit), int(offset)),
            )
            total = int(tx.value(f"SELECT COUNT(*) FROM studies {clause}", tuple(params)))
        for row in rows:
            row["group"] = WORKLIST_GROUPS[row["worklist_group"]]
            _decoded(row)
        return rows, total

    def version(self) -> int:
        """A number that grows with every change any node or reader makes (the pages poll it every few seconds): one
        row read, whatever the store's size."""
        with self.db.transaction() as tx:
            return int(tx.value("SELECT value FROM meta WHERE key = 'changes'"))

    def set_read(self, study_uid: str, read: bool = True) -> bool:
        """Mark a study as read (or not); False when no such study."""
        with self.db.transaction() as tx:
            found = tx.execute("UPDATE studies SET rev = rev + 1, read = ? WHERE study_uid = ?", (int(read), study_uid))
            if found.rowcount == 1:
                count_change(tx)
            return found.rowcount == 1

    def close(self) -> None:
        self.db.close()


def count_change(tx) -> None:
    """Count one change a reader may see (``WorklistStore.version``), in the transaction that makes it: one row, so
    that the pages' polls cost the same at a million studies as at ten."""
    tx.execute(CHANGED)


def attach_waiting_labels(tx, study_uid: str, accession: str) -> None:
    """Labels kept for an accession no study had yet belong to this study now; the newest is the current one."""
    waiting = tx.rows(
        "SELECT id FROM labels WHERE study_uid IS NULL AND accession = ? ORDER BY recorded, id", (accession,)
    )
    if not waiting:
        return
    tx.execute("UPDATE labels SET study_uid = ? WHERE study_uid IS NULL AND accession = ?", (study_uid, accession))
    tx.execute("UPDATE labels SET superseded = 1 WHERE study_uid = ? AND id != ?", (study_uid, waiting[-1]["id"]))


def _decoded(row: dict) -> dict:
    row["warnings"] = json.loads(row["warnings"]) if row["warnings"] else []
    row.pop("worklist_group", None), row.pop("worklist_key", None)  # the order's columns: the worklist says "group"
    return row
