"""The application factory: compose store, rules, HTTP views, Socket.IO and tus uploads.

:func:`init_app` builds an :class:`aiohttp.web.Application` and owns no sockets; running it
is :mod:`tutti.server.cli`'s job (or a test's, on port 0).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO

import socketio
from aiohttp import web
from aiohttp.typedefs import Middleware

from . import invite
from .app_keys import CONFIG, SERVICES, Config, Services
from .auth import JoinLimiter
from .client_address import parse_proxies
from .errors import error_middleware
from .headers import add_security_headers
from .hostkey import HostKey, load_or_create_key
from .http_api import add_routes, remove_stale_probes
from .logfilter import install_malformed_input_filter
from .metrics import Metrics, access_log_middleware, add_metrics
from .mix_api import add_routes as add_mix_routes
from .presence import RedisPresence, claim_node
from .quota import StorageQuota
from .realtime import SERVER_CLOCKS, Realtime
from .retention import Retention
from .sessions import Sessions
from .store import SessionStore, open_store
from .take_uploads import TakeUploadHooks
from .takes import Takes
from .track_uploads import TrackUploadHooks, UploadRouter
from .tracks import TrackStore
from .tus import TusHandler
from .waitroom import NoteStore
from .webapp import add_webapp
from .wirejson import SocketJSON
from .wirelog import WireLog

__all__ = ["init_app", "Config"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Redis connections python-socketio's manager may open for emits at once.  Its pool does not
#: wait for a free one: past the limit (redis-py's default, 100, which 500 singers on one
#: process reach while joining) an emit fails and the manager reconnects, replacing its
#: subscriber.  Connections are kept and reused once opened.
EMIT_CONNECTIONS = 2048
_EXPOSED = (
    "ETag, Content-Range, X-Tutti-Sha256, Location, Upload-Offset, Upload-Length, "
    "Upload-Expires, Upload-Metadata, Tus-Resumable, Tus-Version, Tus-Extension, "
    "Tus-Max-Size, Tus-Checksum-Algorithm, X-Tutti-Upload-State, X-Tutti-Upload-Error, "
    "Retry-After"
)


def _cors_middleware(origins: tuple[str, ...]) -> Middleware:
    """Allow the configured browser origins cross-origin; others get no CORS headers."""

    @web.middleware
    async def cors(request: web.Request, handler: _Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and origin in origins
        if (
            allowed
            and request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
        ):
            resp: web.StreamResponse = web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
                    "Access-Control-Allow-Headers": request.headers.get(
                        "Access-Control-Request-Headers", "Authorization, Content-Type"
                    ),
                    "Access-Control-Max-Age": "600",
                },
            )
        else:
            resp = await handler(request)
        if allowed and origin is not None:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Expose-Headers"] = _EXPOSED
            resp.headers.add("Vary", "Origin")
        return resp

    return cors


def _session_key(config: Config) -> str | None:
    """The key session creation needs, None on an open server."""
    if config.open_sessions:
        return None
    return config.session_key or load_or_create_key(config.data_dir)[0]


def _wire_log_middleware(wire_log: WireLog) -> Middleware:
    """Every JSON reply (errors too) into the wire log, named by method and route."""

    @web.middleware
    async def log_replies(request: web.Request, handler: _Handler) -> web.StreamResponse:
        resp = await handler(request)
        if isinstance(resp, web.Response) and resp.content_type == "application/json":
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else request.path
            body = resp.body if isinstance(resp.body, bytes) else b"null"
            wire_log.note("reply", f"{request.method} {route}", json.loads(body), resp.status)
        return resp

    return log_replies


async def _closed(resource: WireLog | IO[bytes]) -> None:
    resource.close()


def _realtime(config: Config, store: SessionStore, wire_log: WireLog | None) -> Realtime:
    """Socket.IO for one process, or for one of several sharing ``config.redis_url``."""
    clock = SERVER_CLOCKS[config.clock]
    notes = NoteStore(config.data_dir / "takes")  # beside the lyrics, in the session's folder
    if config.redis_url is None:
        return Realtime(
            store, list(config.cors_origins), wire_log=wire_log, clock=clock, notes=notes
        )
    return Realtime(
        store,
        list(config.cors_origins),
        wire_log=wire_log,
        clock=clock,
        notes=notes,
        presence=RedisPresence(
            config.redis_url,
            clock=config.clock,
            store="sqlite" if config.database_url is None else "postgresql",
        ),
        client_manager=socketio.AsyncRedisManager(
            config.redis_url,
            channel="tutti",
            redis_options={"max_connections": EMIT_CONNECTIONS},
            json=SocketJSON,  # an emit to another process carries the record itself
        ),
    )


def init_app(config: Config) -> web.Application:
    """Build the tutti server application for ``config`` (no sockets are opened).

    The data directory is created if missing; the SQLite database is ``tutti.db`` in it
    (or the store is PostgreSQL at ``config.database_url``).
    """
    data = config.data_dir
    proxies = parse_proxies(config.trusted_proxies)  # ValueError names a bad entry
    data.mkdir(parents=True, exist_ok=True)
    remove_stale_probes(data)
    install_malformed_input_filter()
    middlewares: list[Middleware] = [access_log_middleware, error_middleware]
    wire_log = None if config.wire_log is None else WireLog(config.wire_log)
    if wire_log is not None:
        middlewares.insert(0, _wire_log_middleware(wire_log))
    if config.cors_origins:
        middlewares.insert(0, _cors_middleware(config.cors_origins))
    app = web.Application(client_max_size=config.max_json_bytes, middlewares=middlewares)
    store = open_store(data, config.database_url)
    realtime = _realtime(config, store, wire_log)
    sessions = Sessions(
        store,
        realtime,
        JoinLimiter(config.join_failures_per_minute, 60.0),
        lifetime_s=config.session_lifetime_s,
        max_sessions=config.max_sessions,
        max_joins=config.max_joins_per_session,
    )
    realtime.not_open = sessions.not_open
    takes = Takes(
        store, sessions, realtime, data / "takes", keep_days=config.keep_days, clock=realtime.clock
    )
    tracks = TrackStore(data, config.max_track_bytes)
    services = Services(
        config=config,
        store=store,
        sessions=sessions,
        takes=takes,
        tracks=tracks,
        realtime=realtime,
        host_key=HostKey(_session_key(config)),
        quota=StorageQuota(data, config.max_session_bytes, config.max_server_bytes),
        metrics=Metrics(),
        retention=Retention(store, sessions, takes, tracks, realtime),
        proxies=proxies,
    )
    app[CONFIG] = config
    app[SERVICES] = services
    add_routes(app)
    invite.add_routes(app)
    add_webapp(app)
    add_metrics(app)
    add_security_headers(app)
    realtime.attach(app)
    if wire_log is not None:
        app.on_cleanup.append(lambda _app: _closed(wire_log))
    hooks = TakeUploadHooks(
        store, sessions, takes, realtime, max_open_uploads=config.max_open_uploads_per_participant
    )
    track_hooks = TrackUploadHooks(store, sessions, tracks, realtime, services.quota)
    uploads = data / "uploads"
    if config.node is not None:
        node_lock = claim_node(uploads, config.node)
        app.on_cleanup.append(lambda _app: _closed(node_lock))
        uploads = uploads / config.node
    tus = TusHandler(
        uploads,
        UploadRouter(hooks, track_hooks),
        max_size=config.max_upload_bytes,
        expiry_s=config.upload_expiry_s,
    )
    hooks.open_uploads = track_hooks.open_uploads = tus.open_uploads
    hooks.quota = services.quota
    hooks.outcome = services.metrics.upload_outcome
    add_mix_routes(app, hooks)
    tus.on_stored = services.metrics.upload_bytes.inc
    services.retention.discard_uploads = tus.discard
    app.cleanup_ctx.append(services.retention.run)
    tus.add_routes(app, "/files/")
    services.extras["tus"] = tus
    app.cleanup_ctx.append(tus.cleanup_ctx)

    async def close_store(app: web.Application) -> AsyncIterator[None]:
        yield
        store.close()

    app.cleanup_ctx.insert(0, close_store)
    return app
