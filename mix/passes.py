"""The passes of ``tutti mix`` over a checked :class:`MixPlan`: pass 1 (decode, measure,
de-drift and fade every recording into the scratch folder, in parallel), the voice pass, and
the master pass writing the mix, the stems and the DAW projects into the scratch folder (see
:mod:`tutti.mix.command` for the whole pipeline)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf
from rich.console import Console

from tutti.audio import daw
from tutti.audio.align import place_range
from tutti.audio.types import AudioArray
from tutti.mix import prepared
from tutti.mix.debleed import HeardPrograms, debleed
from tutti.mix.decode import READ_BLOCK, Stopped, analyse, decode
from tutti.mix.dedrift import dedrift, fade_gaps
from tutti.mix.driftsense import (
    Sensed,
    by_bleed,
    by_onsets,
    ensemble_drifts,
    heard_reference,
    hop_for,
    program_wave,
    sense,
    senses_drift,
)
from tutti.mix.folder import AudioFile
from tutti.mix.inputs import Input, corrects_drift, to_rate
from tutti.mix.lossy import Encoded, encode_on_target, remastered_on_target
from tutti.mix.outputs import BUS_NAME, FORMATS, LOSSY, Workspace, stem_dir_for
from tutti.mix.report import StageProgress
from tutti.mix.scratch import RawAudio
from tutti.takeformat import Backing, TakeManifest
from tutti.wire import SessionSettings

if TYPE_CHECKING:  # imported in a thread when the mix starts: see _Pipeline
    from tutti.audio.analysis import VoiceAnalyser, VoiceAnalysis
    from tutti.audio.drift import DriftEstimate
    from tutti.audio.driftfind import Floats
    from tutti.audio.mixdown import MasterReport, Mixdown, MixSettings

__all__ = [
    "FORMATS",
    "MasterCopy",
    "MixPlan",
    "mix_into",
    "mix_settings",
    "stem_dir_for",
    "BUS_NAME",
]

# FLAC is lossless at every level; level 0 encodes faster than the default (5) for files a
# few per cent larger (docs/benchmarks-mix.md)
_FLAC_LEVEL = 0.0
_PCM24_SCALE = np.float32(1 << 23)  # 24-bit full scale


@dataclass(frozen=True)
class MixPlan:
    """One run of ``tutti mix``, checked: the take, what it mixes, and how.

    ``frames`` is the mix's length at the take's rate from timeline frame ``start``;
    ``session`` the take's tempo (for drift markers), None without one."""

    manifest: TakeManifest
    items: list[Input]
    backings: list[tuple[Backing, AudioFile]]
    frames: int
    session: SessionSettings | None
    out_path: Path
    fmt: str
    target_lufs: float = -16.0
    reverb: float = 0.0
    backing_db: float = -6.0
    loudness_match: bool = True
    no_drift: bool = False
    stems: bool = False
    project: bool = False
    jobs: int = 1
    start: int = 0  # timeline frame of the mix's sample 0 (the count-in's end by default)
    keep_bleed: bool = False  # leave what the headsets leaked into the microphones
    mix_backing: bool = True  # False: the backings are decoded only to know what was heard
    # where pass 1 of each recording is kept for the next mix (tutti.mix.prepared), or None
    prepared: Path | None = None
    prepare_only: bool = False  # stop after pass 1 (keeping it): the server's early analysis
    # every block of the master is handed here too, as it is written (the server's Opus copy)
    also: MasterCopy | None = None
    # recordings whose pass 1 another process is keeping in ``prepared``: waited for
    awaited: frozenset[str] = frozenset()


class MasterCopy(Protocol):
    """Something that takes the master as it is written (the server's Opus copy)."""

    def begin(self, frames: int) -> None:
        """The master is ``frames`` long; its blocks follow."""

    def feed(self, block: AudioArray) -> None:
        """One block of the master (float32, (n, 2)), in order; the buffer is reused after."""


class _Pipeline:
    """The :class:`~tutti.audio.mixdown.Mixdown`, imported and made in a thread.

    Importing the analysis code (scipy.signal, scipy.ndimage, pyloudnorm, numba) takes a
    good part of a second of one core; meanwhile pass 1 decodes the first recordings
    (libsndfile does not hold the GIL), which are then measured from their scratch files
    (:func:`~tutti.mix.decode.analyse`).  A failing mix cancels it (:meth:`cancel`) rather
    than wait for the import to end.
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
        :class:`Stopped`.  The import may go on in its daemon thread: it writes nothing."""
        with self._lock:
            self._cancelled = True
            if not self._future.done():
                self._future.set_exception(Stopped())


def mix_settings(plan: MixPlan) -> MixSettings:
    """The mixdown's settings for ``plan``."""
    from tutti.audio.mixdown import MixSettings

    return MixSettings(
        plan.manifest.rate,
        target_lufs=plan.target_lufs,
        singer_lufs=MixSettings.singer_lufs if plan.loudness_match else None,
        reverb_wet=plan.reverb,
    )


def _new_mixdown(
    plan: MixPlan, bus: Callable[[int], RawAudio], spool: Callable[[int], RawAudio]
) -> Mixdown:
    from tutti.audio.mixdown import Mixdown

    return Mixdown(mix_settings(plan), plan.frames, bus=bus, spool=spool)


def _delete(raws: list[RawAudio]) -> None:
    """Close and delete scratch files (those already gone are skipped)."""
    for raw in raws:
        raw.close()
        raw.path.unlink(missing_ok=True)


def pcm24_words(block: AudioArray) -> npt.NDArray[np.int32]:
    """``block`` as libsndfile stores float samples in 24-bit FLAC — x·2²³ rounded half to
    even, clipped to [−2²³, 2²³ − 1] — in the top 24 bits of int32, which it writes as they
    are: the same file, without libsndfile's own per-sample conversion (about a third of
    the FLAC write, docs/benchmarks-mix.md)."""
    y = np.rint(block * _PCM24_SCALE)
    np.clip(y, -_PCM24_SCALE, _PCM24_SCALE - 1, out=y)
    words: npt.NDArray[np.int32] = y.astype(np.int32) << 8
    return words


class _Out:
    """An output audio file; float blocks to a 24-bit FLAC are converted by
    :func:`pcm24_words`."""

    def __init__(self, f: sf.SoundFile, words: bool) -> None:
        self._f = f
        self._words = words

    def write(self, block: AudioArray) -> None:
        self._f.write(pcm24_words(block) if self._words else block)

    def __enter__(self) -> _Out:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._f.close()


def open_out(path: Path, fmt: str, rate: int, channels: int) -> _Out:
    """A new audio file of format ``fmt`` (a key of :data:`FORMATS`) for writing."""
    kind, subtype = FORMATS[fmt]
    level = _FLAC_LEVEL if kind == "FLAC" else None
    f = sf.SoundFile(str(path), "w", rate, channels, subtype, format=kind,
                     compression_level=level)  # fmt: skip
    return _Out(f, (kind, subtype) == ("FLAC", "PCM_24"))


def write_stem(
    path: Path, audio: RawAudio, start: int, frames: int, fmt: str, rate: int, stop: threading.Event
) -> None:
    """The recording placed on the timeline: zeros before ``start``, cut or padded to ``frames``."""
    with open_out(path, fmt, rate, audio.channels) as f:
        for a in range(0, frames, READ_BLOCK):
            if stop.is_set():
                raise Stopped
            shape = (audio.frames, audio.channels)
            f.write(place_range(audio.read, shape, start, a, min(frames, a + READ_BLOCK)))


@contextlib.contextmanager
def _master_out(
    path: Path, fmt: str, rate: int, floats: RawAudio | None
) -> Iterator[Callable[[AudioArray], object]]:
    """Where the master pass writes: the output file, or the float scratch of a lossy one."""
    if floats is not None:
        yield floats.append
        return
    with open_out(path, fmt, rate, 2) as f:
        yield f.write


def _overwriting(raw: RawAudio) -> Callable[[AudioArray], None]:
    """A sink that writes its blocks over ``raw`` from frame 0 on."""
    at = 0

    def write(block: AudioArray) -> None:
        nonlocal at
        raw.write(at, block)
        at += block.shape[0]

    return write


def _encoded(
    mix: Mixdown, master: MasterReport, floats: RawAudio, out: Path, spare: Path,
    plan: MixPlan, rate: int, stop: threading.Event, progress: StageProgress,
) -> MasterReport:  # fmt: skip
    """Encode the float master ``floats`` into ``out`` on target (made again, aiming higher,
    where the codec takes away what only the limiter can give back); the report of what
    was written."""
    ceiling = mix.settings.ceiling_dbtp

    def encode(path: Path) -> Encoded:
        return encode_on_target(floats, path, plan.fmt, rate, plan.target_lufs, ceiling, stop)

    def remaster(aim: float) -> MasterReport:
        return mix.master(_overwriting(floats), jobs=plan.jobs, aim_lufs=aim)

    landed = abs(master.output_lufs - plan.target_lufs) <= mix.settings.tolerance_lu
    with progress.stage(f"encoding {plan.fmt} on target", 1) as step:
        enc, again = remastered_on_target(
            encode, out, spare, plan.target_lufs, ceiling, remaster if landed else None
        )
        step(f"{enc.rounds} encoding(s)")
    master = master if again is None else again
    return dataclasses.replace(
        master,
        output_lufs=enc.lufs,
        true_peak_dbtp=enc.true_peak_dbtp,
        gain_db=master.gain_db + enc.gain_db,
        warnings=master.warnings + ((enc.warning,) if enc.warning else ()),
    )


def _run_jobs(
    stage: contextlib.AbstractContextManager[Callable[[str], None]],
    jobs: list[Callable[[], str]],
    workers: int,
    stop: threading.Event,
    pipeline: _Pipeline,
    hold: Callable[[], contextlib.AbstractContextManager[None]],
) -> None:
    """Run pass 1's jobs in a pool under a progress stage; the first failure stops the rest.

    Signals wait (``hold``) while the pool starts its threads: one raised inside
    ``Thread.start`` leaves a running thread the pool does not know, to write on after
    the scratch folder is removed."""
    with stage as step, ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            with hold():
                futures = [pool.submit(job) for job in jobs]
            for done in as_completed(futures):  # the first failure ends pass 1 at once
                step(done.result())
        except BaseException:
            stop.set()
            pipeline.cancel()
            pool.shutdown(wait=True, cancel_futures=True)  # stop before cleaning up
            raise


class _ProgramWave:
    """The take's program wave (:func:`program_wave`) for pass 1's bleed correlations, made
    by the first job that needs it, covering every recording (a separate clock's included)."""

    def __init__(self, plan: MixPlan) -> None:
        self._plan = plan
        self._lock = threading.Lock()
        self._wave: Floats | None = None
        self._made = False

    def get(self, rate: int) -> Floats | None:
        """The wave (None: the take has no click or backing)."""
        plan = self._plan
        with self._lock:
            if not self._made:
                ends = [i.nominal_start + to_rate(i.frames, i.rate, rate) for i in plan.items]
                frames = max([plan.start + plan.frames, *ends]) + rate  # a second's margin
                # to the next whole minute: the recordings of a take share a kept wave
                frames = -(-frames // (60 * rate)) * 60 * rate
                self._wave = program_wave(plan.session, plan.backings, frames, rate,
                                          programs_folder(plan))  # fmt: skip
                self._made = True
            return self._wave


def _linked(raw: RawAudio, path: Path) -> RawAudio:
    """A kept file hard-linked into the scratch folder as ``path`` and opened there (``raw``
    closed): what pass 1 writes next to it, or deletes after it, stays in the scratch folder."""
    os.link(raw.path, path)
    raw.close()
    return RawAudio.existing(path, raw.channels, raw.frames, int16=raw.dtype == np.int16)


def _spilled(values: npt.NDArray[np.float32], path: Path) -> npt.NDArray[np.float32]:
    """``values`` written to ``path`` and mapped from there (32 recordings' onset envelopes
    are ~40 MB that only a drift measured from onsets reads)."""
    np.save(path, values, allow_pickle=False)
    mapped: npt.NDArray[np.float32] = np.load(path, mmap_mode="r", allow_pickle=False)
    return mapped


def _own(raw: RawAudio, work: Path, opened: list[RawAudio]) -> RawAudio:
    """``raw``, or a scratch copy of it when its file is also kept (it is about to be changed
    in place; what is kept must not change)."""
    if raw.path.parent == work and os.stat(raw.path).st_nlink == 1:
        return raw
    copy = work / f"{raw.path.stem}.own.raw"
    shutil.copyfile(raw.path, copy)
    own = RawAudio.existing(copy, raw.channels, raw.frames, int16=raw.dtype == np.int16)
    opened.append(own)
    return own


def programs_folder(plan: MixPlan) -> Path | None:
    """Where what the singers heard is kept for the take's next mix (the server's), or None."""
    return None if plan.prepared is None else plan.prepared / prepared.PROGRAMS


def backings_needed(plan: MixPlan, heard: HeardPrograms | None) -> list[int]:
    """The backings (indices) pass 1 decodes: all of them for a mix; for pass 1 alone, those
    the recordings' singers heard (bleed removal reads them; nothing else does)."""
    if not plan.prepare_only:
        return list(range(len(plan.backings)))
    if heard is None:
        return []
    return sorted({k for i in plan.items if (k := heard.backing_for(i.rec.part)) is not None})


def mix_into(
    plan: MixPlan,
    ws: Workspace,
    bus: Callable[[int], RawAudio],
    opened: list[RawAudio],
    console: Console,
) -> MasterReport | None:
    """Pass 1 (decode, measure, de-drift every recording into the scratch folder, in
    parallel), the voice pass, the backing, and the master pass writing the mix (and the
    stems) into the scratch folder, for :meth:`Workspace.commit` to move into place.

    With ``plan.prepared``, pass 1 of a recording is read from there when it was kept, and
    kept there when it was not; with ``plan.prepare_only`` the mix stops after pass 1 (and
    returns None)."""
    rate = plan.manifest.rate
    work = ws.scratch
    stems_wanted = plan.stems or plan.project  # a project opens the stems: it needs them
    stem_fmt = "flac" if plan.fmt in LOSSY else plan.fmt  # stems stay lossless

    def spool(frames: int) -> RawAudio:
        """Where the master keeps its last measured output (written out without limiting
        it again when that is the gain it keeps)."""
        raw = RawAudio(work / "master-limited.f32", 2, frames)
        opened.append(raw)
        return raw

    pipeline = _Pipeline(partial(_new_mixdown, plan, bus, spool))
    ws.before_removal(pipeline.cancel)  # whatever ends the mix, no bus file comes after
    pipeline.start()
    stem_dir = stem_dir_for(plan.out_path)
    stems: list[daw.Stem] = []
    progress = StageProgress(console)
    stop = threading.Event()  # set when pass 1 fails: the other jobs end at their next block
    heard = None
    if not plan.keep_bleed:
        heard = HeardPrograms(plan.manifest.settings, rate, [b for b, _ in plan.backings],
                              scratch=work, kept=programs_folder(plan), opened=opened)  # fmt: skip
    kept = plan.prepared
    senses = any(senses_drift(i, plan.no_drift) for i in plan.items)
    # what a recording alone tells of the drift is measured when the take senses drift, and
    # kept with each kept recording (another one may come that senses it)
    sensing = senses or kept is not None
    sensed: dict[int, Sensed] = {}
    held: dict[int, tuple[RawAudio, VoiceAnalysis | None]] = {}  # waiting for the others
    program = _ProgramWave(plan)
    takes_backings = [b for b, _ in plan.backings]

    def kept_name(item: Input) -> str:
        return prepared.entry_name(plan.manifest, takes_backings, item, plan.keep_bleed,
                                   plan.no_drift)  # fmt: skip

    def decoded(item: Input) -> tuple[RawAudio, VoiceAnalysis | None]:
        """The recording in its scratch file, and its analysis (None when bleed removal may
        change it: it is measured once, after that)."""
        what = f"recording {item.rec.file} ({item.name})"
        analyser: VoiceAnalyser | None = None
        later = heard is not None and heard.expects(item.rec.part)
        if pipeline.ready and not later:
            from tutti.audio.analysis import VoiceAnalyser

            analyser = VoiceAnalyser(rate, item.channels)
        raw = decode(item.audio, rate, work / f"{item.index:04d}.raw", analyser, what, stop)
        opened.append(raw)
        pipeline.get()
        if analyser is None and not later:  # decoded while the analysis code was loading
            analyser = analyse(raw, rate, what, stop)
        # the analyser's buffers (~6 MB) go
        return raw, None if analyser is None else analyser.result()

    def finish(
        item: Input, raw: RawAudio, analysis: VoiceAnalysis | None, found: DriftEstimate | None
    ) -> str:
        what = f"recording {item.rec.file} ({item.name})"
        pipeline.get()  # the analysis code is loaded (or what stopped it is raised)
        if corrects_drift(item.rec, plan.no_drift):
            # measured again only if it was measured before (else bleed removal measures it)
            fixed, again = dedrift(item, raw, rate, plan.session, what, stop, found,
                                   measure=analysis is not None)  # fmt: skip
            if fixed is not raw:
                opened.append(fixed)
                raw, analysis = fixed, None if again is None else again.result()
        if item.rec.gaps:
            raw = _own(raw, work, opened)
            fade_gaps(item, raw, rate)
        if heard is not None:
            clean, cleaned = debleed(item, raw, rate, heard, what, stop)
            if cleaned is not None:
                opened.append(clean)
                raw, analysis = clean, cleaned.result()
        if analysis is None:  # left as it was: measured now
            analysis = analyse(raw, rate, what, stop).result()
        if kept is not None:
            prepared.keep(kept, kept_name(item), raw, analysis, item, sensed[item.index])
        if not plan.prepare_only:
            place(item, raw, analysis)
        return item.rec.file

    n_stems = len(plan.items) + len(plan.backings)  # the numbers as wide as the last one's

    def place(item: Input, raw: RawAudio, analysis: VoiceAnalysis) -> None:
        from tutti.audio.mixdown import Voice

        placed = item.timeline_start - plan.start  # where it sits in the mix
        key = "" if kept is None else kept_name(item)  # its audio, for kept group sums
        v = Voice(item.name, placed, item.gain_db, item.pan, item.mute, item.index, key)
        item.report = pipeline.get().add_source(raw, v, analysis)
        if stems_wanted:
            name = daw.stem_file_name(item.index, item.name, item.rec.part, stem_fmt, count=n_stems)
            track = f"{item.name} ({item.rec.part})"
            add_stem(name, track, raw, placed, item.pan, item.gain_db)

    def voice(item: Input) -> str:
        """Pass 1 of a recording (kept, or made), or as far as it goes alone: one whose drift
        only the rest of the take can tell is held for :func:`by_onsets`."""
        found = None if kept is None else prepared.load(kept, kept_name(item), item)
        if found is None and kept is not None and item.rec.file in plan.awaited:
            found = prepared.wait_for(kept, kept_name(item), item, stop)
        if found is not None:
            opened.append(found[0])
            sensed[item.index] = found[2]
            if not plan.prepare_only:
                place(item, found[0], found[1])
            return item.rec.file
        pending = None if kept is None else prepared.load_pending(kept, kept_name(item))
        analysis: VoiceAnalysis | None = None
        if pending is not None:
            kept_raw, sensed[item.index] = pending
            raw = _linked(kept_raw, work / f"{item.index:04d}.raw")
            opened.append(raw)
        else:
            raw, analysis = decoded(item)
            if sensing:
                drifts = senses_drift(item, plan.no_drift)
                wave = program.get(rate) if drifts else None
                new = sense(item, raw, rate, wave, drifts, stop)
                if kept is None:  # read again only if another's drift needs it
                    new.envelope = _spilled(new.envelope, work / f"{item.index:04d}.env.npy")
                sensed[item.index] = new
        got = sensed.get(item.index)
        estimate = None
        if got is not None and got.drifting:
            estimate = by_bleed(item, got, rate)
            if estimate is None:  # the rest of the take must tell
                if kept is not None and pending is None:
                    prepared.keep_pending(kept, kept_name(item), raw, item, got)
                held[item.index] = raw, analysis
                return item.rec.file
        return finish(item, raw, analysis, estimate)

    def add_stem(
        name: str, track: str, raw: RawAudio, start: int, pan: float, gain_db: float
    ) -> None:
        stem = stem_dir / name
        stems.append(
            daw.Stem(
                os.path.relpath(stem, plan.out_path.parent), track, 0, plan.frames, pan, gain_db
            )
        )
        write_stem(ws.temp_for(stem), raw, start, plan.frames, stem_fmt, rate, stop)

    def backing(k: int) -> str:
        b, audio = plan.backings[k]
        kept_in = plan.prepared  # kept decoded per take when its content is pinned
        name = None if kept_in is None else prepared.backing_name(rate, b)
        raw = None if kept_in is None or name is None else prepared.load_backing(kept_in, name)
        if raw is None:
            what = f"backing {b.file}"
            raw = decode(audio, rate, work / f"backing{k:02d}.raw", None, what, stop)
            if kept_in is not None and name is not None:
                prepared.keep_backing(kept_in, name, raw, b.file)
        opened.append(raw)
        if heard is not None:
            heard.backing_ready(k, raw)
        if not plan.mix_backing:
            return str(b.file)
        placed = b.timeline_start - plan.start
        pipeline.get().add_backing_source(raw, placed, plan.backing_db, order=k)
        if stems_wanted:  # after the singers' stems, in the order of the take's backing
            name = daw.stem_file_name(len(plan.items) + k, "Backing", b.part, stem_fmt, n_stems)
            add_stem(name, f"Backing ({b.part})", raw, placed, 0.0, plan.backing_db)
        return str(b.file)

    jobs: list[Callable[[], str]] = [partial(backing, k) for k in backings_needed(plan, heard)]
    jobs += [partial(voice, item) for item in plan.items]
    _run_jobs(progress.stage("reading and analysing", len(jobs)), jobs, plan.jobs, stop,
              pipeline, ws.hold)  # fmt: skip
    if held and not plan.prepare_only:  # drift measured against the whole take
        reference = heard_reference(plan.session, plan.backings, plan.start + plan.frames, rate,
                                    programs_folder(plan))  # fmt: skip
        cells = (plan.start + plan.frames) // hop_for(rate) + 1
        todo = [i for i in plan.items if i.index in held]
        fits = ensemble_drifts(plan.items, sensed, todo, reference, rate, cells)
        found = by_onsets(todo, fits, rate)
        jobs = [partial(finish, i, *held[i.index], found.get(i.index)) for i in todo]
        _run_jobs(progress.stage("placing", len(jobs)), jobs, plan.jobs, stop, pipeline,
                  ws.hold)  # fmt: skip
    if plan.prepare_only:
        return None
    mix = pipeline.get()
    from tutti.mix.groupsums import FolderSums, sums_folder  # with the mixdown: numba is loaded

    sums = None if kept is None else FolderSums(sums_folder(kept))
    mix.finish_voices(plan.jobs, sums)
    # the recordings' scratch files are done with (only the bus is read from here on): delete
    # them while the master pass runs (time otherwise spent at the end)
    cleaner = threading.Thread(
        target=_delete,
        args=([r for r in opened if r.path.parent == work and r.path.name != BUS_NAME],),
        daemon=True,
    )
    cleaner.start()
    tmp = ws.temp_for(plan.out_path)
    n_blocks = -(-mix.frames // mix.settings.block)
    # a lossy master is written in float first, to be encoded and measured after
    floats = RawAudio(work / "master.f32", 2) if plan.fmt in LOSSY else None
    if floats is not None:
        opened.append(floats)
    try:
        with (
            progress.stage("mastering and writing", n_blocks) as step,
            _master_out(tmp, plan.fmt, rate, floats) as write,
        ):

            def sink(block: AudioArray) -> None:
                write(block)
                if plan.also is not None:
                    plan.also.feed(block)
                step("")

            if plan.also is not None:
                plan.also.begin(mix.frames)
            master = mix.master(sink, jobs=plan.jobs)
    finally:
        cleaner.join()
    if floats is not None:
        master = _encoded(mix, master, floats, tmp, work / "encoded.again", plan, rate, stop,
                          progress)  # fmt: skip
    if sums is not None:  # the sums this mix used stay for the next (a remix)
        sums.keep_only(mix.sum_keys)
    if plan.project:
        ordered = sorted(stems, key=lambda s: s.file)
        title = plan.manifest.title or plan.manifest.take_id
        base = plan.out_path.parent / plan.out_path.stem
        for ext, text in (
            (".rpp", daw.reaper_project(ordered, rate, title=title)),
            (".lof", daw.audacity_lof(ordered, rate)),
        ):
            ws.temp_for(base.with_suffix(ext)).write_text(text, encoding="utf-8")
    return master
