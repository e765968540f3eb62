"""Fixtures: a real tutti server in-process on port 0 and an HTTP client bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import services
from tests.support.server import RunningServer, running_server
from tests.support.services import Postgres


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "data") as srv:
        yield srv


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.url) as session:
        yield session


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL cluster for the run (each test takes a fresh database of it)."""
    why = services.missing()
    if why is not None:
        pytest.skip(why)
    with services.postgres_server() as pg:
        yield pg


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A fresh real Redis for one test; its URL."""
    why = services.missing()
    if why is not None:
        pytest.skip(why)
    with services.redis_server() as url:
        yield url
