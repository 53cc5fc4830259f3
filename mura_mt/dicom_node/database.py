"""The worklist store's two databases behind one small interface: an embedded SQLite file (the default, one site,
one node) or a PostgreSQL server (``postgresql://...``: several nodes and the app on one shared list).

The store writes its SQL once, with ``?`` placeholders and types both accept (``DOUBLE PRECISION`` is REAL in SQLite);
this module translates placeholders, gives every thread its own connection, and makes ``with db.transaction() as tx``
one transaction on both. SQLite takes the write lock at once (``BEGIN IMMEDIATE``: two writers never deadlock);
PostgreSQL runs READ COMMITTED, where a conditional ``UPDATE ... WHERE status = ...`` is still atomic: of two nodes
racing for one study, exactly one sees its row change.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StoreUnavailable(ConnectionError):
    """The worklist database cannot be reached or used now (a server down, a file locked for too long): a
    transient condition, unlike a wrong statement. The message names the database, never its password."""


def is_postgres_url(target: str) -> bool:
    return str(target).startswith(POSTGRES_SCHEMES)


def redact(target: str) -> str:
    """The store's address for logs and messages: a PostgreSQL URL without its password."""
    if not is_postgres_url(target):
        return str(target)
    parts = urlsplit(str(target))
    if parts.password is None:
        return str(target)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class Transaction:
    """The statements of one transaction; rows come back as dicts on both databases."""

    def __init__(self, connection, postgres: bool):
        self._connection, self._postgres = connection, postgres

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._postgres else sql

    def execute(self, sql: str, params: tuple = ()):
        return self._connection.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        if not rows:
            return
        if self._postgres:
            with self._connection.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)
        else:
            self._connection.executemany(sql, rows)

    def rows(self, sql: str, params: tuple = ()) -> list[dict]:
        return [dict(row) for row in self.execute(sql, params).fetchall()]

    def columns(self, sql: str, params: tuple = ()) -> list[tuple]:
        """The result as one tuple per column (no dict per row: a year of rows in a few columns stays cheap)."""
        if self._postgres:
            from psycopg.rows import tuple_row

            with self._connection.cursor(row_factory=tuple_row) as cursor:
                fetched = cursor.execute(self._sql(sql), params).fetchall()
                width = len(cursor.description or ())
        else:
            cursor = self._connection.cursor()
            cursor.row_factory = None  # plain tuples: sqlite3.Row would double the time of a large fetch
            cursor.execute(sql, params)
            fetched, width = cursor.fetchall(), len(cursor.description or ())
        return list(zip(*fetched)) if fetched else [() for _ in range(width)]

    def value(self, sql: str, params: tuple = ()):
        """The first column of the first row, or None."""
        row = self.execute(sql, params).fetchone()
        if row is None:
            return None
        return next(iter(row.values())) if self._postgres else row[0]

    def join_in_order(self) -> str:
        """A join that SQLite's planner must take left to right (its CROSS JOIN); PostgreSQL plans its own."""
        return "JOIN" if self._postgres else "CROSS JOIN"

    def indexed_by(self, index: str) -> str:
        """SQLite's hint to read a table through ``index`` (its planner, without statistics, prefers an equality on
        a status to a range of times even where the range holds 1 % of the rows); PostgreSQL's planner has its own
        statistics and takes no hint."""
        return "" if self._postgres else f" INDEXED BY {index}"

    def table_exists(self, name: str) -> bool:
        if self._postgres:
            return self.value("SELECT to_regclass(?) IS NOT NULL", (name,))
        return self.value("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)) == 1

    def lock_study(self, study_uid: str) -> None:
        """Take a study's row lock first, so that every transaction touching a study locks in the same order (study,
        then its deliveries). SQLite's IMMEDIATE transaction already holds the whole database."""
        if self._postgres:
            self.execute("SELECT 1 FROM studies WHERE study_uid = ? FOR UPDATE", (study_uid,))


class Database:
    """One SQLite file or one PostgreSQL database; a connection per thread."""

    def __init__(self, target: str | Path):
        self.target = str(target)
        self.postgres = is_postgres_url(self.target)
        self._local = threading.local()
        self._all: list = []
        self._all_lock = threading.Lock()
        if self.postgres:
            import psycopg

            self._transient: tuple = (psycopg.OperationalError,)
        else:
            self._transient = (sqlite3.OperationalError,)
            path = Path(self.target.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                # Created owner-only before anything is written into it (names and ids are patient data).
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            os.chmod(path, 0o600)
            self.path = path

    def __str__(self) -> str:
        return redact(self.target)

    @contextmanager
    def transaction(self):
        """One transaction; the database's own "cannot reach / cannot lock" errors become ``StoreUnavailable``."""
        try:
            with self._transaction() as tx:
                yield tx
        except self._transient as err:
            raise StoreUnavailable(f"the worklist database {self} is unavailable: {str(err).strip()[:300]}") from None

    @contextmanager
    def _transaction(self):
        # Both connections run in autocommit mode, so the transaction is ours to open and close, alike on both.
        connection = self._connection()
        begin = "BEGIN" if self.postgres else "BEGIN IMMEDIATE"
        try:
            connection.execute(begin)  # where a connection the server dropped (a restart) shows first
        except self._transient:
            if not self.postgres:
                raise
            connection = self._reconnect()  # safe to retry: nothing of this transaction has run
            connection.execute(begin)
        try:
            yield Transaction(connection, self.postgres)
        except BaseException:
            if not (self.postgres and connection.broken):  # a dropped connection has nothing left to roll back
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def create(self, schema: str) -> None:
        """Run the schema's statements once; two nodes starting together on one PostgreSQL take turns."""
        with self.transaction() as tx:
            if self.postgres:
                tx.execute("SELECT pg_advisory_xact_lock(7301)")  # CREATE ... IF NOT EXISTS races otherwise
            for statement in filter(str.strip, schema.split(";")):
                tx.execute(self.portable(statement))

    def portable(self, ddl: str) -> str:
        """``ddl`` as written for SQLite, in this database's words: PostgreSQL has BIGSERIAL for SQLite's
        AUTOINCREMENT and only STORED generated columns."""
        if not self.postgres:
            return ddl
        return ddl.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY").replace(" VIRTUAL", " STORED")

    def _reconnect(self):
        """This thread's connection, opened anew (the old one is broken)."""
        old = getattr(self._local, "connection", None)
        self._local.connection = None
        if old is not None:
            with self._all_lock:
                self._all = [c for c in self._all if c is not old]
            old.close()
        return self._connection()

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is not None and self.postgres and (connection.closed or connection.broken):
            connection = self._reconnect()
        if connection is None:
            connection = self._open()
            self._local.connection = connection
            with self._all_lock:
                self._all.append(connection)
        return connection

    def _open(self):
        if self.postgres:
            import psycopg
            from psycopg.rows import dict_row

            try:
                return psycopg.connect(self.target, autocommit=True, row_factory=dict_row, connect_timeout=10)
            except psycopg.OperationalError as err:
                raise StoreUnavailable(f"cannot reach the worklist database {self}: {str(err).strip()}") from None
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")  # an acknowledged instance survives a power cut
        connection.execute("PRAGMA foreign_keys=ON")
        connection.row_factory = sqlite3.Row
        return connection

    def close(self) -> None:
        """Close every thread's connection (at shutdown, once the threads have stopped)."""
        with self._all_lock:
            connections, self._all = self._all, []
        for connection in connections:
            connection.close()
        self._local = threading.local()
