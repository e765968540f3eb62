"""The session store, the same tests on SQLite (the embedded default) and PostgreSQL (started
for real by the ``postgres`` fixture)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.server.helpers import SETTINGS
from tests.support.services import Postgres
from tutti.server.models import Participant, Session, Take, TakeSinger, Track
from tutti.server.store import SessionStore, SqliteStore
from tutti.server.store_pg import PostgresStore
from tutti.takeformat import Recording
from tutti.wire import parse_settings

SETTINGS_REC = parse_settings(SETTINGS)
T0 = 1_800_000_123.456789  # epoch seconds with micro-seconds: a 4-byte REAL would lose them


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], SessionStore]]:
    """Opens a store (another connection each call) on one fresh database."""
    opened: list[SessionStore] = []
    if request.param == "sqlite":
        path = tmp_path / "tutti.db"
        make: Callable[[], SessionStore] = lambda: SqliteStore(path)  # noqa: E731
    else:
        pg: Postgres = request.getfixturevalue("postgres")
        url = pg.new_database()
        make = lambda: PostgresStore(url)  # noqa: E731

    def opener() -> SessionStore:
        opened.append(make())
        return opened[-1]

    try:
        yield opener
    finally:
        for s in opened:
            s.close()


@pytest.fixture
def store(open_store: Callable[[], SessionStore]) -> SessionStore:
    return open_store()


def _session(store: SessionStore, sid: str = "s1", code: str = "ABC123") -> Session:
    s = Session(sid, code, SETTINGS_REC, "open", T0)
    store.create_session(s, leader_hash=f"leader-{sid}")
    return s


def _singer(store: SessionStore, pid: str, sid: str = "s1", at: float = T0 + 1) -> Participant:
    p = Participant(pid, sid, f"name {pid}", "S", at)
    store.add_participant(p, token_hash=f"tok-{pid}")
    return p


def _track(part: str = "S", sha: str = "a" * 64, size: int = 3 * 2**31) -> Track:
    return Track(part, sha, frames=48000 * 600, rate=48000, channels=2, size=size, format="WAV")


def _take(take_id: str, *pids: str, sid: str = "s1") -> Take:
    singers = tuple(TakeSinger(p, "", "", "expected") for p in pids)
    return Take(take_id, sid, "armed", T0 + 5, SETTINGS_REC, {"S": _track()}, singers=singers)


def test_sessions_round_trip(store: SessionStore) -> None:
    s = _session(store)
    assert store.get_session("s1") == s
    assert store.session_by_code("ABC123") == s
    assert store.get_session("nope") is None and store.session_by_code("nope") is None
    assert store.count_open_sessions(T0 - 1) == 1 and store.count_open_sessions(T0) == 0
    new = parse_settings({"bpm": 90}, SETTINGS_REC)
    store.update_settings("s1", new)
    got = store.get_session("s1")
    assert got is not None and got.settings == new and got.settings.bpm == 90
    store.close_session("s1")
    got = store.get_session("s1")
    assert got is not None and got.state == "closed"
    assert store.count_open_sessions(0) == 0
    assert store.sessions_created_before(T0 + 1) == ["s1"]
    assert store.sessions_created_before(T0) == []
    store.ping()


def test_duplicate_code_is_refused(store: SessionStore) -> None:
    _session(store)
    with pytest.raises(Exception, match="(?i)unique"):
        _session(store, sid="s2")  # the same join code
    assert store.get_session("s2") is None  # the failed transaction left nothing


def test_principals_and_participants(store: SessionStore) -> None:
    _session(store)
    b = _singer(store, "p2", at=T0 + 2)
    a = _singer(store, "p1", at=T0 + 1)
    leader = store.principal("leader-s1")
    assert leader is not None and leader.is_leader and leader.session_id == "s1"
    singer = store.principal("tok-p1")
    assert singer is not None and singer.participant_id == "p1" and not singer.is_leader
    assert store.principal("unknown") is None
    assert store.participants("s1") == [a, b]  # in joining order
    assert store.count_participants("s1") == 2 and store.count_participants("nobody") == 0
    store.set_latency("p1", 1234, "measured")
    got = store.get_participant("p1")
    assert got is not None and (got.latency_frames, got.latency_source) == (1234, "measured")


def test_tracks_replace_per_part(store: SessionStore) -> None:
    _session(store)
    store.put_track("s1", _track("S", "a" * 64))
    store.put_track("s1", _track("A", "b" * 64))
    store.put_track("s1", _track("S", "c" * 64, size=10))
    tracks = store.tracks("s1")
    assert list(tracks) == ["A", "S"]
    assert tracks["S"] == _track("S", "c" * 64, size=10)
    assert tracks["A"].size == 3 * 2**31  # past 32 bits
    assert store.track_hashes() == {"b" * 64, "c" * 64}


def test_takes_states_and_recordings(store: SessionStore) -> None:
    _session(store)
    _singer(store, "p1")
    _singer(store, "p2", at=T0 + 2)
    assert store.create_take(_take("t1", "p1")) is None
    assert store.create_take(_take("t2", "p1")) == ("t1", "armed")  # one active take
    assert store.set_take_state("t1", "stopped", stopped_at=T0 + 6)
    assert store.create_take(_take("t2", "p1")) is None
    assert [t.take_id for t in store.takes("s1")] == ["t1", "t2"]
    assert store.latest_take("s1") == ("t2", "armed", None)
    assert store.set_take_state("t2", "running", t0=T0 + 10, only_from=("armed",))
    assert not store.set_take_state("t2", "running", t0=T0 + 99, only_from=("armed",))
    assert store.create_take(_take("t3", "p1")) == ("t2", "running")
    assert store.set_take_state("t2", "stopped", stopped_at=T0 + 70)
    assert store.latest_take("s1") == ("t2", "stopped", T0 + 10)
    assert store.get_take("t3") is None
    store.add_take_singer("t2", "p2", "expected", "joined after the take was armed")
    store.add_take_singer("t2", "p2", "recording")  # already expected: unchanged
    store.set_singer_state("t2", "p1", "uploading", "42 %")
    rec = Recording("p1.flac", "name p1", "S", 48000, 1, 96000, 700, 512, participant_id="p1")
    store.set_recording("t2", "p2", rec)
    take = store.get_take("t2")
    assert take is not None
    assert (take.state, take.t0, take.stopped_at) == ("stopped", T0 + 10, T0 + 70)
    assert take.tracks == {"S": _track()}
    by_id = {s.participant_id: s for s in take.singers}
    assert (by_id["p1"].state, by_id["p1"].detail) == ("uploading", "42 %")
    assert by_id["p1"].name == "name p1"
    assert (by_id["p2"].state, by_id["p2"].recording) == ("uploaded", rec)
    alone = store.take_for("t2", "p2")  # one singer's row, the rest of the take as it is
    assert alone is not None and alone.singers == (by_id["p2"],)
    assert dataclasses.replace(alone, singers=take.singers) == take
    stranger = store.take_for("t2", "nobody")
    assert stranger is not None and stranger.singers == () and stranger.singer("nobody") is None
    assert store.take_for("t3", "p1") is None
    assert store.singer_state("t2", "p2") == ("s1", "uploaded")
    assert store.singer_state("t2", "nobody") == ("s1", None)
    assert store.singer_state("t3", "p1") is None
    assert store.count_takes_by_state() == {"stopped": 2}
    assert store.stopped_before(T0 + 71) == [("s1", "t1"), ("s1", "t2")]
    assert store.stopped_before(T0 + 7) == [("s1", "t1")] and store.stopped_before(T0) == []
    store.clear_recording("t2", "p2", "missed", "deleted by the singer")
    take = store.get_take("t2")
    assert take is not None and take.singer("p2") == TakeSinger(
        "p2", "name p2", "S", "missed", "deleted by the singer", None
    )


def test_many_singers_states_in_one_write_keep_a_stored_recording(store: SessionStore) -> None:
    _session(store)
    pids = [f"p{i}" for i in range(5)]
    for pid in pids:
        _singer(store, pid)
    assert store.create_take(_take("t1", *pids)) is None
    rec = Recording("p0.flac", "name p0", "S", 48000, 1, 96000, 700, 512, participant_id="p0")
    store.set_recording("t1", "p0", rec)
    store.set_singer_states(
        [("t1", pid, "recorded", "") for pid in pids[:3]] + [("t1", "p4", "failed", "no disk")]
    )
    take = store.get_take("t1")
    assert take is not None
    states = {s.participant_id: (s.state, s.detail) for s in take.singers}
    assert states == {
        "p0": ("uploaded", ""),  # stored before: a late report does not take it back
        "p1": ("recorded", ""),
        "p2": ("recorded", ""),
        "p3": ("expected", ""),
        "p4": ("failed", "no disk"),
    }
    first = take.singer("p0")
    assert first is not None and first.recording == rec


def test_deletion(store: SessionStore) -> None:
    _session(store)
    _session(store, "s2", "XYZ789")
    _singer(store, "p1")
    _singer(store, "q1", sid="s2")
    store.put_track("s1", _track())
    store.create_take(_take("t1", "p1"))
    store.create_take(_take("u1", "q1", sid="s2"))
    store.delete_take("t1")
    assert store.get_take("t1") is None and store.takes("s1") == []
    store.delete_session("s1")
    assert store.get_session("s1") is None and store.participants("s1") == []
    assert store.principal("tok-p1") is None and store.tracks("s1") == {}
    assert store.get_take("u1") is not None and store.get_session("s2") is not None


def test_processes_starting_together_open_one_fresh_sqlite_database(tmp_path: Path) -> None:
    """Server processes started at once (a cluster's nodes on one host) open one new SQLite
    file together: each gets a working store.  Switching to WAL does not wait for the other
    openers: before they took turns, about 1 opener in 100 here failed 'database is locked'
    (so 200 fresh files, 4 openers each)."""
    failed: list[BaseException] = []
    for round_ in range(200):
        path = tmp_path / f"{round_}" / "tutti.db"
        path.parent.mkdir()
        go = threading.Barrier(4)
        opened: list[SessionStore] = []

        def open_at_once(
            path: Path = path, go: threading.Barrier = go, opened: list[SessionStore] = opened
        ) -> None:
            go.wait(30)
            try:
                opened.append(SqliteStore(path))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                failed.append(exc)

        threads = [threading.Thread(target=open_at_once) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for i, store in enumerate(opened):
            _session(store, f"s{i}", f"CODE{i:02d}")
        assert all(opened[-1].get_session(f"s{i}") for i in range(len(opened)))
        for store in opened:
            store.close()
    assert failed == []


def test_concurrent_writers_arm_one_take_and_start_it_once(
    open_store: Callable[[], SessionStore],
) -> None:
    """Writers on connections of their own (as server processes have) arming a take at once
    make one take; starting it at once, one of them starts it; the next take gets the next
    number.  Writes are serialised across connections."""
    stores = [open_store() for _ in range(4)]
    _session(stores[0])
    armed: list[tuple[str, str] | None] = []
    started: list[bool] = []

    def at_once(job: Callable[[int], object]) -> None:
        threads = [threading.Thread(target=job, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

    at_once(lambda i: armed.append(stores[i % 4].create_take(_take(f"t{i}"))))
    made = [t.take_id for t in stores[1].takes("s1")]
    assert len(made) == 1 and armed.count(None) == 1
    assert [a for a in armed if a is not None] == [(made[0], "armed")] * 7
    at_once(
        lambda i: started.append(
            stores[i % 4].set_take_state(made[0], "running", t0=T0 + i, only_from=("armed",))
        )
    )
    assert started.count(True) == 1 and len(started) == 8
    assert stores[2].set_take_state(made[0], "stopped", stopped_at=T0 + 60)
    assert stores[3].create_take(_take("next")) is None
    assert [t.take_id for t in stores[0].takes("s1")] == [made[0], "next"]


def test_postgres_store_reconnects_after_losing_its_connection(postgres: Postgres) -> None:
    """The database drops the store's connection (a restart, an idle timeout): the next
    read and the next write go through on a new connection."""
    store = PostgresStore(postgres.new_database())
    try:
        _session(store)
        for write in (False, True):
            with psycopg.connect(postgres.url(), autocommit=True) as admin:
                gone = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'tutti' AND pid <> pg_backend_pid()"
                ).fetchall()
            assert len(gone) == 1
            if write:
                store.close_session("s1")
            got = store.get_session("s1")
            assert got is not None and got.state == ("closed" if write else "open")
    finally:
        store.close()
