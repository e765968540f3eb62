"""``tutti serve``: run the session server on SQLite and a local data directory.

Prints one line, ``tutti serving on http://HOST:PORT (data: DIR)``, once it listens (with
``--port 0`` the port the system chose), then serves until SIGINT or SIGTERM.

Several processes serve one deployment with ``--redis URL`` (Socket.IO emits and live state)
and ``--database URL`` (PostgreSQL; SQLite is enough for processes on one host);
``--workers N`` starts N of them here, on ports PORT to PORT+N-1, behind a reverse proxy
with sticky sessions (docs/deploy.md), and starts again one that dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from .app import init_app
from .app_keys import MB, Config
from .client_address import parse_proxies
from .hostkey import KEY_FILE, load_or_create_key
from .mixwork import default_memory
from .presence import DeploymentError
from .realtime import SERVER_CLOCKS
from .store import StoreUnavailable

__all__ = ["add_arguments", "run", "serve"]


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return v


def _days(text: str) -> float:
    """A ``--keep-days`` value: a number of days from 1 to 3650."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not 1 <= days <= 3650:
        raise argparse.ArgumentTypeError(f"{text} days: keep takes from 1 to 3650 days")
    return days


def _positive_gib(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GiB") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of GiB")
    return v


def _gib(text: str) -> float:
    """A ``--mix-memory`` value: GiB, 0 or more."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GiB") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or a positive number of GiB")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return v


def _url(*schemes: str) -> Callable[[str], str]:
    """An argparse type: a URL with one of ``schemes``."""

    def parse(text: str) -> str:
        if not text.startswith(tuple(f"{s}://" for s in schemes)):
            accepted = " or ".join(f"{s}://..." for s in schemes)
            raise argparse.ArgumentTypeError(f"{text!r} is not a URL of the form {accepted}")
        return text

    return parse


def _node(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a node name is 1-64 letters, digits, '.', '_' or '-'"
        )
    return text


def _proxy(text: str) -> str:
    try:
        parse_proxies([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tutti serve``."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8765,
        help="TCP port (default 8765; 0 = any free port, printed at start)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("tutti-data"),
        help="data directory: database, tracks, takes (default ./tutti-data)",
    )
    parser.add_argument(
        "--upload-expiry",
        type=_positive_float,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="unfinished take uploads expire after this long (default 86400)",
    )
    parser.add_argument(
        "--session-days",
        type=_positive_float,
        default=30.0,
        metavar="DAYS",
        help="sessions expire this many days after creation (default 30); "
        "their takes stay downloadable",
    )
    parser.add_argument(
        "--max-track-mb",
        type=_positive_int,
        default=200,
        metavar="N",
        help="largest backing track, MiB (default 200)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=_positive_int,
        default=500,
        metavar="N",
        help="largest take upload, MiB (default 500)",
    )
    parser.add_argument(
        "--max-open-uploads",
        type=_positive_int,
        default=8,
        metavar="N",
        help="unfinished take uploads one singer may hold at once (default 8); "
        "one more is refused with 409 until one is finished, terminated or "
        "expired",
    )
    parser.add_argument(
        "--open",
        action="store_true",
        help="let anyone who reaches the server create sessions, without the host's "
        "session key (for a private network only)",
    )
    parser.add_argument(
        "--max-sessions",
        type=_positive_int,
        default=50,
        metavar="N",
        help="open sessions allowed per session key (default 50)",
    )
    parser.add_argument(
        "--max-joins",
        type=_positive_int,
        default=200,
        metavar="N",
        help="singers who may join one session (default 200)",
    )
    parser.add_argument(
        "--max-session-gb",
        type=_positive_gib,
        default=5.0,
        metavar="GIB",
        help="bytes of backing tracks and takes one session may hold, GiB (default 5)",
    )
    parser.add_argument(
        "--max-server-gb",
        type=_positive_gib,
        default=100.0,
        metavar="GIB",
        help="bytes the whole data directory may hold, GiB (default 100)",
    )
    parser.add_argument(
        "--mix-memory",
        type=_gib,
        metavar="GIB",
        help="memory (in /dev/shm) where the server's mixes work, GiB; 0: on disk, in each "
        "take's folder (default: a quarter of the machine's memory; with --redis, 0)",
    )
    parser.add_argument(
        "--keep-days",
        type=_days,
        default=90.0,
        metavar="DAYS",
        help="days a stopped take and its recordings are kept, then removed for good (default 90)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="browser origin allowed cross-origin (repeatable); default: same origin only",
    )
    parser.add_argument(
        "--trust-proxy",
        action="append",
        default=[],
        type=_proxy,
        metavar="ADDR",
        help="reverse proxy (IP address or CIDR network, repeatable) whose "
        "X-Forwarded-For names the client, for the per-address join-code "
        "limit; only when the direct peer is one of them, and the right-most "
        "address that is not itself a trusted proxy is taken. Default: none, "
        "the header is ignored",
    )
    parser.add_argument(
        "--wire-log",
        type=Path,
        metavar="FILE",
        help="append every message the server sends (events, acks, JSON replies) to FILE, "
        "one JSON line each: for debugging a client; it holds singers' names and levels",
    )
    parser.add_argument(
        "--redis",
        type=_url("redis", "rediss", "unix"),
        metavar="URL",
        help="Redis shared by several tutti processes (redis://host:6379/0): Socket.IO "
        "events and the live roster reach every singer and leader whichever process "
        "they are connected to; default: none (one process)",
    )
    parser.add_argument(
        "--database",
        type=_url("postgresql", "postgres"),
        metavar="URL",
        help="PostgreSQL session store shared by several hosts "
        "(postgresql://user:password@host:5432/tutti); default: SQLite tutti.db in --data",
    )
    parser.add_argument(
        "--node",
        type=_node,
        metavar="NAME",
        help="this process's name in a deployment of several, unique and the same across "
        "restarts (default with --redis: the host name); its unfinished uploads are kept "
        "in DATA/uploads/NAME/",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(SERVER_CLOCKS),
        default="monotonic",
        help="the clock singers synchronise to and takes start on: monotonic (default: one "
        "host, however many processes) or realtime (processes on several hosts, whose clocks "
        "NTP keeps in step, e.g. chrony; see docs/deploy.md)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="server processes to run here (default 1), on ports PORT..PORT+N-1 behind a "
        "reverse proxy with sticky sessions; more than 1 needs --redis",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (INFO: a line per request and per take event; WARNING: problems only)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(
        data_dir=Path(args.data).resolve(),
        max_track_bytes=int(args.max_track_mb) * MB,
        max_upload_bytes=int(args.max_upload_mb) * MB,
        upload_expiry_s=float(args.upload_expiry),
        session_lifetime_s=float(args.session_days) * 86400.0,
        cors_origins=tuple(args.cors_origin),
        trusted_proxies=tuple(args.trust_proxy),
        max_open_uploads_per_participant=int(args.max_open_uploads),
        open_sessions=bool(args.open),
        max_sessions=int(args.max_sessions),
        max_joins_per_session=int(args.max_joins),
        max_session_bytes=int(float(args.max_session_gb) * 1024 * MB),
        max_server_bytes=int(float(args.max_server_gb) * 1024 * MB),
        keep_days=float(args.keep_days),
        wire_log=None if args.wire_log is None else Path(args.wire_log).resolve(),
        database_url=args.database,
        redis_url=args.redis,
        node=args.node or (socket.gethostname() if args.redis else None),
        clock=args.clock,
        **_mix_memory(args),
    )


def _mix_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Where the server's mixes work (:mod:`tutti.server.mixwork`): in memory by default for
    one process; on disk with --redis (another process's mix could not read it) or 0."""
    found = default_memory()
    if found is None or args.mix_memory == 0 or (args.mix_memory is None and args.redis):
        return {}
    folder, budget = found
    if args.mix_memory is not None:
        budget = int(args.mix_memory * 1024 * MB)
    return {"mix_memory": folder, "mix_memory_bytes": budget}


def _load_key(config: Config) -> tuple[Config, str]:
    """Read (or create) the session key; the config with it, and the line telling the host
    how leaders get it (printed once the server listens)."""
    if config.open_sessions:
        return config, "tutti serve: --open: anyone who reaches this server can create sessions"
    config.data_dir.mkdir(parents=True, exist_ok=True)
    key, created = load_or_create_key(config.data_dir)
    where = config.data_dir / KEY_FILE
    notice = (
        f"tutti serve: session key {'created' if created else 'kept'} in {where}; give it to "
        "leaders, who create sessions with `tutti lead create URL --key KEY` (or "
        "TUTTI_SESSION_KEY=KEY); delete the file and restart to issue a new key"
    )
    return replace(config, session_key=key), notice


def _say(line: str) -> None:
    """One line in one write: workers share stdout, and an unbuffered print writes the line
    and its newline apart, so two workers' lines could run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def serve(config: Config, host: str, port: int, notice: str = "") -> None:
    """Coroutine: serve ``config`` on ``host:port`` until SIGINT/SIGTERM; ``notice`` is
    printed after the serving line."""
    app = init_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        real_port = sockets[0].getsockname()[1] if sockets else port
        shown = f"[{host}]" if ":" in host else host
        _say(f"tutti serving on http://{shown}:{real_port} (data: {config.data_dir})")
        if notice:
            _say(notice)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tutti serve``; returns the exit code."""
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not 0 <= args.port <= 65535:
        print(f"tutti serve: --port {args.port} is not a TCP port (0–65535)", file=sys.stderr)
        return 2
    if args.workers > 1 and not args.redis:
        print(
            "tutti serve: --workers needs --redis URL (the processes share events through "
            "Redis); see docs/deploy.md",
            file=sys.stderr,
        )
        return 2
    config = config_from_args(args)
    try:
        config, notice = _load_key(config)
        if args.workers > 1:
            return _supervise(args, config)
        asyncio.run(serve(config, args.host, args.port, notice))
    except (DeploymentError, StoreUnavailable) as exc:
        print(f"tutti serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"tutti serve: cannot serve on {args.host}:{args.port} or use {config.data_dir}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def _worker_command(args: argparse.Namespace, index: int, node: str) -> list[str]:
    """``tutti serve`` for worker ``index``: the same options, its own port and node."""
    own = {"--workers", "--port", "--node"}
    argv, skip = [], False
    for word in sys.argv[sys.argv.index("serve") + 1 :]:
        if skip:
            skip = False
        elif word in own:
            skip = True
        elif word.split("=", 1)[0] not in own:
            argv.append(word)
    port = 0 if args.port == 0 else args.port + index
    return [sys.executable, "-m", "tutti", "serve", *argv,
            "--port", str(port), "--node", f"{node}-{index}"]  # fmt: skip


#: A worker that exits with an error this soon after its start met a setting it cannot serve
#: with (its message is printed): the supervisor stops instead of starting it over and over.
_EARLY_EXIT_S = 10.0


def _supervise(args: argparse.Namespace, config: Config) -> int:
    """Run ``--workers`` server processes until SIGINT/SIGTERM; one that dies is started
    again after a second (its sockets reconnect to the others meanwhile).  Returns the exit
    code: 0, or a worker's when it failed at its start."""
    node = config.node or socket.gethostname()
    commands = [_worker_command(args, i, node) for i in range(args.workers)]
    procs = [subprocess.Popen(cmd) for cmd in commands]
    started = [time.monotonic()] * len(procs)
    stopping, code = False, 0

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        time.sleep(0.2)
        for i, proc in enumerate(procs):
            if stopping or proc.poll() is None:
                continue
            if proc.returncode > 0 and time.monotonic() - started[i] < _EARLY_EXIT_S:
                print(f"tutti serve: worker {i} could not start; stopping", file=sys.stderr)
                stopping, code = True, proc.returncode
                break
            print(
                f"tutti serve: worker {i} exited ({proc.returncode}); starting it again",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(1.0)
            procs[i], started[i] = subprocess.Popen(commands[i]), time.monotonic()
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return code
