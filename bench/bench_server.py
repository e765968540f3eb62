"""Benchmark the tutti server: joins, take-start fan-out, clock probes, concurrent tus uploads.

One command (from the repository root)::

    .venv/bin/python bench/bench_server.py [--singers 100,500,1000] [--takes 10]
        [--clients socketio,raw] [--uploads 50 --upload-mb 50] [--clock-estimates 200]
        [--quick] [--out FILE]
    .venv/bin/python bench/bench_server.py --merge RUN1.json RUN2.json RUN3.json

``tutti serve --port 0 --data TMP`` runs in its own process; the simulated singers (real
python-socketio clients, or raw Engine.IO websocket clients: ``bench/_singers.py``) run in
``--procs`` other processes; the
orchestrator (this process) plays the leader over HTTP and Socket.IO.  Phases:

1. **clock** — ``tutti.client.clock.ClockSync`` against the server as the client uses it at
   join (a fresh estimator, ``burst(64)``), ``--clock-clients`` clients at once; the true
   offset is 0 (one machine, one ``CLOCK_MONOTONIC``), so |estimate| is the error.
2. **broadcast**, for each N of ``--singers``: a new session; N singers join (HTTP join +
   Socket.IO connect until ``welcome``); ``--takes`` takes are armed, started and stopped;
   each singer's receipt time of ``take.start`` minus its ``sent_at``.  Then the same with N
   clients of the peer, a bare python-socketio server (``bench/_peer_sio.py``), alone on the
   machine as tutti's singers were.
3. **uploads** — on a ``tutti serve`` of its own, ``--uploads`` singers join; per round a
   take is armed, started and stopped, then each singer uploads its ``--upload-mb`` MB WAV
   (or, with ``--upload-format flac``, 24-bit FLAC) file at once with tutti's own uploader
   and its defaults (:class:`tutti.client.uploader.TusUploader`); every stored file is
   downloaded back through the leader's take file route and its sha256 compared, and the
   server's mix of the take is waited for.  Then the same files as
   plain streamed PUTs to ``bench/_peer_put.py`` (written + fsynced), verified on disk.
   ``--upload-rounds`` such pairs, interleaved; then one more tus storm in which the server
   is ``kill -9``-ed once ``--kill-at`` of the bytes are acknowledged and restarted.

Every phase is bounded by timeouts.  Results: a table on stdout and JSON in
``bench/out/server-<UTC time>.json``.  MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import socketio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench._procs import Child, Swarm, start_child  # noqa: E402
from bench._singers import raise_fd_limit  # noqa: E402
from bench._uploads import FlacSource, UploadSource, WavSource, file_sha256, put_file  # noqa: E402
from tutti.client.clock import ClockEstimator, ClockSync  # noqa: E402
from tutti.client.uploader import TusUploader, UploadJob, UploadProgress  # noqa: E402
from tutti.wire import PROTOCOL_VERSION  # noqa: E402

OUT = ROOT / "bench" / "out"
SETTINGS = {
    "title": "Benchmark choir",
    "rate": 48000,
    "bpm": 100,
    "parts": ["S", "A", "T", "B"],
    "count_in_bars": 1,
}


# --------------------------------------------------------------------- helpers


def pct(values: list[float], scale: float = 1e3) -> dict[str, float]:
    """p50/p99/max of ``values`` times ``scale`` (default s → ms); NaN when empty."""
    if not values:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    a = np.asarray(values, dtype=np.float64) * scale
    return {
        "n": int(a.size),
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""

    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in run("lscpu").splitlines()
            if ln.startswith("Model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "free_h": run("free", "-h").strip(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        **{pkg: metadata.version(pkg) for pkg in ("python-socketio", "python-engineio", "aiohttp")},
    }


class Leader:
    """The leader of one session: HTTP calls with its token."""

    def __init__(self, http: aiohttp.ClientSession, url: str, created: dict[str, Any]) -> None:
        self.http, self.url = http, url
        self.code: str = created["code"]
        self.token: str = created["leader_token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    @classmethod
    async def create(cls, http: aiohttp.ClientSession, url: str) -> Leader:
        async with http.post(f"{url}/api/sessions", json=SETTINGS) as r:
            if r.status != 201:
                raise RuntimeError(f"create session: HTTP {r.status} {await r.text()}")
            return cls(http, url, await r.json())

    async def call(self, method: str, path: str, want: int = 200, **kw: Any) -> Any:
        async with self.http.request(method, f"{self.url}{path}", headers=self.headers, **kw) as r:
            if r.status != want:
                raise RuntimeError(f"{method} {path}: HTTP {r.status} {await r.text()}")
            return await r.json()

    async def arm(self) -> str:
        return str((await self.call("POST", "/api/session/takes", 201))["take_id"])

    async def start(self, take_id: str) -> None:
        await self.call("POST", f"/api/session/takes/{take_id}/start", json={"lead_s": 1.0})

    async def stop(self, take_id: str) -> None:
        await self.call("POST", f"/api/session/takes/{take_id}/stop")

    async def mix_settled(self, take_id: str, timeout_s: float = 900.0) -> tuple[str, float]:
        """Coroutine: wait until the server's mix of the take is ready or failed; its state
        and the seconds waited (the next storm must not run beside this one's mixing)."""
        t = time.monotonic()
        async with asyncio.timeout(timeout_s):
            while True:
                mix = await self.call("GET", f"/api/session/takes/{take_id}/mix")
                if mix["state"] in ("ready", "failed"):
                    return str(mix["state"]), time.monotonic() - t
                await asyncio.sleep(0.5)


# ----------------------------------------------------------------------- clock


async def bench_clock(url: str, token: str | None, estimates: int, clients: int) -> dict[str, Any]:
    """Phase 1: ``estimates`` fresh join-time clock estimates from ``clients`` sockets
    (``token`` None: the peer, which takes no auth)."""
    per = [estimates // clients + (1 if k < estimates % clients else 0) for k in range(clients)]
    rows: list[dict[str, float]] = []

    async def one_client(n: int) -> None:
        sio = socketio.AsyncClient(reconnection=False)
        auth = {"token": token, "protocol": PROTOCOL_VERSION} if token else None
        await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=30)

        async def ack(event: str, data: dict[str, Any], timeout: float) -> Any:
            try:
                return await sio.call(event, data, timeout=timeout)
            except socketio.exceptions.TimeoutError as exc:
                raise TimeoutError(str(exc)) from exc

        try:
            for _ in range(n):
                sync = ClockSync(ack, estimator=ClockEstimator())
                est = await sync.burst(64)  # what the client does at join
                med = sync.estimator.estimate("median")
                rows.append(
                    {
                        "envelope": est.offset,
                        "median": med.offset,
                        "error_bound": est.error_bound,
                        "rtt_min": est.rtt_min,
                        "lost": float(sync.lost),
                    }
                )
        finally:
            await sio.disconnect()

    t = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one_client(n) for n in per if n)), 600)
    return {
        "estimates": len(rows),
        "clients": clients,
        "probes_per_estimate": 64,
        "wall_s": time.monotonic() - t,
        "envelope_abs_us": pct([abs(r["envelope"]) for r in rows], 1e6),
        "median_abs_us": pct([abs(r["median"]) for r in rows], 1e6),
        "envelope_signed_us": pct([r["envelope"] for r in rows], 1e6),
        "rtt_min_us": pct([r["rtt_min"] for r in rows], 1e6),
        "error_bound_us": pct([r["error_bound"] for r in rows], 1e6),
        "lost_probes": int(sum(r["lost"] for r in rows)),
    }


# ------------------------------------------------------------------- broadcast


async def until_synced(swarm: Swarm, timeout: float = 300.0) -> float:
    """Coroutine: wait until every singer's join burst has ended in a clock report (at 1,000
    singers that is seconds after the last join; those bursts are the joins' cost, not the
    steady session's); seconds waited."""
    t = time.monotonic()
    while (await swarm.stats())["synced"] < swarm.count:
        if time.monotonic() - t > timeout:
            raise RuntimeError(f"not every singer had a clock estimate after {timeout} s")
        await asyncio.sleep(0.5)
    return time.monotonic() - t


async def one_side(
    swarm: Swarm,
    args: argparse.Namespace,
    start_take: Callable[[], Awaitable[tuple[str, float | None]]],
    after_take: Callable[[str], Awaitable[None]] | None = None,
    after_takes: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Coroutine: the swarm joins, the join bursts settle, ``args.takes`` takes are started
    (``start_take`` → take id and the arm time, if armed) and their delivery collected; then
    ``after_takes`` (before the swarm leaves), the swarm's traffic counts, and it is closed."""
    await swarm.start()
    try:
        joined = await swarm.join()
        joined["synced_s"] = await until_synced(swarm)
        await asyncio.sleep(args.settle)  # the steady traffic goes on
        traffic_joined = await swarm.stats()  # the joins' share of what is lost
        settled = time.monotonic()
        takes: list[list[float]] = []
        armed: list[float] = []
        missing = 0
        for _ in range(args.takes):
            take_id, armed_from = await start_take()
            delays, armed_at, miss = await swarm.collect(take_id)
            takes.append(delays)
            missing += miss
            if armed_from is not None:
                armed += [a - armed_from for a in armed_at]
            if after_take is not None:
                await after_take(take_id)
            await asyncio.sleep(0.5)
        steady_s = time.monotonic() - settled
        if after_takes is not None:
            after_takes()
        traffic = await swarm.stats()
    finally:
        await swarm.close()
    out = summarize(swarm.count, joined, takes, missing)
    out.update(traffic=traffic, traffic_joined=traffic_joined, armed=armed, steady_s=steady_s)
    return out


async def broadcast(
    http: aiohttp.ClientSession,
    url: str,
    peer_url: str,
    n: int,
    client: str,
    args: argparse.Namespace,
    logdir: Path,
) -> dict[str, Any]:
    """Phase 2 for one N: N singers on tutti, then N on the peer.  One side at a time, as in
    ``bench_cluster.py``: both swarms at once would put 2 × N singers' traffic on the machine
    that the goal's N singers must share with their server."""
    leader = await Leader.create(http, url)
    lsio = socketio.AsyncClient(reconnection=False)
    watched: dict[str, int] = {}  # the leader's live view: bytes by event
    counted: dict[str, int] = {}  # and messages

    async def watch(event: str, data: Any = None) -> None:
        watched[event] = watched.get(event, 0) + len(json.dumps([event, data]))
        counted[event] = counted.get(event, 0) + 1

    lsio.on("*", watch)
    await lsio.connect(
        url,
        auth={"token": leader.token, "protocol": PROTOCOL_VERSION},
        transports=["websocket"],
        wait_timeout=30,
    )
    arm_http: list[float] = []
    roster_s: list[float] = []
    joining: dict[str, Any] = {}  # the view from the leader's connect to the first take
    connected_at = time.monotonic()

    async def tutti_take() -> tuple[str, float | None]:
        if not arm_http:  # the view is measured over the takes, after the joins
            joining.update(
                kB=sum(watched.values()) / 1e3,
                s=time.monotonic() - connected_at,
                events=dict(sorted(counted.items())),
            )
            watched.clear()
            counted.clear()
        t = time.monotonic()
        take_id = await leader.arm()
        arm_http.append(time.monotonic() - t)
        await asyncio.sleep(args.arm_gap)  # `tutti lead take start` arms and starts at once
        await leader.start(take_id)
        return take_id, t

    async def tutti_after(take_id: str) -> None:
        await leader.stop(take_id)
        t = time.monotonic()
        await leader.call("GET", "/api/session/roster")
        roster_s.append(time.monotonic() - t)

    async def peer_take() -> tuple[str, float | None]:
        async with http.post(f"{peer_url}/start") as r:
            return (await r.json())["take_id"], None

    def swarm(side: str, side_url: str, code: str) -> Swarm:
        return Swarm(side_url, side, code, n, args.procs, args.join_concurrency, logdir, client)

    over_takes: dict[str, dict[str, int]] = {}

    def takes_done() -> None:  # the view over the takes ends here, not as the singers leave
        over_takes.update(kB=dict(watched), events=dict(counted))
        watched.clear()
        counted.clear()

    try:
        tutti = await one_side(
            swarm("tutti", url, leader.code), args, tutti_take, tutti_after, takes_done
        )
    finally:
        await lsio.disconnect()
    peer = await one_side(swarm("peer", peer_url, ""), args, peer_take)
    seen = over_takes["kB"]
    tutti["roster_ms"] = pct(roster_s)
    tutti["leader_view_kB_s"] = sum(seen.values()) / 1e3 / max(tutti["steady_s"], 1e-9)
    tutti["leader_view_kB"] = {e: b / 1e3 for e, b in sorted(seen.items())}
    tutti["leader_view_events"] = dict(sorted(over_takes["events"].items()))
    tutti["leader_view_joining"] = joining
    tutti["leader_view_leaving"] = {  # the singers disconnecting, after the takes
        "kB": sum(watched.values()) / 1e3,
        "events": dict(sorted(counted.items())),
    }
    tutti["arm_http_ms"] = pct(arm_http)
    tutti["armed_after_post_ms"] = pct(tutti.pop("armed"))
    peer.pop("armed")
    return {"tutti": tutti, "peer": peer, "client": client}


def summarize(
    n: int, joined: dict[str, Any], per_take: list[list[float]], missing: int
) -> dict[str, Any]:
    pooled = [x for t in per_take for x in t]
    take_p50 = [pct(t)["p50"] for t in per_take if t]
    take_p99 = [pct(t)["p99"] for t in per_take if t]
    return {
        "n": n,
        "join_ms": pct(joined["times"]),
        "join_wall_s": joined["wall"],
        "synced_after_s": joined.get("synced_s"),
        "join_failed": joined["failed"],
        "join_error": joined["error"],
        "takes": len(per_take),
        "delivery_ms": pct(pooled),
        "median_take_p50_ms": float(np.median(take_p50)) if take_p50 else float("nan"),
        "median_take_p99_ms": float(np.median(take_p99)) if take_p99 else float("nan"),
        "missing": missing,
    }


# --------------------------------------------------------------------- uploads


class UploadServer:
    """``tutti serve`` for the upload phase, on its own data folder, restartable on its port."""

    def __init__(self, data: Path, logdir: Path) -> None:
        self.data, self.log = data, logdir / "serve_uploads.log"
        self.port = 0
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        cmd = ["tutti", "serve", "--port", str(self.port), "--data", str(self.data), "--open",
               "--max-session-gb", "1000", "--max-server-gb", "1000"]  # fmt: skip
        self.child = await start_child(cmd, self.log)
        self.port = int(self.child.url.rsplit(":", 1)[1])

    async def kill9_and_restart(self) -> float:
        """Coroutine: ``kill -9`` the server, start it again; seconds it was away."""
        assert self.child is not None
        t = time.monotonic()
        self.child.proc.kill()  # SIGKILL: no clean shutdown
        await self.child.proc.wait()
        await self.start()
        return time.monotonic() - t

    async def stop(self) -> None:
        if self.child is not None:
            await self.child.stop()


async def tus_round(
    server: UploadServer,
    leader: Leader,
    singers: list[tuple[str, str]],
    files: list[tuple[UploadSource, Path]],
    kill_at: float | None = None,
) -> dict[str, Any]:
    """One storm: every singer uploads its file at once with tutti's uploader and its
    defaults; with ``kill_at``, ``kill -9`` the server once that share of all bytes is
    acknowledged and restart it.  Every stored file is then downloaded back and hashed, and
    the server's mix of the take is waited for, so no storm runs beside the last one's mix."""
    take_id = await leader.arm()
    await leader.start(take_id)
    await leader.stop(take_id)
    await asyncio.to_thread(os.sync)  # no storm flushes the last one's writes
    total = sum(src.size for src, _ in files)
    acked = [0] * len(files)
    retries = [0] * len(files)

    def progress(i: int) -> Callable[[UploadProgress], None]:
        def on(p: UploadProgress) -> None:
            acked[i], retries[i] = p.offset, p.retries

        return on

    conn = aiohttp.TCPConnector(limit=len(files) + 8)
    killed: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=conn) as http:
        ups = [
            TusUploader(http, server.url, token, on_progress=progress(i))
            for i, (token, _) in enumerate(singers)
        ]

        async def one(up: TusUploader, src: UploadSource, path: Path) -> float:
            job = UploadJob(path, take_id, src.sha256, src.recording())
            t = time.monotonic()
            await up.upload(job)
            await asyncio.to_thread(up.forget, job)  # as tutti join does once it is confirmed
            return time.monotonic() - t

        async def killer(share: float) -> None:
            while sum(acked) < share * total:
                await asyncio.sleep(0.01)
            killed["at_mb"] = sum(acked) / 1e6
            killed["away_s"] = await server.kill9_and_restart()

        t = time.monotonic()
        kill_task = asyncio.ensure_future(killer(kill_at)) if kill_at is not None else None
        try:
            times = await asyncio.wait_for(
                asyncio.gather(*(one(u, s, p) for u, (s, p) in zip(ups, files, strict=True))),
                900,
            )
        finally:
            if kill_task is not None and not kill_task.done():
                kill_task.cancel()
        wall = time.monotonic() - t
        log("uploads: all stored in %.1f s; checking them, then waiting for the mix", wall)
        if kill_task is not None:
            await kill_task  # the kill happened (else the storm ended first: an error)
    stored, corrupt = await verify_take(server, leader, take_id, singers, files)
    mix_state, mix_wait_s = await leader.mix_settled(take_id)
    for folder in server.data.glob(f"takes/*/{take_id}"):  # disk space for the next round
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
    chunks = [n for u in ups for n in u.chunks]
    return {
        "wall_s": wall,
        "mb_s": total / 1e6 / wall,
        "per_upload_s": pct(times, 1.0),
        "requests": sum(u.requests for u in ups),
        "patches": len(chunks),
        "chunk_mib": pct([n / (1 << 20) for n in chunks], 1.0),
        "resent_mb": (sum(chunks) - total) / 1e6,
        "retries": sum(retries),
        "stored": stored,
        "missing": len(files) - stored,
        "corrupt": corrupt,
        "mix": mix_state,
        "mix_wait_s": mix_wait_s,
        **({"killed_at_mb": killed["at_mb"], "away_s": killed["away_s"]} if killed else {}),
    }


async def verify_take(
    server: UploadServer,
    leader: Leader,
    take_id: str,
    singers: list[tuple[str, str]],
    files: list[tuple[UploadSource, Path]],
) -> tuple[int, int]:
    """(stored, corrupt): the manifest's sha256 and the bytes served back, per singer."""
    manifest = await leader.call("GET", f"/api/session/takes/{take_id}/manifest")
    expected = {pid: src.sha256 for (_, pid), (src, _) in zip(singers, files, strict=True)}
    corrupt = 0
    recs = manifest.get("recordings", [])
    for rec in recs:
        h = hashlib.sha256()
        async with leader.http.get(
            f"{server.url}/api/session/takes/{take_id}/files/{rec['file']}",
            headers=leader.headers,
        ) as r:
            if r.status != 200:
                corrupt += 1
                continue
            async for block in r.content.iter_chunked(1 << 20):
                h.update(block)
        want = expected.get(rec.get("participant_id", ""))
        if want is None or rec.get("sha256") != want or h.hexdigest() != want:
            corrupt += 1
    return len(recs), corrupt


async def put_round(
    peer_url: str, files: list[tuple[UploadSource, Path]], folder: Path
) -> dict[str, Any]:
    """The same files as streamed PUTs to the peer at once, each hashed on its disk after."""
    folder.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(os.sync)  # no storm flushes the last one's writes
    conn = aiohttp.TCPConnector(limit=len(files) + 8)
    timeout = aiohttp.ClientTimeout(total=900, sock_read=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as http:
        t = time.monotonic()
        times = await asyncio.wait_for(
            asyncio.gather(*(put_file(http, f"{peer_url}/up/{p.name}", p) for _, p in files)),
            900,
        )
        wall = time.monotonic() - t
    log("uploads: all stored by the peer in %.1f s; checking them", wall)
    sums = await asyncio.to_thread(lambda: [file_sha256(folder / p.name) for _, p in files])
    shutil.rmtree(folder, ignore_errors=True)
    total = sum(src.size for src, _ in files)
    return {
        "wall_s": wall,
        "mb_s": total / 1e6 / wall,
        "per_upload_s": pct(times, 1.0),
        "corrupt": sum(got != src.sha256 for got, (src, _) in zip(sums, files, strict=True)),
    }


async def bench_uploads(
    count: int,
    size: int,
    rounds: int,
    kill_at: float | None,
    tmpdir: Path,
    logdir: Path,
    fmt: str = "wav",
) -> dict[str, Any]:
    """Phase 3: ``rounds`` × (a tus storm of ``count`` uploads of ``size`` bytes with
    tutti's uploader, then the same files as PUTs to the peer), interleaved; then, with
    ``kill_at``, one more tus storm with a ``kill -9`` of the server in the middle."""
    sources = tmpdir / "upload-sources"
    sources.mkdir()
    kind = FlacSource if fmt == "flac" else WavSource
    files = [(kind(i, size), sources / f"take{i:03d}.{fmt}") for i in range(count)]
    await asyncio.to_thread(lambda: [(src.write(path), src.sha256) for src, path in files])
    server = UploadServer(tmpdir / "upload-data", logdir)
    await server.start()
    peer_dir = tmpdir / "peer-uploads"
    peer = await start_child(["bench._peer_put", str(peer_dir)], logdir / "peer_put.log")
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=600, sock_read=300)
        ) as http:
            leader = await Leader.create(http, server.url)
            singers: list[tuple[str, str]] = []
            for i in range(count):
                async with http.post(
                    f"{server.url}/api/join",
                    json={"code": leader.code, "name": f"Uploader {i:03d}", "part": "SATB"[i % 4]},
                ) as r:
                    if r.status != 200:
                        raise RuntimeError(f"join: HTTP {r.status} {await r.text()}")
                    joined = await r.json()
                singers.append((joined["token"], joined["participant_id"]))
            tus: list[dict[str, Any]] = []
            put: list[dict[str, Any]] = []
            for r in range(rounds):
                log("uploads: round %d/%d, tutti tus", r + 1, rounds)
                tus.append(await tus_round(server, leader, singers, files))
                log("uploads: round %d/%d, peer PUT", r + 1, rounds)
                put.append(await put_round(peer.url, files, peer_dir))
            res: dict[str, Any] = {
                "uploads": count,
                "size_mb": size / 1e6,
                "rounds": rounds,
                "tus": merge(tus),
                "put": merge(put),
                "tus_rounds": tus,
                "put_rounds": put,
            }
            if kill_at is not None:
                log("uploads: tutti tus with kill -9 at %.0f %% of the bytes", kill_at * 100)
                res["tus_kill9"] = await tus_round(server, leader, singers, files, kill_at)
    finally:
        await peer.stop()
        await server.stop()
        shutil.rmtree(sources, ignore_errors=True)
    return res


# ---------------------------------------------------------------------- report

#: Counts of failures: summed over runs (a median would hide one bad run).
_SUMMED = frozenset(
    {"corrupt", "missing", "failed", "join_failed", "lost_probes", "probes_lost", "disconnects"}
)


def merge(runs: list[Any], key: str = "") -> Any:
    """Combine several runs' results of the same shape: the median of every figure, the sum
    of every failure count, the first of anything else (strings, machine info)."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: merge([r[k] for r in runs if isinstance(r, dict) and k in r], k) for k in first}
    if isinstance(first, list) and first and isinstance(first[0], dict):
        if all(isinstance(r, list) and len(r) == len(first) for r in runs):
            return [merge([r[i] for r in runs]) for i in range(len(first))]
        return first
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        if all(r == first for r in runs) and key not in _SUMMED:
            return first  # a setting (N, takes, uploads) or a figure every run agrees on
        if key in _SUMMED:
            return sum(runs)
        return float(np.median(np.asarray(runs, dtype=np.float64)))
    return first


def traffic_report(broadcast: list[dict[str, Any]]) -> list[str]:
    """What the singers sent, and what the leader's view and roster cost."""
    out = [
        "",
        "What the singers sent (the real client's traffic: levels at the rate the server set, "
        "clock bursts and re-syncs), and what the leader's view and roster cost:",
        "",
        "| N | clients | server | levels | level rates (Hz: singers) | clock probes | lost "
        "(of them by the end of the joins and the settling) | sockets closed "
        "| roster p50 / max ms | leader view kB/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in broadcast:
        for side in ("tutti", "peer"):
            r, tr = b[side], b[side].get("traffic") or {}
            if not tr:
                continue
            rates = ", ".join(f"{hz}: {k}" for hz, k in sorted(tr["level_hz"].items()))
            view = "— | —"
            if side == "tutti":
                ms = r["roster_ms"]
                view = f"{ms['p50']:.1f} / {ms['max']:.1f} | {r['leader_view_kB_s']:.1f}"
            joined = (r.get("traffic_joined") or {}).get("probes_lost", "?")
            out.append(
                f"| {r['n']} | {b['client']} | {side} | {tr['levels']} | {rates} | "
                f"{tr['probes']} | {tr['probes_lost']} ({joined}) | {tr['disconnects']} | {view} |"
            )
    views = [b["tutti"] for b in broadcast if b["tutti"].get("leader_view_kB")]
    if views:
        out += ["", "The leader's view over the takes, by event: kB (messages)", ""]
    for r in views:
        by = r["leader_view_kB"]
        count = r.get("leader_view_events", {})
        shares = ", ".join(f"{e} {kb:.0f} ({count.get(e, '?')})" for e, kb in by.items())
        out.append(f"- N = {r['n']}, {r['steady_s']:.1f} s: {shares}")
        j = r.get("leader_view_joining")
        if j:
            out.append(
                f"  - before, from the leader's connect through the joins and the settling "
                f"({j['s']:.1f} s): {j['kB'] / j['s']:.1f} kB/s, messages {j['events']}"
            )
        gone = r.get("leader_view_leaving")
        if gone:
            out.append(f"  - after, as the singers leave: {gone['kB']:.0f} kB, {gone['events']}")
    return [*out, ""]


def report(res: dict[str, Any]) -> str:
    """Markdown tables of the results."""
    out: list[str] = []
    for key, title in (("clock", "tutti"), ("clock_peer", "peer (bare python-socketio)")):
        if key not in res:
            continue
        c = res[key]
        out += [
            f"### Clock-probe offset error, {title} (loopback, true offset 0)",
            "",
            f"{c['estimates']} estimates, each a fresh `ClockSync.burst(64)` "
            f"({c['clients']} clients at once); lost probes: {c['lost_probes']}",
            "",
            "| estimator | p50 µs | p99 µs | max µs |",
            "|---|---|---|---|",
        ]
        for k, name in (("envelope_abs_us", "envelope (default)"), ("median_abs_us", "median")):
            out.append(f"| {name} | {c[k]['p50']:.1f} | {c[k]['p99']:.1f} | {c[k]['max']:.1f} |")
        sg = c["envelope_signed_us"]
        out.append(f"| (envelope, signed) | {sg['p50']:.1f} | {sg['p99']:.1f} | {sg['max']:.1f} |")
        out.append(
            f"| (rtt_min) | {c['rtt_min_us']['p50']:.1f} | {c['rtt_min_us']['p99']:.1f}"
            f" | {c['rtt_min_us']['max']:.1f} |"
        )
        out.append("")
    if res.get("broadcast"):
        out += [
            "### Joins and take.start delivery",
            "",
            "| N | clients | server | join p50 ms | join p99 ms | join wall s | failed | "
            "takes | delivery p50 ms | p99 ms | max ms | median take p99 ms | missed |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for b in res["broadcast"]:
            for side in ("tutti", "peer"):
                r = b[side]
                j, d = r["join_ms"], r["delivery_ms"]
                out.append(
                    f"| {r['n']} | {b['client']} | {side} | {j['p50']:.1f} | "
                    f"{j['p99']:.1f} | "
                    f"{r['join_wall_s']:.1f} | {r['join_failed']} | {r['takes']} | "
                    f"{d['p50']:.1f} | {d['p99']:.1f} | {d['max']:.1f} | "
                    f"{r['median_take_p99_ms']:.1f} | {r['missing']} |"
                )
        out += [
            "",
            "| N | clients | tutti/peer p50 | tutti/peer p99 | arm HTTP p50 ms | "
            "take.armed received p50 / p99 ms after the arm POST |",
            "|---|---|---|---|---|---|",
        ]
        for b in res["broadcast"]:
            t, p = b["tutti"]["delivery_ms"], b["peer"]["delivery_ms"]
            a = b["tutti"]["armed_after_post_ms"]
            out.append(
                f"| {b['tutti']['n']} | {b['client']} | {t['p50'] / p['p50']:.2f} | "
                f"{t['p99'] / p['p99']:.2f} | {b['tutti']['arm_http_ms']['p50']:.1f} | "
                f"{a['p50']:.1f} / {a['p99']:.1f} |"
            )
        out += traffic_report(res["broadcast"])
    if "uploads" in res:
        out += upload_report(res["uploads"])
    return "\n".join(out)


def upload_report(u: dict[str, Any]) -> list[str]:
    """Markdown lines for the upload phase."""
    t, p = u["tus"], u["put"]
    out = [
        f"### {u['uploads']} concurrent uploads of {u['size_mb']:g} MB, medians of "
        f"{u['rounds']} interleaved rounds",
        "",
        "| server | MB/s (aggregate) | wall s | per-upload p50 s | p99 s | requests | "
        "PATCH MiB p50 / max | corrupt |",
        "|---|---|---|---|---|---|---|---|",
        f"| tutti tus (tutti's uploader, defaults) | {t['mb_s']:.1f} | {t['wall_s']:.1f} | "
        f"{t['per_upload_s']['p50']:.1f} | {t['per_upload_s']['p99']:.1f} | "
        f"{t['requests']:.0f} | {t['chunk_mib']['p50']:.1f} / {t['chunk_mib']['max']:.1f} | "
        f"{t['corrupt']} |",
        f"| peer PUT + fsync | {p['mb_s']:.1f} | {p['wall_s']:.1f} | "
        f"{p['per_upload_s']['p50']:.1f} | {p['per_upload_s']['p99']:.1f} | {u['uploads']} | "
        f"– | {p['corrupt']} |",
        "",
        f"tutti/peer throughput ratio: {t['mb_s'] / p['mb_s']:.2f} (per round: "
        + ", ".join(
            f"{a['mb_s'] / b['mb_s']:.2f}"
            for a, b in zip(u["tus_rounds"], u["put_rounds"], strict=True)
        )
        + f"); stored {t['stored']:.0f}/{u['uploads']} recordings per round",
        "",
    ]
    if "tus_kill9" in u:
        k = u["tus_kill9"]
        out += [
            f"kill -9 of `tutti serve` at {k['killed_at_mb']:.0f} MB acknowledged (away "
            f"{k['away_s']:.1f} s): {k['stored']}/{u['uploads']} uploads finished, "
            f"{k['corrupt']} corrupt (sha256 of the served files), {k['retries']} retries, "
            f"{k['resent_mb']:.0f} MB sent twice, {k['mb_s']:.1f} MB/s over the storm "
            f"({k['wall_s']:.1f} s)",
            "",
        ]
    return out


# ------------------------------------------------------------------------ main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    res: dict[str, Any] = {
        "machine": machine(),
        "argv": sys.argv[1:],
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with tempfile.TemporaryDirectory(prefix="tutti-bench-") as tmp:
        tmpdir = Path(tmp)
        logdir = tmpdir / "logs"
        logdir.mkdir()
        server = await start_child(
            # open, and as many singers per session as the benchmark brings
            [
                "tutti",
                "serve",
                "--port",
                "0",
                "--data",
                str(tmpdir / "data"),
                "--open",
                "--max-joins",
                "100000",
            ],  # fmt: skip
            logdir / "serve.log",
        )
        peer = await start_child(["bench._peer_sio"], logdir / "peer_sio.log")
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=600, sock_read=300)
            ) as http:
                if args.clock_estimates > 0:
                    log("clock: %d estimates", args.clock_estimates)
                    leader = await Leader.create(http, server.url)
                    async with http.post(
                        f"{server.url}/api/join",
                        json={"code": leader.code, "name": "Clock", "part": "S"},
                    ) as r:
                        token = (await r.json())["token"]
                    res["clock"] = await bench_clock(
                        server.url, token, args.clock_estimates, args.clock_clients
                    )
                    log("clock: the same on the peer")
                    res["clock_peer"] = await bench_clock(
                        peer.url, None, args.clock_estimates, args.clock_clients
                    )
                res["broadcast"] = []
                for n in args.singers:
                    for client in args.clients:
                        log("broadcast: N=%d %s clients on tutti and on the peer", n, client)
                        res["broadcast"].append(
                            await broadcast(http, server.url, peer.url, n, client, args, logdir)
                        )
                if args.uploads > 0:
                    log("uploads: %d × %g MB", args.uploads, args.upload_mb)
                    res["uploads"] = await bench_uploads(
                        args.uploads,
                        round(args.upload_mb * 1e6) // 2 * 2,
                        args.upload_rounds,
                        args.kill_at if args.kill_at > 0 else None,
                        tmpdir,
                        logdir,
                        args.upload_format,
                    )
        finally:
            await peer.stop()
            await server.stop()
            errors = server.log_tail(4000).strip()
            if errors:
                res["server_stderr_tail"] = errors
    return res


def log(fmt: str, *a: Any) -> None:
    print(time.strftime("%H:%M:%S ") + fmt % a, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--singers",
        default="100,500,1000",
        help="comma-separated singer counts N (default 100,500,1000)",
    )
    p.add_argument("--takes", type=int, default=10, help="take starts per N (default 10)")
    p.add_argument(
        "--arm-gap",
        type=float,
        default=0.5,
        help="seconds between arming and starting each take (default 0.5)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds between the last singer's first clock estimate and the first take "
        "(default 5)",
    )
    p.add_argument(
        "--clients",
        default="socketio,raw",
        help="singer clients, comma-separated: socketio (python-socketio "
        "AsyncClient), raw (Engine.IO frames on aiohttp) (default both)",
    )
    p.add_argument("--procs", type=int, default=2, help="singer client processes (default 2)")
    p.add_argument(
        "--join-concurrency",
        type=int,
        default=25,
        help="joins in flight per client process (default 25)",
    )
    p.add_argument(
        "--clock-estimates", type=int, default=200, help="clock estimates, 0 to skip (default 200)"
    )
    p.add_argument(
        "--clock-clients", type=int, default=4, help="clients probing at once (default 4)"
    )
    p.add_argument("--uploads", type=int, default=50, help="concurrent uploads, 0 to skip")
    p.add_argument("--upload-mb", type=float, default=50.0, help="MB per upload (default 50)")
    p.add_argument(
        "--upload-format",
        choices=("wav", "flac"),
        default="wav",
        help="wav: 16-bit WAV made on the fly (default); flac: 24-bit FLAC as tutti join "
        "uploads, encoded first (about 1.5 s per file)",
    )
    p.add_argument(
        "--upload-rounds",
        type=int,
        default=3,
        help="interleaved rounds of tutti tus and peer PUT uploads (default 3)",
    )
    p.add_argument(
        "--kill-at",
        type=float,
        default=0.4,
        help="one more tus storm with a kill -9 of the server once this share of the bytes "
        "is acknowledged, 0 to skip (default 0.4)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~1 min): N=50, 5 uploads × 5 MB, 20 clock estimates",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="run nothing: print the tables of these results files' medians "
        "(failure counts summed)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.singers, args.uploads, args.upload_mb = "50", 5, 5.0
        args.clock_estimates = 20
    try:
        args.singers = [int(x) for x in str(args.singers).split(",") if x.strip()]
    except ValueError:
        p.error(f"--singers: expected comma-separated integers, got {args.singers!r}")
    if any(n < 1 or n > 5000 for n in args.singers):
        p.error("--singers: each N must be 1–5000")
    for name in ("takes", "procs", "join_concurrency", "clock_clients", "upload_rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    args.clients = [c.strip() for c in str(args.clients).split(",") if c.strip()]
    if not args.clients or any(c not in ("socketio", "raw") for c in args.clients):
        p.error("--clients: a comma-separated list of socketio and raw")
    if not 0 <= args.arm_gap <= 30:
        p.error("--arm-gap must be 0–30 seconds")
    if args.uploads < 0 or args.clock_estimates < 0 or not 0.001 <= args.upload_mb <= 400:
        p.error("--uploads and --clock-estimates must be ≥ 0; --upload-mb 0.001–400")
    if not 0 <= args.kill_at < 1:
        p.error("--kill-at must be 0 (no kill) or a share of the bytes below 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        try:
            runs = [json.loads(f.read_text()) for f in args.merge]
        except (OSError, ValueError) as exc:
            print(f"--merge: cannot read the results: {exc}", file=sys.stderr)
            return 2
        print(f"medians of {len(runs)} runs (failure counts summed)\n")
        print(report(merge(runs)))
        return 0
    need = 3 * args.uploads * args.upload_mb * 1e6 + 1e9  # sources, server copies, peer copies
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if args.uploads and free < need:
        print(
            f"not enough space in {tempfile.gettempdir()}: {free / 1e9:.1f} GB free, "
            f"{need / 1e9:.1f} GB needed; use fewer --uploads or a smaller --upload-mb",
            file=sys.stderr,
        )
        return 2
    res = asyncio.run(run(args))
    keep_results(res, args.out, "server", report(res))
    return 0


def keep_results(res: dict[str, Any], out: Path | None, prefix: str, tables: str) -> None:
    """Print ``tables`` and keep the raw results in ``out`` (default
    ``bench/out/<prefix>-<UTC time>.json``)."""
    OUT.mkdir(parents=True, exist_ok=True)
    out = out or OUT / time.strftime(f"{prefix}-%Y%m%d-%H%M%S.json", time.gmtime())
    out.write_text(json.dumps(res, indent=1))
    print(tables)
    print(f"\n(results: {out})")


if __name__ == "__main__":
    sys.exit(main())
