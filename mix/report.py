"""What ``tutti mix`` tells the person at the terminal: progress, the singers' table, each
singer's losses and the result."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tutti.takeformat import Gap, Recording

if TYPE_CHECKING:
    from tutti.audio.mixdown import MasterReport
    from tutti.mix.inputs import Input

__all__ = ["StageProgress", "duration", "timeline_time", "report"]


class StageProgress:
    """A rich progress bar on a terminal; piped or logged, one line as a stage starts and one
    as it ends (a log wants the stages, not every file)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rich = console.is_terminal
        self._bar: Progress | None = None

    @contextmanager
    def stage(self, label: str, total: int) -> Iterator[Callable[[str], None]]:
        if self.rich:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            ) as bar:
                task = bar.add_task(label, total=total)
                yield lambda _detail: bar.advance(task)
        else:
            started = time.perf_counter()
            self._line(f"{label}: {total} to do")
            yield lambda _detail: None
            self._line(f"{label}: done in {time.perf_counter() - started:.1f} s")

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)


#: Gaps and slips listed one by one per singer below the table; the rest are counted.
_LISTED_LOSSES = 5


def duration(frames: int, rate: int) -> str:
    """A length for people: "300 ms", "2.0 s"."""
    secs = frames / rate
    return f"{1000 * secs:.0f} ms" if secs < 1.0 else f"{secs:.1f} s"


def timeline_time(frame: int, rate: int) -> str:
    """A timeline position for people: "2:41" (minutes:seconds from the count-in)."""
    whole = int(abs(frame) // rate)
    return f"{'-' if frame < 0 else ''}{whole // 60}:{whole % 60:02d}"


def _lost_cell(rec: Recording) -> str:
    """The table's "lost" cell: the input this recorder lost (silence in the file).  A take
    without gaps shows its overflow/underflow counts, if any, for information only: host APIs
    such as JACK report them for the whole server, not for this singer."""
    if rec.gaps:
        n = len(rec.gaps)
        return f"{n} gap{'s' if n > 1 else ''}, {rec.lost_frames / rec.rate:.2f} s"
    if rec.overflows or rec.underflows:
        return f"— ({rec.overflows}/{rec.underflows} device xruns)"
    return "—"


def _slip_warning(rec: Recording) -> list[str]:
    """A table warning when the singer's headset skipped (they sang on after a jump)."""
    if not rec.slips:
        return []
    total = sum(g.frames for g in rec.slips)
    return [f"headset skipped {len(rec.slips)}× ({duration(total, rec.rate)})"]


def _loss_lines(item: Input) -> list[str]:
    """One line per gap and headset slip of a singer (the first few; then a count)."""
    rec = item.rec

    def line(what: str, g: Gap) -> tuple[int, str]:
        return g.at, f"{what} {duration(g.frames, rec.rate)} at {timeline_time(g.at, rec.rate)}"

    events = sorted(
        [line("input lost", g) for g in rec.gaps] + [line("headset skipped", g) for g in rec.slips]
    )
    lines = [f"{item.name}: {text}" for _, text in events[:_LISTED_LOSSES]]
    if len(events) > _LISTED_LOSSES:
        lines.append(f"{item.name}: … and {len(events) - _LISTED_LOSSES} more gaps or skips")
    return lines


def report(
    console: Console, items: list[Input], master: MasterReport, out: Path, rate: int, secs: float
) -> None:
    """The singers' table, each singer's gaps and skips, and the master's figures."""
    table = Table(title="singers (offset: timeline position of the recording's sample 0)")
    cols = ("singer", "part", "LUFS", "gain dB", "offset", "drift ppm", "lost", "warnings")
    for col in cols:
        table.add_column(
            col,
            justify="left" if col in ("singer", "part", "lost", "warnings") else "right",
            no_wrap=col == "lost",  # "3 gaps, 0.35 s" reads as one thing
        )
    for i in items:
        r = i.report
        assert r is not None
        loud = r.analysis.loudness_lufs
        lufs = f"{loud:.1f}" if math.isfinite(loud) else "-inf"
        gain = "muted" if r.muted else f"{r.match_db + r.gain_db:+.1f}"
        drift_s = "—" if i.drift_ppm is None else f"{i.drift_ppm:+.1f}"
        if i.drift_from:
            drift_s += f" ({i.drift_from})"
        warn = ", ".join([*r.warnings, *i.warnings, *_slip_warning(i.rec)]) or "—"
        offset = f"{i.timeline_start} fr = {1000.0 * i.timeline_start / rate:.1f} ms"
        # names come from take.json: Text, so "[alto]" is shown and "[/]" is no markup error
        table.add_row(
            Text(i.name),
            Text(i.rec.part),
            lufs,
            gain,
            offset,
            drift_s,
            Text(_lost_cell(i.rec)),
            Text(warn),
        )
    if not console.is_terminal:  # a pipe or a log: 80 columns would squeeze the warnings
        console.width = max(console.width, 132)
    console.print(table)
    for i in items:
        for line in _loss_lines(i):
            console.print(line, highlight=False, soft_wrap=True)
    for i in items:  # bleed removal: the leak measured and removed, or why it was kept
        if i.bleed:
            console.print(
                f"{i.name}: bleed {i.bleed}", markup=False, highlight=False, soft_wrap=True
            )
    console.print(
        f"wrote {out}: {master.frames / rate:.1f} s, {master.output_lufs:.2f} LUFS "
        f"(master gain {master.gain_db:+.2f} dB), true peak {master.true_peak_dbtp:.2f} dBTP, "
        f"in {secs:.1f} s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for w in master.warnings:
        console.print(f"warning: {w}", markup=False, highlight=False, soft_wrap=True)
