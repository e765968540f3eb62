"""Benchmark the server's mix: from the last upload of a take completing to ``take.mix`` ready.

One command::

    .venv/bin/python bench/bench_server_mix.py [--takes 32] [--minutes 5] [--runs 3]
        [--parallel 4] [--spread 0] [--heard [--shared-clocks | --clock-maps]]
        [--mix-memory GIB]

takes the cached take folder of ``bench/bench_mix.py`` (``--takes`` recordings of
``--minutes``, 24-bit FLAC as ``tutti join`` records; ``--heard``: with headset bleed, a
backing per part and some singers on clocks of their own; ``--shared-clocks``: every singer
says their clock is shared, so the mix measures no drift; ``--clock-maps``: the singers on
clocks of their own send a clock map, as ``tutti join`` does when its clocks differ), starts
``tutti serve`` in its own process, and per run: a leader creates a session (the take's tempo,
its parts), ``--takes`` singers join, a take is armed, started and stopped, and every singer
uploads its recording with the client's tus uploader
(:class:`tutti.client.uploader.TusUploader`), ``--parallel`` at a time, singer ``n`` starting
``n/N · --spread`` seconds after the stop (on localhost an upload takes a fraction of a second;
at home uplinks differ, so uploads end spread out; ``--spread 0``, all at once, queues every
recording's pass 1 behind the last upload: the worst case). The leader's Socket.IO client
stamps, on one clock, the ``take.update`` that says the last recording is stored and the
``take.mix`` that says the mix is ready; the difference is the figure. A remix follows (every
recording prepared: the mix's own time). Each run is a fresh session on the same server.
``--mix-memory`` is handed to ``tutti serve`` (0: its mixes work on disk, in each take's
folder; by default in memory). JSON goes to ``bench/out/server-mix-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.bench_mix import OUT, RATE, SETTINGS, make_take  # noqa: E402
from tests.server.helpers import Recorder  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402
from tutti.client.uploader import TusUploader, UploadJob, file_sha256  # noqa: E402
from tutti.wire import Ev  # noqa: E402

PARTS = ["S", "A", "T", "B"]
MAP_STEP_S = 5.0  # seconds between clock-map points (tutti join's own spacing)


def clock_map(rec: dict[str, Any], song_frames: int) -> list[dict[str, int]]:
    """The clock map ``tutti join`` would have written for a recording of the heard take made
    on a clock of its own: its drift is what stretched ``song_frames`` (every singer's voice
    length) to the recording's frames (0.04 ppm from the truth on a 5-minute take)."""
    speed = rec["frames"] / song_frames  # file frames per timeline frame
    at = rec["start_offset"] - rec["latency"]
    step = round(MAP_STEP_S * rec["rate"])
    frames = [*range(0, rec["frames"], step), rec["frames"] - 1]
    return [{"frame": f, "timeline": at + round(f / speed)} for f in frames]


async def _first(events: Recorder, event: str, pred: Any, timeout: float) -> tuple[Any, float]:
    """Coroutine: the first ``event`` meeting ``pred`` and when it arrived (monotonic s)."""
    data = await events.wait(event, pred, timeout=timeout)
    return data, next(at for name, d, at in events.events if name == event and d is data)


async def _recorded(base: str, lead: Recorder, singer: dict[str, Any], take_id: str) -> None:
    me = Recorder()
    try:
        await me.connect(base, singer["token"])
        await me.client.emit(Ev.TAKE_STATE, {"take_id": take_id, "state": "recorded"})
        pid = singer["participant_id"]
        await lead.wait(
            Ev.TAKE_UPDATES,
            lambda d: pid in d["participant_ids"] and d["state"] == "recorded",
            timeout=30,
        )
    finally:
        await me.close()


async def _post(http: aiohttp.ClientSession, url: str, body: Any, token: str = "") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=body, headers=headers) as r:
        if r.status >= 300:
            raise RuntimeError(f"POST {url}: HTTP {r.status} {(await r.text())[:300]}")
        return await r.json()


async def one_run(
    base: str,
    take: Path,
    parallel: int,
    heard: bool,
    spread: float,
    shared: bool = False,
    maps: bool = False,
) -> dict[str, float]:
    """One session, one take, every upload; seconds from the last upload stored to ready."""
    manifest = json.loads((take / "take.json").read_text(encoding="utf-8"))
    recs = manifest["recordings"]
    song = next(r["frames"] for r in recs if r.get("shared_clock", True))
    settings = {**(SETTINGS if heard else {"title": "benchmark", "rate": RATE}), "parts": PARTS}
    async with aiohttp.ClientSession() as http:
        created = await _post(http, f"{base}/api/sessions", settings)
        leader = created["leader_token"]
        if heard:
            for part in PARTS:
                data = (take / "backing" / f"{part}.flac").read_bytes()
                headers = {"Authorization": f"Bearer {leader}", "Content-Type": "audio/flac"}
                async with http.put(
                    f"{base}/api/session/tracks/{part}", data=data, headers=headers
                ) as r:
                    if r.status != 201:
                        raise RuntimeError(f"backing {part}: HTTP {r.status}")
        singers = []
        for rec in recs:
            body = {"code": created["code"], "name": rec["singer"], "part": rec["part"]}
            singers.append(await _post(http, f"{base}/api/join", body))
        events = Recorder()
        await events.connect(base, leader)
        try:
            take_id = (await _post(http, f"{base}/api/session/takes", None, leader))["take_id"]
            await _post(http, f"{base}/api/session/takes/{take_id}/start", {"lead_s": 1.0}, leader)
            for singer in singers:  # each client says its take is recorded, as tutti join does
                await _recorded(base, events, singer, take_id)
            await _post(http, f"{base}/api/session/takes/{take_id}/stop", None, leader)
            gate = asyncio.Semaphore(parallel)

            async def upload(n: int, rec: dict[str, Any], singer: dict[str, Any]) -> None:
                await asyncio.sleep(spread * n / len(recs))  # uplinks differ: ends spread out
                path = take / rec["file"]
                fields = ("rate", "channels", "frames", "start_offset", "latency")
                recording = {k: rec[k] for k in fields} | {
                    "shared_clock": shared or rec.get("shared_clock", True),
                    "latency_source": "measured",
                }
                if maps and not recording["shared_clock"]:
                    recording["clock_map"] = clock_map(rec, song)
                sha = await asyncio.to_thread(file_sha256, path)
                job = UploadJob(path=path, take_id=take_id, sha256=sha, recording=recording)
                TusUploader.state_path(job).unlink(missing_ok=True)  # a new upload each run
                async with gate:
                    up = TusUploader(http, base, singer["token"], chunk_size=4 << 20)
                    await up.upload(job)

            t_up = time.monotonic()
            pairs = enumerate(zip(recs, singers, strict=True))
            await asyncio.gather(*(upload(n, r, s) for n, (r, s) in pairs))
            uploads_s = time.monotonic() - t_up
            ready, t_ready = await _first(
                events, Ev.TAKE_MIX, lambda d: d["state"] in ("ready", "failed"), timeout=600
            )
            if ready["state"] != "ready":
                raise RuntimeError(f"the mix failed: {ready['detail']}")
            stored = [at for name, data, at in events.events
                      if name == Ev.TAKE_UPDATES and data["state"] == "uploaded"
                      for _ in data["participant_ids"]]  # fmt: skip
            if len(stored) != len(recs):
                raise RuntimeError(f"{len(stored)} of {len(recs)} uploads announced stored")
            last = max(stored)
            # a remix: every recording prepared, so this is the mix's own time after an
            # upload whose recording was the only one left to prepare
            t_remix = time.monotonic()
            await _post(http, f"{base}/api/session/takes/{take_id}/mix", {}, leader)
            remixed, t_remixed = await _first(
                events,
                Ev.TAKE_MIX,
                lambda d: d["version"] == 2 and d["state"] != "mixing",
                timeout=600,
            )
            if remixed["state"] != "ready":
                raise RuntimeError(f"the remix failed: {remixed['detail']}")
            return {
                "ready_after_last_upload_s": t_ready - last,
                "remix_s": t_remixed - t_remix,
                "uploads_s": uploads_s,
                "duration_s": float(ready["duration_s"]),
            }
        finally:
            await events.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--takes", type=int, default=32)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--parallel", type=int, default=4, help="uploads at a time")
    p.add_argument("--heard", action="store_true", help="a take with bleed, backing and drift")
    p.add_argument(
        "--shared-clocks",
        action="store_true",
        help="every singer says their clock is shared (no drift measured; with --heard)",
    )
    p.add_argument(
        "--clock-maps",
        action="store_true",
        help="singers on clocks of their own send clock maps, as tutti join does (with --heard)",
    )
    p.add_argument(
        "--spread",
        type=float,
        default=0.0,
        help="seconds over which the singers start uploading (0: all at once, the worst case)",
    )
    p.add_argument(
        "--mix-memory",
        metavar="GIB",
        help="tutti serve's --mix-memory (0: the mixes work on disk; default: the server's)",
    )
    args = p.parse_args()
    take = make_take(args.takes, args.minutes, bits=24, heard=args.heard)
    data = OUT / f"server-mix-data-{os.getpid()}"
    server = ServerProcess(data, extra=() if args.mix_memory is None else
                           ("--mix-memory", args.mix_memory))  # fmt: skip
    base = server.start()
    runs = []
    try:
        for n in range(args.runs):
            kind = {"shared": args.shared_clocks, "maps": args.clock_maps}
            run = asyncio.run(one_run(base, take, args.parallel, args.heard, args.spread, **kind))
            runs.append(run)
            print(
                f"run {n + 1}: mix ready {run['ready_after_last_upload_s']:.2f} s after the "
                f"last upload (uploads took {run['uploads_s']:.1f} s; mix {run['duration_s']:.1f} s"
                f" long); a remix {run['remix_s']:.2f} s",
                flush=True,
            )
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)  # every run's recordings and mixes: GBs
    median = statistics.median(r["ready_after_last_upload_s"] for r in runs)
    remix = statistics.median(r["remix_s"] for r in runs)
    print(f"median of {len(runs)}: ready {median:.2f} s after the last upload (goal ≤ 3 s); "
          f"a remix {remix:.2f} s")  # fmt: skip
    for line in server.log:
        if "event=prepared" in line or "event=mix_ready" in line:
            print("server:", line.strip())
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = OUT / f"server-mix-{stamp}.json"
    report = {
        "args": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": sys.version, "platform": platform.platform()},
        "runs": runs,
        "median_ready_after_last_upload_s": median,
        "median_remix_s": remix,
    }
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
