"""``tutti mix``: mix a take folder into one choir recording (and stems, and DAW projects).

This is the I/O edge of the mixdown: it checks the take folder — ``take.json`` and every file
it names (:mod:`tutti.mixfolder`) — before anything is written, runs the pure pipeline of
:mod:`tutti.audio.mixdown`, and writes every output into a scratch folder from which they are
moved into place only when all are complete (:mod:`tutti.mixout`) — a failed or interrupted mix
(an error, Ctrl-C, SIGTERM) leaves nothing behind.

It streams: memory does not grow with the length of the take or the number of recordings.

1. **Pass 1** (``--jobs`` threads, one recording each): every recording and backing track is
   decoded once, in blocks, resampled to the take's rate if needed (soxr, streaming), measured
   (loudness, peak, clipping) and written as raw float32 to a scratch folder beside the output
   (:mod:`tutti.mixio`).  For a separate-clock recording the drift comes from its clock map,
   or else from markers searched in the first and last seconds of that file, and a drifting
   recording is resampled (streaming) into a new scratch file; its input gaps are then faded
   in place.  Stems are written from the scratch files.  The analysis code
   (scipy, pyloudnorm: ≈ 0.5 s to import) is loaded in a thread meanwhile (:class:`_Pipeline`);
   the recordings decoded before it is there are measured from their scratch files.
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
import importlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import soxr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tutti.audio import daw
from tutti.audio.layout import default_pans
from tutti.audio.types import AudioArray, AudioError, as_audio
from tutti.mixfolder import AudioFile, MixError, check_path_text, load_manifest, probe
from tutti.mixio import RawAudio, keep_freed_blocks
from tutti.mixout import Interrupted, SignalGuard, Workspace
from tutti.mixread import read_blocks
from tutti.takeformat import Backing, Recording, TakeManifest

if TYPE_CHECKING:  # imported in a thread when the mix starts: see _Pipeline
    from tutti.audio.drift import DriftEstimate
    from tutti.audio.mixdown import Mixdown, VoiceAnalyser, VoiceReport

__all__ = ["MixError", "add_arguments", "run"]

FORMATS = {"wav": ("WAV", "PCM_24"), "flac": ("FLAC", "PCM_24"), "ogg": ("OGG", "VORBIS")}
# FLAC is lossless at every level; level 0 encodes 5 min of 24-bit stereo in 0.49 s where the
# default (5) takes 0.65 s, for files about 4 % larger (docs/benchmarks-mix.md)
_FLAC_LEVEL = 0.0
_READ_BLOCK = 1 << 16
_DECODE_BLOCK = 1 << 18  # frames per read of a recording (1 MB per channel)
_BUS_NAME = "bus.f32"  # the stereo bus in the scratch folder


class _Stopped(Exception):
    """Another part of the mix failed (or a signal came): this one stops at its next block."""


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
        default=-16.0,
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
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="threads (default: the number of CPUs)",
    )


# -- checking the folder ---------------------------------------------------------------------
@dataclass
class _Input:
    """A recording as found on disk, with what the mix will do to it."""

    rec: Recording
    audio: AudioFile
    frames: int
    channels: int
    rate: int
    name: str
    index: int = 0
    gain_db: float = 0.0
    pan: float = 0.0
    mute: bool = False
    timeline_start: int = 0  # at the take rate
    drift_ppm: float | None = None
    drift_from: str = ""  # "map" when the drift came from the recording's clock map
    warnings: list[str] = field(default_factory=list)
    report: VoiceReport | None = None


def _inputs(root: Path, manifest: TakeManifest) -> list[_Input]:
    out = []
    for rec in manifest.recordings:
        what = f"recording {rec.file} ({rec.singer})"
        audio = probe(root, rec.file, what)
        if audio.rate != rec.rate:
            raise MixError(
                f"{what}: the file is at {audio.rate} Hz but take.json says {rec.rate} Hz; "
                "correct the manifest (rate must match the file)"
            )
        if audio.channels != rec.channels:
            raise MixError(
                f"{what}: the file has {audio.channels} channel(s) but take.json says "
                f"{rec.channels}; correct the manifest"
            )
        if audio.frames != rec.frames:
            how = "decodes to" if audio.counted else "has"
            raise MixError(
                f"{what}: the file {how} {audio.frames} frames but take.json says {rec.frames}; "
                "a cut-off copy? (if the file is right, correct the manifest)"
            )
        item = _Input(rec, audio, audio.frames, audio.channels, audio.rate, rec.singer)
        item.timeline_start = _to_rate(rec.timeline_start, rec.rate, manifest.rate)
        if rec.latency_source != "measured":
            item.warnings.append("latency not measured")
        if rec.rate != manifest.rate:
            item.warnings.append(f"resampled from {rec.rate} Hz")
        if rec.channels > 1:
            item.warnings.append(f"{rec.channels} channels folded to mono")
        out.append(item)
    return out


def _to_rate(frames: int, from_rate: int, to_rate: int) -> int:
    return frames if from_rate == to_rate else int(round(frames * to_rate / from_rate))


def _apply_choices(items: list[_Input], gains: list[str], mutes: list[str]) -> None:
    names = {i.name for i in items} | {i.rec.file for i in items}

    def match(name: str, opt: str) -> list[_Input]:
        hit = [i for i in items if name in (i.name, i.rec.file)]
        if not hit:
            raise MixError(f"{opt} {name}: no such singer or file; accepted: {sorted(names)}")
        return hit

    for spec in gains:
        name, sep, value = spec.rpartition("=")
        try:
            db = float(value)
        except ValueError:
            db = math.nan
        if not sep or not name or not math.isfinite(db) or abs(db) > 60:
            raise MixError(f"--gain {spec}: expected NAME=DB with DB a number from -60 to 60")
        for i in match(name, "--gain"):
            i.gain_db = db
    for name in mutes:
        for i in match(name, "--mute"):
            i.mute = True
    for n, item in enumerate(items):
        item.index = n
    for item, pan in zip(items, default_pans([i.rec.part for i in items]), strict=True):
        item.pan = pan


# -- reading ---------------------------------------------------------------------------------
_READ_ERRORS = (sf.LibsndfileError, RuntimeError, OSError)


class _Resampler:
    """soxr's streaming resampler (very high quality) for blocks of (frames, channels)."""

    def __init__(self, from_rate: float, to_rate: float, channels: int) -> None:
        self.channels = channels
        self._stream = soxr.ResampleStream(from_rate, to_rate, channels, quality="VHQ")

    def __call__(self, block: AudioArray, last: bool = False) -> AudioArray:
        out = self._stream.resample_chunk(np.ascontiguousarray(block, np.float32), last=last)
        return np.asarray(out, dtype=np.float32).reshape(-1, self.channels)

    def flush(self) -> AudioArray:
        return self(np.zeros((0, self.channels), np.float32), last=True)


def _decode(
    audio: AudioFile,
    rate: int,
    scratch: Path,
    analyser: VoiceAnalyser | None,
    what: str,
    stop: threading.Event | None = None,
) -> RawAudio:
    """Decode an audio file once, in blocks, at the mix rate (resampled if the file's rate
    differs) into a new raw file ``scratch``, feeding ``analyser``.  A 16-bit file at the mix
    rate is kept as 16-bit integers (exact, half the bytes); anything else as float32.
    Raises :class:`_Stopped` at the next block once ``stop`` is set."""
    raw: RawAudio | None = None
    path, info = audio.path, audio.info
    try:
        resample = (
            _Resampler(info.samplerate, rate, info.channels) if info.samplerate != rate else None
        )
        int16 = resample is None and info.subtype == "PCM_16"
        raw = RawAudio(scratch, info.channels, int16=int16)

        def keep(block: AudioArray) -> None:
            try:
                if analyser is not None:
                    analyser.feed(block)
                else:
                    as_audio(block, name=what)  # finite samples only
            except AudioError as exc:
                raise MixError(f"{what}: {exc}") from None
            assert raw is not None
            raw.append(block)

        expected = audio.frames
        decoded = 0
        for block in read_blocks(path, info, _DECODE_BLOCK, int16=int16):
            if stop is not None and stop.is_set():
                raise _Stopped
            decoded += block.shape[0]
            if decoded > expected:
                raise MixError(
                    f"{what}: {path.name} holds more than the {expected} frames its header "
                    "says (a damaged header)"
                )
            if int16:
                if analyser is not None:
                    analyser.feed(block)
                raw.append(block)
            else:
                keep(resample(block) if resample else block)
        if decoded != expected:
            raise MixError(
                f"{what}: {path.name} gave {decoded} of the {expected} frames its header "
                "promises (cut off or damaged)"
            )
        if resample:
            keep(resample.flush())
        return raw
    except BaseException as exc:
        if raw is not None:
            raw.close()
        if isinstance(exc, _READ_ERRORS):
            raise MixError(f"{what}: reading {path.name} failed ({exc})") from None
        raise


def _markers(item: _Input, frames: int, rate: int, settings: Any) -> list[int]:
    """Expected recording frames of clicks near the start and end (first and last 20 s)."""
    from tutti.audio.click import beat_frames

    end = item.timeline_start + frames
    beats = beat_frames(settings, rate, seconds=end / rate + 1.0)
    wanted = []
    for b in beats:
        f = b.frame - item.timeline_start
        if 0 <= f < frames and (f < _EDGE_S * rate or f > frames - _EDGE_S * rate):
            wanted.append(f)
    return wanted


_EDGE_S = 20  # seconds at each end searched for drift markers


def _find_markers(raw: RawAudio, rate: int, expected: list[int], window: int) -> list[float | None]:
    """:func:`align.find_markers` on the first and last seconds of ``raw`` only."""
    from tutti.audio import align

    n = raw.frames
    pad = max(64, round(0.005 * rate))  # find_markers' own context
    margin = window + 2 * pad + 16
    head_hi, tail_lo = min(n, _EDGE_S * rate + margin), max(0, n - _EDGE_S * rate - margin)
    found: list[float | None]
    if tail_lo <= head_hi:  # a short recording: the two ends overlap
        found = align.find_markers(raw.read(0, n), rate, expected, window=window)
        return found
    head = [e for e in expected if e < head_hi - margin]
    tail = [e for e in expected if e >= head_hi - margin]
    found = align.find_markers(raw.read(0, head_hi), rate, head, window=window)
    late: list[float | None] = align.find_markers(
        raw.read(tail_lo, n), rate, [e - tail_lo for e in tail], window=window
    )
    return found + [None if f is None else f + tail_lo for f in late]


def _drifts(rec: Recording, args: argparse.Namespace) -> bool:
    """Whether the mix corrects this recording's clock (separate clocks, or a clock map)."""
    return not args.no_drift and (not rec.shared_clock or bool(rec.clock_map))


def _marker_drift(item: _Input, raw: RawAudio, rate: int, settings: Any) -> DriftEstimate | None:
    """The drift from count-in clicks (or claps) at both ends; None (and a warning) if not."""
    from tutti.audio import drift

    if settings is None:
        item.warnings.append("drift not checked (no tempo in take.json)")
        return None
    expected = _markers(item, raw.frames, rate, settings)
    window = int(0.05 * rate + 300e-6 * raw.frames)
    found = _find_markers(raw, rate, expected, window)
    pairs = [(float(e), f) for e, f in zip(expected, found, strict=True) if f is not None]
    try:
        return drift.estimate_drift(pairs, min_span=10.0 * rate)
    except AudioError as exc:
        item.warnings.append(f"drift not measured: {exc}")
        return None


def _map_drift(item: _Input, rate: int) -> DriftEstimate | None:
    """The drift from the clock map the recorder measured (no marker needed); None (and a
    warning) if the map is unusable."""
    from tutti.audio import drift

    rec = item.rec
    points = [
        (p.frame * rate / rec.rate, p.timeline * rate / rec.rate) for p in rec.clock_map
    ]  # the map is in the recording's frames; the mix runs at the take's rate
    try:
        est = drift.drift_from_clock_map(points, item.timeline_start)
    except AudioError as exc:
        item.warnings.append(f"{exc}; placed without it")
        return None
    item.drift_from = "map"
    if est.residual_frames > drift.MAP_BEND_S * rate:
        item.warnings.append(
            f"clock map bends {1000 * est.residual_frames / rate:.2f} ms off a straight line; "
            "placed on its best line"
        )
    return est


def _dedrift(
    item: _Input, raw: RawAudio, rate: int, settings: Any, what: str, stop: threading.Event
) -> tuple[RawAudio, VoiceAnalyser | None]:
    """Measure the clock drift (from the clock map, else from markers at both ends); if there
    is any, resample ``raw`` (streaming) into a new raw file and measure that.  Returns the
    file to mix and its new analyser (None if the recording was left as it was)."""
    from tutti.audio import drift
    from tutti.audio.mixdown import VoiceAnalyser

    if item.rec.clock_map:
        est = _map_drift(item, rate)
    else:
        est = _marker_drift(item, raw, rate, settings)
    if est is None:
        return raw, None
    item.drift_ppm = est.ppm
    item.timeline_start = est.corrected_timeline_start(item.timeline_start)
    if est.ppm == 0.0:
        return raw, None
    if not abs(est.ppm) <= drift.MAX_PPM:
        raise MixError(f"{what}: drift {est.ppm:+.0f} ppm; accepted: within ±{drift.MAX_PPM:.0f}")
    out = RawAudio(raw.path.with_suffix(".dedrift.f32"), raw.channels)
    analyser = VoiceAnalyser(rate, raw.channels)
    resample = _Resampler(rate * (1.0 + est.ppm * 1e-6), float(rate), raw.channels)
    try:
        for a in range(0, raw.frames, _READ_BLOCK):
            if stop.is_set():
                raise _Stopped
            block = resample(raw.read(a, min(raw.frames, a + _READ_BLOCK)))
            analyser.feed(block)
            out.append(block)
        tail = resample.flush()
        analyser.feed(tail)
        out.append(tail)
    except BaseException:
        out.close()  # the scratch folder's removal deletes the file
        raise
    raw.close()
    raw.path.unlink()
    return out, analyser


#: A gap whose recording holds more than this (−50 dBFS) is not where the take says: left alone.
_GAP_SILENCE = 10 ** (-50 / 20)


def _silent_in(raw: RawAudio, at: int, frames: int, margin: int, item: _Input, rate: int) -> bool:
    """Whether ``raw`` is silent inside the gap (``margin`` frames in from each edge, where a
    resampler rings); if not, the gap is not where the take says and a warning says so (the
    audio is then kept: better an unfaded edge than a voice cut)."""
    lo, hi = max(0, at + margin), min(raw.frames, at + frames - margin)
    loudest = 0.0
    for a in range(lo, hi, _READ_BLOCK):
        block = raw.read(a, min(hi, a + _READ_BLOCK))
        loudest = max(loudest, float(np.abs(block).max(initial=0.0)))
    if loudest <= _GAP_SILENCE:
        return True
    when = _at(item.timeline_start + at, rate)
    item.warnings.append(f"gap at {when} not silent in the file: left unfaded")
    return False


def _fade_gaps(item: _Input, raw: RawAudio, rate: int) -> None:
    """Silence each input gap of the recording in ``raw`` (placed and de-drifted: its frame
    ``j`` sits at timeline ``item.timeline_start + j``) with fades of a few ms at its edges,
    in place, so cutting to silence and back does not click."""
    from tutti.audio.gaps import FADE_S, gap_envelope, gap_regions

    rec = item.rec
    gaps = [
        (_to_rate(g.at, rec.rate, rate) - item.timeline_start, _to_rate(g.frames, rec.rate, rate))
        for g in rec.gaps
    ]
    ramp = max(1, round(FADE_S * rate))
    gaps = [(at, max(1, n)) for at, n in gaps if _silent_in(raw, at, max(1, n), ramp, item, rate)]
    for lo, hi in gap_regions(gaps, ramp, raw.frames):
        for a in range(lo, hi, _READ_BLOCK):
            b = min(hi, a + _READ_BLOCK)
            block = raw.read(a, b) * gap_envelope(a, b, gaps, ramp)[:, None]
            if raw.dtype == np.int16:
                block = np.clip(np.round(block * 32768.0), -32768, 32767).astype(np.int16)
            raw.write(a, block)


def _session_settings(manifest: TakeManifest) -> Any:
    from tutti import wire

    if not manifest.settings:
        return None
    try:
        payload = dict(manifest.settings)
        payload["title"] = str(payload.get("title") or manifest.title or "take")
        return wire.parse_settings(payload)
    except Exception:  # a manifest from another tool: its settings are optional for a mix
        return None


def _analyse(
    raw: RawAudio, rate: int, what: str, stop: threading.Event | None = None
) -> VoiceAnalyser:
    """Measure a recording from its scratch file, in the blocks :func:`_decode` reads (for a
    recording decoded before the analysis code was loaded: same values as fed while decoding)."""
    from tutti.audio.mixdown import VoiceAnalyser

    analyser = VoiceAnalyser(rate, raw.channels)
    for a in range(0, raw.frames, _DECODE_BLOCK):
        if stop is not None and stop.is_set():
            raise _Stopped
        try:
            analyser.feed(raw.read(a, min(raw.frames, a + _DECODE_BLOCK)))
        except AudioError as exc:
            raise MixError(f"{what}: {exc}") from None
    return analyser


class _Pipeline:
    """The :class:`~tutti.audio.mixdown.Mixdown`, imported and made in a thread.

    Importing the analysis code (scipy.signal, scipy.ndimage, pyloudnorm) takes ≈ 0.5 s of
    one core; meanwhile pass 1 decodes the first recordings (libsndfile does not hold the
    GIL), which are then measured from their scratch files (:func:`_analyse`).  A failing mix
    cancels it (:meth:`cancel`) rather than wait for the import to end.
    """

    def __init__(self, make: Callable[[], Mixdown]) -> None:
        self._future: Future[Mixdown] = Future()
        self._lock = threading.Lock()  # making the mixdown (it creates the bus file) or cancelling
        self._cancelled = False
        self._thread = threading.Thread(
            target=self._run, args=(make,), name="mix-import", daemon=True
        )

    def start(self) -> None:
        """Start importing (in a daemon thread)."""
        self._thread.start()

    def _run(self, make: Callable[[], Mixdown]) -> None:
        try:
            importlib.import_module("tutti.audio.mixdown")
            with self._lock:
                if not self._cancelled:
                    self._future.set_result(make())
        except BaseException as exc:  # handed to whoever asks for the mixdown
            with self._lock:
                if not self._future.done():
                    self._future.set_exception(exc)

    @property
    def ready(self) -> bool:
        """Whether the mixdown exists (so the analysis code is loaded)."""
        return self._future.done() and self._future.exception() is None

    def get(self) -> Mixdown:
        """The mixdown, once made (re-raises what making it raised)."""
        return self._future.result()

    def cancel(self) -> None:
        """Make no mixdown (and no bus file) from now on; :meth:`get` raises
        :class:`_Stopped`.  The import may go on in its daemon thread: it writes nothing."""
        with self._lock:
            self._cancelled = True
            if not self._future.done():
                self._future.set_exception(_Stopped())


def _new_mixdown(args: argparse.Namespace, rate: int, frames: int, bus: Any) -> Mixdown:
    from tutti.audio.mixdown import Mixdown, MixSettings

    settings = MixSettings(
        rate,
        target_lufs=args.target_lufs,
        singer_lufs=None if args.no_loudness_match else MixSettings.singer_lufs,
        reverb_wet=args.reverb,
    )
    return Mixdown(settings, frames, bus=bus)


def _delete(raws: list[RawAudio]) -> None:
    """Close and delete scratch files (those already gone are skipped)."""
    for raw in raws:
        raw.close()
        raw.path.unlink(missing_ok=True)


# -- writing ---------------------------------------------------------------------------------
def _open_out(path: Path, fmt: str, rate: int, channels: int) -> sf.SoundFile:
    """A new audio file of format ``fmt`` (a key of :data:`FORMATS`) for writing."""
    kind, subtype = FORMATS[fmt]
    level = _FLAC_LEVEL if kind == "FLAC" else None
    return sf.SoundFile(str(path), "w", rate, channels, subtype, format=kind,
                        compression_level=level)  # fmt: skip


def _write_stem(
    path: Path, audio: RawAudio, start: int, frames: int, fmt: str, rate: int, stop: threading.Event
) -> None:
    """The recording placed on the timeline: zeros before ``start``, cut or padded to ``frames``."""
    with _open_out(path, fmt, rate, audio.channels) as f:
        for a in range(0, frames, _READ_BLOCK):
            if stop.is_set():
                raise _Stopped
            b = min(frames, a + _READ_BLOCK)
            block = np.zeros((b - a, audio.channels), dtype=np.float32)
            lo, hi = max(a, start), min(b, start + audio.frames)
            if hi > lo:
                block[lo - a : hi - a] = audio.read(lo - start, hi - start)
            f.write(block)


# -- progress --------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar on a terminal, plain lines otherwise."""

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
            done = [0]

            def step(detail: str) -> None:
                done[0] += 1
                self.console.print(
                    f"{label}: {done[0]}/{total} {detail}",
                    markup=False,  # file names are text, not rich markup
                    highlight=False,
                    soft_wrap=True,
                )

            yield step


# -- the command -----------------------------------------------------------------------------
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
    stems = _stem_dir(out)
    if (args.stems or args.project) and (stems.is_symlink() or stems.exists()):
        if stems.is_symlink() or not stems.is_dir():
            raise MixError(f"{stems}: is not a folder (stems go there); move it away")
    return out, fmt


def _stem_dir(out_path: Path) -> Path:
    return out_path.parent / f"{out_path.stem}-stems"


def _check_args(args: argparse.Namespace) -> None:
    if not -70.0 <= args.target_lufs <= -5.0:
        raise MixError(f"--target-lufs {args.target_lufs}: accepted: -70 to -5 LUFS")
    if not 0.0 <= args.reverb <= 4.0:
        raise MixError(f"--reverb {args.reverb}: accepted: 0 (off) to 4")
    if not -60.0 <= args.backing_db <= 20.0:
        raise MixError(f"--backing-db {args.backing_db}: accepted: -60 to 20 dB")
    if args.jobs < 1:
        raise MixError(f"--jobs {args.jobs}: accepted: 1 or more")


def _mix_in(
    args: argparse.Namespace,
    manifest: TakeManifest,
    items: list[_Input],
    backings: list[tuple[Backing, AudioFile]],
    frames: int,
    session: Any,
    ws: Workspace,
    bus: Callable[[int], RawAudio],
    opened: list[RawAudio],
    out_path: Path,
    fmt: str,
    console: Console,
) -> Any:
    """Pass 1 (decode, measure, de-drift every recording into the scratch folder, in
    parallel), the voice pass, the backing, and the master pass writing the mix (and the
    stems) into the scratch folder, for :meth:`Workspace.commit` to move into place."""
    rate = manifest.rate
    work = ws.scratch
    stems_wanted = args.stems or args.project  # a project opens the stems: it needs them
    pipeline = _Pipeline(partial(_new_mixdown, args, rate, frames, bus))
    ws.before_removal(pipeline.cancel)  # whatever ends the mix, no bus file comes after
    pipeline.start()
    stem_dir = _stem_dir(out_path)
    stems: list[daw.Stem] = []
    progress = _Progress(console)
    stop = threading.Event()  # set when pass 1 fails: the other jobs end at their next block

    def voice(item: _Input) -> str:
        what = f"recording {item.rec.file} ({item.name})"
        analyser: VoiceAnalyser | None = None
        if pipeline.ready:
            from tutti.audio.mixdown import VoiceAnalyser

            analyser = VoiceAnalyser(rate, item.channels)
        raw = _decode(item.audio, rate, work / f"{item.index:04d}.raw", analyser, what, stop)
        opened.append(raw)
        mix = pipeline.get()
        from tutti.audio.mixdown import Voice

        if analyser is None:  # decoded while the analysis code was loading
            analyser = _analyse(raw, rate, what, stop)
        if _drifts(item.rec, args):
            fixed, again = _dedrift(item, raw, rate, session, what, stop)
            if again is not None:
                opened.append(fixed)
                raw, analyser = fixed, again
        if item.rec.gaps:
            _fade_gaps(item, raw, rate)
        v = Voice(item.name, item.timeline_start, item.gain_db, item.pan, item.mute)
        item.report = mix.add_source(raw, v, analyser.result())
        if stems_wanted:
            stem = stem_dir / f"{item.index:02d}-{Path(item.rec.file).stem}.{fmt}"
            stems.append(
                daw.Stem(
                    os.path.relpath(stem, out_path.parent),
                    item.name,
                    0,
                    frames,
                    item.pan,
                    item.gain_db,
                )
            )
            tmp = ws.temp_for(stem)
            _write_stem(tmp, raw, item.timeline_start, frames, fmt, rate, stop)
        return item.rec.file

    def backing(k: int) -> str:
        b, audio = backings[k]
        what = f"backing {b.file}"
        raw = _decode(audio, rate, work / f"backing{k:02d}.raw", None, what, stop)
        opened.append(raw)
        pipeline.get().add_backing_source(raw, b.timeline_start, args.backing_db)
        return str(b.file)

    jobs: list[Callable[[], str]] = [partial(backing, k) for k in range(len(backings))]
    jobs += [partial(voice, item) for item in items]
    with progress.stage("reading and analysing", len(jobs)) as step:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(job) for job in jobs]
            try:
                for done in as_completed(futures):  # the first failure ends pass 1 at once
                    step(done.result())
            except BaseException:
                stop.set()
                pipeline.cancel()
                pool.shutdown(wait=True, cancel_futures=True)  # stop before cleaning up
                raise
    mix = pipeline.get()
    mix.finish_voices(args.jobs)
    # the recordings' scratch files are done with (only the bus is read from here on): delete
    # them while the master pass runs (≈ 0.2 s for 1 GB, otherwise spent at the end)
    cleaner = threading.Thread(
        target=_delete, args=([r for r in opened if r.path.name != _BUS_NAME],), daemon=True
    )
    cleaner.start()
    tmp = ws.temp_for(out_path)
    n_blocks = -(-mix.frames // mix.settings.block)
    try:
        with (
            progress.stage("mastering and writing", n_blocks) as step,
            _open_out(tmp, fmt, rate, 2) as f,
        ):

            def sink(block: AudioArray) -> None:
                f.write(block)
                step("")

            master = mix.master(sink, jobs=args.jobs)
    finally:
        cleaner.join()
    if args.project:
        ordered = sorted(stems, key=lambda s: s.file)
        title = manifest.title or manifest.take_id
        base = out_path.parent / out_path.stem
        for ext, text in (
            (".rpp", daw.reaper_project(ordered, rate, title=title)),
            (".lof", daw.audacity_lof(ordered, rate)),
        ):
            ws.temp_for(base.with_suffix(ext)).write_text(text, encoding="utf-8")
    return master


def _backings(root: Path, manifest: TakeManifest) -> list[tuple[Backing, AudioFile]]:
    out = []
    for b in manifest.backing:
        audio = probe(root, b.file, f"backing {b.file} ({b.part})")
        if audio.channels not in (1, 2):
            raise MixError(f"backing {b.file}: {audio.channels} channels; accepted: 1 or 2")
        out.append((b, audio))
    return out


def _mix(args: argparse.Namespace, console: Console, guard: SignalGuard) -> int:
    _check_args(args)
    t_start = time.perf_counter()
    out_path, fmt = _output_path(args)
    take_dir: Path = args.take_dir
    root, manifest = load_manifest(take_dir)
    items = _inputs(root, manifest)
    _apply_choices(items, args.gain, args.mute)
    rate = manifest.rate
    backings = [] if args.no_backing else _backings(root, manifest)
    ends = []
    if any(_drifts(i.rec, args) for i in items):
        from tutti.audio.drift import MAX_PPM
    for i in items:
        length = _to_rate(i.frames, i.rate, rate)
        if _drifts(i.rec, args):
            length += -(-length * int(MAX_PPM) // 1_000_000)  # room for a corrected clock
        ends.append(i.timeline_start + length)
    ends += [b.timeline_start + _to_rate(a.frames, a.rate, rate) for b, a in backings]
    frames = max(ends)
    if frames <= 0:
        raise MixError(f"{take_dir}: every recording ends before timeline 0; nothing to mix")
    session = None if args.no_drift else _session_settings(manifest)
    # nothing is created before this point; from here on, a failure removes what was
    with Workspace(out_path, guard) as ws:
        opened: list[RawAudio] = []

        def bus(n: int) -> RawAudio:
            raw = RawAudio(ws.scratch / _BUS_NAME, 2, n)
            opened.append(raw)
            return raw

        try:
            master = _mix_in(args, manifest, items, backings, frames, session, ws,
                             bus, opened, out_path, fmt, console)  # fmt: skip
        finally:
            for raw in opened:
                raw.close()
        ws.commit()
    _report(console, items, master, out_path, rate, time.perf_counter() - t_start)
    return 0


#: Gaps and slips listed one by one per singer below the table; the rest are counted.
_LISTED_LOSSES = 5


def _span(frames: int, rate: int) -> str:
    """A length for people: "300 ms", "2.0 s"."""
    secs = frames / rate
    return f"{1000 * secs:.0f} ms" if secs < 1.0 else f"{secs:.1f} s"


def _at(frame: int, rate: int) -> str:
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
    return [f"headset skipped {len(rec.slips)}× ({_span(total, rec.rate)})"]


def _loss_lines(item: _Input) -> list[str]:
    """One line per gap and headset slip of a singer (the first few; then a count)."""
    rec = item.rec
    events = sorted(
        [(g.at, f"input lost {_span(g.frames, rec.rate)} at {_at(g.at, rec.rate)}")
         for g in rec.gaps]
        + [(g.at, f"headset skipped {_span(g.frames, rec.rate)} at {_at(g.at, rec.rate)}")
           for g in rec.slips]
    )  # fmt: skip
    lines = [f"{item.name}: {text}" for _, text in events[:_LISTED_LOSSES]]
    if len(events) > _LISTED_LOSSES:
        lines.append(f"{item.name}: … and {len(events) - _LISTED_LOSSES} more gaps or skips")
    return lines


def _report(
    console: Console, items: list[_Input], master: Any, out: Path, rate: int, secs: float
) -> None:
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


def run(args: argparse.Namespace) -> int:
    """Run ``tutti mix``; returns the exit code (0 done, 2 bad input, 1 failure, 128 + the
    signal number when SIGINT, SIGTERM or SIGHUP stopped it).  Every failure prints one line
    on stderr and leaves nothing behind (:mod:`tutti.mixout`)."""
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


def _say(message: str) -> None:
    """One line on stderr: control characters and lone surrogates (from file names) escaped."""
    line = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)
    print(f"tutti mix: {line}", file=sys.stderr)
