"""Fixtures of the end-to-end tests: one JACK dummy server per module, a leader config folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.choir import PERIOD, RATE
from tests.support.jack import JackServer, jackd_available


@pytest.fixture(scope="module")
def jack() -> Iterator[JackServer]:
    if not jackd_available():
        pytest.skip("jackd / jack_lsp / jack_connect not installed (apt-get install jackd2)")
    server = JackServer(rate=RATE, period=PERIOD).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def leader_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "leader"
    monkeypatch.setenv("TUTTI_CONFIG_DIR", str(d))
    return d
