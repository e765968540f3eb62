"""What ``tutti mix`` mixes: each recording as found on disk, checked against take.json, with
the singer's gain, mute and pan, and whether its clock is corrected."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tutti.audio.layout import default_pans
from tutti.mix.folder import AudioFile, MixError, probe
from tutti.takeformat import Backing, Recording, TakeManifest

if TYPE_CHECKING:
    from tutti.audio.drift import DriftEstimate
    from tutti.audio.mixdown import VoiceReport

__all__ = [
    "Input",
    "find_inputs",
    "find_backings",
    "to_rate",
    "apply_choices",
    "corrects_drift",
    "map_estimate",
    "placed_end",
]


@dataclass
class Input:
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
    timeline_start: int = 0  # at the take rate; pass 1 moves it by the drift's offset
    nominal_start: int = 0  # as take.json places it, at the take rate
    drift_ppm: float | None = None
    drift_from: str = ""  # "map" when the drift came from the recording's clock map
    warnings: list[str] = field(default_factory=list)
    report: VoiceReport | None = None
    bleed: str = ""  # what bleed removal did, for the report ("" nothing to say)

    def outcome(self) -> dict[str, Any]:
        """What pass 1 found of the recording (where it goes, its drift, what to say): kept
        with its pass 1 (:mod:`tutti.mix.prepared`) for :meth:`restore`."""
        return {
            "timeline_start": self.timeline_start,
            "drift_ppm": self.drift_ppm,
            "drift_from": self.drift_from,
            "warnings": list(self.warnings),
            "bleed": self.bleed,
        }

    def restore(self, outcome: dict[str, Any]) -> None:
        """Take back what :meth:`outcome` gave (raises ValueError, KeyError or TypeError
        for anything else)."""
        ppm = outcome["drift_ppm"]
        warnings = outcome["warnings"]
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise TypeError("warnings: a list of text expected")
        start, ppm = int(outcome["timeline_start"]), None if ppm is None else float(ppm)
        said, bleed = str(outcome["drift_from"]), str(outcome["bleed"])
        self.timeline_start, self.drift_ppm, self.drift_from = start, ppm, said
        self.warnings, self.bleed = list(warnings), bleed


def find_inputs(root: Path, manifest: TakeManifest) -> list[Input]:
    """Every recording of the take, checked against its file (rate, channels, length)."""
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
        item = Input(rec, audio, audio.frames, audio.channels, audio.rate, rec.singer)
        item.timeline_start = to_rate(rec.timeline_start, rec.rate, manifest.rate)
        item.nominal_start = item.timeline_start
        if rec.latency_source != "measured":
            item.warnings.append("latency not measured")
        if rec.rate != manifest.rate:
            item.warnings.append(f"resampled from {rec.rate} Hz")
        if rec.channels > 1:
            item.warnings.append(f"{rec.channels} channels folded to mono")
        out.append(item)
    return out


def to_rate(frames: int, from_rate: int, to_rate: int) -> int:
    """A frame count at ``from_rate`` in frames at ``to_rate``."""
    return frames if from_rate == to_rate else int(round(frames * to_rate / from_rate))


def apply_choices(items: list[Input], gains: list[str], mutes: list[str]) -> None:
    """Apply ``--gain NAME=DB`` and ``--mute NAME``; number and pan the items."""
    names = {i.name for i in items} | {i.rec.file for i in items}

    def match(name: str, opt: str) -> list[Input]:
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


def find_backings(root: Path, manifest: TakeManifest) -> list[tuple[Backing, AudioFile]]:
    """The take's backing tracks as found on disk (mono or stereo)."""
    out = []
    for b in manifest.backing:
        audio = probe(root, b.file, f"backing {b.file} ({b.part})")
        if audio.channels not in (1, 2):
            raise MixError(f"backing {b.file}: {audio.channels} channels; accepted: 1 or 2")
        out.append((b, audio))
    return out


def corrects_drift(rec: Recording, no_drift: bool) -> bool:
    """Whether the mix corrects this recording's clock (separate clocks, or a clock map)."""
    return not no_drift and (not rec.shared_clock or bool(rec.clock_map))


def map_estimate(item: Input, rate: int) -> DriftEstimate:
    """The drift and placement the recording's clock map gives, at the take's ``rate``,
    from its nominal start (raises :class:`~tutti.audio.types.AudioError` for a map that
    cannot be used)."""
    from tutti.audio.drift import drift_from_clock_map

    rec = item.rec
    points = [
        (p.frame * rate / rec.rate, p.timeline * rate / rec.rate) for p in rec.clock_map
    ]  # the map is in the recording's frames; the mix runs at the take's rate
    return drift_from_clock_map(points, item.nominal_start)


def placed_end(item: Input, rate: int, no_drift: bool) -> int:
    """Timeline frame (at the take's ``rate``) just after the recording's last sample where
    the mix puts it: by its clock map when the mix corrects it by a usable one (the map wins
    over ``start_offset − latency``), else where take.json puts it.  A drift pass 1 measures
    (markers, bleed, onsets) is not known yet: the nominal end is the take's word for it."""
    length = to_rate(item.frames, item.rate, rate)
    if not (item.rec.clock_map and corrects_drift(item.rec, no_drift)):
        return item.nominal_start + length
    from tutti.audio.types import AudioError

    try:
        est = map_estimate(item, rate)
    except AudioError:  # placed without it (pass 1 says so)
        return item.nominal_start + length
    start = est.corrected_timeline_start(item.nominal_start)
    # as long as the streaming resampler makes it (tutti.mix.dedrift)
    return start + (length if est.ppm == 0.0 else round(length / (1 + est.ppm * 1e-6)))
