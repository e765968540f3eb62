"""Leading from another computer: ``tutti lead token`` on one, ``tutti lead adopt`` on the other.

Each "computer" is its own config folder (``TUTTI_CONFIG_DIR``).  The real server runs on port
0 in the test's event loop; computer A's commands run in-process (:func:`run_cli`), and the
cross-computer adopt runs as a real ``tutti`` subprocess with the token on its stdin.
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import select
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.client.lead_cli import CliResult, run_cli
from tests.client.lead_support import Singer, serve
from tests.support.ports import unused_port
from tutti.client import config

_TUTTI = "import sys; from tutti.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    async with serve(tmp_path / "server-data") as url:
        yield url


class Computer:
    """One leader's computer: a config folder the in-process CLI is pointed at per call."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        self._mp = monkeypatch

    async def cli(
        self, *argv: str, stdin: str | None = None, env_token: str | None = None
    ) -> CliResult:
        self._mp.setenv("TUTTI_CONFIG_DIR", str(self.folder))
        if env_token is None:
            self._mp.delenv("TUTTI_LEADER_TOKEN", raising=False)
        else:
            self._mp.setenv("TUTTI_LEADER_TOKEN", env_token)
        self._mp.setattr(sys, "stdin", io.StringIO(stdin or ""))
        return await run_cli(*argv)

    def config(self) -> dict[str, Any]:
        self._mp.setenv("TUTTI_CONFIG_DIR", str(self.folder))
        data: dict[str, Any] = config.load()
        return data


@pytest.fixture
def machine_a(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Computer:
    return Computer(tmp_path / "cfg-a", monkeypatch)


@pytest.fixture
def machine_b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Computer:
    return Computer(tmp_path / "cfg-b", monkeypatch)


async def _create(a: Computer, server: str, title: str = "Sofa Singers") -> dict[str, Any]:
    res = await a.cli("lead", "create", server, "--title", title, "--json")
    assert res.code == 0, res
    data: dict[str, Any] = res.json()
    return data


async def _adopt_subprocess(
    config_dir: Path, server: str, session: str, stdin: bytes
) -> tuple[int, str, str, list[str]]:
    """``tutti lead adopt`` as a separate process; returns (code, out, err, its argv)."""
    argv = [sys.executable, "-c", _TUTTI, "lead", "adopt", "--server", server, "--session", session]
    env = {k: v for k, v in os.environ.items() if k != "TUTTI_LEADER_TOKEN"}
    env["TUTTI_CONFIG_DIR"] = str(config_dir)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), argv


async def test_lead_from_another_computer(
    server: str, machine_a: Computer, machine_b: Computer
) -> None:
    created = await _create(machine_a, server)
    sid = str(created["session_id"])
    saved_a = machine_a.config()["leader"][server][sid]["token"]

    res = await machine_a.cli("lead", "token", "--json")
    assert res.code == 0, res
    shown = res.json()
    assert shown == {"server": server, "session": sid, "token": saved_a}
    assert "full control" in res.err and saved_a not in res.err
    res = await machine_a.cli("lead", "token")
    assert res.code == 0, res
    assert f"server:  {server}\nsession: {sid}\ntoken:   {saved_a}\n" == res.out
    assert f"tutti lead adopt --server {server} --session {sid}" in res.err

    # computer B: a separate process, the token only on its stdin
    code, out, err, argv = await _adopt_subprocess(
        machine_b.folder, server, sid, (shown["token"] + "\n").encode()
    )
    assert code == 0, (out, err)
    assert saved_a not in " ".join(argv) and saved_a not in out + err
    assert f"session {sid} on {server}" in out and str(created["code"]) in out
    sec_b = machine_b.config()["leader"]
    assert sec_b["current"] == {"server": server, "session_id": sid}
    entry_b = sec_b[server][sid]
    assert entry_b["token"] == saved_a and entry_b["title"] == "Sofa Singers"
    assert entry_b["code"] == created["code"] and "adopted_at" in entry_b
    assert (machine_b.folder / "config.json").stat().st_mode & 0o077 == 0

    # B now leads: leader-only commands work with no URL, id or token
    singer = await Singer(server, "Ann", "S").join(str(created["code"]))
    res = await machine_b.cli("lead", "roster", "--json")
    assert res.code == 0, res
    assert [p["name"] for p in res.json()["participants"]] == ["Ann"]
    res = await machine_b.cli("lead", "take", "arm", "--json")
    assert res.code == 0, res
    armed = res.json()
    assert armed["state"] == "armed" and armed["expected"] == [singer.participant_id]
    # …and A, still a leader of the same session, sees B's take
    res = await machine_a.cli("lead", "takes", "--json")
    assert res.code == 0, res
    assert [t["take_id"] for t in res.json()["takes"]] == [armed["take_id"]]


async def test_adopt_refuses_wrong_tokens_and_stores_nothing(
    server: str, machine_a: Computer, machine_b: Computer
) -> None:
    created = await _create(machine_a, server)
    sid = str(created["session_id"])
    other = await _create(machine_a, server, title="Other choir")
    other_token = machine_a.config()["leader"][server][str(other["session_id"])]["token"]
    singer = await Singer(server, "Ann", "S").join(str(created["code"]))
    adopt = ("lead", "adopt", "--server", server, "--session", sid)

    wrong = secrets.token_urlsafe(32)
    res = await machine_b.cli(*adopt, stdin=wrong + "\n")
    assert res.code == 1, res
    assert f"{server} refused this token (401" in res.err and "nothing was stored" in res.err
    assert wrong not in res.err + res.out

    res = await machine_b.cli(*adopt, stdin=singer.token)
    assert res.code == 1, res
    assert f"belongs to a singer of session {sid} (Ann), not to its leader" in res.err

    res = await machine_b.cli(*adopt, stdin=other_token)
    assert res.code == 1, res
    assert f"this token leads session {other['session_id']} on {server}, not {sid}" in res.err

    res = await machine_b.cli(*adopt, stdin="my token is hunter2\n")
    assert res.code == 2, res
    assert "(19 characters) does not look like a leader token" in res.err
    assert "hunter2" not in res.err

    res = await machine_b.cli(*adopt, stdin="")
    assert res.code == 2 and "no token on stdin" in res.err, res

    # the token is never an argument
    token_a = machine_a.config()["leader"][server][sid]["token"]
    res = await machine_b.cli(*adopt, "--token", token_a)
    assert res.code == 2 and "unrecognized arguments" in res.err, res

    assert not (machine_b.folder / "config.json").exists()
    res = await machine_b.cli("lead", "roster")
    assert res.code == 2 and "tutti lead adopt --server URL --session ID" in res.err, res

    # the environment variable is the other way in (it wins over stdin)
    res = await machine_b.cli(*adopt, "--json", stdin="ignored\n", env_token=token_a)
    assert res.code == 0, res
    assert res.json()["session"] == sid and res.json()["title"] == "Sofa Singers"
    assert machine_b.config()["leader"][server][sid]["token"] == token_a


async def test_adopt_unreachable_and_token_without_session(machine_b: Computer) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    res = await machine_b.cli(
        "lead", "adopt", "--server", url, "--session", "abc", stdin=secrets.token_urlsafe(32)
    )
    assert res.code == 3, res
    assert f"cannot reach the tutti server at {url}" in res.err
    assert not (machine_b.folder / "config.json").exists()

    res = await machine_b.cli("lead", "adopt", "--session", "abc")
    assert res.code == 2 and "--server" in res.err, res

    res = await machine_b.cli("lead", "token")
    assert res.code == 2 and "no session yet" in res.err and res.out == "", res
    res = await machine_b.cli("lead", "token", "--server", url, "--session", "abc")
    assert res.code == 2, res
    assert f"no leader token saved for session abc on {url}" in res.err


async def _read_pty(master: int, until: bytes | None, timeout: float = 30.0) -> bytes:
    """Bytes from a pty's master side until ``until`` shows up (``None``: until the child's
    side closes)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while until is None or until not in buf:
        assert time.monotonic() < deadline, buf
        ready, _, _ = await asyncio.to_thread(select.select, [master], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every process holding the other side has exited
            break
        if not chunk:
            break
        buf += chunk
    return buf


async def test_adopt_at_a_terminal_reads_the_token_without_echo(
    server: str, machine_a: Computer, machine_b: Computer
) -> None:
    created = await _create(machine_a, server)
    sid = str(created["session_id"])
    token = machine_a.config()["leader"][server][sid]["token"]
    env = {k: v for k, v in os.environ.items() if k != "TUTTI_LEADER_TOKEN"}
    env["TUTTI_CONFIG_DIR"] = str(machine_b.folder)
    master, slave = os.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _TUTTI,
            "lead",
            "adopt",
            "--server",
            server,
            "--session",
            sid,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        shown = await _read_pty(master, b"leader token (from `tutti lead token`): ")
        os.write(master, token.encode() + b"\n")
        shown += await _read_pty(master, None)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
    finally:
        os.close(master)
    text = shown.decode(errors="replace")
    assert code == 0, text
    assert token not in text  # not echoed
    assert f"now leading “Sofa Singers”: session {sid}" in text  # (rich wraps at the pty's width)
    assert machine_b.config()["leader"][server][sid]["token"] == token
