"""What ``tutti mix`` tells the person at the terminal: progress, the singers' table, each
singer's losses and the result.

On a terminal that is the rich progress bars and the whole report.  Piped or logged, a handful
of lines whatever the number of singers — what is mixed, each stage, a summary of the warnings
and the result — and the whole report goes to a file beside the mix (:func:`report_path`)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tutti.audio.daw import NAME_MAX
from tutti.takeformat import Gap, Recording

if TYPE_CHECKING:
    from tutti.audio.mixdown import MasterReport
    from tutti.mix.inputs import Input

__all__ = [
    "StageProgress",
    "duration",
    "timeline_time",
    "report",
    "report_path",
    "report_text",
    "start_line",
]


class StageProgress:
    """A rich progress bar on a terminal; piped or logged, one line as a stage starts (a log
    wants the stages, not every file; the result line gives the time of the whole mix)."""

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
            _line(self.console, f"{label}: {total} to do")
            yield lambda _detail: None


def _line(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _plain(text: str) -> str:
    """Text from take.json or a path on one line: control characters and lone surrogates
    escaped (a name with a newline must not add lines to a log)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


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


def report_path(out: Path) -> Path:
    """The file beside mix ``out`` that holds its whole report (``mix.flac`` →
    ``mix.report.txt``, as ``mix.rpp`` and ``mix-stems/`` are named; a name that would be
    too long for the file system loses the end of ``out``'s stem)."""
    suffix = ".report.txt"
    stem = out.stem.encode("utf-8", "surrogateescape")[: NAME_MAX - len(suffix)]
    return out.with_name(stem.decode("utf-8", "ignore") + suffix)  # no half character


def start_line(title: str, take_dir: Path, items: list[Input], backings: int, out: Path) -> str:
    """What is mixed, in one line: the recordings (how many muted), the backing tracks, the
    take (its title, its folder) and the output."""
    n = len(items)
    what = f"{n} recording{'' if n == 1 else 's'}"
    muted = sum(1 for i in items if i.mute)
    if muted:
        what += f" ({muted} muted)"
    if backings:
        what += f" and {backings} backing track{'' if backings == 1 else 's'}"
    return _plain(f'mixing {what} of take "{title}" ({take_dir}) into {out}')


def _table(items: list[Input], rate: int) -> Table:
    """The singers' table: one row per recording."""
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
        warn = ", ".join(_warnings(i)) or "—"
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
    return table


def _warnings(item: Input) -> list[str]:
    """A singer's warnings as the table's "warnings" cell lists them."""
    assert item.report is not None
    return [*item.report.warnings, *item.warnings, *_slip_warning(item.rec)]


def _result_line(out: Path, master: MasterReport, rate: int, secs: float) -> str:
    return (
        f"wrote {out}: {master.frames / rate:.1f} s, {master.output_lufs:.2f} LUFS "
        f"(master gain {master.gain_db:+.2f} dB), true peak {master.true_peak_dbtp:.2f} dBTP, "
        f"in {secs:.1f} s"
    )


def _whole(
    console: Console, items: list[Input], master: MasterReport, rate: int, result: str
) -> None:
    """The whole report: the singers' table, each singer's gaps and skips and bleed, the
    ``result`` line and the master's warnings."""
    console.print(_table(items, rate))
    for i in items:
        for line in _loss_lines(i):
            _line(console, line)  # no markup: a name may hold "[/]"
    for i in items:  # bleed removal: the leak measured and removed, or why it was kept
        if i.bleed:
            _line(console, f"{i.name}: bleed {i.bleed}")
    _line(console, result)
    for w in master.warnings:
        _line(console, f"warning: {w}")


def report_text(
    start: str, items: list[Input], master: MasterReport, out: Path, rate: int, secs: float
) -> str:
    """The whole report as plain text for :func:`report_path`: ``start`` (the
    :func:`start_line`), then what :func:`report` shows on a terminal, each singer's row
    on one line however long its warnings."""
    buf = io.StringIO()
    # wide enough that no cell wraps: a row per singer, whole, for grep
    console = Console(file=buf, width=100_000, color_system=None, force_terminal=False)
    _line(console, start)
    _whole(console, items, master, rate, _result_line(out, master, rate, secs))
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())


#: Most singers named in the piped summary of warnings, and its widest line (characters) when
#: more than one is named; the rest are counted.
_NAMED, _SUMMARY_WIDTH = 3, 160


def _summary(items: list[Input]) -> str | None:
    """One line for a log: how many singers have warnings (lost input counts), and the first
    few of them, those whose sound suffers first (silent or clipped, then lost input or a
    skipping headset), each with its first warning; None when no singer has any."""
    noted = []
    for k, i in enumerate(items):
        assert i.report is not None
        lost = []
        if i.rec.gaps:
            n, secs = len(i.rec.gaps), i.rec.lost_frames / i.rec.rate
            lost = [f"lost {secs:.2f} s of input ({n} gap{'s' if n > 1 else ''})"]
        notes = [*i.report.warnings, *lost, *_slip_warning(i.rec), *i.warnings]
        if notes:
            worst = (not i.report.warnings, not (i.rec.gaps or i.rec.slips), k)
            more = f", +{len(notes) - 1} more" if len(notes) > 1 else ""
            noted.append((worst, f"{_short(i.name, 30)}: {_short(notes[0], 50)}{more}"))
    if not noted:
        return None
    noted.sort()
    head = f"warnings for {len(noted)} of {len(items)} singers — "
    shown = [noted[0][1]]
    for _, text in noted[1:_NAMED]:
        rest = len(noted) - len(shown) - 1
        tail = f"; and {rest} more" if rest else ""
        if len(head + "; ".join([*shown, text]) + tail) > _SUMMARY_WIDTH:
            break
        shown.append(text)
    line = head + "; ".join(shown)
    if len(noted) > len(shown):
        line += f"; and {len(noted) - len(shown)} more"
    return _plain(line)


def report(
    console: Console,
    items: list[Input],
    master: MasterReport,
    out: Path,
    rate: int,
    secs: float,
    report_file: Path,
) -> None:
    """On a terminal, the whole report (:func:`report_text` without its first line); piped
    or logged, a line summing up the singers' warnings, the result line and the master's
    warnings (a few at most).  The result line names ``report_file`` in both."""
    result = f"{_result_line(out, master, rate, secs)}; the whole report in {report_file}"
    if console.is_terminal:
        _whole(console, items, master, rate, result)
        return
    summary = _summary(items)
    if summary is not None:
        _line(console, summary)
    _line(console, _plain(result))
    for w in master.warnings:
        _line(console, f"warning: {w}")
