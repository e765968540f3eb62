"""Benchmark tutti on several processes behind Redis and a sticky proxy (issue 12).

One command (from the repository root)::

    .venv/bin/python bench/bench_cluster.py [--singers 2000] [--workers 4] [--takes 5]
        [--procs 2] [--settle 5] [--out FILE]

Starts ``redis-server``, ``tutti serve --workers W --redis URL`` (its processes on ports P to
P+W-1) and, as the peer, W bare python-socketio processes sharing emits through the same Redis
(``bench/_peer_sio.py --redis``); real nginx in front of each, configured as docs/deploy.md
says (the sticky ``upstream`` block and ``deploy/nginx/tutti-proxy.conf``: tests/support/nginx.py).
Each of the N simulated singers (``bench/_singers.py``, the real client's traffic) connects
from its own loopback address, so the proxy spreads them over the processes by address, and
reconnects as ``tutti join`` does.  The orchestrator (this process) is the leader, on the
proxy too.  Phases, first on tutti, then on the peer (one after the other: 2 × N clients at
once would be another load):

1. **join** — every singer joins (HTTP join, Socket.IO until ``welcome``); then ``--settle``
   seconds for the join bursts to end.
2. **takes** — ``--takes`` takes armed, started and stopped; each singer's receipt of
   ``take.start`` minus its ``sent_at`` (every process is on this host: one monotonic clock);
   singers that never got it; the roster call and the leader's live view (tutti only).
3. **kill** (tutti only) — a take is armed, worker 0 is killed with SIGKILL (its supervisor
   starts it again a second later) and the take is started at once.  The sockets worker 0
   held (read from the presence in Redis before the kill) must be the only ones dropped;
   they reconnect through the proxy to another process and must get the running take; then
   one more take must reach every singer.

Results: a table on stdout and JSON in ``bench/out/cluster-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import redis.asyncio as aioredis
import socketio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench._procs import Child, Swarm, start_child  # noqa: E402
from bench._singers import raise_fd_limit  # noqa: E402
from bench.bench_server import Leader, keep_results, log, machine, pct  # noqa: E402
from tests.support.nginx import running_nginx, sticky_conf  # noqa: E402
from tests.support.ports import unused_port  # noqa: E402
from tests.support.services import redis_server  # noqa: E402
from tutti.wire import PROTOCOL_VERSION  # noqa: E402

SINGER_OPTIONS = ("--from-addresses", "--reconnect")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (``tutti serve --workers`` takes P..)."""
    for _ in range(100):
        first = unused_port()
        if all(_free(first + k) for k in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports found")


@contextlib.asynccontextmanager
async def tutti_cluster(
    workers: int, redis_url: str, data: Path, logdir: Path
) -> AsyncIterator[tuple[Child, list[int]]]:
    """``tutti serve --workers`` on consecutive ports; yields the supervisor and the ports."""
    first = free_ports(workers)
    cmd = ["tutti", "serve", "--workers", str(workers), "--port", str(first), "--redis",
           redis_url, "--data", str(data), "--open", "--max-joins", "100000",
           "--trust-proxy", "127.0.0.1"]  # fmt: skip
    sup = await start_child(cmd, logdir / "serve.log")  # the first worker's serving line
    ports = [first + k for k in range(workers)]
    try:
        await _until(lambda: all(not _free(p) for p in ports), "every worker listening", 60)
        yield sup, ports
    finally:
        for child in psutil.Process(sup.proc.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        await sup.stop(timeout=40)


@contextlib.asynccontextmanager
async def peer_cluster(
    workers: int, redis_url: str, singers: int, logdir: Path
) -> AsyncIterator[list[int]]:
    """``workers`` bare python-socketio processes sharing Redis; yields their ports."""
    children = []
    try:
        for k in range(workers):
            cmd = ["bench._peer_sio", "--redis", redis_url, "--singers", str(singers)]
            children.append(await start_child(cmd, logdir / f"peer-{k}.log"))
        yield [int(c.url.rsplit(":", 1)[1]) for c in children]
    finally:
        for c in children:
            await c.stop()


async def _until(ready: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.1)


async def sockets_by_node(redis_url: str) -> dict[str, int]:
    """How many singer sockets each tutti process holds, from the presence in Redis."""
    r: Any = aioredis.Redis.from_url(redis_url)
    counts: dict[str, int] = {}
    try:
        async for key in r.scan_iter(match="tutti:*:sockets:*"):
            for node in (await r.hgetall(key)).values():
                counts[node.decode()] = counts.get(node.decode(), 0) + 1
    finally:
        await r.aclose()
    return counts


def worker_on(sup: Child, port: int) -> psutil.Process:
    """The supervisor's worker listening on ``port``."""
    for child in psutil.Process(sup.proc.pid).children():
        cmd = child.cmdline()
        if "--port" in cmd and cmd[cmd.index("--port") + 1] == str(port):
            return child
    raise RuntimeError(f"no worker on port {port}")


def held_by(by_node: dict[str, int], worker: psutil.Process) -> int:
    """Sockets ``worker`` holds (the presence names a process ``host:pid``)."""
    return sum(n for node, n in by_node.items() if node.endswith(f":{worker.pid}"))


class LeaderView:
    """The leader's Socket.IO live view: bytes received since :meth:`reset`."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=True)
        self.bytes = 0
        self.since = time.monotonic()
        self.sio.on("*", self._any)

    async def _any(self, event: str, data: Any = None) -> None:
        self.bytes += len(json.dumps([event, data]))

    def reset(self) -> None:
        self.bytes, self.since = 0, time.monotonic()

    def rate_kB_s(self) -> float:
        return self.bytes / 1e3 / max(1e-9, time.monotonic() - self.since)


async def takes_round(swarm: Swarm, takes: int, start: Any, after: Any = None) -> dict[str, Any]:
    """``takes`` take starts (``start()`` gives the take's id; ``after(take_id)`` follows
    each): pooled delivery delays, each take's p99, and the singers that missed them."""
    delays: list[float] = []
    missing = 0
    p99s = []
    for _ in range(takes):
        take_id = await start()
        got, _, miss = await swarm.collect(take_id)
        if after is not None:
            await after(take_id)
        delays += got
        missing += miss
        p99s.append(pct(got)["p99"] if got else float("nan"))
        await asyncio.sleep(0.5)
    return {"delivery_ms": pct(delays), "take_p99_ms": p99s, "missing": missing}


async def tutti_phase(
    http: aiohttp.ClientSession,
    url: str,
    sup: Child,
    ports: list[int],
    redis_url: str,
    args: argparse.Namespace,
    logdir: Path,
) -> dict[str, Any]:
    leader = await Leader.create(http, url)
    view = LeaderView()
    auth = {"token": leader.token, "protocol": PROTOCOL_VERSION}
    await view.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=30)
    swarm = Swarm(url, "tutti", leader.code, args.singers, args.procs, args.join_concurrency,
                  logdir, "socketio", SINGER_OPTIONS)  # fmt: skip
    roster: list[float] = []
    out: dict[str, Any] = {}
    try:
        await swarm.start()
        out["join"] = await swarm.join()
        log("tutti: %d joined (%d failed)", args.singers - out["join"]["failed"],
            out["join"]["failed"])  # fmt: skip
        await asyncio.sleep(args.settle)
        out["by_node"] = await sockets_by_node(redis_url)
        out["traffic_joined"] = await swarm.stats()  # the joins' share of what is lost
        view.reset()

        async def arm_start() -> str:
            take_id = await leader.arm()
            await asyncio.sleep(args.arm_gap)
            await leader.start(take_id)
            return take_id

        async def stop_and_roster(take_id: str) -> None:
            await leader.stop(take_id)
            t = time.monotonic()
            await leader.call("GET", "/api/session/roster")
            roster.append(time.monotonic() - t)

        out["takes"] = await takes_round(swarm, args.takes, arm_start, stop_and_roster)
        out["leader_view_kB_s"] = view.rate_kB_s()
        out["roster_ms"] = pct(roster)
        out["traffic"] = await swarm.stats()
        log("tutti: takes done; killing worker 0")
        out["kill"] = await kill_phase(leader, swarm, sup, ports[0], redis_url)
        out["traffic_after_kill"] = await swarm.stats()
    finally:
        await swarm.close()
        await view.sio.disconnect()
    return out


async def kill_phase(
    leader: Leader, swarm: Swarm, sup: Child, port: int, redis_url: str
) -> dict[str, Any]:
    before = await swarm.stats()
    victim = worker_on(sup, port)
    held = held_by(await sockets_by_node(redis_url), victim)
    take_id = await leader.arm()
    t = time.monotonic()
    victim.kill()  # SIGKILL: no clean shutdown
    # gone before the start: a request in flight to a dying process fails (the leader's
    # page would retry it); once it is gone the proxy passes requests to another process
    await asyncio.to_thread(victim.wait, 10)
    await leader.start(take_id)
    delays, _, missing = await swarm.collect(take_id, timeout=90.0)
    had_take_s = time.monotonic() - t
    after = await swarm.stats()
    await leader.stop(take_id)
    # then every singer must be back, and the next take must reach each of them
    deadline = time.monotonic() + 60
    while after["connected"] < swarm.count and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        after = await swarm.stats()
    take2 = await leader.arm()
    await leader.start(take2)
    delays2, _, missing2 = await swarm.collect(take2)
    await leader.stop(take2)
    return {
        "held_by_killed_worker": held,
        "dropped": after["disconnects"] - before["disconnects"],
        "reconnected": after["reconnects"] - before["reconnects"],
        "disconnects_before": before["disconnects"],
        "away_s": pct(after["away_s"], 1.0),
        "connected_after": after["connected"],
        "running_take_missing": missing,
        "running_take_all_had_it_s": had_take_s,
        "next_take_delivery_ms": pct(delays2),
        "next_take_missing": missing2,
        "kill_take_delivery_ms": pct(delays),
    }


async def peer_phase(
    http: aiohttp.ClientSession, url: str, args: argparse.Namespace, logdir: Path
) -> dict[str, Any]:
    swarm = Swarm(url, "peer", "", args.singers, args.procs, args.join_concurrency, logdir,
                  "socketio", SINGER_OPTIONS)  # fmt: skip
    out: dict[str, Any] = {}
    try:
        await swarm.start()
        out["join"] = await swarm.join()
        await asyncio.sleep(args.settle)
        out["traffic_joined"] = await swarm.stats()

        async def start() -> str:
            async with http.post(f"{url}/start") as r:
                return str((await r.json())["take_id"])

        out["takes"] = await takes_round(swarm, args.takes, start)
        out["traffic"] = await swarm.stats()
    finally:
        await swarm.close()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res: dict[str, Any] = {"machine": machine(), "argv": sys.argv[1:], "started_utc": started}
    connections = 2 * args.singers + 1024  # two per proxied socket, and the HTTP calls
    with tempfile.TemporaryDirectory(prefix="tutti-cluster-") as tmp, redis_server() as redis:
        tmpdir = Path(tmp)
        logdir = tmpdir / "logs"
        logdir.mkdir()
        async with (
            tutti_cluster(args.workers, redis, tmpdir / "data", logdir) as (sup, ports),
            peer_cluster(args.workers, redis, args.singers, logdir) as peer_ports,
        ):
            front, peer_front = unused_port(), unused_port()
            conf = sticky_conf(tmpdir / "nginx", {front: ports, peer_front: peer_ports},
                               connections)  # fmt: skip
            with running_nginx(tmpdir / "nginx", conf):
                url, peer_url = f"http://127.0.0.1:{front}", f"http://127.0.0.1:{peer_front}"
                await _until(lambda: not _free(front), "nginx listening", 30)
                timeout = aiohttp.ClientTimeout(total=600, sock_read=300)
                async with aiohttp.ClientSession(timeout=timeout) as http:
                    log("tutti: %d singers on %d processes", args.singers, args.workers)
                    res["tutti"] = await tutti_phase(http, url, sup, ports, redis, args, logdir)
                    log("peer: %d singers on %d processes", args.singers, args.workers)
                    res["peer"] = await peer_phase(http, peer_url, args, logdir)
    return res


def report(res: dict[str, Any]) -> str:
    t, p = res["tutti"], res["peer"]
    lines = [
        "| server | joined | join wall s | take.start p50 / p99 ms | missed | probes sent / lost"
        " | disconnects |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, side in (("tutti", t), ("peer", p)):
        tr, d = side["traffic"], side["takes"]["delivery_ms"]
        lines.append(
            f"| {name} | {len(side['join']['times'])} | {side['join']['wall']:.1f} | "
            f"{d['p50']:.1f} / {d['p99']:.1f} | {side['takes']['missing']} | "
            f"{tr['probes']:,} / {tr['probes_lost']:,} | {tr['disconnects']} |"
        )
    for name, side in (("tutti", t), ("peer", p)):
        tr = side["traffic"]
        lines.append(
            f"\n{name}: {tr['probes_lost_dropped']:,} of the {tr['probes_lost']:,} lost probes "
            "were lost by singers whose socket dropped (in flight when it did)"
        )
    for name, side in (("tutti", t), ("peer", p)):
        j = side.get("traffic_joined")
        if j:
            lines.append(
                f"\n{name}: of those probes, {j['probes']:,} sent and "
                f"{j['probes_lost']:,} lost by the end of the joins and the settling"
            )
    k = t["kill"]
    lines += [
        "",
        f"tutti: sockets per process {t['by_node']}; roster p50 {t['roster_ms']['p50']:.0f} ms,"
        f" max {t['roster_ms']['max']:.0f} ms; leader view {t['leader_view_kB_s']:.1f} kB/s",
        f"kill -9 of worker 0 (held {k['held_by_killed_worker']} sockets): {k['dropped']} "
        f"dropped, {k['reconnected']} reconnected (away p50 {k['away_s']['p50']:.1f} s, max "
        f"{k['away_s']['max']:.1f} s); the take started at the kill missed by "
        f"{k['running_take_missing']} (all had it after {k['running_take_all_had_it_s']:.1f} s);"
        f" the next take: missed by {k['next_take_missing']}, p99 "
        f"{k['next_take_delivery_ms']['p99']:.0f} ms; connected after: {k['connected_after']}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--singers", type=int, default=2000, help="singers (default 2000)")
    p.add_argument("--workers", type=int, default=4, help="server processes (default 4)")
    p.add_argument("--takes", type=int, default=5, help="take starts per side (default 5)")
    p.add_argument("--procs", type=int, default=2, help="singer client processes (default 2)")
    p.add_argument("--join-concurrency", type=int, default=25, help="joins in flight per process")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after the joins")
    p.add_argument("--arm-gap", type=float, default=0.5, help="seconds from arm to start")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = p.parse_args(argv)
    if not 1 <= args.singers <= 5000 or not 2 <= args.workers <= 16 or args.takes < 1:
        p.error("--singers 1–5000, --workers 2–16, --takes ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = asyncio.run(run(args))
    keep_results(res, args.out, "cluster", report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
