"""Pass 1 kept for the next mix: each recording as pass 1 leaves it (decoded, de-drifted,
faded, bleed removed) with its analysis, in a folder that outlives one mix.

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

#: How long a mix waits for another process's pass 1 of a recording, and how often it looks.
_AWAIT_S = 300.0
_AWAIT_POLL_S = 0.02

__all__ = [
    "BACKINGS",
    "backing_name",
    "ended_marker",
    "entry_name",
    "forget",
    "keep",
    "keep_backing",
    "kept_files",
    "load",
    "load_backing",
    "wait_for",
]

#: The kept backings' folder inside the kept pass 1's (apart: they are not recordings).
BACKINGS = "backing"


def entry_name(
    manifest: TakeManifest, backings: list[Backing], item: Input, keep_bleed: bool, no_drift: bool
) -> str:
    """The name of ``item``'s entry: a digest of what its pass 1 depends on."""
    settings = None if manifest.settings is None else manifest.settings.to_dict()
    what: dict[str, Any] = {
        "recording": item.rec.to_dict(),
        "rate": manifest.rate,
        "settings": settings,
        "backing": [b.to_dict() for b in backings],
        "keep_bleed": keep_bleed,
        "no_drift": no_drift,
    }
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def backing_name(rate: int, backing: Backing) -> str | None:
    """The name of a decoded backing's entry (a digest of its entry in ``take.json`` and the
    take's rate), None for a backing without a sha256 (its content is not pinned)."""
    if not backing.sha256:
        return None
    text = json.dumps({"backing": backing.to_dict(), "rate": rate}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def keep(folder: Path, name: str, raw: RawAudio, analysis: VoiceAnalysis, file: str) -> None:
    """Keep ``raw`` (hard-linked: the scratch copy may go) and its analysis as ``name``;
    the analysis (with the recording's ``file``, as take.json names it) is written last, so
    an entry without it is incomplete and unused.  The
    folder must be on the scratch folder's file system; each file lands by an atomic rename
    (two mixes keeping the same entry at once leave one whole copy)."""
    _keep_audio(folder, name, raw, {"analysis": asdict(analysis), "file": file})


def keep_backing(folder: Path, name: str, raw: RawAudio, file: str) -> None:
    """Keep a decoded backing as :func:`keep` keeps a recording (``file``: as take.json
    names it), in the folder's :data:`BACKINGS`."""
    _keep_audio(folder / BACKINGS, name, raw, {"file": file})


def _keep_audio(folder: Path, name: str, raw: RawAudio, about: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    linked = raw.path.with_name(f"{raw.path.name}.kept")  # in the scratch folder: one writer
    os.link(raw.path, linked)
    os.replace(linked, folder / f"{name}.raw")
    meta = {"channels": raw.channels, "frames": raw.frames, "int16": raw.dtype == np.int16}
    tmp = raw.path.with_name(f"{raw.path.name}.json")
    tmp.write_text(json.dumps(meta | about), encoding="utf-8")
    os.replace(tmp, folder / f"{name}.json")


def load(folder: Path, name: str) -> tuple[RawAudio, VoiceAnalysis] | None:
    """The kept entry ``name`` (its audio opened for reading), None when there is none."""
    from tutti.audio.analysis import VoiceAnalysis

    found = _load_audio(folder, name)
    if found is None:
        return None
    raw, meta = found
    try:
        a = meta["analysis"]
        analysis = VoiceAnalysis(
            float(a["loudness_lufs"]), float(a["peak_dbfs"]), int(a["clipped"])
        )
    except (ValueError, KeyError, TypeError):
        raw.close()
        return None
    return raw, analysis


def load_backing(folder: Path, name: str) -> RawAudio | None:
    """The kept decoded backing ``name`` (opened for reading), None when there is none."""
    found = _load_audio(folder / BACKINGS, name)
    return None if found is None else found[0]


def _load_audio(folder: Path, name: str) -> tuple[RawAudio, dict[str, Any]] | None:
    try:
        meta = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        raw = RawAudio.existing(folder / f"{name}.raw", int(meta["channels"]),
                                int(meta["frames"]), int16=bool(meta["int16"]))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return raw, meta


def ended_marker(folder: Path, file: str) -> Path:
    """The file a pass 1 job for recording ``file`` leaves in ``folder`` when it ends (kept
    or not), for a mix that waits for it (:func:`wait_for`)."""
    return folder / f"{hashlib.sha256(file.encode('utf-8')).hexdigest()[:24]}.ended"


def wait_for(
    folder: Path, name: str, file: str, stop: threading.Event, timeout: float = _AWAIT_S
) -> tuple[RawAudio, VoiceAnalysis] | None:
    """The entry ``name`` once another process's pass 1 of ``file`` keeps it; None when that
    job ended without keeping it, the mix stopped, or ``timeout`` seconds went by (the mix
    then makes it itself).  Looked for every :data:`_AWAIT_POLL_S` (a pass 1 takes ~0.3 s)."""
    until = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < until:
        found = load(folder, name)
        if found is not None:
            return found
        if ended_marker(folder, file).exists():
            return load(folder, name)  # kept just before it ended, or not at all
        stop.wait(_AWAIT_POLL_S)
    return None


def _entries(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """Each complete entry's analysis file and its recording's file (None: unreadable)."""
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
    for meta, file in _entries(folder):
        if file not in keep_files:
            meta.unlink(missing_ok=True)
            meta.with_suffix(".raw").unlink(missing_ok=True)
            gone += 1
    return gone
