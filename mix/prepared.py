"""Pass 1 kept for the next mix: each recording as pass 1 leaves it (decoded, de-drifted,
faded, bleed removed) with its analysis, what pass 1 found (where it goes, its drift, what to
say: :meth:`Input.outcome`) and what it measured for the drift of others
(:class:`~tutti.mix.driftsense.Sensed`), in a folder that outlives one mix.

A recording whose drift only the rest of the take can tell (a separate clock whose bleed did
not tell it) is kept decoded with what it measured, as a pending entry (in :data:`PENDING`):
the mix finishes it once every recording is in.

Only the server uses it (:mod:`tutti.server.mixing`): a recording is prepared as it arrives,
so the mix after the last upload only does what needs every recording, and a remix with other
gains or mutes reads every recording from here.  An entry is named by a digest of everything
pass 1 depends on (the recording's entry in ``take.json`` with its sha256, the take's rate and
settings, the backings, the options that change pass 1); gains, mutes and pans are applied
after it, so they are not part of the name.  The backings are kept decoded too (in
:data:`BACKINGS`, named by their entry in ``take.json`` with its sha256 and the take's rate),
so each is decoded once per take instead of once per recording and again by the mix.
``tutti mix`` itself keeps nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tutti.mix.inputs import Input
from tutti.mix.scratch import RawAudio
from tutti.takeformat import Backing, TakeManifest

if TYPE_CHECKING:
    from tutti.audio.analysis import VoiceAnalysis
    from tutti.mix.driftsense import Sensed

#: How long a mix waits for another process's pass 1 of a recording, and how often it looks.
_AWAIT_S = 300.0
_AWAIT_POLL_S = 0.02

__all__ = [
    "BACKINGS",
    "PENDING",
    "PROGRAMS",
    "Kept",
    "backing_name",
    "ended_marker",
    "digest",
    "entry_name",
    "forget",
    "keep",
    "keep_backing",
    "kept_files",
    "load",
    "load_backing",
    "keep_pending",
    "load_pending",
    "wait_for",
]

#: The kept backings' folder inside the kept pass 1's (apart: they are not recordings).
BACKINGS = "backing"
#: The pending entries' folder inside the kept pass 1's (apart: they are not done).
PENDING = "pending"
#: The parts' programs rendered whole for bleed removal (:mod:`tutti.mix.debleed`), apart.
PROGRAMS = "programs"
#: Raised when pass 1 makes other samples from the same inputs (its resampler, its bleed
#: fit): a server updated between two mixes of a take then makes its pass 1s again, so the
#: mix stays what ``tutti mix`` makes of the take folder.
PASS1_VERSION = 2
#: A kept pass 1: the recording's audio, its analysis, and what it measured for the drift.
Kept = tuple["RawAudio", "VoiceAnalysis", "Sensed"]


def entry_name(
    manifest: TakeManifest, backings: list[Backing], item: Input, keep_bleed: bool, no_drift: bool
) -> str:
    """The name of ``item``'s entry: a digest of what its pass 1 depends on."""
    settings = None if manifest.settings is None else manifest.settings.to_dict()
    what: dict[str, Any] = {
        "pass1": PASS1_VERSION,
        "recording": item.rec.to_dict(),
        "rate": manifest.rate,
        "settings": settings,
        "backing": [b.to_dict() for b in backings],
        "keep_bleed": keep_bleed,
        "no_drift": no_drift,
    }
    return digest(json.dumps(what, sort_keys=True, default=str))


def digest(text: str) -> str:
    """The name of what is kept for ``text`` (what it was made from): 40 hex digits of its
    sha256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def backing_name(rate: int, backing: Backing) -> str | None:
    """The name of a decoded backing's entry (a digest of its entry in ``take.json`` and the
    take's rate), None for a backing without a sha256 (its content is not pinned)."""
    if not backing.sha256:
        return None
    return digest(json.dumps({"backing": backing.to_dict(), "rate": rate}, sort_keys=True))


def keep(
    folder: Path, name: str, raw: RawAudio, analysis: VoiceAnalysis, item: Input,
    sensed: Sensed | None,
) -> None:  # fmt: skip
    """Keep ``raw`` (hard-linked: the scratch copy may go), its analysis, ``item``'s outcome
    and ``sensed`` as ``name``, and drop its pending entry; the analysis file (with the
    recording's file, as take.json names it) is written last, so an entry without it is
    incomplete and unused.  The folder must be on the scratch folder's file system; each
    file lands by an atomic rename (two mixes keeping the same entry at once leave one whole
    copy)."""
    about = {"analysis": asdict(analysis), "file": item.rec.file, "outcome": item.outcome()}
    _keep_audio(folder, name, raw, about, sensed)
    _remove(folder / PENDING, name)


def keep_pending(folder: Path, name: str, raw: RawAudio, item: Input, sensed: Sensed) -> None:
    """Keep a decoded recording waiting for the rest of the take (:data:`PENDING`)."""
    _keep_audio(folder / PENDING, name, raw, {"file": item.rec.file}, sensed)


def keep_backing(folder: Path, name: str, raw: RawAudio, file: str) -> None:
    """Keep a decoded backing as :func:`keep` keeps a recording (``file``: as take.json
    names it), in the folder's :data:`BACKINGS`."""
    _keep_audio(folder / BACKINGS, name, raw, {"file": file}, None)


def _keep_audio(
    folder: Path, name: str, raw: RawAudio, about: dict[str, Any], sensed: Sensed | None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    linked = raw.path.with_name(f"{raw.path.name}.kept")  # in the scratch folder: one writer
    os.link(raw.path, linked)
    os.replace(linked, folder / f"{name}.raw")
    if sensed is not None:
        tmp = raw.path.with_name(f"{raw.path.name}.env.npy")
        np.save(tmp, sensed.envelope, allow_pickle=False)
        os.replace(tmp, folder / f"{name}.env.npy")
        about = about | {"sensed": sensed.about()}
    _describe(raw, about, raw.path.with_name(f"{raw.path.name}.json"), folder / f"{name}.json")


def _describe(raw: RawAudio, about: dict[str, Any], tmp: Path, dest: Path) -> None:
    """Write ``raw``'s description with ``about`` at ``dest`` by way of ``tmp`` (atomic)."""
    meta = {"channels": raw.channels, "frames": raw.frames, "int16": raw.dtype == np.int16}
    tmp.write_text(json.dumps(meta | about), encoding="utf-8")
    os.replace(tmp, dest)


def load(folder: Path, name: str, item: Input) -> Kept | None:
    """The kept entry ``name`` (its audio opened for reading) with ``item``'s outcome taken
    back; None (and ``item`` untouched) when there is none."""
    from tutti.audio.analysis import VoiceAnalysis

    found = _load_audio(folder, name)
    if found is None:
        return None
    raw, meta, sensed = found
    try:
        if sensed is None:
            raise KeyError("sensed")
        a = meta["analysis"]
        analysis = VoiceAnalysis(
            float(a["loudness_lufs"]), float(a["peak_dbfs"]), int(a["clipped"])
        )
        item.restore(meta["outcome"])
    except (ValueError, KeyError, TypeError):
        raw.close()
        return None
    return raw, analysis, sensed


def load_pending(folder: Path, name: str) -> tuple[RawAudio, Sensed] | None:
    """The pending entry ``name`` (its audio opened for reading), None when there is none."""
    found = _load_audio(folder / PENDING, name)
    if found is not None and found[2] is not None:
        return found[0], found[2]
    if found is not None:
        found[0].close()
    return None


def load_backing(folder: Path, name: str) -> RawAudio | None:
    """The kept decoded backing ``name`` (opened for reading), None when there is none."""
    found = _load_audio(folder / BACKINGS, name)
    return None if found is None else found[0]


def _load_audio(folder: Path, name: str) -> tuple[RawAudio, dict[str, Any], Sensed | None] | None:
    from tutti.mix.driftsense import Sensed

    try:
        meta = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        sensed = None
        if "sensed" in meta:  # a recording's entry (a backing's has none)
            env = np.load(folder / f"{name}.env.npy", mmap_mode="r", allow_pickle=False)
            sensed = Sensed.from_about(meta["sensed"], env)
        raw = RawAudio.existing(folder / f"{name}.raw", int(meta["channels"]),
                                int(meta["frames"]), int16=bool(meta["int16"]))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return raw, meta, sensed


def _remove(folder: Path, name: str) -> None:
    """Remove entry ``name`` from ``folder`` (its analysis file first: it is then unused)."""
    for suffix in (".json", ".raw", ".env.npy"):
        (folder / f"{name}{suffix}").unlink(missing_ok=True)


def ended_marker(folder: Path, file: str) -> Path:
    """The file a pass 1 job for recording ``file`` leaves in ``folder`` when it ends (kept
    or not), for a mix that waits for it (:func:`wait_for`)."""
    return folder / f"{hashlib.sha256(file.encode('utf-8')).hexdigest()[:24]}.ended"


def wait_for(
    folder: Path, name: str, item: Input, stop: threading.Event, timeout: float = _AWAIT_S
) -> Kept | None:
    """The entry ``name`` once another process's pass 1 of ``item`` keeps it; None when that
    job ended without keeping it (perhaps as a pending entry), the mix stopped, or
    ``timeout`` seconds went by (the mix then makes it itself).  Looked for every
    :data:`_AWAIT_POLL_S` (a pass 1 takes ~0.3 s)."""
    until = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < until:
        found = load(folder, name, item)
        if found is not None:
            return found
        if ended_marker(folder, item.rec.file).exists():
            return load(folder, name, item)  # kept just before it ended, or not at all
        stop.wait(_AWAIT_POLL_S)
    return None


def _entries(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """Each entry's analysis file in ``folder`` and its recording's file (None: unreadable)."""
    for meta in folder.glob("*.json"):
        try:
            yield meta, str(json.loads(meta.read_text(encoding="utf-8"))["file"])
        except (OSError, ValueError, KeyError, TypeError):
            yield meta, None


def kept_files(folder: Path) -> set[str]:
    """The recordings (files, as take.json names them) whose pass 1 is kept.  Blocking."""
    return {file for _, file in _entries(folder) if file is not None}


def forget(folder: Path, keep_files: set[str]) -> int:
    """Remove the entries of every recording not in ``keep_files`` (a singer deleted theirs):
    how many went.  Blocking."""
    gone = 0
    for where in (folder, folder / PENDING):
        for meta, file in _entries(where):
            if file not in keep_files:
                _remove(where, meta.name.removesuffix(".json"))
                gone += where == folder
    return gone
