"""Client-area fixtures: a private JACK dummy server (see tests/support/jack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
