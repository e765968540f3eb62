"""What a host watches: ``GET /metrics`` in the Prometheus text format, and a log line per request.

The counts of sessions, singers and takes are read from the store and the Socket.IO server
when Prometheus scrapes (a collector, so they cannot drift from the truth); uploads and
failures are counted as they happen; event-loop lag is measured by a task that sleeps a fixed
time and records how late it woke.  ``/metrics`` answers a request that carries the host's
session key as a bearer token, or one made on this machine straight to the server (no proxy
in between, which would make every visitor look local).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from ipaddress import ip_address

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .app_keys import SERVICES, Services
from .errors import Forbidden
from .hostkey import HostKey

__all__ = ["Metrics", "add_metrics", "access_log_middleware"]

log = logging.getLogger("tutti.access")

#: Seconds between the event-loop lag probe's wake-ups.
LAG_PROBE_S = 0.25
_FORWARDING = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
#: The text exposition format every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _StateCollector(Collector):
    """Sessions, connections and takes as they are at scrape time."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.services
        sessions = s.sessions
        open_n = s.store.count_open_sessions(sessions.clock() - sessions.lifetime_s)
        yield GaugeMetricFamily("tutti_sessions_open", "Sessions open for joining", open_n)
        roles = GaugeMetricFamily(
            "tutti_connections", "Socket.IO connections by role", labels=["role"]
        )
        conns = list(s.realtime.conns.values())
        leaders = sum(1 for p in conns if p.is_leader)
        roles.add_metric(["singer"], len(conns) - leaders)
        roles.add_metric(["leader"], leaders)
        yield roles
        takes = GaugeMetricFamily("tutti_takes", "Takes by state", labels=["state"])
        counts = s.store.count_takes_by_state()
        for state in ("armed", "running", "stopped"):
            takes.add_metric([state], counts.get(state, 0))
        yield takes


class Metrics:
    """The server's metrics registry (one per application, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.upload_bytes = Counter(
            "tutti_upload_bytes",
            "Take upload bytes received and stored",
            registry=self.registry,
        )
        self.uploads_completed = Counter(
            "tutti_uploads_completed", "Take uploads verified and stored", registry=self.registry
        )
        self.upload_failures = Counter(
            "tutti_upload_failures",
            "Take uploads refused when complete (damaged or not audio)",
            registry=self.registry,
        )
        self.requests = Counter(
            "tutti_http_requests",
            "HTTP requests answered, by status class",
            ["status"],
            registry=self.registry,
        )
        self.loop_lag = Gauge(
            "tutti_event_loop_lag_seconds",
            "How late the event loop last woke a task that slept a fixed time",
            registry=self.registry,
        )
        self.loop_lag_max = Gauge(
            "tutti_event_loop_lag_max_seconds",
            "The largest event-loop lag seen since the server started",
            registry=self.registry,
        )

    def upload_outcome(self, stored: bool) -> None:
        (self.uploads_completed if stored else self.upload_failures).inc()

    def watch(self, services: Services) -> None:
        self.registry.register(_StateCollector(services))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def probe_loop_lag(self) -> None:
        """Sleep LAG_PROBE_S at a time and record how late each wake-up came."""
        worst = 0.0
        while True:
            start = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            lag = max(0.0, time.monotonic() - start - LAG_PROBE_S)
            worst = max(worst, lag)
            self.loop_lag.set(lag)
            self.loop_lag_max.set(worst)


def _may_read(request: web.Request, host_key: HostKey) -> bool:
    """The host's key as a bearer token, or a direct request from this machine."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return host_key.matches(auth[7:].strip())
    if any(h in request.headers for h in _FORWARDING):
        return False
    try:
        return ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


async def _metrics_view(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if not _may_read(request, services.host_key):
        raise Forbidden(
            "the metrics are for the host: ask from the server's own machine, or send the "
            "session key as 'Authorization: Bearer KEY'",
            code="metrics_forbidden",
        )
    body = services.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


@web.middleware
async def access_log_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """One structured line per request (logfmt: method, path, status, bytes, ms, client)."""
    start = time.monotonic()
    status = 500
    size: int | None = None
    try:
        response = await handler(request)
        status, size = response.status, response.content_length
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        ms = (time.monotonic() - start) * 1000
        services = request.app.get(SERVICES)
        if services is not None:
            services.metrics.requests.labels(_status_class(status)).inc()
        log.info(
            "method=%s path=%s status=%d bytes=%s ms=%.1f client=%s",
            request.method,
            _quote(request.path),
            status,
            "-" if size is None else size,
            ms,
            request.remote or "-",
        )


def _quote(text: str) -> str:
    """A logfmt value: quoted when it holds spaces, quotes or control characters."""
    if text and all(c.isprintable() and c not in ' "=' for c in text):
        return text
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def add_metrics(app: web.Application) -> None:
    """Serve ``/metrics`` and run the event-loop lag probe while the app runs."""
    services = app[SERVICES]
    services.metrics.watch(services)
    app.router.add_get("/metrics", _metrics_view)

    async def lag_probe(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(services.metrics.probe_loop_lag())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(lag_probe)
