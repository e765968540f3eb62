"""``tutti sing [LINK]``: sing in a session through a window in the browser instead of the terminal.

The same audio engine and :class:`tutti.client.join.Singer` as ``tutti join``; around them a
local page (:mod:`tutti.client.window`) walks the singer through the steps:

1. the invite link (unless given on the command line), then name and voice part;
2. the headset: input and output devices, a live input meter, a test sound;
3. the headset's delay, measured as ``tutti calibrate`` does and remembered per headset;
4. the waiting room (who is here, the leader's note, a wave), 5. the take (countdown, bar and
   beat, the words), 6. the upload, until it is safe to close the window, and "Listen to the
   choir" once the server's mix is ready (played into the headset, as ``tutti join``'s L key).

:class:`SingFlow` holds where the singer is and does each step; the window only shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
import webbrowser
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import numpy as np

from tutti.client.connection import JoinError, join_session
from tutti.client.invite import fetch_invite, parse_invite_link
from tutti.client.window import Window, WindowError
from tutti.errors import EXIT_CODES_HELP
from tutti.wire import WireError, check_name, check_part

if TYPE_CHECKING:
    from tutti.client.engine import DuplexEngine
    from tutti.client.join import Singer

__all__ = ["SingFlow", "level_hint", "add_arguments", "run"]

log = logging.getLogger(__name__)

#: Input peak levels (dBFS) outside which the singer gets a hint.
TOO_QUIET_DB: Final = -45.0
TOO_LOUD_DB: Final = -3.0
#: How long calibration listens for the test tone coming back (seconds).
LISTEN_S: Final = 15.0
#: Take states shown as "the take" and as "after the take".
_SINGING: Final = frozenset({"armed", "count-in", "recording"})
_AFTER: Final = frozenset({"recorded", "uploading", "uploaded", "failed"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "link",
        nargs="?",
        help="the invite link your leader sent (https://choir.example.org/j/CODE); "
        "the window asks for it when left out",
    )
    parser.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open the browser; open the printed address yourself",
    )
    parser.epilog = EXIT_CODES_HELP


def level_hint(peak_db: float, clipped: bool) -> str:
    """``"quiet"``, ``"loud"`` or ``"good"`` for an input peak level in dBFS."""
    if clipped or peak_db > TOO_LOUD_DB:
        return "loud"
    return "quiet" if peak_db < TOO_QUIET_DB else "good"


def _remembered(engine: DuplexEngine) -> dict[str, Any]:
    """The delay measured earlier for this headset (as ``tutti calibrate`` keeps it), if any."""
    from tutti.client.calibrate import stored

    entry = stored(engine.device_key, engine.rate, engine.blocksize)
    if entry is None or entry.get("latency_source") != "measured":
        return {"state": "idle"}
    ms = 1000.0 * int(entry["frames"]) / engine.rate
    return {"state": "done", "ms": round(ms), "frames": int(entry["frames"]), "remembered": True}


def _db(x: float) -> float:
    return max(-120.0, 20.0 * float(np.log10(x))) if x > 0 else -120.0


class SingFlow:
    """The steps of ``tutti sing``: what the page shows (:meth:`snapshot`) and does."""

    def __init__(self, *, rate: int = 48000) -> None:
        self.step = "link"  # link | name | device | calibrate | live | ended
        self.error = ""
        self.base_url = ""
        self.code = ""
        self.title = ""
        self.parts: tuple[str, ...] = ()
        self.name = ""
        self.part = ""
        self.rate = rate  # the session's rate once joined (the headset is opened at it)
        self.device: tuple[int, int] | None = None
        self.device_label = ""
        self.engine: DuplexEngine | None = None
        self.calibration: dict[str, Any] = {"state": "idle"}
        self.singer: Singer | None = None
        self.exit_code = 0
        self.ended = asyncio.Event()
        self._busy = False  # a test sound or calibration is using the setup engine
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ what the page shows
    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": self.step,
            "error": self.error,
            "title": self.title,
            "parts": list(self.parts),
            "name": self.name,
            "part": self.part,
            "device": self.device_label,
            "calibration": self.calibration,
        }
        if self.step == "ended":
            out["exit_code"] = self.exit_code
        if self.singer is not None:
            out["live"] = self._live()
        elif self.engine is not None:
            lv = self.engine.input_level()
            out["level"] = {
                "peak_db": round(_db(lv.peak), 1),
                "hint": level_hint(_db(lv.peak), False),
            }
        return out

    def _live(self) -> dict[str, Any]:
        assert self.singer is not None
        s, now = self.singer.state, time.monotonic()
        starts_in = None
        if s.t0_local is not None and s.take_state in _SINGING and s.t0_local > now:
            starts_in = round(s.t0_local - now, 1)
        clipped = now < s.clipped_until
        phase = "take" if s.take_state in _SINGING else "after" if s.take_state in _AFTER else ""
        info = self.singer.info
        return {
            "phase": phase or "waiting",
            "title": info.settings.title if info is not None else self.title,
            "connection": s.connection,
            "clock_ms": None if s.clock_error_ms is None else round(s.clock_error_ms, 2),
            "backing": s.backing,
            "ready": self.singer.ready,
            "take_state": s.take_state,
            "starts_in": starts_in,
            "beat": s.beat_label,
            "words": s.words,
            "words_next": s.words_next,
            "level": {"peak_db": round(s.peak_db, 1), "hint": level_hint(s.peak_db, clipped)},
            "upload": s.upload,
            "safe_to_close": not self.singer.busy,
            "message": s.message,
            "room": self.singer.room.view(now),
            "mix": self._mix(),
        }

    def _mix(self) -> dict[str, Any] | None:
        """The choir's mix the singer may listen to (None until the server's is ready)."""
        assert self.singer is not None
        ready = self.singer.listen.ready
        if ready is None:
            return None
        return {
            "take": self.singer.listen.label(ready.take_id),
            "duration_s": ready.duration_s,
            "playing": self.singer.playing,
        }

    def devices(self) -> list[dict[str, Any]]:
        """Input and output devices as ``tutti devices`` lists them (number, name, host API)."""
        from tutti.client.devices import list_devices

        return [
            {
                "index": d.index,
                "label": f"{d.name} ({d.hostapi})",
                "inputs": d.max_input_channels,
                "outputs": d.max_output_channels,
                "default_input": d.default_input,
                "default_output": d.default_output,
            }
            for d in list_devices()
        ]

    # ------------------------------------------------------------------ 1. link, name, part
    async def open_link(self, link: str) -> None:
        found = parse_invite_link(link)
        if found is None:
            raise WindowError(
                "that is not an invite link: it looks like https://choir.example.org/j/CODE "
                "(copy it whole from your leader's message)"
            )
        invite = await fetch_invite(*found)
        self.base_url, self.code = found
        self.title, self.parts = invite.title, invite.parts
        self.error, self.step = "", "name"

    async def join(self, name: str, part: str) -> None:
        self._expect("name")
        try:
            check_name(name)
            check_part(part)
        except WireError as exc:
            raise WindowError(str(exc)) from None
        if self.parts and part not in self.parts:
            raise WindowError(f"choose one of the parts: {', '.join(self.parts)}")
        async with aiohttp.ClientSession() as http:
            info = await join_session(http, self.base_url, code=self.code, name=name, part=part)
        self.name, self.part, self.rate = info.name, info.part, info.settings.rate
        self.title = info.settings.title or self.title
        self.error, self.step = "", "device"

    # ------------------------------------------------------------------ 2. the headset
    async def choose_device(self, input_index: int, output_index: int) -> None:
        from tutti.client.devices import DeviceError
        from tutti.client.engine import DuplexEngine, EngineError

        self._expect("device", "calibrate")
        if self._busy:
            raise WindowError("wait until the sound or the measurement has finished")
        await self._close_engine()
        spec = (input_index, output_index)
        try:
            engine = DuplexEngine(rate=self.rate, device=spec)
            await asyncio.to_thread(engine.start)
        except (DeviceError, EngineError) as exc:
            raise WindowError(f"this headset cannot be used: {exc}") from None
        self.engine, self.device = engine, spec
        self.device_label = f"{engine.input_device.name} / {engine.output_device.name}"
        self.calibration = _remembered(engine)
        self.error = ""

    async def test_sound(self) -> None:
        """A short, gentle chime into the headphones."""
        engine = self._setup_engine()
        rate = engine.rate
        t = np.arange(int(0.8 * rate)) / rate
        tone = 0.12 * np.sin(2 * np.pi * 660.0 * t) * np.exp(-3.0 * t)
        program = np.repeat(tone.astype(np.float32)[:, None], engine.out_channels, axis=1)
        self._busy = True
        try:
            take = engine.schedule(program, time.monotonic() + 0.1, record=False, tail=0.0)
            await asyncio.to_thread(take.wait, 5.0)
        finally:
            self._busy = False

    async def confirm_device(self) -> None:
        """The headset is chosen: on to measuring its delay."""
        self._expect("device")
        if self.engine is None:
            raise WindowError("choose your headset first")
        self.step = "calibrate"

    async def change_device(self) -> None:
        """Back from the delay step to choosing the headset."""
        self._setup_engine()  # not while a measurement runs
        self.step = "device"

    # ------------------------------------------------------------------ 3. the delay
    async def calibrate(self) -> None:
        """Start measuring the headset's delay (the page follows ``calibration``)."""
        self._expect("calibrate")
        engine = self._setup_engine()
        self._busy = True
        # a failed new measurement keeps the one measured before (calibrate.store is not called)
        before = _remembered(engine).get("ms")
        self.calibration = {"state": "listening"}
        self._spawn(self._measure(engine, before))

    async def _measure(self, engine: DuplexEngine, before: int | None) -> None:
        from tutti.audio.latency import LatencyError
        from tutti.client.calibrate import CalibrationError, measure, store, wait_for_loopback
        from tutti.client.engine import EngineError

        try:
            heard = await asyncio.to_thread(wait_for_loopback, engine, LISTEN_S)
            if not heard:
                self.calibration = {"state": "failed", "why": "silence", "kept_ms": before}
                return
            self.calibration = {"state": "measuring"}
            cal = await asyncio.to_thread(measure, engine)
            await asyncio.to_thread(store, cal)
            self.calibration = {"state": "done", "ms": round(cal.ms), "frames": cal.frames}
        except (LatencyError, CalibrationError, EngineError) as exc:
            self.calibration = {
                "state": "failed",
                "why": "unclear",
                "detail": str(exc),
                "kept_ms": before,
            }
        finally:
            self._busy = False

    # ------------------------------------------------------------------ 4–6. singing
    async def finish_setup(self) -> None:
        """Close the set-up stream and start singing (the same :class:`Singer` as ``join``)."""
        from tutti.client.join import Singer

        self._expect("device", "calibrate")
        if self.device is None:
            raise WindowError("choose your headset first")
        if self._busy:
            raise WindowError("wait until the measurement has finished")
        await self._close_engine()
        args = argparse.Namespace(
            code=self.code,
            name=self.name,
            part=self.part,
            device=f"{self.device[0]},{self.device[1]}",
            blocksize=0,
            no_audio=False,
            plain=True,  # the terminal keeps a plain log; the window is the view
        )
        self.singer = Singer(args, self.base_url)
        self.step, self.error = "live", ""
        self._spawn(self._sing(self.singer))

    async def _sing(self, singer: Singer) -> None:
        try:
            self.exit_code = await singer.main()
        finally:
            self.step = "ended"
            self.ended.set()

    async def wave(self) -> None:
        """Wave to the choir's waiting room."""
        singer = self._joined()
        if not await singer.wave():
            raise WindowError("not connected to the choir just now; wave again in a moment")

    async def listen(self) -> None:
        """Play the choir's latest mix into the headset (the page shows what happens)."""
        singer = self._joined()
        if singer.listen.ready is None:
            raise WindowError("the choir's mix is not ready yet: it comes soon after the take")
        await singer.play_mix()
        if not singer.playing:  # the singer's words say why (a take runs, the download failed)
            raise WindowError(singer.state.message or "the choir's mix could not be played")

    # ------------------------------------------------------------------ helpers
    def _joined(self) -> Singer:
        if self.step != "live" or self.singer is None:
            raise WindowError("join the choir first")
        return self.singer

    def _expect(self, *steps: str) -> None:
        if self.step not in steps:
            raise WindowError(f"this step is done already (now: {self.step}); reload the page")

    def _setup_engine(self) -> DuplexEngine:
        self._expect("device", "calibrate")
        if self.engine is None:
            raise WindowError("choose your headset first")
        if self._busy:
            raise WindowError("wait until the sound or the measurement has finished")
        return self.engine

    async def _close_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.close)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Coroutine: stop what runs (the singer finishes its own teardown)."""
        if self.singer is not None:
            self.singer.done.set()
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 30)
        await self._close_engine()


async def _main(flow: SingFlow, open_browser: bool) -> int:
    window = Window(flow)
    url = await window.start()
    if open_browser:
        print(f"tutti sing: your window opens in the browser. If it does not, open\n  {url}")
    else:
        print(f"tutti sing: open this address in your browser (it works once):\n  {url}")
    sys.stdout.flush()
    if open_browser:
        await asyncio.to_thread(webbrowser.open, url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        ended = asyncio.ensure_future(flow.ended.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        stopped.cancel()
        if flow.ended.is_set():
            await asyncio.sleep(1.0)  # the page sees the end before the window closes
    finally:
        await flow.close()
        await window.close()
    return flow.exit_code


def run(args: argparse.Namespace) -> int:
    flow = SingFlow()
    if args.link:
        try:
            asyncio.run(flow.open_link(args.link))
        except (WindowError, JoinError) as exc:
            print(f"tutti sing: {exc}", file=sys.stderr)
            return int(exc.exit_code)
    return asyncio.run(_main(flow, open_browser=not args.no_browser))
