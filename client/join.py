"""``tutti join URL --code CODE --name NAME``: sing in a session from home.

What happens, in order:

1. ``POST /api/join`` (a token saved from an earlier run with the same server, code and
   name is reused, so a restarted client is the same singer);
2. Socket.IO connect; clock sync (:mod:`tutti.client.clock`): a burst of probes, then
   re-probes every few seconds, each estimate reported as ``clock.report``;
3. the part's backing track is downloaded (resumable, sha256-checked, cached);
4. the audio engine opens the headset (one full-duplex stream) and the calibration
   (round-trip latency) is reported; unfinished takes from an earlier run are recovered
   and uploaded;
5. for each ``take.start``: the headset program (click + backing) is played so that its
   first sample leaves the DAC at ``t0_local = t0_server − offset`` while the mic is
   recorded into the crash-safe take store; on ``take.stop`` the take is finished and
   uploaded with tus (resumes after drops and server restarts); the local copy is deleted only
   once the server confirmed its sha256.

Levels go to the server ~10 Hz.  Exit codes: :class:`tutti.errors.ExitCode` (the README's
table).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from tutti import wire
from tutti.client import config
from tutti.client.backing import BackingError, fetch_backing
from tutti.client.clock import (
    RESYNC_MIN_S,
    ClockError,
    ClockEstimate,
    ClockSync,
    ResyncPacer,
)
from tutti.client.connection import Connection, JoinError, JoinInfo, join_session
from tutti.client.invite import resolve_join, stdin_is_terminal
from tutti.client.listenback import KEY, KeyReader, ListenBack, ListenError, fetch_mix
from tutti.client.liveview import LiveState, LiveView
from tutti.client.lyrics import TimedWords, fetch_words
from tutti.client.program import Program, ProgramError, load_backing, render_program
from tutti.client.uploader import TusUploader, UploadError, UploadJob, UploadProgress
from tutti.client.waitroom import RoomState
from tutti.errors import EXIT_CODES_HELP, ExitCode
from tutti.wire import Ev, SessionSettings, TakeStart, WireError, check_name, check_part

if TYPE_CHECKING:
    from tutti.audio.types import AudioArray
    from tutti.client.engine import DuplexEngine
    from tutti.client.scheduled import ScheduledTake
    from tutti.client.takestore import FinishedTake

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)

#: The live meter's updates per second; the server says how many of them to send it
#: (``level.rate``: at most this, none while no leader watches).
LEVEL_HZ: Final = wire.MAX_LEVEL_HZ
#: Clock probes at joining (spaced, then a back-to-back tail) and at each re-sync.
#: New losses are reported within this many seconds even while no leader watches.
LOSS_REPORT_S: Final = 1.0
JOIN_PROBES: Final = 64
RESYNC_PROBES: Final = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        help="the invite link your leader sent (https://choir.example.org/j/CODE), or the "
        "server's address with --code",
    )
    parser.add_argument("--code", help="the join code (not needed with an invite link)")
    parser.add_argument("--name", help="your name as the leader sees it (asked for when left out)")
    parser.add_argument(
        "--part", help="your voice part, e.g. S, A, T or B (asked for when left out)"
    )
    parser.add_argument(
        "--device",
        help="audio device number or part of its name; 'IN,OUT' for separate devices "
        "(see `tutti devices`); default: the system's default devices",
    )
    parser.add_argument(
        "--blocksize", type=int, default=0, help="frames per audio callback (0: host's choice)"
    )
    parser.add_argument(
        "--no-audio",
        action="store_true",
        help="join, sync the clock and fetch the backing without opening an audio device "
        "(checks your connection; takes are not recorded)",
    )
    parser.add_argument("--plain", action="store_true", help="plain text lines, no live view")
    parser.epilog = EXIT_CODES_HELP


def run(args: argparse.Namespace) -> int:
    try:
        base_url, args.code, args.name, args.part = resolve_join(
            args.url, args.code, args.name, args.part, interactive=stdin_is_terminal()
        )
        check_name(args.name)
        if args.part is not None:
            check_part(args.part)
    except WireError as exc:
        print(f"tutti join: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except JoinError as exc:
        print(f"tutti join: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except EOFError:  # the terminal closed while tutti asked for a name or part
        print("\ntutti join: no answer; give --name and --part", file=sys.stderr)
        return ExitCode.USAGE
    if args.blocksize < 0 or args.blocksize > 8192:
        print("tutti join: --blocksize must be 0–8192 frames", file=sys.stderr)
        return ExitCode.USAGE
    singer = Singer(args, base_url)
    return asyncio.run(singer.main())


def _device_spec(text: str | None) -> Any:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    conv: list[int | str] = [int(p) if p.isdigit() else p for p in parts]
    if len(conv) == 1:
        return conv[0]
    if len(conv) == 2:
        return (conv[0], conv[1])
    raise JoinError("--device takes one device or 'IN,OUT'", exit_code=ExitCode.USAGE)


def _db(x: float) -> float:
    return max(-120.0, 20.0 * math.log10(x)) if x > 0 else -120.0


_Rendered = tuple[Program, list[int], list[str]]


@dataclass
class _Take:
    start: TakeStart
    t0_local: float
    program: Program
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    beats: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    words: TimedWords = field(default_factory=TimedWords)


class _HeldLevel:
    """The loudest level since the last report, so a report sent less often than the meter
    updates still shows every peak and clip in between."""

    def __init__(self) -> None:
        self.rms_db = self.peak_db = -120.0
        self.clipped = False
        self.sent_at = -math.inf
        self.losses: tuple[int, ...] = (0, 0, 0)  # lost frames, dropouts, skipped frames

    def hold(self, rms_db: float, peak_db: float, clipped: bool) -> None:
        self.rms_db, self.peak_db = max(self.rms_db, rms_db), max(self.peak_db, peak_db)
        self.clipped = self.clipped or clipped

    def due(self, hz: float, now: float, losses: tuple[int, ...] = (0, 0, 0)) -> bool:
        """Whether to report now: at the rate the server set, and (even while no leader
        watches) within :data:`LOSS_REPORT_S` of new losses, so the roster's counts hold."""
        since = now - self.sent_at
        # a tenth of a meter tick early still counts: the loop's sleeps run a little long
        if hz > 0 and since >= 1.0 / hz - 0.1 / LEVEL_HZ:
            return True
        return losses != self.losses and since >= LOSS_REPORT_S

    def take(self, now: float, losses: tuple[int, ...] = (0, 0, 0)) -> tuple[float, float, bool]:
        out = (self.rms_db, self.peak_db, self.clipped)
        self.rms_db = self.peak_db = -120.0
        self.clipped, self.sent_at, self.losses = False, now, losses
        return out


class Singer:
    """One ``tutti join`` run (an object so its pieces share state without globals)."""

    def __init__(self, args: argparse.Namespace, base_url: str) -> None:
        self.args = args
        self.base_url = base_url
        self.state = LiveState(server=base_url, name=args.name, part=args.part or "")
        self.view = LiveView(self.state, force_plain=bool(args.plain))
        self.done = asyncio.Event()
        self.exit_code = 0
        self.info: JoinInfo | None = None
        self.level_hz = LEVEL_HZ  # until the server says (an older one never does)
        self.conn: Connection | None = None
        self.clock: ClockSync | None = None
        self.http: aiohttp.ClientSession | None = None
        self.engine: DuplexEngine | None = None
        self.backing: AudioArray | None = None
        self.backing_sha = ""
        self.take: _Take | None = None
        self.latency = (0, "reported")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._uploads: set[str] = set()
        self._program: tuple[tuple[str, str], _Rendered] | None = None
        self._ready = asyncio.Event()  # clock synced, backing and program ready
        self._started: set[str] = set()  # takes whose start this client has acted on
        self._losses_from = (0, 0, 0)  # engine loss counters when the latest take started
        self.listen = ListenBack(self.state.note)
        self.keys = KeyReader(self.on_key)
        self._playing: ScheduledTake | None = None  # the choir's mix, into the headset
        self.room = RoomState()  # who is here, the leader's note, waves

    # ------------------------------------------------------------------ main
    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.done.set)
        async with aiohttp.ClientSession() as http:
            self.http = http
            try:
                await self._setup()
            except JoinError as exc:
                print(f"tutti join: {exc}", file=sys.stderr)
                await self._teardown()
                return int(exc.exit_code)
            except BackingError as exc:
                print(f"tutti join: {exc}", file=sys.stderr)
                await self._teardown()
                return int(exc.exit_code)
            self.view.start()
            self.keys.start()
            try:
                await self.done.wait()
            finally:
                await self._teardown()
        return self.exit_code

    async def _setup(self) -> None:
        args = self.args
        self.info = info = await join_session(
            self.http_session, self.base_url, code=args.code, name=args.name, part=args.part
        )
        self.state.part = info.part
        self.state.note(f"joined {info.settings.title!r} as {info.name} ({info.part})")
        if not args.no_audio:
            self._open_engine(info)  # fail fast on device problems, before anything else
        conn = Connection(self.base_url, info.token, on_state=self._conn_state)
        conn.on(Ev.TAKE_START, self._on_take_start)
        conn.on(Ev.TAKE_STOP, self._on_take_stop)
        conn.on(Ev.WELCOME, self._on_welcome)
        conn.on(Ev.LEVEL_RATE, self._on_level_rate)
        conn.on(Ev.TAKE_ARMED, self._on_take_armed)
        conn.on(Ev.SESSION_CLOSED, self._on_closed)
        conn.on(Ev.SESSION, self._on_session)
        conn.on(Ev.ERROR, self._on_error)
        conn.on(Ev.TAKE_MIX, self._on_take_mix)
        conn.on(Ev.LOBBY, self._on_lobby)
        conn.on(Ev.WAVES, self._on_waves)
        conn.on_reconnect(self._after_reconnect)
        self.conn = conn
        await conn.connect()
        self.clock = ClockSync(conn.call)
        await self._sync_clock(JOIN_PROBES)
        self._spawn(self._clock_loop())
        await self._fetch_backing()
        if self.engine is not None:
            await self._program_for(info.settings)
            await self._send_calibration()
            self._spawn(self._level_loop())
            self._spawn(self._recover_takes())
        self._ready.set()

    @property
    def ready(self) -> bool:
        """Joined, clock synced, backing and headset program ready for a take."""
        return self._ready.is_set()

    @property
    def busy(self) -> bool:
        """A take is being recorded or an upload is unfinished (quitting now loses singing)."""
        return self.take is not None or bool(self._uploads)

    @property
    def http_session(self) -> aiohttp.ClientSession:
        assert self.http is not None
        return self.http

    async def _teardown(self) -> None:
        self.keys.stop()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.engine is not None:
            await asyncio.to_thread(self.engine.close)
            self.engine = None
        if self.conn is not None:
            await self.conn.close()
        await self.view.stop()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("background task failed: %r", exc)
            self.state.note(f"error: {exc}")

    # ------------------------------------------------------------------ audio
    def _open_engine(self, info: JoinInfo) -> None:
        from tutti.client.devices import DeviceError
        from tutti.client.engine import DuplexEngine, EngineError

        try:
            engine = DuplexEngine(
                rate=info.settings.rate,
                device=_device_spec(self.args.device),
                blocksize=self.args.blocksize,
            )
            engine.start()
        except (DeviceError, EngineError) as exc:
            raise JoinError(f"audio device problem: {exc}", exit_code=ExitCode.DEVICE) from exc
        self.engine = engine
        from tutti.client.calibrate import latency_for

        choice = latency_for(engine)
        self.latency = (choice.frames, choice.source)
        if choice.warning:
            self.state.note(choice.warning)

    async def _send_calibration(self) -> None:
        if self.conn is not None and self.engine is not None:
            frames, source = self.latency
            await self.conn.emit(Ev.CALIBRATION, wire.CalibrationReport(frames, source))

    async def _level_loop(self) -> None:
        clips_seen = 0
        held = _HeldLevel()
        while True:
            await asyncio.sleep(1.0 / LEVEL_HZ)
            eng = self.engine
            if eng is None or self.conn is None:
                continue
            lv = eng.input_level()
            clipped = lv.clips > clips_seen
            clips_seen = lv.clips
            s = self.state
            s.rms_db, s.peak_db = _db(lv.rms), _db(lv.peak)
            s.overflows, s.underflows = eng.overflows, eng.underflows
            losses = self._losses(eng)
            s.lost_frames, s.dropouts = losses["lost_frames"], losses["dropouts"]
            s.rate = eng.rate
            if clipped:
                s.clipped_until = time.monotonic() + 2.0
            self._update_beat()
            held.hold(s.rms_db, s.peak_db, clipped)
            counts = tuple(losses.values())
            if not held.due(self.level_hz, time.monotonic(), counts):
                continue
            rms_db, peak_db, clipped = held.take(time.monotonic(), counts)
            report = wire.LevelReport(
                rms_db=rms_db,
                peak_db=peak_db,
                overflows=eng.overflows,
                underflows=eng.underflows,
                clipped=clipped,
                lost_frames=losses["lost_frames"],
                dropouts=losses["dropouts"],
                skipped_frames=losses["skipped_frames"],
            )
            await self.conn.emit(Ev.LEVEL, report)

    def _losses(self, eng: DuplexEngine) -> dict[str, int]:
        """What this singer's own stream lost since the latest take started (or since it
        joined): input frames, in how many events, and output frames skipped."""
        lost, events, skipped = self._losses_from
        return {  # a loss given back may reach past the start: never below zero
            "lost_frames": max(0, eng.input_account.lost - lost),
            "dropouts": eng.input_account.events - events,
            "skipped_frames": max(0, eng.output_account.lost - skipped),
        }

    def _update_beat(self) -> None:
        take = self.take
        if take is None or not take.beats:
            return
        pos = (time.monotonic() - take.t0_local) * take.program.rate
        if pos < 0:
            return
        self.state.words, self.state.words_next = take.words.at(int(pos))
        i = bisect.bisect_right(take.beats, int(pos)) - 1
        if i >= 0:
            self.state.beat_label = take.labels[i]
            count_in = take.program.count_in_frames
            if self.state.take_state in ("count-in", "recording"):
                self.state.take_state = "count-in" if pos < count_in else "recording"

    # ------------------------------------------------------------------ clock
    async def _sync_clock(self, probes: int) -> ClockEstimate:
        assert self.clock is not None
        try:
            est = await self.clock.burst(probes, until_steady=True)
        except ClockError as exc:
            if "contradict" in str(exc):  # the server's clock jumped (another machine)
                self.clock.estimator.clear()
                est = await self.clock.burst(probes, until_steady=True)
            else:
                raise JoinError(
                    f"clock sync failed: {exc}", exit_code=ExitCode.UNREACHABLE
                ) from exc
        await self._report_clock(est)
        return est

    async def _report_clock(self, est: ClockEstimate) -> None:
        self.state.clock_error_ms = est.error_bound * 1e3
        self.state.clock_rtt_ms = est.rtt_min * 1e3
        if self.conn is not None:
            await self.conn.emit(Ev.CLOCK_REPORT, est.report())

    async def _clock_loop(self) -> None:
        """Re-sync the clock as often as its measured movement needs (:class:`ResyncPacer`)."""
        assert self.clock is not None
        pacer = ResyncPacer()
        est = self.clock.current
        interval = RESYNC_MIN_S
        if est is not None:
            interval = pacer.next_interval(time.monotonic(), est.offset, est.error_bound)
        while True:
            await asyncio.sleep(interval)
            if self.conn is None or not self.conn.connected:
                continue
            with contextlib.suppress(ClockError, JoinError):
                est = await self._sync_clock(RESYNC_PROBES)
                interval = pacer.next_interval(time.monotonic(), est.offset, est.error_bound)

    # ------------------------------------------------------------------ connection
    def _conn_state(self, state: str) -> None:
        self.state.connection = state

    async def _after_reconnect(self) -> None:
        self.state.note("reconnected")
        assert self.clock is not None
        with contextlib.suppress(ClockError):
            await self._report_clock(await self.clock.after_reconnect(JOIN_PROBES))
        await self._send_calibration()

    async def _on_error(self, report: wire.ErrorReport) -> None:
        if report.event == Ev.WAVE:
            self.room.refusal = report.message
            return
        self.state.note(f"server refused {report.event}: {report.message}")

    # ------------------------------------------------------------------ the waiting room
    async def _on_lobby(self, lobby: wire.Lobby) -> None:
        if self.room.on_lobby(lobby) and lobby.note:
            self.state.note(f"Note from your leader: {lobby.note}")

    async def _on_waves(self, waves: wire.Waves) -> None:
        for line in self.room.on_waves(waves, time.monotonic()):
            self.state.note(line)

    async def wave(self) -> bool:
        """Coroutine: wave to the waiting room; False when not connected."""
        if self.conn is None or not await self.conn.emit(Ev.WAVE, wire.Wave()):
            return False
        self.room.waved(time.monotonic())
        return True

    async def _on_closed(self, _closed: wire.SessionClosed) -> None:
        self.state.note("the leader closed the session")
        if self.take is not None:
            self.take.stopped.set()
        self._spawn(self._leave_when_idle())

    async def _leave_when_idle(self) -> None:
        """Finish the running take and every upload, then end ``tutti join``."""
        while self.take is not None or self._uploads:
            await asyncio.sleep(0.2)
        self.done.set()

    async def _on_session(self, _view: wire.SessionView) -> None:
        """Settings or tracks changed: refresh, fetch a new backing, re-render the program."""
        self._spawn(self._refresh())

    async def _refresh(self) -> None:
        assert self.info is not None
        self.info = await join_session(
            self.http_session,
            self.base_url,
            code=self.args.code,
            name=self.args.name,
            part=self.info.part,
        )
        track = self.info.track
        if (track.info.sha256 if track else "") != self.backing_sha:
            await self._fetch_backing()
        if self.engine is not None:
            await self._program_for(self.info.settings)

    # ------------------------------------------------------------------ backing
    async def _fetch_backing(self) -> None:
        info = self.info
        assert info is not None
        track = info.track
        if track is None:
            self.state.backing = "none (click only)"
            self.backing, self.backing_sha = None, ""
            return

        def progress(done: int, total: int) -> None:
            self.state.backing = f"{100 * done // max(1, total)} %"

        path = await fetch_backing(
            self.http_session,
            self.base_url,
            info.token,
            track,
            config.data_dir(),
            progress=progress,
        )
        try:
            self.backing = await asyncio.to_thread(load_backing, path, info.settings.rate)
        except ProgramError as exc:
            raise BackingError(str(exc)) from exc
        self.backing_sha = track.info.sha256
        self.state.backing = f"ready ({track.info.frames / max(1, track.info.rate):.0f} s)"

    # ------------------------------------------------------------------ takes
    async def _on_take_armed(self, armed: wire.TakeArmed) -> None:
        self.state.take_id, self.state.take_state = armed.take_id, "armed"
        self.listen.take_armed(armed.take_id)
        await self._stop_listening()

    # ------------------------------------------------------------------ listen-back
    async def _on_take_mix(self, mix: wire.TakeMix) -> None:
        self.listen.on_mix(mix)

    async def on_key(self, key: str) -> None:
        """Coroutine: a key the singer pressed (L plays the choir's latest mix)."""
        if key.lower() == KEY:
            await self.play_mix()

    async def play_mix(self) -> None:
        """Coroutine: fetch the latest ready mix and play it into the headset (not during a
        take: the headset is the take's then)."""
        from tutti.client.engine import EngineError

        path = self.listen.path()
        if path is None:
            self.state.note("no mix is ready yet: it comes a few seconds after everyone uploaded")
            return
        if self.engine is None or self.info is None:
            self.state.note("joined without audio: open the mix link on the leader's page instead")
            return
        if self._take_busy():
            self.state.note("a take is running: listen once it is over")
            return
        await self._stop_listening()
        try:
            rate, channels = self.engine.rate, self.engine.out_channels
            token = self.info.token
            audio = await fetch_mix(
                self.http_session, self.base_url, token, path, rate=rate, channels=channels
            )
        except ListenError as exc:
            self.state.note(f"cannot play the mix: {exc}")
            return
        if self._take_busy():
            return  # a take started while the mix was downloading: it comes first
        try:
            self._playing = self.engine.schedule(
                audio, time.monotonic() + 0.2, record=False, tail=0.0
            )
        except EngineError as exc:
            self.state.note(f"cannot play the mix: {exc}")
            return
        minutes, seconds = divmod(int(round(len(audio) / self.engine.rate)), 60)
        assert self.listen.ready is not None
        label = self.listen.label(self.listen.ready.take_id)
        self.state.note(f"playing the choir's mix of {label} ({minutes}:{seconds:02d})")

    @property
    def playing(self) -> bool:
        """The choir's mix is playing in the headset now."""
        return self._playing is not None and not self._playing.done.is_set()

    def _take_busy(self) -> bool:
        """Whether a take holds the headset (armed, counting in or recording)."""
        return self.take is not None or self.state.take_state in ("armed", "count-in", "recording")

    async def _stop_listening(self) -> None:
        """Coroutine: end the mix playing in the headset (a take is about to need it)."""
        playing, self._playing = self._playing, None
        if playing is None or self.engine is None or playing.done.is_set():
            return
        self.engine.stop_take()
        await asyncio.to_thread(playing.done.wait, 2.0)

    async def _on_take_stop(self, stop: wire.TakeStop) -> None:
        take = self.take
        if take is not None and stop.take_id == take.start.take_id:
            take.stopped.set()

    async def _on_welcome(self, welcome: wire.Welcome) -> None:
        """On every (re)connect: finish a take whose ``take.stop`` this client missed.

        The server may die right after broadcasting a stop; the welcome on reconnect carries
        the session's latest take, and a take of ours that is stopped there, or superseded by
        a newer one, is ended here so that it is finished and uploaded.
        """
        if welcome.level_hz is not None:
            self.level_hz = welcome.level_hz
        take, latest = self.take, welcome.take
        if take is None or latest is None:
            return
        if latest.take_id != take.start.take_id or latest.state == "stopped":
            if not take.stopped.is_set():
                self.state.note(f"take {take.start.take_id} was stopped while disconnected")
            take.stopped.set()

    async def _on_level_rate(self, rate: wire.LevelRate) -> None:
        self.level_hz = rate.hz

    async def _on_take_start(self, start: TakeStart) -> None:
        self._spawn(self._run_take(start))

    async def _emit_take_state(self, take_id: str, state: str, detail: str = "") -> None:
        self.state.take_id, self.state.take_state = take_id, state
        if self.conn is not None:
            await self.conn.emit(Ev.TAKE_STATE, wire.TakeState(take_id, state, detail[:500]))

    async def _run_take(self, start: TakeStart) -> None:
        if start.take_id in self._started:
            return  # the server repeats a running take's start on reconnect
        self._started.add(start.take_id)
        # a start that came with the first connect (a running take) waits for the clock
        await self._ready.wait()
        assert self.clock is not None
        if self.take is not None:
            # Only one take runs at a time on the server, so a new start means the old take
            # was stopped (its take.stop was lost): finish recording it, then go on.
            self.take.stopped.set()
            deadline = time.monotonic() + 1.0
            while self.take is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        if self.take is not None:
            await self._emit_take_state(start.take_id, "failed", "another take is still running")
            return
        await self._stop_listening()
        t0_local = self.clock.to_local(start.t0)
        self.state.t0_local = t0_local
        self.state.take_id, self.state.take_state = start.take_id, "count-in"
        if self.engine is None:
            self.state.note(
                f"take {start.take_id} starts at local {t0_local:.3f} (no audio: not recorded)"
            )
            await self._emit_take_state(start.take_id, "failed", "joined without audio")
            return
        program, beats, labels = await self._program_for(start.settings)
        assert self.info is not None
        words = await fetch_words(
            self.http_session, self.base_url, self.info.token, self.info.part,
            start.settings, len(program.audio),
        )  # fmt: skip
        take = _Take(start=start, t0_local=t0_local, program=program, beats=beats, labels=labels)
        take.words = words
        self.take = take
        try:
            await self._record_and_upload(take)
        finally:
            self.take = None

    async def _program_for(self, settings: SessionSettings) -> _Rendered:
        """The headset program for ``settings`` and the current backing (rendered once and
        kept, so a take start does no heavy work while every singer's clock is ticking)."""
        assert self.engine is not None
        key = (json.dumps(settings.to_dict(), sort_keys=True), self.backing_sha)
        if self._program is not None and self._program[0] == key:
            return self._program[1]
        channels = self.engine.out_channels
        program = await asyncio.to_thread(render_program, settings, self.backing, channels=channels)
        from tutti.audio.click import beat_frames

        beats = beat_frames(settings, settings.rate, seconds=len(program.audio) / settings.rate)
        frames = [b.frame for b in beats]
        labels = [("in " if b.count_in else "") + f"{b.bar + 1}:{b.beat + 1}" for b in beats]
        rendered = (program, frames, labels)
        self._program = (key, rendered)
        return rendered

    async def _record_and_upload(self, take: _Take) -> None:
        from tutti.client.engine import EngineError
        from tutti.client.takestore import TakeStore, TakeStoreError

        assert self.engine is not None and self.info is not None
        start, info = take.start, self.info
        writer = TakeStore().begin(
            start.take_id,
            rate=start.settings.rate,
            channels=self.engine.in_channels,
            singer=info.name,
            part=info.part,
            latency=self.latency[0],
            latency_source=self.latency[1],
            participant_id=info.participant_id,
            session=info.session_id,
            server=self.base_url,
            device=self.engine.device_info,
        )
        try:
            sched = self.engine.schedule(
                take.program.audio, take.t0_local, writer=writer, tail=None, late_ok=True
            )
        except EngineError as exc:
            with contextlib.suppress(TakeStoreError):
                writer.finish()
            await self._emit_take_state(start.take_id, "failed", str(exc))
            return
        rate, latency = start.settings.rate, self.latency[0]
        writer.journal_progress(lambda frames: sched.progress(latency, rate, frames))
        acct_in, acct_out = self.engine.input_account, self.engine.output_account
        self._losses_from = (acct_in.lost, acct_in.events, acct_out.lost)
        await self._emit_take_state(start.take_id, "recording")
        limit = start.settings.max_take_seconds + max(0.0, take.t0_local - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(take.stopped.wait(), timeout=limit)
        self.engine.stop_take()
        await asyncio.to_thread(sched.wait, 10.0)
        self.state.note(
            f"take {start.take_id}: first sample at stream frame {sched.o0} "
            f"(late by {sched.late_frames} frames), {sched.frames_recorded} frames recorded"
        )
        try:
            finished = await asyncio.to_thread(
                writer.finish,
                overflows=sched.overflows,
                underflows=sched.underflows,
                dropped_frames=sched.dropped_frames,
                timeline=sched.timeline_fields(self.latency[0], start.settings.rate),
            )
        except TakeStoreError as exc:
            await self._emit_take_state(start.take_id, "failed", str(exc))
            return
        await self._emit_take_state(start.take_id, "recorded")
        # The upload goes on in the background: the next take may start while it runs.
        self._uploads.add(finished.take_id)
        self._spawn(self._upload(finished))

    async def _upload(self, finished: FinishedTake) -> None:
        from tutti.client.takestore import TakeStore, TakeStoreError

        assert self.info is not None
        take_id = finished.take_id
        self._uploads.add(take_id)
        try:
            await self._emit_take_state(take_id, "uploading")
            rec = finished.recording.to_dict()
            for k in ("file", "singer", "part", "participant_id", "sha256"):
                rec.pop(k, None)
            job = UploadJob(
                path=finished.path,
                take_id=take_id,
                sha256=finished.sha256,
                recording=rec,
                filename=finished.path.name,
            )

            def progress(p: UploadProgress) -> None:
                unit, scale = ("MB", 1e6) if p.total >= 1e6 else ("kB", 1e3)
                amount = f"{p.offset / scale:.1f}/{p.total / scale:.1f} {unit}"
                if p.state == "retrying":
                    self.state.upload = f"retrying ({p.retries}) {amount}"
                else:
                    self.state.upload = f"{p.state} {amount}"

            up = TusUploader(
                self.http_session, self.base_url, self.info.token, on_progress=progress
            )
            try:
                await up.upload(job)
            except UploadError as exc:
                await self._emit_take_state(take_id, "failed", str(exc))
                self.state.note(f"upload of take {take_id} failed: {exc}")
                return
            up.forget(job)
            try:
                await asyncio.to_thread(TakeStore().confirm_uploaded, finished, job.sha256)
            except TakeStoreError as exc:
                self.state.note(f"take {take_id}: {exc}")
                return
            self.state.take_state = "uploaded"
            self.state.note(f"take {take_id} uploaded and confirmed (sha256 {job.sha256[:12]}…)")
        finally:
            self._uploads.discard(take_id)

    async def _recover_takes(self) -> None:
        from tutti.client.takestore import TakeStore

        assert self.info is not None
        store = TakeStore()
        recovered = await asyncio.to_thread(store.recover)
        for t in recovered:
            self.state.note(f"recovered take {t.take_id} left unfinished by an earlier run")
        pending = await asyncio.to_thread(store.pending)
        mine = [
            t for t in pending if t.server == self.base_url and t.session == self.info.session_id
        ]
        if len(pending) > len(mine):
            self.state.note(
                f"{len(pending) - len(mine)} unsent take(s) belong to other sessions; kept on disk"
            )
        for t in mine:
            self.state.note(f"uploading take {t.take_id} from an earlier run")
            await self._upload(t)
