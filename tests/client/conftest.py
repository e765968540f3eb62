"""Client-area fixtures: a private JACK dummy server (see tests/support/jack.py), a tutti
config folder per test, and a real server for the leader's commands."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.client.lead_support import serve
from tests.support.jack import JackServer, jackd_available


@pytest.fixture(scope="session")
def jack() -> Iterator[JackServer]:
    """A JACK dummy server at 48 kHz, 256-frame periods, for the whole test session.

    Skips only where jackd (or its command-line tools) is not installed; a server that is
    installed but fails to start is an error.
    """
    if not jackd_available():
        pytest.skip("jackd / jack_lsp / jack_connect not installed (apt-get install jackd2)")
    server = JackServer(rate=48000, period=256).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every client test gets its own tutti config folder (never the user's)."""
    d = tmp_path / "cfg"
    monkeypatch.setenv("TUTTI_CONFIG_DIR", str(d))
    return d


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    """A real tutti server app on port 0 (tests/client/lead_support.serve); its base URL.
    Test modules that need a server process define their own ``server``."""
    async with serve(tmp_path / "server-data") as url:
        yield url
