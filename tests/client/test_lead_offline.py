"""``tutti lead`` without a tutti server: bad input, unreachable and foreign servers, config.

The CLI runs in-process through :func:`tutti.cli.main` (in a worker thread, so it can make its
own event loop) with ``TUTTI_CONFIG_DIR`` in ``tmp_path``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.client.lead_cli import CliResult, run_cli
from tests.support.ports import unused_port
from tutti.client import config
from tutti.client.leadconfig import remember_session
from tutti.client.leader_api import LeaderError, normalize_server_url


@pytest.fixture
async def foreign_server() -> AsyncIterator[str]:
    """A real HTTP server that is not tutti: 404 (text/plain) for everything."""
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_normalize_server_url() -> None:
    assert normalize_server_url("localhost:8765/") == "http://localhost:8765"
    assert normalize_server_url(" https://choir.example.org/tutti/ ") == (
        "https://choir.example.org/tutti"
    )
    for bad in ("ftp://x", "http://", "http://host:99999"):
        with pytest.raises(LeaderError) as info:
            normalize_server_url(bad)
        assert info.value.code == "bad_url"


async def test_unreachable_server_is_named_and_exit_3() -> None:
    port = unused_port()
    res = await run_cli("lead", "create", f"http://127.0.0.1:{port}", "--title", "Choir")
    assert res.code == 3, res
    assert f"cannot reach the tutti server at http://127.0.0.1:{port}" in res.err
    assert "tutti serve" in res.err
    assert config.load() == {}  # nothing remembered for a session that was never made


async def test_foreign_server_is_not_mistaken_for_tutti(foreign_server: str) -> None:
    res = await run_cli("lead", "create", foreign_server, "--title", "Choir")
    assert res.code == 3, res
    assert "is this a tutti server" in res.err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--meter", "4x4"], "--meter '4x4'"),
        (["--rate", "12345"], "rate 12345 not supported"),
        (["--parts", "S,S"], "parts must be distinct"),
        (["--bpm", "1000"], "'bpm'=1000.0 is outside"),
        (["--parts", "../x"], "part: 1–32 characters"),
    ],
)
async def test_bad_settings_are_refused_before_any_request(extra: list[str], needle: str) -> None:
    port = unused_port()  # would give exit 3 if a request were made
    res = await run_cli("lead", "create", f"http://127.0.0.1:{port}", "--title", "T", *extra)
    assert res.code == 2, res
    assert needle in res.err


async def test_bad_tempo_map_file(tmp_path: Path) -> None:
    tm = tmp_path / "map.json"
    tm.write_text('[{"bar": 4, "bpm": 90}, {"bar": 2, "bpm": 80}]')
    res = await run_cli("lead", "create", "localhost:1", "--title", "T", "--tempo-map", str(tm))
    assert res.code == 2 and "bars must increase" in res.err, res
    tm.write_text("{not json")
    res = await run_cli("lead", "create", "localhost:1", "--title", "T", "--tempo-map", str(tm))
    assert res.code == 2 and "not valid JSON" in res.err, res


async def test_no_session_yet() -> None:
    for argv in (["roster"], ["takes", "--json"], ["take", "start"], ["close"]):
        res = await run_cli("lead", *argv)
        assert res.code == 2, res
        assert "tutti lead create URL --title TITLE" in res.err


async def test_non_audio_track_refused_locally(tmp_path: Path) -> None:
    remember_session("http://127.0.0.1:1", "sess1", "tok", "ABCDEF", "T")
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"these are my rehearsal notes, not audio\n" * 10)
    res = await run_cli("lead", "track", "S", str(junk))
    assert res.code == 2, res
    assert "is not an audio file tutti can read" in res.err and "WAV, FLAC, OGG or MP3" in res.err
    res = await run_cli("lead", "track", "S", str(tmp_path / "missing.flac"))
    assert res.code == 2 and "no such file" in res.err, res


async def test_config_remembers_current_session_per_server() -> None:
    remember_session("http://a:1", "s1", "t1", "AAAAAA", "one")
    remember_session("http://b:2", "s2", "t2", "BBBBBB", "two")
    sec = config.load()["leader"]
    assert sec["current"] == {"server": "http://b:2", "session_id": "s2"}
    assert sec["http://a:1"]["s1"]["token"] == "t1"
    # --server picks that server's only session; an unknown --session is refused clearly
    port = unused_port()
    res = await run_cli("lead", "roster", "--server", "http://a:1", "--session", "nope")
    assert res.code == 2 and "no leader token saved for session nope" in res.err, res
    remember_session(f"http://127.0.0.1:{port}", "s3", "t3", "CCCCCC", "three")
    res = await run_cli("lead", "roster")
    assert res.code == 3 and f"127.0.0.1:{port}" in res.err, res


async def test_config_file_is_private_json(config_dir: Path) -> None:
    remember_session("http://a:1", "s1", "secret", "AAAAAA", "one")
    path = config_dir / "config.json"
    assert json.loads(path.read_text())["leader"]["http://a:1"]["s1"]["token"] == "secret"
    assert path.stat().st_mode & 0o077 == 0


async def test_help_lists_exit_codes() -> None:
    res = await run_cli("lead", "--help")
    assert isinstance(res, CliResult)
    assert res.code == 0 and "exit codes" in res.out
