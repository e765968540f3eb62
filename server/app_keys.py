"""Typed application state: the server's configuration and its services, as aiohttp AppKeys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from .client_address import IPNetwork
from .hostkey import HostKey
from .quota import StorageQuota
from .realtime import Realtime
from .sessions import Sessions
from .store import SessionStore
from .takes import Takes
from .tracks import TrackStore

if TYPE_CHECKING:
    from .metrics import Metrics
    from .retention import Retention

__all__ = ["Config", "Services", "CONFIG", "SERVICES"]

MB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    """How a server runs.

    Attributes
    ----------
    data_dir : Path
        SQLite database, tracks, takes and partial uploads live here.
    max_track_bytes, max_upload_bytes : int
        Largest backing track and largest take upload, bytes.
    upload_expiry_s : float
        Seconds after which an unfinished take upload expires.
    cors_origins : tuple of str
        Browser origins allowed cross-origin (HTTP and Socket.IO); empty = same origin only.
    max_json_bytes : int
        Largest JSON request body, bytes (413 beyond).
    join_failures_per_minute : int
        Wrong join codes allowed per client address per minute (429 beyond).
    session_lifetime_s : float
        Seconds after its creation when a session expires: it takes no joins, settings,
        tracks or takes any more; its takes stay downloadable by the leader.
    trusted_proxies : tuple of str
        Reverse proxies (IP addresses or CIDR networks) whose ``X-Forwarded-For`` is
        believed when they are the direct peer; empty = the header is always ignored.
        See :mod:`tutti.server.client_address`.
    max_open_uploads_per_participant : int
        Unfinished take uploads (receiving, or refused and not yet expired) one singer may
        hold at once; creating one more answers 409 ``too_many_open_uploads``.
    open_sessions : bool
        True: anyone who reaches the server may create sessions (a private network).
        False: ``POST /api/sessions`` needs the host's key (:mod:`tutti.server.hostkey`).
    session_key : str or None
        The key when ``open_sessions`` is False; None = read (or create) it in the data dir.
    max_sessions : int
        Open sessions allowed per key (403 ``session_quota`` beyond).
    max_joins_per_session : int
        Singers who may join one session (403 ``join_quota`` beyond).
    max_session_bytes, max_server_bytes : int
        Bytes of tracks and takes one session, and of everything in the data directory, the
        server may hold (413 ``storage_quota`` for an upload that would pass them).
    keep_days : float
        Days a stopped take (its recordings) is kept before it is removed for good.
    wire_log : Path or None
        Append every message the server sends to this file (:mod:`tutti.server.wirelog`).
    database_url : str or None
        PostgreSQL URL of the session store shared by several processes; None = SQLite
        ``tutti.db`` in the data directory (one host).
    redis_url : str or None
        Redis that carries Socket.IO emits and live state between processes; None = one
        process.
    clock : str
        The server clock clients synchronise to and takes are scheduled on, a key of
        :data:`tutti.server.realtime.SERVER_CLOCKS`: "monotonic" (one host) or "realtime"
        (several hosts, their clocks kept in step by NTP).
    node : str or None
        This process's name in a deployment of several: its unfinished uploads are kept in
        ``uploads/<node>/`` of the (shared) data directory; None = ``uploads/``.
    mix_memory : Path or None
        A folder in memory (tmpfs) where the server's mixes work
        (:mod:`tutti.server.mixwork`); None = on disk, in each take's folder.
    mix_memory_bytes : int
        Bytes the mixes may hold in ``mix_memory``.
    """

    data_dir: Path
    max_track_bytes: int = 200 * MB
    max_upload_bytes: int = 500 * MB
    upload_expiry_s: float = 24 * 3600.0
    cors_origins: tuple[str, ...] = ()
    max_json_bytes: int = 64 * 1024
    join_failures_per_minute: int = 10
    session_lifetime_s: float = 30 * 24 * 3600.0
    trusted_proxies: tuple[str, ...] = ()
    max_open_uploads_per_participant: int = 8
    open_sessions: bool = False
    session_key: str | None = None
    max_sessions: int = 50
    max_joins_per_session: int = 200
    max_session_bytes: int = 5 * 1024 * MB
    max_server_bytes: int = 100 * 1024 * MB
    keep_days: float = 90.0
    wire_log: Path | None = None
    database_url: str | None = None
    redis_url: str | None = None
    node: str | None = None
    clock: str = "monotonic"
    mix_memory: Path | None = None
    mix_memory_bytes: int = 0


@dataclass
class Services:
    """Everything the views and handlers use, built once per application."""

    config: Config
    store: SessionStore
    sessions: Sessions
    takes: Takes
    tracks: TrackStore
    realtime: Realtime
    host_key: HostKey
    quota: StorageQuota
    retention: Retention
    metrics: Metrics
    proxies: tuple[IPNetwork, ...] = ()
    extras: dict[str, object] = field(default_factory=dict)


CONFIG = web.AppKey("config", Config)
SERVICES = web.AppKey("services", Services)
