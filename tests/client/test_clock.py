"""Clock sync against a real server process over real Socket.IO.

The server runs in its own process (``tutti serve --port 0``) on the same machine, so both
sides read the same ``CLOCK_MONOTONIC``; the client's clock is ``time.monotonic() + K``, so
the true offset is exactly ``−K`` and every estimate's error is measurable.  Each estimate
comes from a fresh estimator (independent windows), so the percentiles are over independent
estimates.  Figures are printed (run with ``-s``) and recorded in docs/benchmarks-client.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.client.net_helpers import Leader
from tests.support.jitter_proxy import JitterProxy
from tests.support.server import ServerProcess
from tutti.client.clock import ClockEstimator, ClockSync
from tutti.client.connection import Connection, join_session

K = 1234.5678  # the client's artificial clock offset (seconds): true offset is −K


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ServerProcess]:
    monkeypatch.setenv("TUTTI_CONFIG_DIR", str(tmp_path / "config"))
    srv = ServerProcess(tmp_path / "data")
    await asyncio.to_thread(srv.start)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.stop)


async def _singer_token(http: aiohttp.ClientSession, url: str) -> tuple[Leader, str, str]:
    leader = await Leader(http, url).create()
    info = await join_session(http, url, code=leader.code, name="Ada", part="S", remember=False)
    return leader, info.token, info.participant_id


async def _estimates(
    url: str, token: str, n: int, probes: int, *, spacing: float, concurrency: int
) -> dict[str, list[float]]:
    conn = Connection(url, token)
    await conn.connect()
    ests = []
    try:
        for _ in range(n):
            sync = ClockSync(
                conn.call, now=lambda: time.monotonic() + K, estimator=ClockEstimator(window=1000)
            )
            await sync.burst(probes, spacing=spacing, concurrency=concurrency)
            assert sync.lost == 0
            ests.append(sync.estimator)
    finally:
        await conn.close()
    return _errors(ests)


def _errors(ests: list[ClockEstimator]) -> dict[str, list[float]]:
    """Each estimator's envelope and median-rule error, and whether its causal interval
    holds the truth (it always must)."""
    errs: dict[str, list[float]] = {"envelope": [], "median": [], "bound_ok": []}
    for est in ests:
        env = est.estimate("envelope")
        errs["envelope"].append(abs(env.offset + K))
        errs["median"].append(abs(est.estimate("median").offset + K))
        errs["bound_ok"].append(float(abs(env.offset + K) <= env.causal_half_width + 1e-9))
    return errs


async def _interleaved_estimates(
    url: str, token: str, n: int, probes: int
) -> dict[str, list[float]]:
    """``n`` independent estimates of ``probes`` samples each from ``n * probes`` probes sent
    one after another, sample ``i`` going to estimator ``i % n``.

    So each estimate's samples span the whole run, as the real client's spaced probes span a
    second or more, and a moment the machine stalls the path costs every estimate at most a
    sample or two instead of costing one estimate all of its own: in CI, estimates made of 32
    probes in a row (14 ms) came out 67 and 75 µs off when the p50 was 4.8 µs.
    """
    conn = Connection(url, token)
    await conn.connect()
    ests = [ClockEstimator(window=probes) for _ in range(n)]
    try:
        sync = ClockSync(conn.call, now=lambda: time.monotonic() + K)
        for i in range(n * probes):
            sample = await sync.probe()
            assert sample is not None, "a clock probe was lost on loopback"
            ests[i % n].add(sample)
    finally:
        await conn.close()
    return _errors(ests)


async def test_loopback_offset_error_p99_below_50_us(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        _, token, _ = await _singer_token(http, server.url)
        errs = await _interleaved_estimates(server.url, token, 100, 32)
    env, med = errs["envelope"], errs["median"]
    print(
        "\nclock loopback (100 estimates x 32 probes, interleaved): "
        f"envelope p50 {_pct(env, 0.5) * 1e6:.1f} us "
        f"p99 {_pct(env, 0.99) * 1e6:.1f} us max {max(env) * 1e6:.1f} us; median rule p50 "
        f"{_pct(med, 0.5) * 1e6:.1f} us p99 {_pct(med, 0.99) * 1e6:.1f} us"
    )
    assert all(errs["bound_ok"])
    assert _pct(env, 0.99) < 50e-6


@pytest.mark.slow
async def test_jitter_proxy_offset_error_below_1_ms(server: ServerProcess) -> None:
    """Through 20 ± 10 ms of jitter each way the envelope rule stays within 1 ms.

    40 estimates cannot show a p99 (it would be their maximum), and on a busy machine the
    proxy's own timers fire late now and then: one estimate of 40 over 1 ms (1.21 ms under a
    CPU hog on both cores, 7 Dec, when DESIGN.md's median rule's worst was 1.20) is allowed,
    two are not.  The median rule, run on the same probes, is the peer the envelope must beat.
    """
    async with aiohttp.ClientSession() as http:
        _, token, _ = await _singer_token(http, server.url)
        async with JitterProxy("127.0.0.1", server.port, delay=0.020, jitter=0.010) as proxy:
            url = f"http://127.0.0.1:{proxy.port}"
            # four singers at once, each with its own proxied connection: 40 estimates
            runs = await asyncio.gather(
                *[_estimates(url, token, 10, 128, spacing=0.02, concurrency=8) for _ in range(4)]
            )
    env = [e for r in runs for e in r["envelope"]]
    med = [e for r in runs for e in r["median"]]
    print(
        f"\nclock through 20±10 ms jitter ({len(env)} estimates x 128 probes): envelope p50 "
        f"{_pct(env, 0.5) * 1e6:.0f} us p99 {_pct(env, 0.99) * 1e6:.0f} us; median rule p50 "
        f"{_pct(med, 0.5) * 1e6:.0f} us p99 {_pct(med, 0.99) * 1e6:.0f} us"
    )
    assert all(b for r in runs for b in r["bound_ok"])
    over = [e for e in env if e >= 1e-3]
    assert len(over) <= 1, sorted(env)[-3:]
    assert _pct(env, 0.5) < _pct(med, 0.5)


async def test_report_reaches_the_leaders_roster(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        leader, token, pid = await _singer_token(http, server.url)
        conn = Connection(server.url, token)
        await conn.connect()
        try:
            sync = ClockSync(conn.call, now=lambda: time.monotonic() + K)
            est = await sync.burst(32, spacing=0.0, concurrency=1)
            assert await conn.emit("clock.report", est.report())
            deadline = time.monotonic() + 5
            clock = None
            while time.monotonic() < deadline and clock is None:
                me = [p for p in await leader.roster() if p["participant_id"] == pid]
                clock = me[0]["clock"] if me else None
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
    assert clock is not None
    assert clock["offset"] == pytest.approx(-K, abs=1e-4)
    assert 0 <= clock["error_bound"] < 1e-3
    # the estimate maps server time back to the client's clock
    assert sync.to_local(100.0) == pytest.approx(100.0 + K, abs=1e-4)
