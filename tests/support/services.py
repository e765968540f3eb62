"""Real Redis and PostgreSQL servers for tests, each in a temporary folder on a free port.

::

    with redis_server() as url: ...          # redis://127.0.0.1:PORT/0
    with postgres_server() as pg:            # one cluster (initdb + pg_ctl)
        url = pg.new_database()              # postgresql://tutti@127.0.0.1:PORT/tN

Both come from Debian's packages (``redis-server``, ``postgresql``; scripts/test.sh installs
them); :func:`missing` says which binary is absent so a test can skip with that reason.
PostgreSQL refuses to run as root: there it runs as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.ports import unused_port

__all__ = ["PG_BIN", "missing", "redis_server", "postgres_server", "Postgres"]

PG_BIN = Path(os.environ.get("TUTTI_PG_BIN", "/usr/lib/postgresql/15/bin"))
_REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
_REDIS_OPTIONS = "--bind 127.0.0.1 --appendonly no --daemonize no --loglevel warning".split()


def missing() -> str | None:
    """Why the services cannot run here (which binary is missing), None when they can."""
    if not Path(_REDIS).is_file():
        return "redis-server is not installed (apt-get install redis-server; scripts/test.sh)"
    if not (PG_BIN / "initdb").is_file():
        return f"PostgreSQL 15 is not installed in {PG_BIN} (apt-get install postgresql)"
    return None


def _wait_until(ready: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert callable(ready)
        with contextlib.suppress(Exception):
            if ready():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not start within {timeout} s")
        time.sleep(0.05)


def _redis_answers(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A fresh Redis (no persistence) on a free port; yields its URL, stops it after."""
    port = unused_port()
    proc = subprocess.Popen(
        [_REDIS, "--port", str(port), "--save", "", *_REDIS_OPTIONS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until(lambda: _redis_answers(port), f"redis-server on port {port}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _as_postgres(cmd: list[str]) -> list[str]:
    """``cmd`` run as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run_pg(program: str, *args: str) -> None:
    """Run one of PostgreSQL's programs; its stderr in the error if it fails."""
    done = subprocess.run(
        _as_postgres([str(PG_BIN / program), *args]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")


@dataclass
class Postgres:
    """A running PostgreSQL cluster: ``trust`` auth for user ``tutti`` on 127.0.0.1."""

    port: int
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://tutti@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """Create an empty database; its URL."""
        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _pg_answers(pg: Postgres) -> bool:
    with psycopg.connect(pg.url(), connect_timeout=2) as conn:
        conn.execute("SELECT 1")
    return True


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """initdb a cluster in a temporary folder and start it on a free port (fsync off: the
    tests check behaviour, not durability); stopped and removed after."""
    root = Path(tempfile.mkdtemp(prefix="tutti-pg-"))
    os.chmod(root, 0o755)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
    pg = Postgres(unused_port())
    try:
        _run_pg("initdb", "-D", str(data), "-U", "tutti", "--auth=trust", "--no-sync",
                "-E", "UTF8")  # fmt: skip
        options = f"-p {pg.port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run_pg("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w",
                "-t", "60", "start")  # fmt: skip
        _wait_until(lambda: _pg_answers(pg), f"PostgreSQL on port {pg.port}")
        yield pg
    finally:
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                _run_pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
