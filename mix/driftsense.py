"""Clock drift of separate-clock recordings without a clock map, measured against the rest of
the take: the program's bleed in each recording, then the onsets of the program and of the
other singers (see :mod:`tutti.audio.driftfind`), for :func:`tutti.mix.dedrift.dedrift`."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from tutti.audio.resample import StreamResampler
from tutti.mix.decode import READ_BLOCK, Stopped
from tutti.mix.folder import AudioFile
from tutti.mix.inputs import Input
from tutti.mix.prepared import digest
from tutti.mix.scratch import RawAudio
from tutti.takeformat import Backing
from tutti.wire import SessionSettings

if TYPE_CHECKING:
    from tutti.audio.drift import DriftEstimate
    from tutti.audio.driftfind import DriftFit, Floats

__all__ = [
    "HeardReference",
    "Sensed",
    "program_wave",
    "heard_reference",
    "sense",
    "by_bleed",
    "by_onsets",
    "ensemble_drifts",
    "senses_drift",
    "hop_for",
    "WAVE_RATE",
]

WAVE_RATE = 8000  # Hz of the waveforms the bleed is correlated at (the click is 1–1.6 kHz)
_WINDOW_S = 10.0  # seconds per correlation window
_MAX_LAG_S = 0.3  # lags searched either way: 400 ppm over 12 minutes
_BLEED_OFFSET_S = 0.02  # a start error the bleed may show
_HABIT_S = 0.12  # how far behind (or ahead of) the rest a singer may sing
_ONSET_WINDOW_S = 20.0  # people place notes ±20 ms: more notes per window (if 12 fit)
_ONSET_TOLERANCE_S = 0.01  # a window of onsets agrees within this of the line
_ONSET_SMOOTH_S = 0.008  # onset correlations smoothed so (σ, seconds)
#: A fit whose 95 % interval leaves the recording's end more uncertain than this is not used;
#: one more uncertain than :data:`_SAY_END_ERROR_S` is used with a warning.
_MAX_END_ERROR_S = 0.010
_SAY_END_ERROR_S = 0.001


@dataclass
class HeardReference:
    """What the singers heard, coarsely, as the drift's reference: a waveform at
    :data:`WAVE_RATE` (timeline frame 0 first) and its onset envelope on the recordings'
    envelope grid.  (The exact program is :mod:`tutti.audio.program`'s.)"""

    wave: Floats
    envelope: Floats


@dataclass
class Sensed:
    """What pass 1 measures of one recording alone for the drift: its onset envelope (one
    value per :func:`hop_for` of its own frames) and, for a ``drifting`` one, how the
    program's bleed in it lines up with the program.  Kept with the recording's pass 1
    (:mod:`tutti.mix.prepared`): the drift of the others may need it."""

    envelope: npt.NDArray[np.float32]
    drifting: bool
    bleed: DriftFit | None = None

    def about(self) -> dict[str, Any]:
        """All but the envelope, for :meth:`from_about`."""
        fit = None if self.bleed is None else asdict(self.bleed)
        return {"drifting": self.drifting, "bleed": fit}

    @classmethod
    def from_about(cls, about: dict[str, Any], envelope: npt.NDArray[np.float32]) -> Sensed:
        """The :class:`Sensed` that gave ``about`` and ``envelope`` (raises ValueError,
        KeyError or TypeError for anything else)."""
        from tutti.audio.driftfind import DriftFit

        fit = about["bleed"]
        if envelope.dtype != np.float32 or envelope.ndim != 1:
            raise TypeError("envelope: a float32 vector expected")
        if fit is not None:
            f = {k: float(fit[k]) for k in _FLOAT_FIELDS}
            fit = DriftFit(f["ppm"], f["ppm_low"], f["ppm_high"], f["offset_s"], f["strength"],
                           int(fit["agreeing"]), int(fit["windows"]))  # fmt: skip
        return cls(envelope, bool(about["drifting"]), fit)


_FLOAT_FIELDS = ("ppm", "ppm_low", "ppm_high", "offset_s", "strength")  # of a DriftFit


def senses_drift(item: Input, no_drift: bool) -> bool:
    """Whether a recording's drift is measured here: a separate clock without a clock map."""
    return not no_drift and not item.rec.shared_clock and not item.rec.clock_map


def hop_for(rate: int) -> int:
    """Frames per envelope value at the take's rate (about a millisecond)."""
    from tutti.audio.driftfind import ENV_RATE

    return max(1, rate // ENV_RATE)


def _backing_wave(audio: AudioFile, start: int, rate: int, out: Floats) -> None:
    """Add a backing track, mono at :data:`WAVE_RATE`, into ``out`` from timeline ``start``."""
    resample = StreamResampler(audio.rate, WAVE_RATE, 1)
    at = round(start * WAVE_RATE / rate)
    with sf.SoundFile(str(audio.path)) as f:
        for block in f.blocks(blocksize=1 << 18, dtype="float32", always_2d=True):
            part = resample(block.mean(axis=1, keepdims=True))[:, 0]
            lo, hi = max(0, at), min(out.shape[0], at + part.shape[0])
            if hi > lo:
                out[lo:hi] += part[lo - at : hi - at]
            at += part.shape[0]


#: Each process's program waves by what they are made of (see :func:`program_wave`).
_WAVES: dict[str, Floats] = {}
_WAVES_LOCK = threading.Lock()


def _wave_key(settings: SessionSettings | None, backings: list[tuple[Backing, AudioFile]],
              rate: int) -> str | None:  # fmt: skip
    """What a program wave is made of, or None when a backing's content is not pinned."""
    if any(not b.sha256 for b, _ in backings):
        return None
    what = {
        "settings": None if settings is None else settings.to_dict(),
        "backing": [b.to_dict() for b, _ in backings],
        "rate": rate,
    }
    return json.dumps(what, sort_keys=True, default=str)


def program_wave(
    settings: SessionSettings | None,
    backings: list[tuple[Backing, AudioFile]],
    frames: int,
    rate: int,
    kept: Path | None = None,
) -> Floats | None:
    """The click (from the take's tempo) and every backing track, mono at :data:`WAVE_RATE`
    from timeline frame 0, over at least ``frames`` timeline frames (a longer wave holds the
    same samples over those); None when the take has neither.  Kept per process for pinned
    backings: a server worker preparing a take's recordings reads each backing once; and,
    given ``kept`` (the server's take), in that folder, so that the other workers read it
    instead of making it (3 s of CPU for four stereo backings of five minutes)."""
    from tutti.audio.click import beat_frames, render_click

    if settings is None and not backings:
        return None
    n = int(frames * WAVE_RATE / rate) + 1
    key = _wave_key(settings, backings, rate)
    with _WAVES_LOCK:
        known = None if key is None else _WAVES.get(key)
    if known is not None and known.shape[0] >= n:
        return known
    path = None
    if kept is not None and key is not None:
        path = kept / f"{digest(key)}.wave.npy"
        known = _load_wave(path, n)
        if known is not None:
            return _remember(key, known)
    wave = np.zeros(n)
    if settings is not None:
        beats = beat_frames(settings, WAVE_RATE, seconds=n / WAVE_RATE)
        wave += render_click(beats, WAVE_RATE, n)[:, 0]
    for b, audio in backings:
        _backing_wave(audio, b.timeline_start, rate, wave)
    if path is not None:
        _keep_wave(path, wave)
    return wave if key is None else _remember(key, wave)


def _remember(key: str, wave: Floats) -> Floats:
    with _WAVES_LOCK:
        _WAVES.clear()  # one take at a time: the last one's wave goes
        _WAVES[key] = wave
    return wave


def _load_wave(path: Path, n: int) -> Floats | None:
    """The wave kept in ``path`` if it covers ``n`` samples, else None."""
    try:
        wave: Floats = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return wave if wave.ndim == 1 and wave.shape[0] >= n else None


def _keep_wave(path: Path, wave: Floats) -> None:
    """Keep ``wave`` in ``path`` (whole or not at all: another process may read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp.npy")
    try:
        np.save(tmp, wave, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # kept in this process only
    except BaseException:
        tmp.unlink(missing_ok=True)  # interrupted: nothing left behind
        raise


def heard_reference(
    settings: SessionSettings | None,
    backings: list[tuple[Backing, AudioFile]],
    frames: int,
    rate: int,
    kept: Path | None = None,
) -> HeardReference | None:
    """The program (:func:`program_wave`) over ``frames`` timeline frames and its onset
    envelope on the recordings' envelope grid; None when the take has no program or it is
    silent."""
    from tutti.audio.driftfind import hop_energy, onset_envelope

    whole = program_wave(settings, backings, frames, rate, kept)
    if whole is None:
        return None
    wave = whole[: int(frames * WAVE_RATE / rate) + 1]
    if not np.any(wave):
        return None
    hop = hop_for(rate)
    env_rate = rate / hop
    small = max(1, round(WAVE_RATE / env_rate))
    env = onset_envelope(hop_energy(wave.astype(np.float32), small), WAVE_RATE / small)
    grid = np.arange(int(frames / hop) + 1) * hop / rate * (WAVE_RATE / small)
    return HeardReference(wave, np.interp(grid, np.arange(env.shape[0]), env, right=0.0))


def _on_grid(env: Floats, start: int, hop: int, ppm: float, cells: int) -> Floats:
    """A recording's envelope (its own frames) on the timeline grid (cell ``g`` is timeline
    frame ``g·hop``), read on a clock ``ppm`` fast; zero where it holds nothing."""
    pos = ((np.arange(cells) * hop - start) * (1 + ppm * 1e-6)) / hop - 0.5
    out: Floats = np.interp(pos, np.arange(env.shape[0]), env, left=0.0, right=0.0)
    return out


def sense(
    item: Input,
    raw: RawAudio,
    rate: int,
    program: Floats | None,
    drifting: bool,
    stop: threading.Event,
) -> Sensed:
    """Read a decoded recording once: its onset envelope, and for a ``drifting`` one its
    waveform at :data:`WAVE_RATE` correlated with the ``program``'s bleed
    (:func:`program_wave`, covering the recording)."""
    from tutti.audio.driftfind import hop_energy, measure_drift, onset_envelope

    hop = hop_for(rate)
    block = hop * (READ_BLOCK // hop)
    energy, waves = [], []
    low = StreamResampler(rate, WAVE_RATE, 1) if drifting and program is not None else None
    for a in range(0, raw.frames, block):
        if stop.is_set():
            raise Stopped
        x = raw.read_mono(a, min(raw.frames, a + block))
        energy.append(hop_energy(x, hop))
        if low is not None:
            waves.append(low(x[:, None])[:, 0])
    env = onset_envelope(np.concatenate(energy) if energy else np.zeros(0), rate / hop)
    got = Sensed(env.astype(np.float32), drifting)
    if low is not None and program is not None:
        waves.append(low.flush()[:, 0])
        wave = np.concatenate(waves).astype(np.float64)
        at = round(item.nominal_start * WAVE_RATE / rate)
        ref = np.zeros(wave.shape[0])
        lo, hi = max(0, at), min(program.shape[0], at + wave.shape[0])
        if hi > lo:
            ref[lo - at : hi - at] = program[lo:hi]
        got.bleed = measure_drift(wave, ref, WAVE_RATE, window_s=_WINDOW_S, max_lag_s=_MAX_LAG_S,
                                  max_offset_s=_BLEED_OFFSET_S, whiten=True)  # fmt: skip
    return got


def _onset_window(item: Input) -> float:
    """Seconds per window of onsets: :data:`_ONSET_WINDOW_S`, shorter (down to 5 s) so that a
    short recording still has a dozen windows."""
    return min(_ONSET_WINDOW_S, max(5.0, item.frames / item.rate / 12))


def _placed(item: Input, got: Sensed, cells: int, hop: int, ppm: float, start: int) -> Floats:
    """A recording's envelope on the timeline grid, its frame 0 at timeline ``start`` and its
    clock ``ppm`` fast, scaled to unit spread (every reference counts alike)."""
    return _unit(_on_grid(got.envelope.astype(np.float64), start, hop, ppm, cells))


def _active(item: Input, got: Sensed, cells: int, hop: int) -> Floats:
    """1 on the grid cells the recording covers at its nominal place, else 0."""
    lo = max(0, -(-item.nominal_start // hop))
    hi = (item.nominal_start + got.envelope.shape[0] * hop) // hop
    out = np.zeros(cells)
    out[min(cells, lo) : min(cells, max(lo, hi))] = 1.0
    return out


def ensemble_drifts(
    items: list[Input],
    sensed: dict[int, Sensed],
    todo: list[Input],
    program: HeardReference | None,
    rate: int,
    cells: int,
) -> dict[int, tuple[DriftFit, bool]]:
    """The drift of each recording in ``todo`` from its onsets against the others'.

    The reference starts with what runs on the timeline's clock — the program, and every
    other recording where pass 1 placed it, on its corrected clock (shared, from a map or
    from the bleed) — so the first fit is absolute; a second round adds the others,
    corrected by their first fits.  Returns index → (fit, anchored): without anything on the
    timeline's clock the singers can be compared only with each other, which does not tell
    whose clock ran (anchored False).
    """
    from tutti.audio.driftfind import measure_drift

    hop = hop_for(rate)
    todo_ids = {i.index for i in todo}
    anchor = np.zeros(cells)
    if program is not None:
        anchor += _unit(program.envelope[:cells])
    for it in items:
        if it.index not in todo_ids:
            ppm = it.drift_ppm or 0.0
            anchor += _placed(it, sensed[it.index], cells, hop, ppm, it.timeline_start)
    anchored = bool(np.any(anchor))
    fits: dict[int, DriftFit] = {}
    for rnd in range(2 if len(todo) > 1 and anchored else 1):
        crowd = {}  # each undecided singer, corrected by its last fit if that was certain
        if not anchored or rnd > 0:
            for other in todo:
                prev = fits.get(other.index)
                ppm = prev.ppm if prev is not None and prev.certain else 0.0
                got = sensed[other.index]
                crowd[other.index] = _placed(other, got, cells, hop, ppm, other.nominal_start)
        everyone = anchor + sum(crowd.values(), np.zeros(cells))
        new: dict[int, DriftFit] = {}
        for it in todo:
            s = sensed[it.index]
            ref = everyone - crowd[it.index] if crowd else everyone  # leave this one out
            new[it.index] = measure_drift(
                _on_grid(s.envelope.astype(np.float64), it.nominal_start, hop, 0.0, cells), ref,
                rate / hop, window_s=_onset_window(it), max_lag_s=_MAX_LAG_S,
                max_offset_s=_HABIT_S, whiten=False, active=_active(it, s, cells, hop),
                tolerance_s=_ONSET_TOLERANCE_S, smooth_s=_ONSET_SMOOTH_S,
            )  # fmt: skip
        fits = new
    return {k: (f, anchored) for k, f in fits.items()}


def _unit(env: Floats) -> Floats:
    """An envelope scaled to unit spread (every reference counts alike)."""
    sd = float(env.std())
    return env / sd if sd > 0 else env


def _said(fit: DriftFit) -> str:
    return f"{fit.agreeing} of {fit.windows} windows agree, strength {fit.strength:.1f}"


def _half(fit: DriftFit) -> float:
    """Half the fit's 95 % interval, ppm."""
    return 0.5 * (fit.ppm_high - fit.ppm_low)


def _precise(fit: DriftFit, item: Input, rate: int) -> bool:
    """Whether the fit is certain, places the recording's end within :data:`_MAX_END_ERROR_S`
    (its 95 % interval) and tells a drift from none (the interval leaves 0 out)."""
    return (
        fit.certain
        and fit.end_error_s(item.frames / item.rate) <= _MAX_END_ERROR_S
        and not fit.ppm_low <= 0.0 <= fit.ppm_high
    )


def _doubt(fit: DriftFit, item: Input, how: str) -> str:
    """The warning for a fit that cannot be used."""
    if not fit.certain:
        return f"drift: cannot tell from bleed or onsets ({_said(fit)})"
    end = 1000 * fit.end_error_s(item.frames / item.rate)
    if fit.ppm_low <= 0.0 <= fit.ppm_high and end <= 1000 * _MAX_END_ERROR_S:
        return f"no drift found from {how} (within ±{_half(fit):.1f} ppm): not corrected"
    return (
        f"drift {fit.ppm:+.1f} ± {_half(fit):.1f} ppm from {how}, ±{end:.0f} ms by the end: "
        "too uncertain to correct"
    )


def _estimate(item: Input, fit: DriftFit, how: str) -> DriftEstimate:
    """The drift ``fit`` found (from ``how``) as the estimate :func:`dedrift` corrects by;
    says where it came from, and how uncertain it leaves the end when that is over 1 ms."""
    from tutti.audio.drift import DriftEstimate

    item.drift_from = f"{how} ±{max(0.05, _half(fit)):.1f}"
    end = fit.end_error_s(item.frames / item.rate)
    if end > _SAY_END_ERROR_S:
        item.warnings.append(f"drift from {how} uncertain: ±{1000 * end:.0f} ms by the end")
    return DriftEstimate(ppm=fit.ppm, offset_frames=0.0, markers_used=fit.agreeing,
                         residual_frames=0.0)  # fmt: skip


def by_bleed(item: Input, got: Sensed, rate: int) -> DriftEstimate | None:
    """The drift of a recording :func:`sense` looked at for bleed, from the bleed alone when
    it is certain and precise; None when the other recordings' onsets must tell
    (:func:`by_onsets`)."""
    if got.bleed is None or not _precise(got.bleed, item, rate):
        return None
    return _estimate(item, got.bleed, "bleed")


def by_onsets(
    todo: list[Input], found: dict[int, tuple[DriftFit, bool]], rate: int
) -> dict[int, DriftEstimate]:
    """The drift of each recording in ``todo`` (its bleed did not tell) from what
    :func:`ensemble_drifts` ``found`` of its onsets, where they tell and are anchored to the
    timeline's clock.  A recording neither measures gets a warning and no estimate (markers
    are tried next)."""
    out: dict[int, DriftEstimate] = {}
    for it in todo:
        fit, anchored = found[it.index]
        if _precise(fit, it, rate) and anchored:
            out[it.index] = _estimate(it, fit, "onsets")
        elif fit.certain and not anchored:
            it.warnings.append(
                f"drift {fit.ppm:+.1f} ppm against the other singers only (no click, "
                "backing or shared-clock singer to say whose clock ran): not corrected"
            )
        else:
            it.warnings.append(_doubt(fit, it, "onsets"))
    return out
