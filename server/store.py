"""The session store: sessions, participants, tracks and takes, behind a small interface.

:class:`SessionStore` is the interface the rest of the server uses; :class:`SqliteStore` is
the embedded default (one SQLite file in the data directory, WAL journal,
``synchronous=FULL``, so a committed change survives ``kill -9`` and power loss);
:class:`tutti.server.store_pg.PostgresStore` is the same statements on PostgreSQL, for several
server processes and hosts.  Both are a :class:`SqlStore` over a :class:`Database` (one
connection; ``?`` placeholders, rows as dicts).  Calls are short synchronous statements;
nothing on the Socket.IO broadcast path touches the store.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from tutti.takeformat import Recording, parse_recording
from tutti.wire import SessionSettings, parse_settings

from .models import Participant, Principal, Session, Take, TakeSinger, Track

__all__ = [
    "SessionStore",
    "SqlStore",
    "SqliteStore",
    "Database",
    "Row",
    "open_store",
    "StoreUnavailable",
    "shown_url",
]

#: A result row: column name to value.
Row: TypeAlias = dict[str, Any]


class StoreUnavailable(RuntimeError):
    """The session store cannot be opened (a database that cannot be reached)."""


def shown_url(url: str) -> str:
    """``url`` fit for a message: its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class SessionStore(Protocol):
    """Durable state of every session.  All methods are synchronous and quick."""

    def ping(self) -> None: ...
    def close(self) -> None: ...
    def create_session(self, session: Session, leader_hash: str) -> None: ...
    def get_session(self, session_id: str) -> Session | None: ...
    def count_open_sessions(self, created_after: float) -> int: ...
    def count_takes_by_state(self) -> dict[str, int]: ...
    def session_by_code(self, code: str) -> Session | None: ...
    def update_settings(self, session_id: str, settings: SessionSettings) -> None: ...
    def close_session(self, session_id: str) -> None: ...
    def principal(self, token_hash: str) -> Principal | None: ...
    def add_participant(self, participant: Participant, token_hash: str) -> None: ...
    def get_participant(self, participant_id: str) -> Participant | None: ...
    def participants(self, session_id: str) -> list[Participant]: ...
    def count_participants(self, session_id: str) -> int:
        """How many have joined the session (each join checks it: reading them all made
        2,000 joins quadratic)."""
        ...

    def set_latency(self, participant_id: str, frames: int, source: str) -> None: ...
    def put_track(self, session_id: str, track: Track) -> None: ...
    def tracks(self, session_id: str) -> dict[str, Track]: ...
    def create_take(self, take: Take) -> tuple[str, str] | None:
        """Store a new take unless its session has an armed or running one: then that
        one's ``(take_id, state)``, and nothing is stored (checked in the one transaction,
        so two processes arming at once make one take)."""
        ...

    def get_take(self, take_id: str) -> Take | None: ...
    def take_for(self, take_id: str, participant_id: str) -> Take | None:
        """The take with only ``participant_id``'s entry among its singers (or none): one
        row, where a singer's connect or disconnect needs only theirs."""
        ...

    def singer_state(self, take_id: str, participant_id: str) -> tuple[str, str | None] | None:
        """``(session_id, state)`` of one singer on a take (state None: the take expects
        nothing from them), or None when there is no such take: what a singer's
        ``take.state`` needs, one row and no settings parsed (1,000 of them at a stop)."""
        ...

    def takes(self, session_id: str) -> list[Take]: ...
    def latest_take(self, session_id: str) -> tuple[str, str, float | None] | None: ...
    def set_take_state(
        self,
        take_id: str,
        state: str,
        *,
        t0: float | None = None,
        stopped_at: float | None = None,
        only_from: tuple[str, ...] = (),
    ) -> bool:
        """Whether the take changed; with ``only_from``, only a take in one of those states
        does (two processes starting one take at once: one of them starts it)."""
        ...

    def set_singer_state(
        self, take_id: str, participant_id: str, state: str, detail: str = ""
    ) -> None: ...
    def set_singer_states(self, changes: list[tuple[str, str, str, str]]) -> None:
        """``(take_id, participant_id, state, detail)`` of several singers in one transaction
        (a take's start and stop bring one from every singer; one fsync, not a thousand); a
        singer whose recording is stored stays ``uploaded``."""
        ...

    def add_take_singer(
        self, take_id: str, participant_id: str, state: str, detail: str = ""
    ) -> None: ...
    def set_recording(self, take_id: str, participant_id: str, recording: Recording) -> None: ...
    def clear_recording(
        self, take_id: str, participant_id: str, state: str, detail: str
    ) -> None: ...
    def delete_take(self, take_id: str) -> None: ...
    def delete_session(self, session_id: str) -> None: ...
    def stopped_before(self, when: float) -> list[tuple[str, str]]: ...
    def sessions_created_before(self, when: float) -> list[str]: ...
    def track_hashes(self) -> set[str]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    leader_hash TEXT NOT NULL UNIQUE,
    settings TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
    participant_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    name TEXT NOT NULL,
    part TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    latency_frames INTEGER,
    latency_source TEXT
);
CREATE INDEX IF NOT EXISTS participants_session ON participants(session_id);
CREATE TABLE IF NOT EXISTS tracks (
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    part TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    frames INTEGER NOT NULL,
    rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    size INTEGER NOT NULL,
    format TEXT NOT NULL,
    PRIMARY KEY (session_id, part)
);
CREATE TABLE IF NOT EXISTS takes (
    take_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    settings TEXT NOT NULL,
    tracks TEXT NOT NULL,
    t0 REAL,
    stopped_at REAL
);
CREATE INDEX IF NOT EXISTS takes_session ON takes(session_id, seq);
CREATE TABLE IF NOT EXISTS take_singers (
    take_id TEXT NOT NULL REFERENCES takes(take_id),
    participant_id TEXT NOT NULL REFERENCES participants(participant_id),
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    recording TEXT,
    PRIMARY KEY (take_id, participant_id)
);
"""


def _track_from_dict(part: str, d: dict[str, Any]) -> Track:
    return Track(
        part=part,
        sha256=d["sha256"],
        frames=d["frames"],
        rate=d["rate"],
        channels=d["channels"],
        size=d["size"],
        format=d["format"],
    )


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Row | None: ...


class Executor(Protocol):
    """What a transaction runs statements on (``?`` placeholders)."""

    def execute(self, sql: str, args: tuple[Any, ...] = (), /) -> Cursor: ...
    def executemany(self, sql: str, rows: list[tuple[Any, ...]], /) -> object: ...


class Database(Protocol):
    """One connection to an SQL database, safe to share between threads."""

    def transaction(self) -> AbstractContextManager[Executor]:
        """A write transaction, serialised with every other writer (all processes)."""
        ...

    def one(self, sql: str, *args: Any) -> Row | None: ...
    def all(self, sql: str, *args: Any) -> list[Row]: ...
    def close(self) -> None: ...


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return {d[0]: v for d, v in zip(cursor.description, values, strict=True)}


class SqliteDatabase:
    """:class:`Database` on one SQLite file (created with ``schema`` if missing)."""

    def __init__(self, path: Path, schema: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = _dict_row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA busy_timeout=5000")
        # Switching to WAL does not wait on busy_timeout: processes starting together take turns.
        with open(path.with_name(path.name + ".open-lock"), "a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(schema)

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock now: other processes wait
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def one(self, sql: str, *args: Any) -> Row | None:
        with self._lock:
            row: Row | None = self._db.execute(sql, args).fetchone()
            return row

    def all(self, sql: str, *args: Any) -> list[Row]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SqlStore:
    """:class:`SessionStore` as SQL statements on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _tx(self) -> AbstractContextManager[Executor]:
        return self.db.transaction()

    def _one(self, sql: str, *args: Any) -> Row | None:
        return self.db.one(sql, *args)

    def _all(self, sql: str, *args: Any) -> list[Row]:
        return self.db.all(sql, *args)

    # ------------------------------------------------------------------ general

    def ping(self) -> None:
        """Raise if the database cannot be read."""
        self._one("SELECT count(*) AS n FROM sessions")

    def close(self) -> None:
        self.db.close()

    # ----------------------------------------------------------------- sessions

    @staticmethod
    def _session(row: Row) -> Session:
        return Session(
            session_id=row["session_id"],
            code=row["code"],
            settings=parse_settings(json.loads(row["settings"])),
            state=row["state"],
            created_at=row["created_at"],
        )

    def create_session(self, session: Session, leader_hash: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session.session_id,
                    session.code,
                    leader_hash,
                    json.dumps(session.settings.to_dict()),
                    session.state,
                    session.created_at,
                ),
            )

    def count_open_sessions(self, created_after: float) -> int:
        row = self._one(
            "SELECT COUNT(*) AS n FROM sessions WHERE state = 'open' AND created_at > ?",
            created_after,
        )
        return int(row["n"]) if row is not None else 0

    def count_takes_by_state(self) -> dict[str, int]:
        rows = self._all("SELECT state, COUNT(*) AS n FROM takes GROUP BY state")
        return {str(r["state"]): int(r["n"]) for r in rows}

    def get_session(self, session_id: str) -> Session | None:
        row = self._one("SELECT * FROM sessions WHERE session_id = ?", session_id)
        return self._session(row) if row else None

    def session_by_code(self, code: str) -> Session | None:
        row = self._one("SELECT * FROM sessions WHERE code = ?", code)
        return self._session(row) if row else None

    def update_settings(self, session_id: str, settings: SessionSettings) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET settings = ? WHERE session_id = ?",
                (json.dumps(settings.to_dict()), session_id),
            )

    def close_session(self, session_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE sessions SET state = 'closed' WHERE session_id = ?", (session_id,))

    def principal(self, token_hash: str) -> Principal | None:
        row = self._one("SELECT session_id FROM sessions WHERE leader_hash = ?", token_hash)
        if row:
            return Principal("leader", row["session_id"])
        row = self._one(
            "SELECT session_id, participant_id FROM participants WHERE token_hash = ?", token_hash
        )
        if row:
            return Principal("singer", row["session_id"], row["participant_id"])
        return None

    # ------------------------------------------------------------- participants

    @staticmethod
    def _participant(row: Row) -> Participant:
        return Participant(
            participant_id=row["participant_id"],
            session_id=row["session_id"],
            name=row["name"],
            part=row["part"],
            created_at=row["created_at"],
            latency_frames=row["latency_frames"],
            latency_source=row["latency_source"],
        )

    def add_participant(self, participant: Participant, token_hash: str) -> None:
        p = participant
        with self._tx() as db:
            db.execute(
                "INSERT INTO participants VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    p.participant_id,
                    p.session_id,
                    p.name,
                    p.part,
                    token_hash,
                    p.created_at,
                    p.latency_frames,
                    p.latency_source,
                ),
            )

    def get_participant(self, participant_id: str) -> Participant | None:
        row = self._one("SELECT * FROM participants WHERE participant_id = ?", participant_id)
        return self._participant(row) if row else None

    def participants(self, session_id: str) -> list[Participant]:
        rows = self._all(
            "SELECT * FROM participants WHERE session_id = ? ORDER BY created_at", session_id
        )
        return [self._participant(r) for r in rows]

    def count_participants(self, session_id: str) -> int:
        row = self._one("SELECT count(*) AS n FROM participants WHERE session_id = ?", session_id)
        return 0 if row is None else int(row["n"])

    def set_latency(self, participant_id: str, frames: int, source: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE participants SET latency_frames = ?, latency_source = ? "
                "WHERE participant_id = ?",
                (frames, source, participant_id),
            )

    # ------------------------------------------------------------------- tracks

    def put_track(self, session_id: str, track: Track) -> None:
        t = track
        with self._tx() as db:
            db.execute(
                "INSERT INTO tracks VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (session_id, part) DO UPDATE SET sha256 = excluded.sha256, "
                "frames = excluded.frames, rate = excluded.rate, channels = excluded.channels, "
                "size = excluded.size, format = excluded.format",
                (session_id, t.part, t.sha256, t.frames, t.rate, t.channels, t.size, t.format),
            )

    def tracks(self, session_id: str) -> dict[str, Track]:
        rows = self._all("SELECT * FROM tracks WHERE session_id = ? ORDER BY part", session_id)
        return {r["part"]: _track_from_dict(r["part"], dict(r)) for r in rows}

    # -------------------------------------------------------------------- takes

    def create_take(self, take: Take) -> tuple[str, str] | None:
        t = take
        with self._tx() as db:
            busy = db.execute(
                "SELECT take_id, state FROM takes WHERE session_id = ? "
                "AND state IN ('armed', 'running') ORDER BY seq DESC LIMIT 1",
                (t.session_id,),
            ).fetchone()
            if busy is not None:
                return str(busy["take_id"]), str(busy["state"])
            found = db.execute(
                "SELECT coalesce(max(seq), 0) + 1 AS seq FROM takes WHERE session_id = ?",
                (t.session_id,),
            ).fetchone()
            seq = 1 if found is None else int(found["seq"])
            db.execute(
                "INSERT INTO takes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    t.take_id,
                    t.session_id,
                    seq,
                    t.state,
                    t.created_at,
                    json.dumps(t.settings.to_dict()),
                    json.dumps({p: tr.to_dict() for p, tr in t.tracks.items()}),
                    t.t0,
                    t.stopped_at,
                ),
            )
            db.executemany(
                "INSERT INTO take_singers VALUES (?, ?, ?, ?, NULL)",
                [(t.take_id, s.participant_id, s.state, s.detail) for s in t.singers],
            )
        return None

    def _take(self, row: Row, only: str | None = None) -> Take:
        query = (
            "SELECT ts.*, p.name, p.part FROM take_singers ts JOIN participants p "
            "USING (participant_id) WHERE ts.take_id = ?"
        )
        if only is None:
            singer_rows = self._all(query + " ORDER BY p.created_at", row["take_id"])
        else:
            singer_rows = self._all(query + " AND ts.participant_id = ?", row["take_id"], only)
        singers = []
        for s in singer_rows:
            rec: Recording | None = None
            if s["recording"]:
                rec = parse_recording(json.loads(s["recording"]))
            singers.append(
                TakeSinger(
                    participant_id=s["participant_id"],
                    name=s["name"],
                    part=s["part"],
                    state=s["state"],
                    detail=s["detail"],
                    recording=rec,
                )
            )
        tracks = {p: _track_from_dict(p, d) for p, d in json.loads(row["tracks"]).items()}
        return Take(
            take_id=row["take_id"],
            session_id=row["session_id"],
            state=row["state"],
            created_at=row["created_at"],
            settings=parse_settings(json.loads(row["settings"])),
            tracks=tracks,
            t0=row["t0"],
            stopped_at=row["stopped_at"],
            singers=tuple(singers),
        )

    def get_take(self, take_id: str) -> Take | None:
        row = self._one("SELECT * FROM takes WHERE take_id = ?", take_id)
        return self._take(row) if row else None

    def take_for(self, take_id: str, participant_id: str) -> Take | None:
        row = self._one("SELECT * FROM takes WHERE take_id = ?", take_id)
        return self._take(row, only=participant_id) if row else None

    def singer_state(self, take_id: str, participant_id: str) -> tuple[str, str | None] | None:
        row = self._one(
            "SELECT t.session_id, ts.state FROM takes t LEFT JOIN take_singers ts "
            "ON ts.take_id = t.take_id AND ts.participant_id = ? WHERE t.take_id = ?",
            participant_id,
            take_id,
        )
        return None if row is None else (row["session_id"], row["state"])

    def takes(self, session_id: str) -> list[Take]:
        rows = self._all("SELECT * FROM takes WHERE session_id = ? ORDER BY seq", session_id)
        return [self._take(r) for r in rows]

    def latest_take(self, session_id: str) -> tuple[str, str, float | None] | None:
        """``(take_id, state, t0)`` of the session's newest take — one row, no singers (it is
        read on every Socket.IO connect)."""
        row = self._one(
            "SELECT take_id, state, t0 FROM takes WHERE session_id = ? ORDER BY seq DESC LIMIT 1",
            session_id,
        )
        return None if row is None else (row["take_id"], row["state"], row["t0"])

    def set_take_state(
        self,
        take_id: str,
        state: str,
        *,
        t0: float | None = None,
        stopped_at: float | None = None,
        only_from: tuple[str, ...] = (),
    ) -> bool:
        sql = (
            "UPDATE takes SET state = ?, t0 = coalesce(?, t0), "
            "stopped_at = coalesce(?, stopped_at) WHERE take_id = ?"
        )
        if only_from:
            sql += f" AND state IN ({', '.join('?' * len(only_from))})"
        with self._tx() as db:
            return db.execute(sql, (state, t0, stopped_at, take_id, *only_from)).rowcount > 0

    def set_singer_state(
        self, take_id: str, participant_id: str, state: str, detail: str = ""
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE take_singers SET state = ?, detail = ? "
                "WHERE take_id = ? AND participant_id = ?",
                (state, detail, take_id, participant_id),
            )

    def set_singer_states(self, changes: list[tuple[str, str, str, str]]) -> None:
        rows = [(state, detail, take, pid) for take, pid, state, detail in changes]
        with self._tx() as db:
            db.executemany(
                "UPDATE take_singers SET state = ?, detail = ? "
                "WHERE take_id = ? AND participant_id = ? AND state != 'uploaded'",
                rows,
            )

    def add_take_singer(
        self, take_id: str, participant_id: str, state: str, detail: str = ""
    ) -> None:
        """Expect a recording from one more singer (who joined after the take was armed)."""
        with self._tx() as db:
            if not db.execute(
                "SELECT 1 FROM take_singers WHERE take_id = ? AND participant_id = ?",
                (take_id, participant_id),
            ).fetchone():
                db.execute(
                    "INSERT INTO take_singers VALUES (?, ?, ?, ?, NULL)",
                    (take_id, participant_id, state, detail),
                )

    def set_recording(self, take_id: str, participant_id: str, recording: Recording) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE take_singers SET state = 'uploaded', detail = '', recording = ? "
                "WHERE take_id = ? AND participant_id = ?",
                (json.dumps(recording.to_dict()), take_id, participant_id),
            )

    # ------------------------------------------------------------------ deletion

    def clear_recording(self, take_id: str, participant_id: str, state: str, detail: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE take_singers SET state = ?, detail = ?, recording = NULL "
                "WHERE take_id = ? AND participant_id = ?",
                (state, detail, take_id, participant_id),
            )

    def delete_take(self, take_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM take_singers WHERE take_id = ?", (take_id,))
            db.execute("DELETE FROM takes WHERE take_id = ?", (take_id,))

    def delete_session(self, session_id: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM take_singers WHERE take_id IN "
                "(SELECT take_id FROM takes WHERE session_id = ?)",
                (session_id,),
            )
            for table in ("takes", "tracks", "participants", "sessions"):
                db.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))

    def stopped_before(self, when: float) -> list[tuple[str, str]]:
        """``(session_id, take_id)`` of the takes stopped before ``when`` (epoch seconds)."""
        rows = self._all(
            "SELECT session_id, take_id FROM takes WHERE stopped_at IS NOT NULL AND stopped_at < ?",
            when,
        )
        return [(str(r["session_id"]), str(r["take_id"])) for r in rows]

    def sessions_created_before(self, when: float) -> list[str]:
        rows = self._all("SELECT session_id FROM sessions WHERE created_at < ?", when)
        return [str(r["session_id"]) for r in rows]

    def track_hashes(self) -> set[str]:
        """Every backing track's sha256 that a session or a take still names."""
        found = {str(r["sha256"]) for r in self._all("SELECT sha256 FROM tracks")}
        for r in self._all("SELECT tracks FROM takes"):
            found |= {str(t["sha256"]) for t in json.loads(r["tracks"]).values()}
        return found


class SqliteStore(SqlStore):
    """:class:`SessionStore` on one SQLite file, the embedded default (one host).

    Parameters
    ----------
    path : Path
        The database file (created with its schema if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(SqliteDatabase(path, _SCHEMA))


def open_store(data_dir: Path, database_url: str | None) -> SessionStore:
    """The store of a server: PostgreSQL at ``database_url``, else SQLite in ``data_dir``."""
    if database_url is None:
        return SqliteStore(data_dir / "tutti.db")
    from .store_pg import PostgresStore  # psycopg only with --database: the `cluster` extra

    return PostgresStore(database_url)
