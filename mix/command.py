"""``tutti mix``: mix a take folder into one choir recording (and stems, and DAW projects).

This is the I/O edge of the mixdown: it checks the take folder — ``take.json`` and every file
it names (:mod:`tutti.mix.folder`) — before anything is written, runs the pure pipeline of
:mod:`tutti.audio.mixdown`, and writes every output into a scratch folder from which they are
moved into place only when all are complete (:mod:`tutti.mix.outputs`) — a failed or interrupted mix
(an error, Ctrl-C, SIGTERM) leaves nothing behind.

It streams: memory does not grow with the length of the take or the number of recordings.

1. **Pass 1** (``--jobs`` threads, one recording each): every recording and backing track is
   decoded once, in blocks, resampled to the take's rate if needed (soxr, streaming), measured
   (loudness, peak, clipping) and written as raw float32 to a scratch folder beside the output
   (:mod:`tutti.mix.decode`, :mod:`tutti.mix.scratch`).  For a separate-clock recording the
   drift comes from its clock map, or else from markers searched in the first and last seconds
   of that file, and a drifting recording is resampled (streaming) into a new scratch file; its
   input gaps are then faded in place (:mod:`tutti.mix.dedrift`).  When a separate-clock
   recording has no map, every recording is read first and the drift is measured against
   the program's bleed and the other singers' onsets (:mod:`tutti.mix.driftsense`).  What its
   headset leaked into its microphone (the click and backing it heard) is fitted on its quiet
   passages and subtracted into a new scratch file, measured again (:mod:`tutti.mix.debleed`;
   not with ``--keep-bleed``).  Stems are written from the scratch files.  The analysis code
   (scipy, pyloudnorm) is loaded in a thread meanwhile (:mod:`tutti.mix.passes`); the
   recordings decoded before it is there are measured from their scratch files.
2. **Voice pass** (:meth:`Mixdown.finish_voices`): block by block over the timeline, the
   needed range of every scratch file is read, gained, panned and summed; high-pass, reverb
   and backing; the result goes to a raw stereo bus file, and the pre-master loudness and
   true-peak block maxima are measured on the way.
3. **Master** (:meth:`Mixdown.master`): gain to the target, true-peak limiter, output blocks
   encoded in this thread while the pool computes the next ones.

The scratch folder (about 4 bytes per sample of every recording, plus 8 bytes per timeline
frame, plus the outputs) is removed at the end, also after an error or a signal.  When one
recording fails in pass 1 the others stop at their next block and the import thread is
cancelled, so a bad file ends the command at once.

Policies (see docs/take-format.md):

- A recording whose rate differs from the take's ``rate`` is resampled (soxr, very high
  quality) to the take's rate; a recording with several channels is folded to mono (the mean
  of its channels).  The file's own header wins over nothing: a file whose rate, channel
  count or length differs from what its manifest entry says is an error (the manifest is
  wrong, and so may be its timeline numbers, or the file is a cut-off copy).
- Backing tracks may be mono or stereo, at any rate (resampled like recordings).
- Drift is corrected only for recordings with ``shared_clock: false`` (separate input and
  output devices) or a clock map: from the clock map the recorder measured if there is one,
  else from clicks or claps near the start and the end of the recording.
- Gaps (input frames the recorder lost, silence in the file) are faded into and out of
  (:mod:`tutti.audio.gaps`) and listed per singer with the headset's slips; the recorder's
  ``overflows`` / ``underflows`` counts (a host API's device-wide flags) are shown, not warned of.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import soundfile as sf
from rich.console import Console

from tutti.audio.daw import NAME_MAX, path_problem
from tutti.audio.types import AudioError
from tutti.mix.driftsense import senses_drift
from tutti.mix.folder import AudioFile, MixError, check_path_text, load_manifest
from tutti.mix.inputs import (
    Input,
    apply_choices,
    find_backings,
    find_inputs,
    placed_end,
    to_rate,
)
from tutti.mix.outputs import BUS_NAME, FORMATS, Interrupted, SignalGuard, Workspace, stem_dir_for
from tutti.mix.report import report, report_path, report_text, start_line
from tutti.mix.scratch import RawAudio, keep_freed_blocks
from tutti.takeformat import Backing, TakeManifest

if TYPE_CHECKING:  # the pipeline is imported once a take passed its checks
    from tutti.mix.passes import MasterCopy

__all__ = ["DEFAULT_TARGET_LUFS", "MixError", "add_arguments", "mix_take", "run"]

#: The master's loudness when ``--target-lufs`` is not given, LUFS.
DEFAULT_TARGET_LUFS = -16.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tutti mix``."""
    parser.add_argument(
        "take_dir", metavar="TAKE_DIR", type=Path, help="take folder with take.json"
    )
    parser.add_argument("-o", "--output", type=Path, help="mix file (default: TAKE_DIR/mix.FORMAT)")
    parser.add_argument("--format", choices=sorted(FORMATS), help="default: from -o, else flac")
    parser.add_argument(
        "--target-lufs",
        type=float,
        default=DEFAULT_TARGET_LUFS,
        help="master loudness, LUFS (default −16; the true peak stays ≤ −1 dBTP)",
    )
    parser.add_argument(
        "--gain",
        action="append",
        default=[],
        metavar="NAME=DB",
        help="a singer's gain in dB on top of loudness matching (repeatable)",
    )
    parser.add_argument(
        "--mute",
        action="append",
        default=[],
        metavar="NAME",
        help="leave a singer out (repeatable)",
    )
    parser.add_argument(
        "--reverb",
        type=float,
        default=0.0,
        metavar="WET",
        help="hall reverb level: 0 off (default), 0.3 modest, up to 4",
    )
    backing = parser.add_mutually_exclusive_group()
    backing.add_argument(
        "--backing-db", type=float, default=-6.0, help="backing track gain, dB (default −6)"
    )
    backing.add_argument("--no-backing", action="store_true", help="leave the backing out")
    parser.add_argument("--stems", action="store_true", help="also write aligned stems")
    parser.add_argument(
        "--project",
        action="store_true",
        help="also write stems and a REAPER .rpp and Audacity .lof that open them aligned",
    )
    parser.add_argument(
        "--no-loudness-match", action="store_true", help="keep each singer's own level"
    )
    parser.add_argument("--no-drift", action="store_true", help="skip clock-drift correction")
    parser.add_argument(
        "--keep-bleed",
        action="store_true",
        help="leave the click and backing that leaked from each headset into its microphone "
        "(default: fitted on quiet passages and removed)",
    )
    parser.add_argument(
        "--keep-count-in",
        action="store_true",
        help="start the mix at the count-in (default: at the song, where the count-in ends)",
    )
    parser.add_argument(
        "--tail",
        type=float,
        default=0.0,
        metavar="S",
        help="keep up to S seconds of backing after the last singer stopped (default 0)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="threads (default: the number of CPUs)",
    )


def _output_path(args: argparse.Namespace) -> tuple[Path, str]:
    fmt = args.format
    out: Path | None = args.output
    if out is not None and fmt is None:
        ext = out.suffix.lower().lstrip(".")
        if ext not in FORMATS:
            raise MixError(f"-o {out}: unknown extension; accepted: {sorted(FORMATS)} or --format")
        fmt = ext
    fmt = fmt or "flac"
    if out is None:
        out = args.take_dir / f"mix.{fmt}"
    if out.is_dir():
        raise MixError(f"-o {out}: is a folder; give a file name")
    check_path_text(out.absolute(), "-o")
    stems = stem_dir_for(out)
    _check_output_names(out, stems, args.stems or args.project, args.project)
    if (args.stems or args.project) and (stems.is_symlink() or stems.exists()):
        if stems.is_symlink() or not stems.is_dir():
            raise MixError(f"{stems}: is not a folder (stems go there); move it away")
    return out, fmt


def _check_output_names(out: Path, stems: Path, with_stems: bool, project: bool) -> None:
    """Refuse, before anything is done, an output whose name the file system or a project
    file cannot hold: a name over :data:`NAME_MAX` bytes; with ``--project``, a ``"`` or a
    control character in the stems' folder name (the .rpp and .lof name the stems by path)."""
    names = [out.name]
    if with_stems:
        names.append(stems.name)
    if project:
        names += [f"{out.stem}.rpp", f"{out.stem}.lof"]
    for name in names:
        size = len(name.encode("utf-8", "surrogateescape"))
        if size > NAME_MAX:
            raise MixError(
                f"-o {out}: {name} would be {size} bytes; accepted: file names of at most "
                f"{NAME_MAX} bytes (give a shorter name)"
            )
    problem = path_problem(stems.name) if project else None
    if problem is not None:
        raise MixError(
            f"-o {out}: the name holds {problem}; --project names the stems by path "
            "(give a name without it)"
        )


def _check_args(args: argparse.Namespace) -> None:
    if not -70.0 <= args.target_lufs <= -5.0:
        raise MixError(f"--target-lufs {args.target_lufs}: accepted: -70 to -5 LUFS")
    if not 0.0 <= args.reverb <= 4.0:
        raise MixError(f"--reverb {args.reverb}: accepted: 0 (off) to 4")
    if not -60.0 <= args.backing_db <= 20.0:
        raise MixError(f"--backing-db {args.backing_db}: accepted: -60 to 20 dB")
    if args.jobs < 1:
        raise MixError(f"--jobs {args.jobs}: accepted: 1 or more")
    if not 0.0 <= args.tail <= 600.0:
        raise MixError(f"--tail {args.tail}: accepted: 0 to 600 seconds")


def _span(
    args: argparse.Namespace,
    manifest: TakeManifest,
    items: list[Input],
    backings: list[tuple[Backing, AudioFile]],
) -> tuple[int, int]:
    """Timeline frames the mix runs from and to: from the song's first beat (the count-in's
    end; timeline 0 with ``--keep-count-in``, without a tempo, or when the take stopped
    before the song began) to where the last singer stopped, plus ``--tail`` seconds of what
    still sounds (the backing)."""
    rate = manifest.rate
    settings = manifest.settings
    start = 0
    if settings is not None and not args.keep_count_in:
        start = dataclasses.replace(settings, rate=rate).count_in_frames
    sung = [placed_end(i, rate, args.no_drift) for i in items]
    sounding = sung + [b.timeline_start + to_rate(a.frames, a.rate, rate) for b, a in backings]
    end = min(max(sounding), (max(sung) if sung else max(sounding)) + round(args.tail * rate))
    if end <= start:  # stopped during the count-in: there is no song, so mix what there is
        start = 0
    return start, end


def _heard_backings(root: Path, manifest: TakeManifest) -> list[tuple[Backing, AudioFile]]:
    """The backings a ``--no-backing`` mix reads only to know what was heard (for bleed
    removal and drift): one that cannot be read is left out (the mix itself does not need it)."""
    out = []
    for b in manifest.backing:
        try:
            out += find_backings(root, dataclasses.replace(manifest, backing=(b,)))
        except MixError:
            continue
    return out


def _mix(
    args: argparse.Namespace,
    console: Console,
    guard: SignalGuard,
    prepared: Path | None = None,
    only: Sequence[str] | None = None,
    also: MasterCopy | None = None,
    table: bool = True,
    ahead: Sequence[tuple[str | None, str]] | None = None,
    awaited: Sequence[str] = (),
    mixed: list[str] | None = None,
) -> int:
    _check_args(args)
    t_start = time.perf_counter()
    out_path, fmt = _output_path(args)
    take_dir: Path = args.take_dir
    root, manifest = load_manifest(take_dir)
    if mixed is not None:
        mixed += [r.file for r in manifest.recordings]
    items = find_inputs(root, manifest)
    apply_choices(items, args.gain, args.mute)
    if only is not None:  # pass 1 of these recordings only, kept for the mix to come
        items = [i for i in items if i.rec.file in only]
    rate = manifest.rate
    if not args.no_backing:
        backings = find_backings(root, manifest)
    else:  # left out of the mix, but still read to know what the singers heard
        senses = any(senses_drift(i, args.no_drift) for i in items)
        backings = [] if args.keep_bleed and not senses else _heard_backings(root, manifest)
    start, end = _span(args, manifest, items, [] if args.no_backing else backings)
    if end <= start:
        raise MixError(f"{take_dir}: every recording ends before timeline 0; nothing to mix")
    # the pipeline (scipy, numba) is loaded only for a take that passed every check, so a
    # bad folder is refused in a fraction of a second
    from tutti.mix.passes import MixPlan, mix_into

    plan = MixPlan(
        manifest,
        items,
        backings,
        end - start,
        None if args.no_drift else manifest.settings,
        out_path,
        fmt,
        target_lufs=args.target_lufs,
        reverb=args.reverb,
        backing_db=args.backing_db,
        loudness_match=not args.no_loudness_match,
        no_drift=args.no_drift,
        stems=args.stems,
        project=args.project,
        jobs=args.jobs,
        start=start,
        keep_bleed=args.keep_bleed,
        mix_backing=not args.no_backing,
        prepared=prepared,
        prepare_only=only is not None,
        also=also,
        awaited=frozenset(awaited),
    )
    if ahead is not None:  # the server's sums ahead of the mix: no output
        from tutti.mix.groupsums import presum

        presum(plan, ahead)
        return 0
    start_text = ""
    if table:  # what is mixed: the report's first line, and a log's
        title = manifest.title or manifest.take_id
        n_backings = 0 if args.no_backing else len(backings)
        start_text = start_line(title, take_dir, items, n_backings, out_path)
        if not console.is_terminal:
            console.print(start_text, markup=False, highlight=False, soft_wrap=True)
    # nothing is created before this point; from here on, a failure removes what was
    # the scratch folder beside the kept pass 1s: they are hard-linked both ways
    scratch_in = None if prepared is None else prepared.parent
    with Workspace(out_path, guard, scratch_in) as ws:
        opened: list[RawAudio] = []

        def bus(n: int) -> RawAudio:
            raw = RawAudio(ws.scratch / BUS_NAME, 2, n)
            opened.append(raw)
            return raw

        try:
            master = mix_into(plan, ws, bus, opened, console)
        finally:
            for raw in opened:
                raw.close()
        if master is None:  # pass 1 only: no output (the scratch folder goes)
            return 0
        secs = time.perf_counter() - t_start
        if table:  # the whole report beside the mix, moved into place with it
            text = report_text(start_text, items, master, out_path, rate, secs)
            written = ws.temp_for(report_path(out_path))
            written.write_text(text, encoding="utf-8", errors="backslashreplace")
        ws.commit()
    if table:  # the server shows no table: rendering it costs a fifth of a second
        report(console, items, master, out_path, rate, secs, report_path(out_path))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``tutti mix``; returns the exit code (0 done, 2 bad input, 1 failure, 128 + the
    signal number when SIGINT, SIGTERM or SIGHUP stopped it).  Every failure prints one line
    on stderr and leaves nothing behind (:mod:`tutti.mix.outputs`)."""
    console = Console()
    keep_freed_blocks()
    with SignalGuard() as guard:
        try:
            return _mix(args, console, guard)
        except MixError as exc:
            _say(f"error: {exc}")
            return 2
        except Interrupted as exc:
            done = "the outputs were written" if guard.committed else "no output written"
            _say(f"interrupted by {exc}; {done}")
            return exc.exit_code
        except (AudioError, sf.LibsndfileError, OSError) as exc:
            _say(f"failed: {exc}")
            return 1
        except Exception as exc:  # a bug, but still one line for the person at the terminal
            _say(f"failed: unexpected {type(exc).__name__}: {exc} (please report this)")
            return 1


def mix_take(
    argv: list[str],
    prepared: Path | None = None,
    only: Sequence[str] | None = None,
    also: MasterCopy | None = None,
    ahead: Sequence[tuple[str | None, str]] | None = None,
    awaited: Sequence[str] = (),
) -> tuple[str, ...]:
    """``tutti mix ARGV`` as a library call (the server's mixer): the same checks and passes,
    no progress or table printed; returns the recordings (files) of the take.json it read
    (the server rewrites it as recordings arrive or are refused); raises :class:`MixError`
    (bad input), ``AudioError``, ``LibsndfileError`` or ``OSError`` (failure) or
    :class:`Interrupted` instead of returning an exit code.  Call it from a main thread (a
    worker process) for the signals.

    ``prepared``: a folder where each recording's pass 1 is kept and reused
    (:mod:`tutti.mix.prepared`); ``only``: run pass 1 of these recording files (as
    ``take.json`` names them) into ``prepared`` and write no mix; ``also``: handed the
    length and then every block of a lossless master (float32, (n, 2), on target) as it is
    written; ``ahead``: sum into ``prepared`` the groups of voices whose recordings are all
    kept there, for the take.json predicted (in order, each singer's recording file, None
    for one still to come, and part: :func:`tutti.mix.groupsums.presum`), and write no mix;
    ``awaited``: recording files whose pass 1 another process is keeping in ``prepared``
    (waited for, not made again: :func:`tutti.mix.prepared.wait_for`)."""
    parser = argparse.ArgumentParser(prog="tutti mix", exit_on_error=False)
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as exc:
        raise MixError(str(exc)) from None
    keep_freed_blocks()
    mixed: list[str] = []
    with SignalGuard() as guard:
        _mix(args, Console(file=io.StringIO()), guard, prepared, only, also, table=False,
             ahead=ahead, awaited=awaited, mixed=mixed)  # fmt: skip
    return tuple(mixed)


def _say(message: str) -> None:
    """One line on stderr: control characters and lone surrogates (from file names) escaped."""
    line = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)
    print(f"tutti mix: {line}", file=sys.stderr)
