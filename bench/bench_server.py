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
   each singer's receipt time of ``take.start`` minus its ``sent_at``.  N more clients are
   connected to the peer, a bare python-socketio server (``bench/_peer_sio.py``), and the
   takes alternate: tutti, peer, tutti, ...
3. **uploads** — ``--uploads`` singers join, a take is armed, started and stopped, then each
   uploads a valid ``--upload-mb`` MB WAV at once over tus (4 MiB PATCHes with
   ``Upload-Checksum``); every stored file is downloaded back through the leader's take
   file route and its sha256 compared.  Then the same bytes as plain streamed PUTs to
   ``bench/_peer_put.py`` (written + fsynced), verified on disk.

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
from bench._uploads import WavSource, put_upload, tus_upload  # noqa: E402
from tutti.client.clock import ClockEstimator, ClockSync  # noqa: E402
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


async def broadcast(
    http: aiohttp.ClientSession,
    url: str,
    peer_url: str,
    n: int,
    client: str,
    args: argparse.Namespace,
    logdir: Path,
) -> dict[str, Any]:
    """Phase 2 for one N: N singers on tutti and N on the peer, connected at once; takes
    alternate between the two (tutti, peer, tutti, ...) so both see the same machine load."""
    leader = await Leader.create(http, url)
    lsio = socketio.AsyncClient(reconnection=False)
    await lsio.connect(
        url,
        auth={"token": leader.token, "protocol": PROTOCOL_VERSION},
        transports=["websocket"],
        wait_timeout=30,
    )
    swarms = {
        side: Swarm(
            u,
            side,
            leader.code if side == "tutti" else "",
            n,
            args.procs,
            args.join_concurrency,
            logdir,
            client,
        )
        for side, u in (("tutti", url), ("peer", peer_url))
    }
    joined: dict[str, dict[str, Any]] = {}
    takes: dict[str, list[list[float]]] = {"tutti": [], "peer": []}
    missing = {"tutti": 0, "peer": 0}
    armed: list[float] = []
    arm_http: list[float] = []
    try:
        for side, swarm in swarms.items():
            await swarm.start()
            joined[side] = await swarm.join()
        for _ in range(args.takes):
            t = time.monotonic()
            take_id = await leader.arm()
            arm_http.append(time.monotonic() - t)
            await asyncio.sleep(args.arm_gap)  # `tutti lead take start` arms and starts at once
            await leader.start(take_id)
            delays, armed_at, miss = await swarms["tutti"].collect(take_id)
            takes["tutti"].append(delays)
            armed += [a - t for a in armed_at]
            missing["tutti"] += miss
            await leader.stop(take_id)
            await asyncio.sleep(0.5)
            async with http.post(f"{peer_url}/start") as r:
                peer_take = (await r.json())["take_id"]
            delays, _, miss = await swarms["peer"].collect(peer_take)
            takes["peer"].append(delays)
            missing["peer"] += miss
            await asyncio.sleep(0.5)
    finally:
        for swarm in swarms.values():
            await swarm.close()
        await lsio.disconnect()
    out: dict[str, Any] = {
        side: summarize(n, joined[side], takes[side], missing[side]) for side in swarms
    }
    out["client"] = client
    out["tutti"]["arm_http_ms"] = pct(arm_http)
    out["tutti"]["armed_after_post_ms"] = pct(armed)
    return out


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
        "join_failed": joined["failed"],
        "join_error": joined["error"],
        "takes": len(per_take),
        "delivery_ms": pct(pooled),
        "median_take_p50_ms": float(np.median(take_p50)) if take_p50 else float("nan"),
        "median_take_p99_ms": float(np.median(take_p99)) if take_p99 else float("nan"),
        "missing": missing,
    }


# --------------------------------------------------------------------- uploads


async def bench_uploads(
    http: aiohttp.ClientSession,
    url: str,
    count: int,
    size: int,
    chunk: int,
    logdir: Path,
    peer_dir: Path,
) -> dict[str, Any]:
    """Phase 3: ``count`` concurrent tus uploads of ``size`` bytes, then the PUT peer."""
    leader = await Leader.create(http, url)
    tokens: list[str] = []
    pids: list[str] = []
    for i in range(count):
        async with http.post(
            f"{url}/api/join",
            json={"code": leader.code, "name": f"Uploader {i:03d}", "part": "SATB"[i % 4]},
        ) as r:
            if r.status != 200:
                raise RuntimeError(f"join: HTTP {r.status} {await r.text()}")
            joined = await r.json()
            tokens.append(joined["token"])
            pids.append(joined["participant_id"])
    take_id = await leader.arm()
    await leader.start(take_id)
    await leader.stop(take_id)
    sources = [WavSource(i, size) for i in range(count)]
    t = time.monotonic()
    await asyncio.to_thread(lambda: [s.sha256 for s in sources])
    prep = time.monotonic() - t

    conn = aiohttp.TCPConnector(limit=count + 8)
    timeout = aiohttp.ClientTimeout(total=900, sock_read=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as up:
        t = time.monotonic()
        jobs = [
            tus_upload(up, url, tok, take_id, s, chunk)
            for tok, s in zip(tokens, sources, strict=True)
        ]
        tus_times = await asyncio.wait_for(asyncio.gather(*jobs), 900)
        tus_wall = time.monotonic() - t

    # verify: the manifest's sha256 and the bytes served back, per singer
    manifest = await leader.call("GET", f"/api/session/takes/{take_id}/manifest")
    expected = {pid: s.sha256 for pid, s in zip(pids, sources, strict=True)}
    corrupt = 0
    recs = manifest.get("recordings", [])
    for rec in recs:
        h = hashlib.sha256()
        async with http.get(
            f"{url}/api/session/takes/{take_id}/files/{rec['file']}", headers=leader.headers
        ) as r:
            if r.status != 200:
                corrupt += 1
                continue
            async for block in r.content.iter_chunked(1 << 20):
                h.update(block)
        # the singer's own bytes, as the server recorded them and as it serves them back
        want = expected.get(rec.get("participant_id", ""))
        if want is None or rec.get("sha256") != want or h.hexdigest() != want:
            corrupt += 1
    served = len(recs)

    peer_dir.mkdir(parents=True, exist_ok=True)
    peer: Child = await start_child(["bench._peer_put", str(peer_dir)], logdir / "peer_put.log")
    try:
        conn = aiohttp.TCPConnector(limit=count + 8)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as up:
            t = time.monotonic()
            put_times = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        put_upload(up, f"{peer.url}/up/take{s.index:03d}.wav", s, chunk)
                        for s in sources
                    )
                ),
                900,
            )
            put_wall = time.monotonic() - t
    finally:
        await peer.stop()

    def verify_peer() -> int:
        bad = 0
        for s in sources:
            h = hashlib.sha256()
            with open(peer_dir / f"take{s.index:03d}.wav", "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            bad += h.hexdigest() != s.sha256
        return bad

    peer_corrupt = await asyncio.to_thread(verify_peer)
    shutil.rmtree(peer_dir, ignore_errors=True)
    total_mb = count * size / 1e6
    return {
        "uploads": count,
        "size_mb": size / 1e6,
        "chunk_mib": chunk >> 20,
        "source_sha256_s": prep,
        "tus": {
            "wall_s": tus_wall,
            "mb_s": total_mb / tus_wall,
            "per_upload_s": pct(tus_times, 1.0),
            "stored": served,
            "missing": count - served,
            "corrupt": corrupt,
        },
        "put": {
            "wall_s": put_wall,
            "mb_s": total_mb / put_wall,
            "per_upload_s": pct(put_times, 1.0),
            "corrupt": peer_corrupt,
        },
    }


# ---------------------------------------------------------------------- report

#: Counts of failures: summed over runs (a median would hide one bad run).
_SUMMED = frozenset({"corrupt", "missing", "failed", "join_failed", "lost_probes"})


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
        out.append("")
    if "uploads" in res:
        u = res["uploads"]
        out += [
            f"### {u['uploads']} concurrent uploads of {u['size_mb']:g} MB "
            f"({u['chunk_mib']} MiB chunks)",
            "",
            "| server | MB/s (aggregate) | wall s | per-upload p50 s | p99 s | corrupt |",
            "|---|---|---|---|---|---|",
        ]
        for side, name in (("tus", "tutti tus"), ("put", "peer PUT")):
            r = u[side]
            out.append(
                f"| {name} | {r['mb_s']:.1f} | {r['wall_s']:.1f} | "
                f"{r['per_upload_s']['p50']:.1f} | {r['per_upload_s']['p99']:.1f} | "
                f"{r['corrupt']} |"
            )
        out += [
            "",
            f"tutti/peer throughput ratio: {u['tus']['mb_s'] / u['put']['mb_s']:.2f}; "
            f"stored {u['tus']['stored']}/{u['uploads']} recordings",
            "",
        ]
    return "\n".join(out)


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
            ["tutti", "serve", "--port", "0", "--data", str(tmpdir / "data")], logdir / "serve.log"
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
                        http,
                        server.url,
                        args.uploads,
                        round(args.upload_mb * 1e6) // 2 * 2,
                        args.chunk_mb * (1 << 20),
                        logdir,
                        tmpdir / "peer-uploads",
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
    p.add_argument("--chunk-mb", type=int, default=4, help="MiB per PATCH (default 4)")
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
    for name in ("takes", "procs", "join_concurrency", "clock_clients", "chunk_mb"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    args.clients = [c.strip() for c in str(args.clients).split(",") if c.strip()]
    if not args.clients or any(c not in ("socketio", "raw") for c in args.clients):
        p.error("--clients: a comma-separated list of socketio and raw")
    if not 0 <= args.arm_gap <= 30:
        p.error("--arm-gap must be 0–30 seconds")
    if args.uploads < 0 or args.clock_estimates < 0 or not 0.001 <= args.upload_mb <= 400:
        p.error("--uploads and --clock-estimates must be ≥ 0; --upload-mb 0.001–400")
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
    need = 2 * args.uploads * args.upload_mb * 1e6 + 1e9
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if args.uploads and free < need:
        print(
            f"not enough space in {tempfile.gettempdir()}: {free / 1e9:.1f} GB free, "
            f"{need / 1e9:.1f} GB needed; use fewer --uploads or a smaller --upload-mb",
            file=sys.stderr,
        )
        return 2
    res = asyncio.run(run(args))
    OUT.mkdir(parents=True, exist_ok=True)
    out = args.out or OUT / time.strftime("server-%Y%m%d-%H%M%S.json", time.gmtime())
    out.write_text(json.dumps(res, indent=1))
    print(report(res))
    print(f"\n(results: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
