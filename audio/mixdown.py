"""The leader's mixdown: many aligned voices into one stereo choir recording, in blocks.

Pure: the audio comes in through small *source* objects (a recording that can hand out any
range of its frames) and the summed stereo mix lives on a *bus* (a timeline of stereo frames
that can be read and written by range): :mod:`tutti.audio.buses`.  :func:`mix_arrays` uses
arrays for both; ``tutti mix`` (:mod:`tutti.mix.command`) uses raw float32 files on disk
(:mod:`tutti.mix.scratch`), so nothing the mixer holds grows with the length of the take or the
number of recordings.

Pipeline (one :class:`Mixdown` per mix):

1. **Voices** (:meth:`Mixdown.add_voice` for an array, :meth:`Mixdown.add_source` for a
   source measured while it was decoded; thread-safe): each recording's analysis (BS.1770
   loudness of its mono fold, peak, clipped samples, from
   :class:`~tutti.audio.analysis.VoiceAnalyser`) gives its
   gain — the loudness-matching gain that brings it to ``singer_lufs`` plus the leader's own
   gain in dB — and its constant-power pan.  Nothing is mixed yet.
2. **Voice pass** (:meth:`Mixdown.finish_voices`): the timeline is walked block by block;
   for each block every voice that overlaps it is read, folded to mono, gained, panned and
   summed (in the voices' order, eight at a time in parallel threads, each group's sum kept
   or read from a store when one is given: :mod:`tutti.audio.voicesum`), then the high-pass
   filter (carried state, one thread per channel) and the reverb (overlap-add with a carried
   tail) run on the sum, and the block is written to the bus.  Both filters are linear and
   time-invariant, so filtering the sum equals summing the filtered voices.
3. **Backing** (:meth:`Mixdown.add_backing`): added into the bus block by block at its level
   (it is a finished recording: no high-pass, no hall).
4. **Master** (:meth:`Mixdown.master`): the integrated loudness of the bus is measured; the
   master gain brings it to ``target_lufs``; the true-peak limiter keeps the output at or
   below ``ceiling_dbtp``.  Limiting lowers loudness, so the gain is corrected and the
   loudness measured again until it is within ``tolerance_lu`` of the target (secant steps on
   the measured gain → loudness curve, kept inside the narrowest pair of gains that brackets
   the target; when more gain no longer makes the mix louder — a target beyond what the
   limiter can reach at the ceiling — the search stops at the least gain that comes within
   0.1 LU of the loudest output, and says so; when the target falls in a jump of the gated
   loudness — equally loud blocks crossing the relative gate together — or the measurements
   run out, it keeps the measured gain closest to the target, and says why).  The true-
   peak envelope (4× oversampled) does not depend on the gain: its block maxima are computed
   once, and so are its per-frame values where the limiter acts, so the iterations only redo
   the cheap part.  The final pass hands output blocks to a sink (computed ahead on a thread
   pool while the sink encodes) and measures the output's true peak as written and its
   loudness; given a *spool*, the last measurement keeps its output there, and when its gain
   is the one kept the final pass writes that out instead of limiting and measuring again.

Memory: a few blocks of ``block`` frames per thread, each loudness meter's fixed input buffer
(64 s per channel, :class:`~tutti.audio.loudness.LoudnessMeter`) and one sum per 100 ms, one
true-peak maximum per block, and per-frame envelopes only where the limiter acts.

With all processing off (:meth:`MixSettings.linear`: no loudness matching, high-pass, reverb,
master gain or limiter) the mix is linear: the mix of summed recordings equals the sum of
their mixes.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from tutti.audio.analysis import VoiceAnalysis, analyse
from tutti.audio.buses import ArrayBus, ArraySource, Bus, Source
from tutti.audio.filters import DEFAULT_CUTOFF_HZ, HighPass
from tutti.audio.layout import pan_gains
from tutti.audio.limiter import Limiter, true_peak_envelope
from tutti.audio.loudness import LoudnessMeter, db_to_gain, gain_to_target
from tutti.audio.master import PeakEnvelope, search_gain
from tutti.audio.reverb import ConvolutionReverb, hall_ir
from tutti.audio.types import AudioArray, AudioError
from tutti.audio.voicesum import (
    GroupSums,
    Placed,
    SumWriter,
    group_key,
    group_span,
    groups_of,
    sum_group,
)
from tutti.inorder import in_order

__all__ = [
    "MixSettings",
    "Voice",
    "VoiceReport",
    "MasterReport",
    "Mixdown",
    "mix_arrays",
]

_CONTEXT = 16  # frames of context for the true-peak interpolator
_T = TypeVar("_T")


@dataclass(frozen=True)
class MixSettings:
    """Choices for one mix.

    Attributes
    ----------
    rate : int
        Mix sample rate, Hz (every voice must already be at this rate).
    target_lufs : float or None
        Master loudness target, LUFS; None leaves the level alone (no master gain).
    tolerance_lu : float
        How close to ``target_lufs`` the output must come, LU.
    singer_lufs : float or None
        Loudness every voice is brought to before the leader's gain (loudness matching);
        None turns matching off.
    max_match_db : float
        Largest loudness-matching gain either way, dB.
    highpass_hz : float or None
        High-pass cut-off against rumble, Hz; None turns it off.
    reverb_wet : float
        Level of the hall (0 = off; 0.3 is a modest hall).
    reverb_rt60 : float
        Reverberation time of the generated hall, seconds.
    limiter : bool
        Whether the true-peak limiter runs.
    ceiling_dbtp : float
        Highest true peak of the output, dBTP.
    block : int
        Block size for streaming passes, frames.
    """

    rate: int
    target_lufs: float | None = -16.0
    tolerance_lu: float = 0.05
    singer_lufs: float | None = -26.0
    max_match_db: float = 30.0
    highpass_hz: float | None = DEFAULT_CUTOFF_HZ
    reverb_wet: float = 0.0
    reverb_rt60: float = 1.8
    limiter: bool = True
    ceiling_dbtp: float = -1.0
    block: int = 1 << 16

    @classmethod
    def linear(cls, rate: int) -> MixSettings:
        """All processing off: the mix is a panned, gained sum."""
        return cls(rate, target_lufs=None, singer_lufs=None, highpass_hz=None, limiter=False)


@dataclass(frozen=True)
class Voice:
    """One recording's place in the mix.

    Attributes
    ----------
    name : str
        Shown in reports (usually the singer's name).
    timeline_start : int
        Timeline position of the recording's first sample, frames at the mix rate; negative
        values cut the part before timeline 0.
    gain_db : float
        The leader's gain, dB (added to the loudness-matching gain).
    pan : float
        −1 (left) … +1 (right).
    mute : bool
        Leave the voice out (it is still analysed and reported).
    order : int or None
        Its place in the order voices are summed (take.json's order); None: the order it
        was added in.  Ties keep the order added.
    key : str
        What identifies its audio, for a kept group sum (:mod:`tutti.audio.voicesum`);
        "" when nothing does.
    """

    name: str
    timeline_start: int = 0
    gain_db: float = 0.0
    pan: float = 0.0
    mute: bool = False
    order: int | None = None
    key: str = ""


@dataclass(frozen=True)
class VoiceReport:
    """A voice as mixed: its analysis, the gains applied (dB) and any warnings."""

    name: str
    analysis: VoiceAnalysis
    match_db: float
    gain_db: float
    muted: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class MasterReport:
    """The master stage: loudness before and after (LUFS), gain (dB), true peak (dBTP)."""

    premaster_lufs: float
    gain_db: float
    output_lufs: float
    true_peak_dbtp: float
    limited_frames: int
    iterations: int
    frames: int
    warnings: tuple[str, ...] = field(default=())


def match_db(settings: MixSettings, info: VoiceAnalysis) -> float:
    """The loudness-matching gain of a voice with analysis ``info``, dB."""
    if settings.singer_lufs is None or info.silent:
        return 0.0
    match = gain_to_target(
        info.loudness_lufs, settings.singer_lufs, max_gain_db=settings.max_match_db
    )
    return float(match)


def placed_voice(source: Source, voice: Voice, match: float, order: int) -> Placed:
    """``voice`` (not muted) ready for the voice pass, with its matching gain ``match``."""
    left, right = pan_gains(voice.pan)
    g = db_to_gain(match + voice.gain_db)
    return Placed(source, voice.timeline_start, g * left, g * right, order, voice.key)


class Mixdown:
    """One mix in progress: voices placed on the timeline, a stereo bus, and the master stage.

    Parameters
    ----------
    settings : MixSettings
    frames : int
        Timeline length in frames (the end of the last recording or backing).  With reverb,
        the bus is longer by the hall's tail (:attr:`frames` includes it).
    bus : callable, optional
        Makes the bus for a given number of frames; default :class:`ArrayBus` (in memory).
    spool : callable, optional
        Makes a second bus-sized timeline where the master keeps the limited output of the
        gain it measured last: when that gain is the one kept, the final pass writes it out
        instead of limiting and measuring it again (the same samples).  None: no spool.
    """

    def __init__(
        self,
        settings: MixSettings,
        frames: int,
        bus: Callable[[int], Bus] | None = None,
        spool: Callable[[int], Bus] | None = None,
    ) -> None:
        if frames <= 0:
            raise AudioError(f"mixdown: timeline of {frames} frames; nothing to mix")
        self.settings = settings
        self._reverb: ConvolutionReverb | None = None
        tail = 0
        if settings.reverb_wet > 0:
            ir = hall_ir(settings.rate, rt60=settings.reverb_rt60)
            self._reverb = ConvolutionReverb(ir, settings.reverb_wet)
            tail = self._reverb.tail_frames
        self.frames = frames + tail
        self.bus: Bus = (bus or ArrayBus)(self.frames)
        self._placed: list[Placed] = []
        self._backing: list[Placed] = []
        self._added = 0  # voices added so far: the order of those that give none
        #: pre-master true-peak maxima per block and loudness, from the voice pass
        self._pre: tuple[npt.NDArray[np.float64], float] | None = None
        self._lock = threading.Lock()
        self._voices_done = False
        #: the key of each group's sum in the voice pass (None: not kept), once it ran
        self.sum_keys: list[str | None] = []
        self._new_spool = spool
        self._spool: Bus | None = None
        self._measured: _Measured | None = None  # the master's last measured output

    # -- stage 1: voices -------------------------------------------------------------------
    def add_voice(self, audio: AudioArray, voice: Voice) -> VoiceReport:
        """Analyse a recording held in memory and place it (thread-safe).

        Parameters
        ----------
        audio : AudioArray
            The recording at the mix rate, shape (frames, channels); multi-channel
            recordings are folded to mono (the mean of their channels) before panning.
            Kept (not copied) until :meth:`finish_voices`.
        voice : Voice
            Where and how loud it goes.
        """
        info = analyse(audio, self.settings.rate, self.settings.block, mono=True)
        return self.add_source(ArraySource(audio), voice, info)

    def add_source(self, source: Source, voice: Voice, info: VoiceAnalysis) -> VoiceReport:
        """Place a recording already analysed (:class:`VoiceAnalyser`, mono fold) (thread-safe).

        Parameters
        ----------
        source : Source
            The recording at the mix rate; read during :meth:`finish_voices`.
        voice : Voice
        info : VoiceAnalysis
            Its analysis: gives the loudness-matching gain and the warnings.
        """
        if self._voices_done:
            raise AudioError("mixdown: voices must be added before finish_voices()")
        s = self.settings
        warnings: list[str] = []
        if info.silent:
            warnings.append("silent")
        if info.clipped:
            warnings.append(f"clipped ({info.clipped} samples)")
        match = match_db(s, info)
        report = VoiceReport(voice.name, info, match, voice.gain_db, voice.mute, tuple(warnings))
        with self._lock:
            order = self._added if voice.order is None else voice.order
            self._added += 1
            if not voice.mute:
                self._placed.append(placed_voice(source, voice, match, order))
        return report

    # -- stage 2: the voice pass -----------------------------------------------------------
    def add_backing_source(
        self, source: Source, start: int, gain_db: float = 0.0, order: int = 0
    ) -> None:
        """Place a backing track (mono or stereo :class:`Source`) at timeline frame ``start``;
        the voice pass adds it after the voices' high-pass and reverb, the backings in
        ``order`` whatever order they were added in (thread-safe)."""
        if self._voices_done:
            raise AudioError("mixdown: backing sources must be added before finish_voices()")
        channels = source.read(0, 0).shape[1]
        if channels not in (1, 2):
            raise AudioError(f"backing: {channels} channels; accepted: 1 or 2")
        g = db_to_gain(gain_db)
        with self._lock:
            self._backing.append(Placed(source, start, g, g, order))
            self._backing.sort(key=lambda p: p.order)  # sums round the same every time

    def _backing_block(self, a: int, b: int) -> AudioArray | None:
        out: AudioArray | None = None
        for p in self._backing:
            lo, hi = max(a, p.start), min(b, p.start + p.source.frames)
            if hi <= lo:
                continue
            seg = p.source.read(lo - p.start, hi - p.start)
            if out is None:
                out = np.zeros((b - a, 2), dtype=np.float32)
            out[lo - a : hi - a] += seg * np.float32(p.left)
        return out

    def finish_voices(self, jobs: int = 1, sums: GroupSums | None = None) -> None:
        """The voice pass: mix the placed voices into the bus block by block (sum, high-pass,
        reverb, then the backing sources), measuring the pre-master loudness and true-peak
        block maxima on the way.

        Groups of voices are read and summed in ``jobs`` threads, ahead of the block being
        filtered; with ``jobs`` ≥ 2 the two channels are high-passed in two threads and the
        true-peak envelope is computed on the pool.  The result does not depend on ``jobs``.
        With ``sums``, a group's sum kept there is read instead of made, and one made is
        kept there (:mod:`tutti.audio.voicesum`): the same bits either way.
        """
        if self._voices_done:
            return
        self._voices_done = True
        placed = self._placed
        self._placed = []
        writers: list[SumWriter] = []
        groups = [self._group_sum(g, sums, writers) for g in groups_of(placed)]
        try:
            self._voice_pass(placed, groups, jobs)
        except BaseException:
            for w in writers:
                w.discard()
            raise
        for w in writers:
            w.commit()

    def _group_sum(
        self, group: list[Placed], sums: GroupSums | None, writers: list[SumWriter]
    ) -> Callable[[int, int], AudioArray | None]:
        """How the voice pass gets ``group``'s sum over frames [a, b): read from ``sums``,
        or made (and written there)."""
        key = None if sums is None else group_key(group)
        self.sum_keys.append(key)
        if sums is None or key is None:
            return partial(sum_group, group)
        lo, hi = group_span(group, self.frames)
        if hi <= lo:
            return partial(sum_group, group)
        kept = sums.find(key, lo, hi)
        if kept is not None:

            def read(a: int, b: int) -> AudioArray | None:
                if b <= lo or a >= hi:
                    return None
                out = np.zeros((2, b - a), dtype=np.float32)
                out[:, max(a, lo) - a : min(b, hi) - a] = kept.read(max(a, lo), min(b, hi))
                return out

            return read
        writer = sums.start(key, lo, hi)
        if writer is None:
            return partial(sum_group, group)
        writers.append(writer)

        def made(a: int, b: int) -> AudioArray | None:
            out = sum_group(group, a, b)
            if out is not None and b > lo and a < hi:
                writer.write(max(a, lo), out[:, max(a, lo) - a : min(b, hi) - a])
            return out

        return made

    def _voice_pass(
        self,
        placed: list[Placed],
        groups: list[Callable[[int, int], AudioArray | None]],
        jobs: int,
    ) -> None:
        s = self.settings
        cut = s.highpass_hz
        hps = [HighPass(s.rate, 1, cut) for _ in range(2)] if cut is not None else []
        meter = LoudnessMeter(s.rate, 2)

        def filtered(args: tuple[AudioArray, int]) -> AudioArray:
            rows, c = args
            return hps[c].process(rows[c][:, None])[:, 0]

        def env_max(padded: AudioArray) -> float:
            env = true_peak_envelope(padded.T, pad=_CONTEXT)
            return float(env.max()) if env.size else 0.0

        # The block travels channel-major, (2, frames): the group sums, the high-pass and the
        # meters work along contiguous rows; it is interleaved once, for the bus.
        with (
            ThreadPoolExecutor(max_workers=max(1, jobs)) as pool,
            ThreadPoolExecutor(max_workers=2) as channels,
            ThreadPoolExecutor(max_workers=1) as metering,  # in order, beside this thread
            ThreadPoolExecutor(max_workers=1) as writing,  # the bus, in order, beside it too
        ):
            ahead: deque[list[Future[AudioArray | None]]] = deque()
            bounds = list(self._blocks())
            maxima: list[Future[float]] = []
            fed: list[Future[None]] = []  # blocks metered and written to the bus
            edge = np.zeros((2, _CONTEXT), dtype=np.float32)  # the frames before ``prev``
            prev: AudioArray | None = None

            def submit(k: int) -> None:
                a, b = bounds[k]
                ahead.append([pool.submit(g, a, b) for g in groups])

            for k in range(min(2, len(bounds))):
                submit(k)
            for k, (a, b) in enumerate(bounds):
                parts = [f.result() for f in ahead.popleft()]
                if k + 2 < len(bounds):
                    submit(k + 2)  # read and sum ahead while this block is filtered
                blk = np.zeros((2, b - a), dtype=np.float32)
                for part in parts:
                    if part is not None:
                        blk += part
                if hps and placed and jobs >= 2:
                    blk = np.stack(list(channels.map(filtered, ((blk, 0), (blk, 1)))))
                elif hps and placed:
                    blk = np.stack([filtered((blk, 0)), filtered((blk, 1))])
                if self._reverb is not None:
                    blk = np.asarray(blk + self._reverb.process(blk.T).T, dtype=np.float32)
                backing = self._backing_block(a, b)
                if backing is not None:
                    blk += backing.T
                if placed or backing is not None:  # blk is not changed after this
                    fed.append(writing.submit(self.bus.write, a, blk.T))
                fed.append(metering.submit(meter.feed, blk.T))
                if prev is not None:  # prev's envelope needs _CONTEXT frames either side
                    padded = np.concatenate([edge, prev, blk[:, :_CONTEXT]], axis=1)
                    maxima.append(pool.submit(env_max, padded))
                    edge = _tail(edge, prev)
                prev = blk
            if prev is not None:
                padded = np.concatenate([edge, prev, np.zeros((2, _CONTEXT), np.float32)], axis=1)
                maxima.append(pool.submit(env_max, padded))
            peaks = np.array([f.result() for f in maxima], dtype=np.float64)
            for done in fed:
                done.result()
        self._backing = []
        self._pre = (peaks, float(meter.integrated()))

    # -- stage 3: backing ------------------------------------------------------------------
    def add_backing(self, block: AudioArray, start: int, gain_db: float = 0.0) -> None:
        """Add a block of backing track (mono or stereo) at timeline frame ``start``."""
        if not self._voices_done:
            raise AudioError("mixdown: add the backing after finish_voices()")
        if block.shape[1] not in (1, 2):
            raise AudioError(f"backing: {block.shape[1]} channels; accepted: 1 or 2")
        lo = max(0, -start)
        hi = min(block.shape[0], self.frames - start)
        if hi <= lo:
            return
        g = np.float32(db_to_gain(gain_db))
        self._pre = None  # the voice pass's measurements no longer hold
        with self._lock:
            cur = np.array(self.bus.read(start + lo, start + hi), dtype=np.float32)
            cur += block[lo:hi] * g
            self.bus.write(start + lo, cur)

    # -- stage 4: master -------------------------------------------------------------------
    def _blocks(self) -> Iterator[tuple[int, int]]:
        step = self.settings.block
        for a in range(0, self.frames, step):
            yield a, min(self.frames, a + step)

    def _padded(self, a: int, b: int, pad: int) -> AudioArray:
        lo, hi = a - pad, b + pad
        if lo >= 0 and hi <= self.frames:
            return self.bus.read(lo, hi)
        out = np.zeros((hi - lo, 2), dtype=np.float32)
        src_lo, src_hi = max(0, lo), min(self.frames, hi)
        out[src_lo - lo : src_hi - lo] = self.bus.read(src_lo, src_hi)
        return out

    def _envelope_region(self, lo: int, hi: int) -> npt.NDArray[np.float32]:
        """True-peak envelope of bus frames [lo, hi) (zeros beyond the ends)."""
        env: npt.NDArray[np.float32] = true_peak_envelope(
            self._padded(lo, hi, _CONTEXT), pad=_CONTEXT
        )
        return env

    def _envelope_and_loudness(self, pool: ThreadPoolExecutor) -> tuple[PeakEnvelope, float]:
        """Per-block true-peak maxima of the bus (pool threads) and its loudness (this thread)."""

        def one(a: int, b: int) -> float:
            env = self._envelope_region(a, b)
            return float(env.max()) if env.size else 0.0

        futures = [pool.submit(one, a, b) for a, b in self._blocks()]
        meter = LoudnessMeter(self.settings.rate, 2)
        for a, b in self._blocks():
            meter.feed(self.bus.read(a, b))
        maxima = np.array([f.result() for f in futures], dtype=np.float64)
        return PeakEnvelope(self._envelope_region, maxima, self.settings.block, self.frames), float(
            meter.integrated()
        )

    def _peaks(self, maxima: npt.NDArray[np.float64]) -> PeakEnvelope:
        return PeakEnvelope(self._envelope_region, maxima, self.settings.block, self.frames)

    def _unlimited(
        self, a: int, b: int, gain: float, limiter: Limiter | None, env: PeakEnvelope
    ) -> bool:
        """Whether the limiter leaves frames [a, b) alone (gain 1 everywhere it can reach)."""
        if limiter is None:
            return True
        reach = env.max_over(a - limiter.pad, b + limiter.pad)
        return bool(reach * gain <= limiter.ceiling_linear)

    def _output_block(
        self, a: int, b: int, gain: float, limiter: Limiter | None, env: PeakEnvelope
    ) -> tuple[AudioArray, int]:
        """Output frames [a, b): the bus times the master gain, limited; and frames limited."""
        x = self.bus.read(a, b)
        if limiter is None or self._unlimited(a, b, gain, limiter, env):
            return np.asarray(x * np.float32(gain), dtype=np.float32), 0
        pad = limiter.pad - _CONTEXT
        g = limiter.gain_from_envelope(env.frames(a - pad, b + pad), gain)
        y = np.asarray(x * (g * np.float32(gain))[:, None], dtype=np.float32)
        return y, int(np.count_nonzero(g < 1.0))

    def _final_block(
        self, a: int, b: int, gain: float, limiter: Limiter | None, env: PeakEnvelope
    ) -> tuple[AudioArray, int, float]:
        """Output block [a, b) (one of :meth:`_blocks`), frames limited, and its true peak
        (linear) as it will be written.

        Where the limiter leaves the block and its neighbourhood alone the output is the bus
        times ``gain``, so its true peak is ``gain`` times the block's envelope maximum;
        elsewhere the written samples are oversampled again.
        """
        y, n = self._output_block(a, b, gain, limiter, env)

        def output(lo: int, hi: int) -> AudioArray:
            return self._output_block(lo, hi, gain, limiter, env)[0]

        return y, n, self._true_peak(a, b, gain, limiter, env, output)

    def _true_peak(
        self,
        a: int,
        b: int,
        gain: float,
        limiter: Limiter | None,
        env: PeakEnvelope,
        output: Callable[[int, int], AudioArray],
    ) -> float:
        """True peak (linear) of output block [a, b), whose frames ``output(lo, hi)`` gives:
        the envelope's maximum times ``gain`` where the limiter leaves the block and its
        neighbourhood alone, else the output oversampled again."""
        lo, hi = max(0, a - _CONTEXT), min(self.frames, b + _CONTEXT)
        if self._unlimited(lo, hi, gain, limiter, env):
            return env.max_over(a, b) * gain
        padded = np.zeros((hi - lo + 2 * _CONTEXT, 2), dtype=np.float32)
        padded[_CONTEXT : _CONTEXT + hi - lo] = output(lo, hi)
        tp = true_peak_envelope(padded, pad=_CONTEXT)[a - lo : b - lo]
        return float(tp.max()) if tp.size else 0.0

    def _in_order(
        self, pool: ThreadPoolExecutor, fn: Callable[[int, int], _T], window: int
    ) -> Iterator[_T]:
        """``fn(a, b)`` for every block, computed ahead on the pool, yielded in timeline order."""
        return in_order(pool, fn, self._blocks(), window)

    def _replayed_block(
        self, a: int, b: int, gain: float, limiter: Limiter | None, env: PeakEnvelope
    ) -> tuple[AudioArray, int, float]:
        """:meth:`_final_block` read from the measured output in the spool (its gain)."""
        measured, spool = self._measured, self._spool
        assert measured is not None and spool is not None
        y = np.array(spool.read(a, b), dtype=np.float32)
        n = measured.limited[a // self.settings.block]
        return y, n, self._true_peak(a, b, gain, limiter, env, spool.read)

    def _measure(
        self,
        gain: float,
        limiter: Limiter | None,
        env: PeakEnvelope,
        pool: ThreadPoolExecutor,
        window: int,
    ) -> float:
        """The output's loudness at ``gain``; with a spool, the output is kept there."""
        meter = LoudnessMeter(self.settings.rate, 2)
        spool = None if self._new_spool is None else self._spool_bus()
        self._measured = None  # the spool is overwritten from here on
        limited: list[int] = []
        blocks = self._in_order(
            pool, lambda a, b: self._output_block(a, b, gain, limiter, env), window
        )
        for (a, _b), (y, n) in zip(self._blocks(), blocks, strict=True):
            meter.feed(y)
            if spool is not None:
                spool.write(a, y)
                limited.append(n)
        lufs = float(meter.integrated())
        if spool is not None:
            self._measured = _Measured(gain, limited, lufs)
        return lufs

    def _spool_bus(self) -> Bus:
        """The spool, made at the first measurement and overwritten by each one after."""
        if self._spool is None:
            assert self._new_spool is not None
            self._spool = self._new_spool(self.frames)
        return self._spool

    def master(
        self,
        sink: Callable[[AudioArray], None],
        *,
        jobs: int = 1,
        aim_lufs: float | None = None,
    ) -> MasterReport:
        """Bring the bus to the target loudness, limit it and hand it to ``sink`` in blocks.

        Parameters
        ----------
        sink : callable
            Called with each output block (float32, (frames, 2)) in timeline order.
        jobs : int
            Threads for the oversampling and gain computations.
        aim_lufs : float, optional
            The loudness to bring the output to instead of the settings' target (a lossy
            master aims above it by what its codec takes away); the caller then judges the
            result, and no warning says the output missed the aim.

        Returns
        -------
        MasterReport
        """
        self.finish_voices(jobs)
        s = self.settings
        target = s.target_lufs if aim_lufs is None else aim_lufs
        warnings: list[str] = []
        limiter = Limiter(s.rate, ceiling_db=s.ceiling_dbtp) if s.limiter else None
        window = 2 * max(1, jobs) + 1
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            if self._pre is not None:
                env, pre_lufs = (
                    PeakEnvelope(
                        self._envelope_region, self._pre[0], self.settings.block, self.frames
                    ),
                    self._pre[1],
                )
            else:
                env, pre_lufs = self._envelope_and_loudness(pool)
            env_max = env.max_over(0, self.frames)
            gain_db = 0.0
            iterations = 0
            if target is not None and math.isfinite(pre_lufs):
                gain_db = target - pre_lufs
                if limiter is not None:
                    # limiting lowers loudness: correct the gain until the output lands
                    lim = limiter
                    gain_db, iterations, why = search_gain(
                        gain_db,
                        target,
                        s.tolerance_lu,
                        limits=lambda g: env_max * db_to_gain(g) > lim.ceiling_linear,
                        measure=lambda g: self._measure(db_to_gain(g), lim, env, pool, window),
                        ceiling_dbtp=s.ceiling_dbtp,
                    )
                    warnings.extend(why)
            elif target is not None:
                warnings.append("the mix is silent: no loudness to match")
            gain = db_to_gain(gain_db)
            # without limiting the output is the bus times the gain: its loudness is known
            acts = limiter is not None and env_max * gain > limiter.ceiling_linear
            meter = LoudnessMeter(s.rate, 2)
            limited = 0
            peak = 0.0
            measured = self._measured if acts else None
            if measured is not None and measured.gain != gain:
                measured = None
            final = self._final_block if measured is None else self._replayed_block
            for y, n, block_peak in self._in_order(
                pool, lambda a, b: final(a, b, gain, limiter, env), window
            ):
                sink(y)
                if acts and measured is None:
                    meter.feed(y)
                limited += n
                peak = max(peak, block_peak)
            if measured is not None:
                out_lufs = measured.lufs
            else:
                out_lufs = meter.integrated() if acts else pre_lufs + gain_db
            env.release()
        tp = 20.0 * math.log10(peak) if peak > 0 else -math.inf
        if target is not None and aim_lufs is None and math.isfinite(out_lufs):
            if abs(out_lufs - target) > s.tolerance_lu:
                warnings.append(f"loudness {out_lufs:.2f} LUFS misses the target {target:.2f} LUFS")
        if s.limiter and tp > s.ceiling_dbtp + 0.01:
            warnings.append(f"true peak {tp:.2f} dBTP above the ceiling {s.ceiling_dbtp:.2f} dBTP")
        return MasterReport(
            pre_lufs, gain_db, out_lufs, tp, limited, iterations, self.frames, tuple(warnings)
        )


@dataclass
class _Measured:
    """The limited output the master measured last (kept in the spool): its gain, frames
    limited per block and its loudness (LUFS)."""

    gain: float
    limited: list[int]
    lufs: float


def _tail(before: AudioArray, block: AudioArray) -> AudioArray:
    """The last ``_CONTEXT`` frames of ``before`` followed by ``block``, both channel-major
    (channels, frames)."""
    if block.shape[1] >= _CONTEXT:
        return np.array(block[:, -_CONTEXT:], dtype=np.float32)
    return np.concatenate([before, block], axis=1)[:, -_CONTEXT:]


def mix_arrays(
    voices: Sequence[tuple[AudioArray, Voice]],
    settings: MixSettings,
    *,
    backing: Sequence[tuple[AudioArray, int, float]] = (),
    frames: int | None = None,
    jobs: int = 1,
) -> tuple[AudioArray, list[VoiceReport], MasterReport]:
    """Mix in memory: the same pipeline as ``tutti mix``, for arrays.

    Parameters
    ----------
    voices : sequence of (AudioArray, Voice)
        Recordings at ``settings.rate`` and where they go.
    settings : MixSettings
    backing : sequence of (AudioArray, timeline_start, gain_db)
    frames : int, optional
        Timeline length; default: the end of the last voice or backing.
    jobs : int
        Threads.

    Returns
    -------
    mix : AudioArray
        float32, shape (frames [+ reverb tail], 2).
    voice_reports : list of VoiceReport
    master : MasterReport
    """
    if frames is None:
        ends = [v.timeline_start + a.shape[0] for a, v in voices]
        ends += [start + a.shape[0] for a, start, _ in backing]
        frames = max(ends, default=0)
    mix = Mixdown(settings, frames)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        reports = list(pool.map(lambda av: mix.add_voice(av[0], av[1]), voices))
    for audio, start, gain_db in backing:
        mix.add_backing_source(ArraySource(audio), start, gain_db)
    mix.finish_voices(jobs)
    blocks: list[AudioArray] = []
    master = mix.master(blocks.append, jobs=jobs)
    out = np.concatenate(blocks) if blocks else np.zeros((0, 2), np.float32)
    return out, reports, master
