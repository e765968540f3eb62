"""The session store on PostgreSQL, for several server processes and hosts.

:class:`PostgresStore` runs :class:`tutti.server.store.SqlStore`'s statements through psycopg 3
(synchronous, like SQLite: each call is one short round trip).  Writers take one transaction
advisory lock, so writes are serialised across every process as SQLite's ``BEGIN IMMEDIATE``
serialises them on one host (a take's sequence number is read and written in one go).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from .store import Executor, Row, SqlStore, StoreUnavailable, shown_url

__all__ = ["PostgresStore", "PostgresDatabase", "is_postgres_url"]

T = TypeVar("T")

#: The advisory lock every write transaction holds (any constant: tutti's own).
_WRITE_LOCK = 0x7475_7474_6900

# SQLite's schema with PostgreSQL's types: REAL is 4 bytes there (epoch seconds need 8).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    leader_hash TEXT NOT NULL UNIQUE,
    settings TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
    participant_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    name TEXT NOT NULL,
    part TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    latency_frames BIGINT,
    latency_source TEXT
);
CREATE INDEX IF NOT EXISTS participants_session ON participants(session_id);
CREATE TABLE IF NOT EXISTS tracks (
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    part TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    frames BIGINT NOT NULL,
    rate BIGINT NOT NULL,
    channels BIGINT NOT NULL,
    size BIGINT NOT NULL,
    format TEXT NOT NULL,
    PRIMARY KEY (session_id, part)
);
CREATE TABLE IF NOT EXISTS takes (
    take_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    settings TEXT NOT NULL,
    tracks TEXT NOT NULL,
    t0 DOUBLE PRECISION,
    stopped_at DOUBLE PRECISION,
    UNIQUE (session_id, seq)
);
CREATE TABLE IF NOT EXISTS take_singers (
    take_id TEXT NOT NULL REFERENCES takes(take_id),
    participant_id TEXT NOT NULL REFERENCES participants(participant_id),
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    recording TEXT,
    PRIMARY KEY (take_id, participant_id)
);
"""


def is_postgres_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return url.startswith(("postgresql://", "postgres://"))


def _pg(sql: str) -> str:
    """The store's ``?`` placeholders as psycopg's ``%s`` (its statements hold no ``%``)."""
    return sql.replace("?", "%s")


class _PgExecutor:
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn

    def execute(self, sql: str, args: tuple[Any, ...] = (), /) -> psycopg.Cursor[Row]:
        return self._conn.execute(_pg(sql), args)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]], /) -> object:
        with self._conn.cursor() as cur:
            cur.executemany(_pg(sql), rows)
        return None


class PostgresDatabase:
    """:class:`tutti.server.store.Database` on one psycopg connection.

    A connection found dead by the first statement of a call (the database restarted, or
    dropped an idle connection) is opened again and the statement run again: nothing of the
    call had happened yet.
    """

    def __init__(self, url: str, schema: str, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self._timeout = connect_timeout_s
        self._lock = threading.RLock()
        self._conn = self._connect()
        with self.transaction() as db:  # several processes may start at once
            for statement in filter(str.strip, schema.split(";")):
                db.execute(statement)

    def _connect(self) -> psycopg.Connection[Row]:
        try:
            return psycopg.connect(
                self.url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(1, round(self._timeout)),
                application_name="tutti",
            )
        except psycopg.OperationalError as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable(
                f"cannot use the database at {shown_url(self.url)}: {why}"
            ) from None

    def _live(self) -> psycopg.Connection[Row]:
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def _first(self, statement: Callable[[psycopg.Connection[Row]], T]) -> T:
        """Run a call's first statement, again on a new connection if it found the
        connection dead."""
        try:
            return statement(self._live())
        except psycopg.OperationalError:
            if not self._conn.broken:
                raise
            return statement(self._live())

    @staticmethod
    def _begin(conn: psycopg.Connection[Row]) -> psycopg.Connection[Row]:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        with self._lock:
            conn = self._first(self._begin)
            try:
                yield _PgExecutor(conn)
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def one(self, sql: str, *args: Any) -> Row | None:
        with self._lock:
            return self._first(lambda c: c.execute(_pg(sql), args).fetchone())

    def all(self, sql: str, *args: Any) -> list[Row]:
        with self._lock:
            return self._first(lambda c: c.execute(_pg(sql), args).fetchall())

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresStore(SqlStore):
    """:class:`tutti.server.store.SessionStore` on PostgreSQL (``tutti serve --database URL``).

    Parameters
    ----------
    url : str
        A libpq connection URL, ``postgresql://user:password@host:port/dbname``; the tables
        are created if missing.
    """

    def __init__(self, url: str) -> None:
        super().__init__(PostgresDatabase(url, _SCHEMA))
