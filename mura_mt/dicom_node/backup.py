"""The worklist store's backups: a consistent copy taken while nodes and the app write to it, put back on demand,
and a check of what a store holds (``scripts/store_admin.py``).

SQLite: the online backup API (a page-by-page copy that restarts when a writer changes a page, so the copy is one
committed state), written beside its destination, checked with ``PRAGMA integrity_check`` and renamed into place.
PostgreSQL: ``pg_dump --format=custom`` (one snapshot, taken without blocking writers) and ``pg_restore``. A restore
replaces the store: stop the nodes and the app that use it first.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from mura_mt.dicom_node.database import Database, is_postgres_url, redact
from mura_mt.dicom_node.store import SCHEMA_VERSION

TABLES = ("studies", "instances", "copies", "deliveries", "labels", "meta")


class BackupError(RuntimeError):
    """A backup, restore or check that cannot be done; the message says why (never a password)."""


def _postgres_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise BackupError(f"{name} is not installed (Debian: apt-get install postgresql-client)")
    return str(versions[-1])


def _sqlite_path(target: str) -> Path:
    return Path(target.removeprefix("sqlite:///"))


def backup(target: str, out: str | Path) -> Path:
    """A consistent copy of the store ``target`` in ``out`` (owner-only; written beside it, then renamed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        if is_postgres_url(target):
            _run([_postgres_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(partial), target], target)
        else:
            source = _sqlite_path(target)
            if not source.is_file():
                raise BackupError(f"no worklist store at {source}")
            os.close(os.open(partial, os.O_CREAT | os.O_WRONLY, 0o600))
            with closing(sqlite3.connect(source, timeout=30)) as src, closing(sqlite3.connect(partial)) as dst:
                src.backup(dst)
                if dst.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    raise BackupError(f"the copy of {source} fails SQLite's integrity check")
        os.chmod(partial, 0o600)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def restore(backup_file: str | Path, target: str) -> None:
    """Put ``backup_file`` back as the store ``target`` (stop what uses the store first)."""
    backup_file = Path(backup_file)
    if not backup_file.is_file():
        raise BackupError(f"no backup at {backup_file}")
    if is_postgres_url(target):
        _run([_postgres_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
              "--dbname", target, str(backup_file)], target)  # fmt: skip
        return
    destination = _sqlite_path(target)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.restoring")
    shutil.copyfile(backup_file, partial)
    os.chmod(partial, 0o600)
    try:
        with closing(sqlite3.connect(partial)) as copy:
            intact = copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:  # not a SQLite file at all
        intact = False
    if not intact:
        partial.unlink()
        raise BackupError(f"{backup_file} fails SQLite's integrity check: not restored")
    for stale in (Path(f"{destination}-wal"), Path(f"{destination}-shm")):  # the old store's journal is not ours
        stale.unlink(missing_ok=True)
    os.replace(partial, destination)


def check(target: str) -> dict:
    """The store's schema version, integrity and row counts; ``ok`` False says what is wrong in ``problems``."""
    problems = []
    database = Database(target)
    try:
        return _check(database, target, problems)
    except sqlite3.DatabaseError as err:  # not a SQLite file, or one damaged past reading
        problems.append(f"SQLite cannot read it: {err}")
        return {"store": redact(target), "schema": None, "counts": {}, "ok": False, "problems": problems}
    finally:
        database.close()


def _check(database: Database, target: str, problems: list[str]) -> dict:
    with database.transaction() as tx:
        schema = tx.value("SELECT value FROM meta WHERE key = 'schema'") if tx.table_exists("meta") else None
        counts = {t: tx.value(f"SELECT COUNT(*) FROM {t}") for t in TABLES if tx.table_exists(t)}
        if not database.postgres:
            verdict = tx.value("PRAGMA integrity_check")
            if verdict != "ok":
                problems.append(f"SQLite integrity check: {verdict}")
        orphans = 0
        if {"instances", "studies"} <= set(counts):
            orphans = tx.value("SELECT COUNT(*) FROM instances WHERE study_uid NOT IN (SELECT study_uid FROM studies)")
    if schema is None:
        problems.append("not a worklist store (no meta table)")
    elif schema != SCHEMA_VERSION:
        problems.append(f"schema {schema}; this mura-mt writes {SCHEMA_VERSION} (a node upgrades 2 in place)")
    if orphans:
        problems.append(f"{orphans} instance(s) of no study")
    return {"store": redact(target), "schema": schema, "counts": counts, "ok": not problems, "problems": problems}


def _run(command: list[str], target: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().replace(target, redact(target))
        raise BackupError(f"{Path(command[0]).name} failed: {message[-1500:]}")
