"""Bleed removal in ``tutti mix``: what each singer heard (the headset program of their part,
rebuilt on the timeline), the leak path fitted on their quiet passages, and the predicted
bleed subtracted from the placed recording (:mod:`tutti.audio.bleed` does the fitting)."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tutti.audio.program import ProgramSound
from tutti.audio.types import AudioArray, AudioError
from tutti.inorder import in_order
from tutti.mix.decode import Stopped
from tutti.mix.folder import MixError
from tutti.mix.inputs import Input, to_rate
from tutti.mix.prepared import digest
from tutti.mix.scratch import RawAudio
from tutti.takeformat import Backing

if TYPE_CHECKING:  # imported in a thread when the mix starts: see tutti.mix.passes
    from tutti.audio.analysis import VoiceAnalyser
    from tutti.audio.bleed import FitLayout, LeakFit

__all__ = ["HeardPrograms", "debleed"]

_BLOCK = 1 << 15  # frames of program per subtraction step (its FFT length)
_HOPS_PER_READ = 64  # hops per read while measuring a recording
_RENDER_BLOCK = 1 << 16  # frames of a part's program rendered at a time
#: What a scan of a part's program found (whether it is limited, its hop energies), by what
#: the program is made of: a server worker prepares every recording of a take one by one,
#: and each would scan the same program again (a quarter of a second for 5 minutes).
_SCANS: dict[str, tuple[bool, npt.NDArray[np.float64]]] = {}
_SCANS_KEPT = 16
_SCANS_LOCK = threading.Lock()


class _ClippedBacking:
    """A decoded backing as the client played it: values clipped to [−1, 1]."""

    def __init__(self, raw: RawAudio) -> None:
        self._raw = raw

    @property
    def frames(self) -> int:
        return self._raw.frames

    @property
    def channels(self) -> int:
        return self._raw.channels

    def read(self, lo: int, hi: int) -> AudioArray:
        out: AudioArray = np.clip(self._raw.read(lo, hi), -1.0, 1.0)
        return out


@dataclasses.dataclass
class _Heard:
    """One part's program, built once: the sound, whether its ears differ, hop energies, and
    the program rendered whole (None: rendered range by range as asked)."""

    sound: ProgramSound
    channels: int  # 2 when left and right differ (a stereo backing), else 1
    hop_energy: npt.NDArray[np.float64]  # mean square per timeline hop, from timeline 0
    rendered: RawAudio | None = None

    def render(self, lo: int, hi: int) -> AudioArray:
        """Timeline frames [lo, hi) of what the singer heard, :attr:`channels` wide; zeros
        outside the program."""
        if self.rendered is None:
            return self.sound.render(lo, hi)[:, : self.channels]
        if 0 <= lo and hi <= self.rendered.frames:
            return self.rendered.read(lo, hi)
        out = np.zeros((max(0, hi - lo), self.channels), np.float32)
        a, b = max(lo, 0), min(hi, self.rendered.frames)
        if b > a:
            out[a - lo : b - lo] = self.rendered.read(a, b)
        return out


class HeardPrograms:
    """What each singer heard, per part, built on first use (thread-safe).

    A singer heard the backing of their part, or the take's only backing when none is for
    their part (as ``tutti join`` chooses), and the click (count-in and song) when the take
    has a tempo; the backings are those decoded in pass 1 (:meth:`backing_ready`).
    """

    def __init__(
        self,
        settings: Any,
        rate: int,
        backings: Sequence[Backing],
        *,
        scratch: Path | None = None,
        kept: Path | None = None,
        opened: list[RawAudio] | None = None,
    ) -> None:
        self.settings = dataclasses.replace(settings, rate=rate) if settings is not None else None
        self.rate = rate
        self.backings = list(backings)
        #: where each part's program is rendered whole (None: rendered range by range), and
        #: where one whose content is pinned is kept for the next mix (the server's)
        self.scratch, self.kept = scratch, kept
        self._opened = opened if opened is not None else []  # the mix closes them
        self._raws: dict[int, RawAudio] = {}
        self._ready = [threading.Event() for _ in self.backings]
        self._lock = threading.Lock()
        self._part_locks: dict[int | None, threading.Lock] = {}
        self._parts: dict[int | None, _Heard | None] = {}
        self._layout: FitLayout | None = None

    @property
    def layout(self) -> FitLayout:
        from tutti.audio.bleed import layout_for

        if self._layout is None:
            self._layout = layout_for(self.rate)
        return self._layout

    def backing_ready(self, k: int, raw: RawAudio) -> None:
        """Backing ``k`` has been decoded into ``raw``."""
        self._raws[k] = raw
        self._ready[k].set()

    def expects(self, part: str) -> bool:
        """Whether a singer of ``part`` heard anything known (a click or a backing)."""
        return self.settings is not None or self.backing_for(part) is not None

    def backing_for(self, part: str) -> int | None:
        """Index of the backing a singer of ``part`` heard, or None (click only)."""
        for k, b in enumerate(self.backings):
            if b.part == part:
                return k
        return 0 if len(self.backings) == 1 else None

    def heard(self, part: str, stop: threading.Event) -> _Heard | None:
        """The program a singer of ``part`` heard; None if they heard nothing we know of."""
        k = self.backing_for(part)
        if k is not None:
            while not self._ready[k].wait(0.1):
                if stop.is_set():
                    raise Stopped
        with self._lock:  # one part's build does not hold up the others'
            lock = self._part_locks.setdefault(k, threading.Lock())
        with lock:
            if k not in self._parts:
                self._parts[k] = self._build(k)
            return self._parts[k]

    def _build(self, k: int | None) -> _Heard | None:
        from tutti.audio.bleed import hop_energies

        raw = self._raws.get(k) if k is not None else None
        if self.settings is None and raw is None:
            return None
        start = self.backings[k].timeline_start if k is not None else 0
        sound = ProgramSound(
            self.settings,
            self.rate,
            _ClippedBacking(raw) if raw is not None else None,
            start,
            channels=2,
        )
        if sound.frames <= 0:
            return None
        hop = self.layout.hop
        key = self._scan_key(k, hop)
        with _SCANS_LOCK:
            scanned = None if key is None else _SCANS.get(key)
        if scanned is None:
            parts: list[npt.NDArray[np.float64]] = []
            # hop energies of the program before its soft limit, if any: they only rank hops
            visit = lambda part: parts.append(hop_energies(part, hop))  # noqa: E731
            sound.scan_peak(visit, hop * _HOPS_PER_READ)
            energy = np.concatenate(parts) / 2.0
            energy.flags.writeable = False  # shared by every recording of the part
            scanned = (sound.limited, energy)
            if key is not None:
                with _SCANS_LOCK:
                    while len(_SCANS) >= _SCANS_KEPT:
                        _SCANS.pop(next(iter(_SCANS)))
                    _SCANS[key] = scanned
        sound.limited = scanned[0]
        channels = 2 if raw is not None and raw.channels == 2 else 1
        heard = _Heard(sound, channels, scanned[1])
        heard.rendered = self._rendered(heard, key, k)
        if heard.rendered is not None:
            self._opened.append(heard.rendered)
        return heard

    def _rendered(self, heard: _Heard, key: str | None, k: int | None) -> RawAudio | None:
        """The part's program rendered whole: every recording of the part reads it instead of
        rendering the click and the backing again for each of its blocks (a seventh of pass
        1's CPU); kept in :attr:`kept` when its content is pinned, else in the scratch folder.
        The same samples as :meth:`ProgramSound.render` of any range (sample by sample)."""
        if self.scratch is None:
            return None
        folder = self.kept if self.kept is not None and key is not None else self.scratch
        what = json.dumps([key if key is not None else f"part {k}", heard.sound.limited,
                           heard.channels])  # fmt: skip
        path = folder / f"{digest(what)}.program.f32"
        frames = heard.sound.frames
        try:
            return RawAudio.existing(path, heard.channels, frames)
        except (OSError, ValueError):
            pass  # not made yet (or cut short: made again)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
        out = RawAudio(tmp, heard.channels)
        try:
            for a in range(0, frames, _RENDER_BLOCK):
                block = heard.sound.render(a, min(frames, a + _RENDER_BLOCK))
                out.append(np.ascontiguousarray(block[:, : heard.channels]))
        except BaseException:
            out.close()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)  # whole or not there: another process may be reading it
        out.path = path
        return out

    def _scan_key(self, k: int | None, hop: int) -> str | None:
        """What part ``k``'s program is made of (None when its backing's content is not
        pinned by a sha256: then it is scanned every time)."""
        backing = self.backings[k] if k is not None else None
        if backing is not None and not backing.sha256:
            return None
        settings = None if self.settings is None else self.settings.to_dict()
        what = {"settings": settings, "rate": self.rate, "hop": hop,
                "backing": None if backing is None else backing.to_dict()}  # fmt: skip
        return json.dumps(what, sort_keys=True, default=str)


def _ranges(item: Input, rate: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The recording's gaps and the headset's slips as (first frame, frames) in the placed
    recording's frames."""
    rec = item.rec

    def conv(events: Sequence[Any]) -> list[tuple[int, int]]:
        return [
            (
                to_rate(g.at, rec.rate, rate) - item.timeline_start,
                max(1, to_rate(g.frames, rec.rate, rate)),
            )
            for g in events
        ]

    return conv(rec.gaps), conv(rec.slips)


def _faded_gaps(raw: RawAudio, gaps: list[tuple[int, int]], ramp: int) -> list[tuple[int, int]]:
    """The gaps the mix faded (silent inside): the predicted bleed is faded with them."""
    out = []
    for at, n in gaps:
        lo, hi = max(0, at + ramp), min(raw.frames, at + n - ramp)
        if hi <= lo or not np.any(raw.read(lo, hi)):
            out.append((at, n))
    return out


def _measure(
    raw: RawAudio, first: int, hops: tuple[int, int], hop: int, stop: threading.Event
) -> npt.NDArray[np.float64]:
    """Mean square of the recording's mono fold per hop (hops counted from frame ``first``),
    for the hops ``[lo, hi)`` only (zeros elsewhere)."""
    from tutti.audio.bleed import hop_energies

    out = np.zeros(hops[1] if hops[1] > 0 else 0)
    step = _HOPS_PER_READ
    for k in range(max(0, hops[0]), hops[1], step):
        if stop.is_set():
            raise Stopped
        a = first + k * hop
        e = min(hops[1], k + step)
        out[k:e] = hop_energies(raw.read_mono(a, first + e * hop), hop)
    return out


def _blocked(
    ranges: list[tuple[int, int]], first: int, n_hops: int, hop: int, pad: int
) -> npt.NDArray[np.bool_]:
    """Hops (from frame ``first``) that touch any range, widened by ``pad`` frames."""
    bad = np.zeros(n_hops, dtype=bool)
    for at, n in ranges:
        lo = max(0, (at - pad - first) // hop)
        hi = min(n_hops, -(-(at + n + pad - first) // hop))
        if hi > lo:
            bad[lo:hi] = True
    return bad


def _fit(
    item: Input, raw: RawAudio, heard: _Heard, layout: FitLayout, settings: Any, rate: int,
    blocked: list[tuple[int, int]], stop: threading.Event,
) -> LeakFit:  # fmt: skip
    """Fit the leak path of one recording on its quiet hops (timeline-aligned hops)."""
    from tutti.audio import bleed

    hop, ts = layout.hop, item.timeline_start
    first = (-ts) % hop  # first recording frame on the timeline's hop grid
    n_hops = max(0, (raw.frames - first) // hop)
    k0 = (ts + first) // hop  # its timeline hop number
    ks = k0 + np.arange(n_hops)
    # the program sounds on timeline hops [0, len(heard.hop_energy)): only there can it leak
    ex = _measure(raw, first, (-k0, min(n_hops, len(heard.hop_energy) - k0)), hop, stop)
    ex = np.pad(ex, (0, n_hops - len(ex)))
    ep = np.zeros(n_hops)
    inside = (ks >= 0) & (ks < len(heard.hop_energy))
    ep[inside] = heard.hop_energy[ks[inside]]
    count_in = settings.count_in_frames if settings is not None else 0
    quiet = ks * hop + hop <= count_in
    usable = ~_blocked(blocked, first, n_hops, hop, layout.taps)
    idx = bleed.candidate_hops(ex, ep, quiet, usable, max(1, layout.window // hop))
    # a cheap look first (a few hundred hops): most recordings hold no leak
    few = idx[bleed.probe_hops(len(idx))]
    hops = _hops(raw, heard, layout, ts, first, few)
    probe = bleed.probe_leak(*hops, layout)
    sounding = np.flatnonzero(usable & (ep > 1e-12))
    if not probe.usable:
        return bleed.plainly_kept(probe, ex[idx], ex[sounding])
    if len(few) < len(idx):
        hops = _hops(raw, heard, layout, ts, first, idx)
    # and hops spread over the whole recording, to test the fit where the singer sings too
    sample = _hops(raw, heard, layout, ts, first, sounding[bleed.probe_hops(len(sounding))])
    fit = bleed.fit_leak(
        *hops, layout, start=probe.filters[0], changing=probe.changing, sample=sample
    )
    return bleed.plainly_kept(fit, ex[idx], ex[sounding])


def _hops(
    raw: RawAudio, heard: _Heard, layout: FitLayout, ts: int, first: int, idx: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """The recording and the program (with the filter's context) in the hops ``idx`` (counted
    from recording frame ``first``), and their timeline frames, for :func:`bleed.fit_leak`."""
    hop = layout.hop
    before, after = layout.context
    c = heard.channels
    # as read (float32): the fit transforms them in float64 a few hops at a time; kept
    # whole in float64 they were 90 MB of a 5-minute recording's fit, twice with 2 jobs
    xs = np.empty((len(idx), hop), np.float32)
    q = np.empty((len(idx), hop + layout.taps - 1, c), np.float32)
    for s, i in enumerate(idx):
        lo = first + int(i) * hop
        xs[s] = raw.read_mono(lo, lo + hop)
        t = ts + lo
        q[s] = heard.render(t - before, t + hop + after)
    return xs, q, (ts + first + idx * hop).astype(np.float64)


def _subtract(
    item: Input, raw: RawAudio, heard: _Heard, fit: LeakFit, gaps: list[tuple[int, int]],
    slips: list[tuple[int, int]], rate: int, stop: threading.Event,
) -> tuple[RawAudio, VoiceAnalyser, float]:  # fmt: skip
    """The recording minus its predicted bleed (faded with the gaps, none where the headset
    skipped), measured on the way, and the bleed's level (dBFS, RMS over the frames where
    the program sounded).  Written over ``raw`` itself when it is float and no other file
    shares it (the mix's own scratch: fresh pages cost this guest 2 ms per MB, the new file
    was a recording's size again), else into a new float scratch file."""
    from tutti.audio import bleed
    from tutti.audio.analysis import VoiceAnalyser
    from tutti.audio.gaps import FADE_S, gap_envelope

    before, after = fit.layout.context
    ramp = max(1, round(FADE_S * rate))
    ts = item.timeline_start
    step = _BLOCK - fit.layout.taps + 1  # so that the program's FFT is _BLOCK long

    def predicted(a: int) -> tuple[npt.NDArray[np.float32], int] | None:
        """The bleed in recording frames [a, a + step) and how many of them the program
        sounds in; None where it is silent."""
        b = min(raw.frames, a + step)
        t = ts + a
        lo, hi = max(t, 0), min(ts + b, heard.sound.frames)
        if hi <= lo:
            return None
        q = heard.render(lo - before, hi + after)
        pred = np.zeros(b - a, np.float32)
        pred[lo - t : hi - t] = bleed.predict(fit, q, lo)
        if gaps:
            pred *= gap_envelope(a, b, gaps, ramp)
        for at, n in slips:
            pred[max(0, at - a) : max(0, min(b, at + n) - a)] = 0.0
        return pred, hi - lo

    out = raw if _own_float(raw) else RawAudio(raw.path.with_suffix(".debleed.f32"), raw.channels)
    analyser = VoiceAnalyser(rate, raw.channels)
    energy, counted = 0.0, 0
    try:
        # the next blocks' bleed is predicted in two threads while this one is measured and
        # written: on the last upload's recording the mix has a core to spare
        with ThreadPoolExecutor(max_workers=2) as pool:
            starts = range(0, raw.frames, step)
            ahead = in_order(pool, predicted, ((a,) for a in starts), window=4)
            for a, got in zip(starts, ahead, strict=True):
                if stop.is_set():
                    raise Stopped
                block = raw.read(a, min(raw.frames, a + step))
                if got is not None:
                    pred, sounding = got
                    energy += float(np.dot(pred, pred))
                    counted += sounding
                    block = block - pred[:, None]
                analyser.feed(block)
                out.write(a, block)  # the same frames: read before they are written
    except BaseException:
        if out is not raw:
            out.close()
        raise
    level = 10.0 * np.log10(energy / counted) if counted and energy > 0 else -np.inf
    return out, analyser, float(level)


def debleed(
    item: Input,
    raw: RawAudio,
    rate: int,
    programs: HeardPrograms,
    what: str,
    stop: threading.Event,
) -> tuple[RawAudio, VoiceAnalyser | None]:
    """Fit the leak path of a placed (de-drifted, gap-faded) recording and subtract the
    predicted bleed.  Returns the file to mix and its new analysis, or ``raw`` and None when
    the recording is left alone; ``item.bleed`` says which and why."""
    heard = programs.heard(item.rec.part, stop)
    if heard is None:
        return raw, None  # no tempo (no click) and no backing: nothing to remove
    layout = programs.layout
    gaps, slips = _ranges(item, rate)
    try:
        fit = _fit(item, raw, heard, layout, programs.settings, rate, gaps + slips, stop)
    except AudioError as exc:
        raise MixError(f"{what}: bleed fit: {exc}") from None
    if not fit.usable:
        item.bleed = f"kept: {fit.reason}"
        return raw, None
    faded = _faded_gaps(raw, gaps, 0) if gaps else []
    out, analyser, level = _subtract(item, raw, heard, fit, faded, slips, rate, stop)
    item.bleed = f"{level:.1f} dBFS, removed {fit.gain_db:.1f} dB"
    if out is not raw:
        raw.close()
        raw.path.unlink()
    return out, analyser


def _own_float(raw: RawAudio) -> bool:
    """Whether ``raw`` holds float samples and is the only name of its file (a kept pass 1
    or a pending one is a second link: it must not change)."""
    return raw.dtype == np.float32 and os.stat(raw.path).st_nlink == 1
