"""Clock sync: estimate the offset between this client's clock and the server's.

NTP-style.  The client sends ``clock.probe {"t0": client time}``; the server acks with its
``time.monotonic()`` (``server_time``); the client notes the receive time ``t1``.  One probe
gives a *sample*: the true offset ``θ`` (``server = client + θ``) lies in the causal interval
``[S − t1, S − t0]`` and its midpoint ``S − (t0 + t1)/2`` is off by half the path asymmetry.

Two estimators over a window of recent samples (:class:`ClockEstimator`):

``"median"`` (DESIGN.md's rule)
    Keep the lowest-RTT samples, take the median of their midpoint offsets.
``"envelope"`` (the default)
    Take the *minimum one-way delay in each direction separately*: ``max(S − t1)`` and
    ``min(S − t0)`` over the window are the tightest causal bounds; their midpoint is the
    estimate.  Under random queueing delay each bound only needs one lucky packet in *its*
    direction, while the median rule needs packets lucky in both directions at once, so the
    envelope converges much faster through a jittery path (measured figures in
    ``docs/benchmarks-client.md``).  It assumes the floor delay is the same both ways — the
    same symmetry assumption NTP makes — and a negligible drift across the window (the
    window is bounded in time as well as in count).

The reported error bound follows DESIGN.md: ``(RTT − RTT_min)/2``, here with ``RTT`` the
largest round trip among the samples the estimate rests on (median rule) or the envelope's
``min(S − t0) + min(t1 − S)`` floor compared with ``RTT_min`` (envelope rule); it is a
quality figure, not a guarantee.  The hard guarantee is half the causal interval's width,
available as :attr:`ClockEstimate.causal_half_width`.

:class:`ClockSync` drives probes over any ``ack`` coroutine (the Socket.IO connection's
``call``), with the local clock injectable so tests can give the client a known artificial
offset.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from tutti.errors import TuttiError
from tutti.wire import ClockProbe, ClockReply, ClockReport, WireError

__all__ = [
    "ClockError",
    "ClockSample",
    "ClockEstimate",
    "ClockEstimator",
    "ClockSync",
    "Method",
    "ResyncPacer",
]

Method = Literal["envelope", "median"]

#: Default share of the window (lowest RTT first) the median rule keeps.
KEEP_FRACTION: Final = 0.25
#: Samples older than this (seconds) leave the window, so clock drift cannot build up in it.
MAX_AGE_S: Final = 120.0


#: Spaced probes a burst sends before it may stop because the estimate holds steady.
STEADY_AFTER: Final = 16
#: Spaced probes (and as many in the tail) that check the estimate held after a reconnection.
RECONNECT_PROBES: Final = 8
#: Re-sync intervals (seconds): the shortest while the offset moves, the longest while it
#: holds still (one machine, or two clocks that agree).
RESYNC_MIN_S: Final = 5.0
RESYNC_MAX_S: Final = 60.0
#: How far the offset may move between two re-syncs (seconds) before they come sooner.
RESYNC_TOLERANCE_S: Final = 0.25e-3


class ResyncPacer:
    """When to re-sync the clock: as often as the offset's measured movement needs.

    The interval doubles (up to :data:`RESYNC_MAX_S`) while the offset moves less than the
    two estimates' error bounds together explain, and drops at once to what
    :data:`RESYNC_TOLERANCE_S` allows at the movement measured (at least
    :data:`RESYNC_MIN_S`): two clocks 100 ppm apart re-sync every 5 s, a quiet pair every
    minute, and estimates made noisy by a loaded server (wide bounds) do not call for more
    probes to load it further.
    """

    def __init__(self) -> None:
        self.interval = RESYNC_MIN_S
        self._last: tuple[float, float, float] | None = None

    def next_interval(self, now: float, offset: float, error_bound: float) -> float:
        """Seconds until the next re-sync, after one at ``now`` gave ``offset`` ± ``error_bound``
        (all in seconds)."""
        if self._last is not None and now > self._last[0]:
            then, before, bound_before = self._last
            explained = error_bound + bound_before
            moving = max(0.0, abs(offset - before) - explained) / (now - then)
            needed = RESYNC_TOLERANCE_S / moving if moving > 0 else RESYNC_MAX_S
            self.interval = max(RESYNC_MIN_S, min(RESYNC_MAX_S, needed, 2 * self.interval))
        self._last = (now, offset, error_bound)
        return self.interval


class ClockError(TuttiError):
    """No usable clock estimate (no probe answered, or answers that make no sense)."""


@dataclass(frozen=True)
class ClockSample:
    """One probe: client send time ``t0``, server time ``server``, client receive time ``t1``.

    All in seconds; ``t0``/``t1`` on the client's clock, ``server`` on the server's
    ``time.monotonic()``.
    """

    t0: float
    server: float
    t1: float

    @property
    def rtt(self) -> float:
        """Round-trip time (seconds)."""
        return self.t1 - self.t0

    @property
    def offset(self) -> float:
        """Midpoint estimate of ``server − client`` (seconds)."""
        return self.server - (self.t0 + self.t1) / 2.0


@dataclass(frozen=True)
class ClockEstimate:
    """An offset estimate: ``server_time ≈ client_time + offset`` (seconds)."""

    offset: float
    error_bound: float
    rtt_min: float
    samples: int
    causal_half_width: float
    method: Method

    def report(self) -> ClockReport:
        """The wire form sent to the server as ``clock.report``."""
        return ClockReport(
            offset=self.offset,
            error_bound=max(0.0, self.error_bound),
            rtt_min=max(0.0, self.rtt_min),
            samples=self.samples,
        )


class ClockEstimator:
    """A window of recent :class:`ClockSample` and the offset estimate they give.

    Parameters
    ----------
    window : int
        Most samples kept (oldest dropped first).
    method : {"envelope", "median"}
        Estimator (see the module docstring).
    keep_fraction : float
        Share of the window, lowest RTT first, that the median rule uses.
    max_age : float
        Samples whose ``t1`` is older than this many seconds (client clock) are dropped.
    """

    def __init__(
        self,
        window: int = 256,
        *,
        method: Method = "envelope",
        keep_fraction: float = KEEP_FRACTION,
        max_age: float = MAX_AGE_S,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1 sample")
        if not 0.0 < keep_fraction <= 1.0:
            raise ValueError("keep_fraction must be in (0, 1]")
        if method not in ("envelope", "median"):
            raise ValueError(f"method must be 'envelope' or 'median', got {method!r}")
        self.method: Method = method
        self.keep_fraction = keep_fraction
        self.max_age = max_age
        self._samples: deque[ClockSample] = deque(maxlen=window)

    def __len__(self) -> int:
        return len(self._samples)

    def clear(self) -> None:
        """Forget every sample (e.g. after a reconnect to a restarted server)."""
        self._samples.clear()

    def add(self, sample: ClockSample) -> None:
        """Add one sample; samples with a negative RTT (a broken clock) are refused."""
        if not sample.rtt >= 0.0:
            raise ClockError(f"probe answered before it was sent (rtt {sample.rtt:.6f} s)")
        self._samples.append(sample)
        horizon = sample.t1 - self.max_age
        while self._samples and self._samples[0].t1 < horizon:
            self._samples.popleft()

    def estimate(self, method: Method | None = None) -> ClockEstimate:
        """The current estimate; raises :class:`ClockError` with no samples."""
        s = list(self._samples)
        if not s:
            raise ClockError("no clock samples yet")
        method = method or self.method
        rtt_min = min(x.rtt for x in s)
        lo = max(x.server - x.t1 for x in s)  # θ ≥ S − t1 for every sample
        hi = min(x.server - x.t0 for x in s)  # θ ≤ S − t0 for every sample
        if lo > hi + 1e-9:
            raise ClockError(
                "clock samples contradict each other (the server or client clock jumped); "
                "re-synchronising"
            )
        half_width = max(0.0, (hi - lo) / 2.0)
        if method == "envelope":
            offset = (lo + hi) / 2.0
            floor_rtt = hi - lo  # min(S − t0) + min(t1 − S): both one-way floors
            bound = max(0.0, (rtt_min - floor_rtt) / 2.0)
        else:
            keep = max(1, int(round(len(s) * self.keep_fraction)))
            best = sorted(s, key=lambda x: x.rtt)[:keep]
            offset = statistics.median(x.offset for x in best)
            offset = min(max(offset, lo), hi)  # never outside what causality allows
            bound = (best[-1].rtt - rtt_min) / 2.0
        return ClockEstimate(
            offset=offset,
            error_bound=bound,
            rtt_min=rtt_min,
            samples=len(s),
            causal_half_width=half_width,
            method=method,
        )


#: ``ack(event, payload, timeout)`` → the server's ack payload (e.g. ``socketio.AsyncClient.call``).
AckCall = Callable[[str, dict[str, Any], float], Awaitable[Any]]


class ClockSync:
    """Drives clock probes and keeps the estimate.

    Parameters
    ----------
    ack : coroutine function ``(event, payload, timeout) -> reply``
        Sends one ``clock.probe`` and returns the ack payload; raises ``TimeoutError`` or
        ``ConnectionError`` when the probe is lost.
    now : callable
        The client's clock (seconds); default ``time.monotonic``.  Tests pass
        ``lambda: time.monotonic() + K`` to give the client a known offset ``−K``.
    estimator : ClockEstimator, optional
    """

    def __init__(
        self,
        ack: AckCall,
        *,
        now: Callable[[], float] = time.monotonic,
        estimator: ClockEstimator | None = None,
        probe_timeout: float = 2.0,
    ) -> None:
        self._ack = ack
        self.now = now
        self.estimator = estimator or ClockEstimator()
        self.probe_timeout = probe_timeout
        self.lost = 0  # probes that timed out or got a malformed reply
        self._current: ClockEstimate | None = None

    @property
    def current(self) -> ClockEstimate | None:
        """The last computed estimate (``None`` before the first successful burst)."""
        return self._current

    async def probe(self) -> ClockSample | None:
        """Coroutine: one probe; returns its sample, or ``None`` if it was lost."""
        from tutti.wire import Ev

        t0 = self.now()
        try:
            reply = await self._ack(Ev.CLOCK_PROBE, ClockProbe(t0).to_dict(), self.probe_timeout)
        except (
            TimeoutError,
            ConnectionError,
        ):  # the ack callable translates its transport's errors
            self.lost += 1
            return None
        t1 = self.now()
        try:
            sample = _parse_reply(reply, t0, t1)
        except WireError:
            self.lost += 1
            return None
        self.estimator.add(sample)
        return sample

    async def burst(
        self,
        n: int = 64,
        *,
        spacing: float = 0.02,
        concurrency: int = 8,
        tail: int = 16,
        until_steady: bool = False,
    ) -> ClockEstimate:
        """Coroutine: send ``n`` probes (at most ``concurrency`` in flight, ``spacing``
        seconds apart), then ``tail`` probes one after another, and return the updated
        estimate.

        Probes are spaced rather than sent back to back: on a path that queues (Wi-Fi, a
        congested uplink) back-to-back probes wait behind each other, so none of them sees
        the path's floor delay; 20 ms apart, most of them do.  On a quiet path the opposite
        holds: a probe sent after an idle gap meets a cold path (the server's event loop and
        the Socket.IO stack wake up first), which delays the request more than the reply;
        probes sent back to back find the path warm and both directions at their floor.
        The envelope estimator keeps the tightest bound in each direction, so the tail can
        only narrow the estimate (docs/benchmarks-client.md has the measured effect).

        ``until_steady``: stop sending spaced probes (after at least :data:`STEADY_AFTER`) once
        a group of ``concurrency`` answers narrowed the window the offset lies in by less than
        5 %: a quiet path gives its floor within a few probes, a jittery one keeps narrowing
        and gets all ``n`` (what that saves a thousand singers joining at once:
        docs/benchmarks-server.md).

        Raises
        ------
        ClockError
            If no probe at all was answered.
        """
        sem = asyncio.Semaphore(max(1, concurrency))
        tasks: list[asyncio.Task[ClockSample | None]] = []

        async def one() -> ClockSample | None:
            async with sem:
                return await self.probe()

        narrowest = math.inf
        for i in range(n):
            if until_steady and i >= STEADY_AFTER and i % concurrency == 0:
                width = self._window_width()
                if width > 0.95 * narrowest:
                    break
                narrowest = min(narrowest, width)
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(spacing)  # (0: still lets the probe go out)
        results = list(await asyncio.gather(*tasks))
        for _ in range(max(0, tail)):
            results.append(await self.probe())
        if not any(results) and not len(self.estimator):
            raise ClockError(f"none of {n} clock probes was answered by the server")
        self._current = self.estimator.estimate()
        return self._current

    def _window_width(self) -> float:
        """How wide the window the offset lies in is now (seconds; inf without samples)."""
        try:
            return self.estimator.estimate().causal_half_width
        except ClockError:
            return math.inf

    async def run(
        self,
        on_estimate: Callable[[ClockEstimate], Awaitable[None]] | None = None,
        *,
        interval: float = 5.0,
        probes: int = 16,
    ) -> None:
        """Coroutine, runs until cancelled: re-probe every ``interval`` seconds during the
        session and hand each new estimate to ``on_estimate`` (e.g. to send ``clock.report``)."""
        while True:
            await asyncio.sleep(interval)
            try:
                est = await self.burst(probes)
            except ClockError:
                continue
            if on_estimate is not None:
                await on_estimate(est)

    async def after_reconnect(self, afresh: int) -> ClockEstimate:
        """Coroutine: the estimate after the socket connected again, maybe to another
        server process.  :data:`RECONNECT_PROBES` probes narrow the estimate held when the
        server's clock is the one it was measured on (another process on the same host, or
        the same one back); a clock that moved contradicts it, and the estimate starts
        afresh with a burst of ``afresh``.  The singers of a killed process reconnect at
        once: each sends 16 probes, where a burst sent 40 (docs/benchmarks-server.md)."""
        try:
            return await self.burst(RECONNECT_PROBES, tail=RECONNECT_PROBES)
        except ClockError as exc:
            if "contradict" not in str(exc):
                raise
        self.estimator.clear()
        return await self.burst(afresh, until_steady=True)

    def to_local(self, server_time: float) -> float:
        """Map a server time (seconds) to the client's clock; needs an estimate."""
        if self._current is None:
            raise ClockError("the clock is not synchronised yet")
        return server_time - self._current.offset

    def to_server(self, local_time: float) -> float:
        """Map a client time (seconds) to the server's clock; needs an estimate."""
        if self._current is None:
            raise ClockError("the clock is not synchronised yet")
        return local_time + self._current.offset


def _parse_reply(reply: Any, t0: float, t1: float) -> ClockSample:
    r = ClockReply.from_dict(reply, "clock reply")
    if r.t0 != t0:
        raise WireError("clock reply: t0 does not echo the probe")
    return ClockSample(t0=t0, server=r.server_time, t1=t1)
