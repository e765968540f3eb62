"""``tutti lead watch``: the leader's live view of the roster over Socket.IO.

Three layers, kept apart:

- :class:`RosterState` — pure: parses the server's leader events (``Ev.ROSTER``,
  ``Ev.PARTICIPANT``, ``Ev.LEVELS``, ``Ev.CLOCKS``, take events) into their
  :mod:`tutti.wire` records, keeps the roster entries and returns the plain-text lines
  worth telling the leader (joined, left, calibrated, dropouts, take state).
- :func:`render` — the state as a rich renderable: a table of names, parts, connection,
  calibrated latency, clock quality, an input level meter, and xrun warnings.
- :func:`watch` — the coroutine: connects as the leader (``auth={"token", "protocol"}``), shows
  the view (rich ``Live`` on a terminal; plain lines otherwise), and reads single keys from the
  terminal in cbreak mode — ``s`` starts a take (arming one if needed), ``x`` stops it, ``q``
  quits.  Without a terminal on stdin, keys are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import sys
import termios
import time
import tty
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import socketio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tutti import wire
from tutti.client.leader_api import LeaderClient, LeaderError

__all__ = ["RosterState", "render", "level_meter", "watch"]

#: Seconds between two summaries of one singer's ongoing dropouts.
DROPOUT_SUMMARY_S = 30.0
#: Meter range: dBFS at the left end of the bar.
METER_FLOOR_DB = -60.0
METER_WIDTH = 20


def level_meter(rms_db: float | None, peak_db: float | None, width: int = METER_WIDTH) -> Text:
    """A horizontal meter: filled to the RMS level, ``|`` at the peak (dBFS, −60…0)."""

    def pos(db: float | None) -> int:
        if db is None:
            return 0
        frac = (max(METER_FLOOR_DB, min(0.0, db)) - METER_FLOOR_DB) / -METER_FLOOR_DB
        return round(frac * width)

    fill, peak = pos(rms_db), pos(peak_db)
    style = "green" if fill < 0.75 * width else ("yellow" if fill < 0.95 * width else "red")
    cells = ["█" if i < fill else " " for i in range(width)]
    if 0 < peak <= width:
        cells[peak - 1] = "|" if peak > fill else cells[peak - 1]
    return Text("".join(cells), style=style)


@dataclass
class RosterState:
    """What the leader sees, built from the server's leader events.  Pure (no I/O).

    Each event is parsed once, here at the edge, into its :mod:`tutti.wire` record; a payload
    that does not match the contract is told in one line and changes nothing."""

    participants: dict[str, wire.RosterEntry] = field(default_factory=dict)
    rate: int | None = None
    parts: tuple[str, ...] = ()  # the session's voice parts, in the leader's order
    title: str = ""
    code: str = ""
    take_id: str | None = None
    take_state: str = "idle"
    take_t0_local: float | None = None  # local monotonic time of timeline sample 0
    closed: bool = False
    connected: bool = False
    log: deque[str] = field(default_factory=lambda: deque(maxlen=6))
    now: float = 0.0  # local monotonic time of the event being applied
    # per singer: (dropouts, lost frames) last told, and when
    _told: dict[str, tuple[int, int, float]] = field(default_factory=dict)

    def _note(self, line: str) -> list[str]:
        self.log.append(line)
        return [line]

    def _merge(self, new: wire.RosterEntry) -> list[str]:
        pid = new.participant_id
        old = self.participants.get(pid)
        self.participants[pid] = new
        who = f"{new.name} ({new.part})"
        lines: list[str] = []
        if old is None:
            state = "connected" if new.connected else "not connected"
            lines += self._note(f"{who} joined, {state}")
        else:
            if old.connected != new.connected:
                lines += self._note(f"{who} {'reconnected' if new.connected else 'disconnected'}")
            if old.latency_frames != new.latency_frames and new.latency_frames is not None:
                lines += self._note(
                    f"{who} calibrated: {new.latency_frames} frames ({new.latency_source or '?'})"
                )
            lines += self._dropouts(pid, who, new)
        return lines

    def _dropouts(self, pid: str, who: str, p: wire.RosterEntry) -> list[str]:
        """A singer's own dropouts (counted from each take's start): told the first time,
        then summed up at most every DROPOUT_SUMMARY_S while they go on (never a line per
        level report)."""
        count, lost = p.dropouts, p.lost_frames
        told_count, told_lost, when = self._told.get(pid, (0, 0, -math.inf))
        if count < told_count:  # a new take: the singer counts from zero again
            told_count, told_lost, when = 0, 0, -math.inf
            self._told[pid] = (0, 0, when)
        if count <= told_count or (told_count and self.now - when < DROPOUT_SUMMARY_S):
            return []
        self._told[pid] = (count, lost, self.now)
        ms = (lost - told_lost) / (self.rate or 48000) * 1000
        if not told_count:
            return self._note(
                f"WARNING {who}: audio dropout on their computer, {ms:.0f} ms lost "
                "(their take stays in time)"
            )
        return self._note(
            f"WARNING {who}: {count - told_count} more dropouts, {ms:.0f} ms lost ({count} in all)"
        )

    def apply(self, event: str, data: Any, now: float | None = None) -> list[str]:
        """Apply one server event; returns plain-text lines describing what changed."""
        self.now = time.monotonic() if now is None else now
        kind = wire.SERVER_EVENTS.get(event)
        if kind is None:
            return []
        try:
            record = kind.from_dict(data, event)
        except wire.WireError as exc:
            return self._note(f"the server sent something this client does not read: {exc}")
        return self._apply(record)

    def _apply(self, ev: wire.Record) -> list[str]:  # noqa: C901 - one branch per event
        if isinstance(ev, wire.Welcome):
            settings = ev.session.settings
            self.rate, self.title, self.parts = settings.rate, settings.title, settings.parts
            code = f" (join code {self.code})" if self.code else ""
            return self._note(f"watching {self.title or 'session'}{code}")
        if isinstance(ev, wire.Roster):
            return [line for p in ev.participants for line in self._merge(p)]
        if isinstance(ev, wire.RosterEntry):
            return self._merge(ev)
        if isinstance(ev, wire.Levels):
            return self._apply_levels(ev)
        if isinstance(ev, wire.Clocks):
            for pid, clock in ev.clocks.items():
                if (p := self.participants.get(pid)) is not None:
                    self.participants[pid] = dataclasses.replace(p, clock=clock)
            return []
        if isinstance(ev, wire.TakeArmed):
            self.take_id, self.take_state, self.take_t0_local = ev.take_id, "armed", None
            return self._note(f"take {self.take_id} armed")
        if isinstance(ev, wire.TakeStart):
            self.take_id, self.take_state = ev.take_id, "running"
            self.take_t0_local = self.now + (ev.t0 - ev.sent_at)
            return self._note(f"take {self.take_id} started")
        if isinstance(ev, wire.TakeStop):
            self.take_id, self.take_state = ev.take_id, "stopped"
            return self._note(f"take {self.take_id} stopped; singers uploading")
        if isinstance(ev, wire.TakeUpdates):
            return self._note(f"take {ev.take_id}: {self._who(ev.participant_ids)} {ev.state}")
        if isinstance(ev, wire.SessionClosed):
            self.closed = True
            return self._note("the session was closed")
        return []

    def _who(self, ids: tuple[str, ...], named: int = 3) -> str:
        """``Ann``, ``Ann and Ben``, ``Ann, Ben, Cleo and 4 others``: short for a choir."""
        names = [p.name if (p := self.participants.get(i)) else i for i in ids[:named]]
        if len(ids) > named:
            more = len(ids) - named
            return f"{', '.join(names)} and {more} other{'s' if more > 1 else ''}"
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"

    def _apply_levels(self, ev: wire.Levels) -> list[str]:
        lines: list[str] = []
        for pid, lv in ev.levels.items():
            p = self.participants.get(pid)
            if p is None:
                continue
            lines += self._merge(
                dataclasses.replace(
                    p,
                    level=wire.LiveLevel(lv.rms_db, lv.peak_db, lv.clipped),
                    overflows=lv.overflows,
                    underflows=lv.underflows,
                    lost_frames=lv.lost_frames,
                    dropouts=lv.dropouts,
                    skipped_frames=lv.skipped_frames,
                )
            )
        return lines

    def level_line(self) -> str:
        """One plain line with every connected singer's level (for non-terminal output)."""
        parts = []
        for p in self.participants.values():
            if p.level is not None:
                clip = " CLIP" if p.level.clipped else ""
                parts.append(f"{p.name} {p.level.rms_db:.0f} dB{clip}")
        return "levels: " + ", ".join(parts) if parts else ""


def _latency(p: wire.RosterEntry, rate: int | None) -> Text:
    lat = p.latency_frames
    if lat is None:
        return Text("not calibrated", style="yellow")
    ms = f" {lat / rate * 1000:.1f} ms" if rate else ""
    src = p.latency_source or "?"
    return Text(f"{lat} fr{ms} ({src})", style="green" if src == "measured" else "yellow")


def _clock(p: wire.RosterEntry) -> Text:
    if p.clock is None:
        return Text("not synced", style="yellow")
    style = ("green", "yellow", "red")[wire.clock_band(p.clock.error_bound)]
    return Text(f"±{p.clock.error_bound * 1000:.2f} ms", style=style)


def render(state: RosterState, now: float | None = None) -> RenderableType:
    """The whole watch screen for ``state``."""
    now = time.monotonic() if now is None else now
    head = Text.assemble(
        (state.title or "tutti session", "bold"),
        f"   join code {state.code}   " if state.code else "   ",
        (
            "connected" if state.connected else "reconnecting…",
            "green" if state.connected else "red",
        ),
    )
    take = f"take: {state.take_state}"
    if state.take_id:
        take += f" ({state.take_id})"
    if state.take_state == "running" and state.take_t0_local is not None:
        dt = state.take_t0_local - now
        take += f" — count-in in {dt:.1f} s" if dt > 0 else f" — recording {-dt:.0f} s"
    t = Table(show_header=True, header_style="bold", expand=False)
    for col in ("name", "part", "conn", "latency", "clock", "input level", "dB", "dropouts"):
        t.add_column(col)
    order = {part: i for i, part in enumerate(state.parts)}
    ordered = sorted(
        state.participants.values(),
        key=lambda p: (order.get(p.part, len(order)), p.part, p.name),
    )
    for p in ordered:
        lv = p.level
        db = Text(f"{lv.rms_db:5.1f}" if lv is not None else "  —")
        if lv is not None and lv.clipped:
            db.append(" CLIP", style="bold red")
        xr = p.dropouts
        t.add_row(
            escape(p.name),
            escape(p.part),
            Text("●", style="green") if p.connected else Text("○", style="red"),
            _latency(p, state.rate),
            _clock(p),
            level_meter(lv.rms_db if lv else None, lv.peak_db if lv else None),
            db,
            Text(f"{xr} ⚠", style="bold yellow") if xr else Text("0"),
        )
    if not state.participants:
        t.add_row("nobody yet", "", "", "", "", "", "", "")
    keys = (
        Text("s", style="bold")
        .append(" start take   ")
        .append("x", style="bold")
        .append(" stop   ")
        .append("q", style="bold")
        .append(" quit")
    )
    log = Text("\n".join(state.log), style="dim")
    return Group(head, Text(take), t, log, keys)


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


async def watch(
    server: str,
    token: str,
    *,
    lead_s: float | None = None,
    duration: float | None = None,
    stdin_fd: int | None = None,
    console: Console | None = None,
) -> int:
    """Coroutine: show the live view until ``q``, Ctrl-C, ``duration`` s, or the session closes.

    Parameters
    ----------
    server, token : str
        Server URL and leader token.
    lead_s : float or None
        Seconds from a take's start request to its count-in (server default when ``None``).
    duration : float or None
        Quit after this many seconds (``None``: run until asked to quit).
    stdin_fd : int or None
        Where keys come from (default: ``sys.stdin``); ignored unless it is a terminal.
    console : rich Console or None
        Where to draw (default: stdout).

    Returns
    -------
    int
        Exit code: 0; 1 when the server refused the connection or the session is closed;
        3 when the server cannot be reached.
    """
    view = LeaderWatch(server, token, lead_s=lead_s, console=console)
    return await view.run(duration=duration, stdin_fd=stdin_fd)


#: The events the live view follows.
_WATCHED = (
    wire.Ev.WELCOME,
    wire.Ev.ROSTER,
    wire.Ev.PARTICIPANT,
    wire.Ev.LEVELS,
    wire.Ev.CLOCKS,
    wire.Ev.TAKE_ARMED,
    wire.Ev.TAKE_START,
    wire.Ev.TAKE_STOP,
    wire.Ev.TAKE_UPDATES,
    wire.Ev.SESSION_CLOSED,
)


class LeaderWatch:
    """``tutti lead watch``: the session's live view, and keys to start and stop takes.

    Lifecycle: made with the server, token and console; :meth:`run` checks the session over
    HTTP, connects the Socket.IO client, shows the view until asked to quit, and disconnects
    and closes everything it opened on every way out.  One :meth:`run` per object.
    """

    def __init__(
        self,
        server: str,
        token: str,
        *,
        lead_s: float | None = None,
        console: Console | None = None,
    ) -> None:
        self.server, self.token, self.lead_s = server, token, lead_s
        self.out = console or Console(highlight=False)
        self.live_mode = self.out.is_terminal
        self.state = RosterState()
        self.quit = asyncio.Event()
        self._refused: list[str] = []
        self._actions: set[asyncio.Task[None]] = set()
        self._api: LeaderClient | None = None
        self.sio = socketio.AsyncClient(
            reconnection=True, reconnection_delay=0.5, reconnection_delay_max=5.0
        )
        for ev in _WATCHED:
            self.sio.on(ev, self._handler(ev))
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("connect_error", self._on_connect_error)

    # -- what the server sends --------------------------------------------------------------

    def _say(self, lines: list[str]) -> None:
        """Print event lines when there is no live panel to show them in."""
        if not self.live_mode:
            for line in lines:
                self.out.print(line, markup=False, highlight=False, soft_wrap=True)

    def _handler(self, event: str) -> Callable[[Any], Awaitable[None]]:
        async def handler(data: Any = None) -> None:
            self._say(self.state.apply(event, data))
            if self.state.closed:
                self.quit.set()

        return handler

    async def _on_connect(self) -> None:
        self.state.connected = True

    async def _on_disconnect(self, *_a: Any) -> None:
        self.state.connected = False
        self._say(["disconnected from the server; reconnecting…"])

    async def _on_connect_error(self, data: Any = None) -> None:
        self._refused.append(wire.connect_refusal(data) or "connection refused")

    # -- keys ----------------------------------------------------------------------------------

    async def _act(self, key: str) -> None:
        from tutti.client.lead import start_take, stop_take

        assert self._api is not None
        try:
            if key == "s":
                started = await start_take(self._api, None, self.lead_s)
                self._say(self.state._note(f"requested start of take {started.take_id}"))
            elif key == "x":
                stopped = await stop_take(self._api, None)
                self._say(self.state._note(f"requested stop of take {stopped.take_id}"))
        except LeaderError as exc:
            self._say(self.state._note(f"cannot {'start' if key == 's' else 'stop'}: {exc}"))

    def _on_key(self, fd: int) -> None:
        try:
            ch = _read1(fd)
        except OSError:
            ch = ""
        if ch in ("q", "Q", "") or ch == "\x04":
            self.quit.set()
        elif ch in ("s", "S", "x", "X"):
            task = asyncio.get_running_loop().create_task(self._act(ch.lower()))
            self._actions.add(task)
            task.add_done_callback(self._actions.discard)

    # -- the run -------------------------------------------------------------------------------

    async def run(self, *, duration: float | None = None, stdin_fd: int | None = None) -> int:
        """Show the view until quit; the exit code (see :func:`watch`)."""
        async with LeaderClient(self.server, self.token) as api:
            self._api = api
            refused = await self._check_session(api)
            if refused is not None:
                return refused
            fd = _stdin_fd() if stdin_fd is None else stdin_fd
            keys = fd >= 0 and _isatty(fd)
            try:
                if not await self._connect():
                    return 1
                if not self.live_mode:
                    hint = (
                        "keys: s start, x stop, q quit"
                        if keys
                        else "no terminal on stdin, keys ignored"
                    )
                    self.out.print(f"watching; {hint}", markup=False)
                with contextlib.ExitStack() as stack:
                    if keys:
                        loop = asyncio.get_running_loop()
                        stack.enter_context(_cbreak(fd))
                        loop.add_reader(fd, self._on_key, fd)
                        stack.callback(loop.remove_reader, fd)
                    await self._show(duration)
                for task in list(self._actions):
                    with contextlib.suppress(Exception):
                        await task
                return 0
            finally:
                await self.sio.disconnect()

    async def _check_session(self, api: LeaderClient) -> int | None:
        """None if the session is open; else the exit code, having said why."""
        try:
            info = await api.session()
        except LeaderError as exc:
            self.out.print(f"tutti lead watch: {exc}", markup=False)
            return 3 if exc.code in ("unreachable", "not_tutti") else 1
        self.state.code = info.code or ""
        if info.state == "closed":
            self.out.print(
                "tutti lead watch: this session is closed; create a new one with "
                "`tutti lead create`",
                markup=False,
            )
            return 1
        return None

    async def _connect(self) -> bool:
        """Connect the live events; False (having said why) if the server refused."""
        auth = wire.ConnectAuth(self.token, wire.PROTOCOL_VERSION).to_dict()
        try:
            await self.sio.connect(self.server, auth=auth, wait_timeout=10)
        except socketio.exceptions.ConnectionError as exc:
            detail = self._refused[-1] if self._refused else str(exc)
            self.out.print(
                f"tutti lead watch: the server refused the connection: {detail}", markup=False
            )
            return False
        return True

    async def _show(self, duration: float | None) -> None:
        """Redraw the panel (a terminal) or print level lines (a pipe) until quit."""
        deadline = None if duration is None else time.monotonic() + duration
        last_levels = ""
        next_level_line = time.monotonic() + 2.0
        live = (
            Live(render(self.state), console=self.out, auto_refresh=False, transient=False)
            if self.live_mode
            else None
        )
        with live if live is not None else contextlib.nullcontext():
            while not self.quit.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.quit.wait(), 0.1 if live else 0.25)
                if live is not None:
                    live.update(render(self.state), refresh=True)
                elif time.monotonic() >= next_level_line:
                    next_level_line = time.monotonic() + 2.0
                    line = self.state.level_line()
                    if line and line != last_levels:
                        self.out.print(line, markup=False, highlight=False)
                        last_levels = line


def _stdin_fd() -> int:
    try:
        return sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):  # closed or replaced (pytest capture)
        return -1


def _isatty(fd: int) -> bool:
    try:
        import os

        return os.isatty(fd)
    except OSError:
        return False


def _read1(fd: int) -> str:
    import os

    return os.read(fd, 1).decode("utf-8", "replace")
