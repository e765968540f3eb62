"""The singer's live view in the terminal.

:class:`LiveState` is plain data that ``tutti join`` updates; :class:`LiveView` draws it —
with ``rich.live`` on a terminal (connection and clock quality, countdown, bar:beat, an input
level meter with a clip warning, take and upload state), or as plain lines when stdout is
not a TTY (one line per *change* of connection, take or upload state, so logs stay readable).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["LiveState", "LiveView", "meter"]

#: Meter range (dBFS): the bar is empty at or below this level.
METER_FLOOR_DB = -60.0


@dataclass
class LiveState:
    """What the singer sees.  Times are local ``time.monotonic()`` seconds."""

    server: str = ""
    name: str = ""
    part: str = ""
    connection: str = "connecting"  # connecting | connected | reconnecting | refused | closed
    clock_error_ms: float | None = None
    clock_rtt_ms: float | None = None
    backing: str = ""  # e.g. "cached", "42 %", "ready"
    take_id: str = ""
    # waiting | armed | count-in | recording | recorded | uploading | uploaded | failed
    take_state: str = "waiting"
    t0_local: float | None = None
    beat_label: str = ""  # "bar:beat" while a take runs
    words: str = ""  # the line of the song's words sung now, and the next one
    words_next: str = ""
    rms_db: float = -120.0
    peak_db: float = -120.0
    clipped_until: float = 0.0
    overflows: int = 0
    underflows: int = 0
    lost_frames: int = 0  # input frames this singer's own stream lost (frame accounting)
    dropouts: int = 0
    rate: int = 48000
    upload: str = ""  # e.g. "3.1 / 5.0 MB", "retrying (3)", "uploaded ✓"
    message: str = ""
    history: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """A one-off message (shown as the last line, printed once without a TTY)."""
        self.message = text
        self.history.append(text)


def meter(db: float, width: int = 30) -> str:
    """A text bar for a level in dBFS (``METER_FLOOR_DB`` → empty, 0 dBFS → full)."""
    frac = min(1.0, max(0.0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB))
    n = int(round(frac * width))
    return "█" * n + "·" * (width - n)


class LiveView:
    """Draws a :class:`LiveState` about ``fps`` times a second until stopped.

    Parameters
    ----------
    state : LiveState
    stream : file, optional
        Where to draw (default stdout).  A TTY gets the rich view, anything else plain lines.
    now : callable
        Local clock (``time.monotonic``).
    """

    def __init__(
        self,
        state: LiveState,
        *,
        stream: TextIO | None = None,
        fps: float = 10.0,
        now: Callable[[], float] = time.monotonic,
        force_plain: bool = False,
    ) -> None:
        self.state = state
        self.stream = stream or sys.stdout
        self.fps = fps
        self.now = now
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) and not force_plain
        self._task: asyncio.Task[None] | None = None
        self._last_plain: tuple[str, ...] = ()
        self._last_words = ""
        self._printed_msgs = 0

    # ------------------------------------------------------------------ rich
    def render(self) -> Group:
        """The rich renderable for the current state."""
        s = self.state
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold")
        t.add_column()
        conn_style = {"connected": "green", "reconnecting": "yellow"}.get(s.connection, "red")
        t.add_row(
            "server", Text(f"{s.server}  ", style="dim") + Text(s.connection, style=conn_style)
        )
        t.add_row("singer", f"{s.name} ({s.part})")
        if s.clock_error_ms is not None:
            style = (
                "green" if s.clock_error_ms < 1.0 else "yellow" if s.clock_error_ms < 5 else "red"
            )
            t.add_row(
                "clock",
                Text(f"±{s.clock_error_ms:.2f} ms", style=style)
                + Text(f"  (rtt {s.clock_rtt_ms or 0:.1f} ms)", style="dim"),
            )
        if s.backing:
            t.add_row("backing", s.backing)
        t.add_row("take", self._take_line())
        if self._singing() and (s.words or s.words_next):
            t.add_row("words", Text(s.words, style="bold") + Text(f"\n{s.words_next}", style="dim"))
        level_style = "red" if self.now() < s.clipped_until else "cyan"
        lvl = Text(meter(s.peak_db), style=level_style) + Text(f" {s.peak_db:6.1f} dBFS")
        if self.now() < s.clipped_until:
            lvl += Text("  CLIP — turn the mic down", style="bold red")
        t.add_row("input", lvl)
        if s.dropouts:
            lost_ms = s.lost_frames / max(1, s.rate) * 1000
            t.add_row(
                "dropouts",
                Text(
                    f"{s.dropouts} ({lost_ms:.0f} ms of audio lost; the take stays in time)",
                    style="yellow",
                ),
            )
        if s.upload:
            t.add_row("upload", s.upload)
        parts: list[Table | Text] = [t]
        if s.message:
            parts.append(Text(s.message, style="italic"))
        return Group(*parts)

    def _singing(self) -> bool:
        return self.state.take_state in ("count-in", "recording")

    def _take_line(self) -> str:
        s = self.state
        if s.take_state in ("armed", "count-in") and s.t0_local is not None:
            left = s.t0_local - self.now()
            if left > 0:
                return f"{s.take_id}  starts in {left:4.1f} s"
        if s.take_state in ("count-in", "recording") and s.beat_label:
            return f"{s.take_id}  {s.take_state}  {s.beat_label}"
        return f"{s.take_id}  {s.take_state}".strip()

    # ------------------------------------------------------------------ plain
    def plain_lines(self) -> list[str]:
        """Lines to print now (only what changed since the last call)."""
        s = self.state
        out: list[str] = []
        key = (s.connection, s.take_id, s.take_state, s.backing, s.upload.split(" ")[0])
        if key != self._last_plain:
            clock = f" clock ±{s.clock_error_ms:.2f} ms" if s.clock_error_ms is not None else ""
            out.append(
                f"[{s.connection}]{clock} take={s.take_id or '-'} {s.take_state}"
                + (f" backing={s.backing}" if s.backing else "")
                + (f" upload={s.upload}" if s.upload else "")
            )
            self._last_plain = key
        if self._singing() and s.words and s.words != self._last_words:
            out.append(f"♪ {s.words}")
        self._last_words = s.words if self._singing() else ""
        while self._printed_msgs < len(s.history):
            out.append(s.history[self._printed_msgs])
            self._printed_msgs += 1
        return out

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        if self.tty:
            console = Console(file=self.stream)
            with Live(
                self.render(), console=console, refresh_per_second=self.fps, transient=False
            ) as live:
                while True:
                    live.update(self.render())
                    await asyncio.sleep(1.0 / self.fps)
        else:
            while True:
                self.flush_plain()
                await asyncio.sleep(1.0 / self.fps)

    def flush_plain(self) -> None:
        """Print pending plain lines (no TTY mode)."""
        for line in self.plain_lines():
            print(line, file=self.stream, flush=True)

    def start(self) -> None:
        """Start drawing (needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Coroutine: stop drawing; prints the last plain lines."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if not self.tty:
            self.flush_plain()
