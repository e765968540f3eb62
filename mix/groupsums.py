"""Groups' sums kept for the next mix (:mod:`tutti.audio.voicesum`), and summing them ahead.

Only the server uses it (:mod:`tutti.server.mixing`), beside the kept pass 1
(:mod:`tutti.mix.prepared`): when a recording's pass 1 is kept, every group of the mix to
come whose recordings are all kept is summed (:func:`presum`), so the mix after the last
upload sums only the last recording's group; the mix keeps the sums it made, so a remix that
changes one singer sums one group.  A sum is a raw float32 file, channel-major (2, frames)
from timeline frame ``lo``, with a small JSON file written last: a sum without it is
incomplete and never read.  Like the kept pass 1, a sum lands by an atomic rename (a process
killed while writing leaves only a temporary file) but is not synced to the disk.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tutti.audio.layout import default_pans
from tutti.audio.voicesum import GROUP, Placed, group_key, group_span, sum_group
from tutti.mix import prepared

if TYPE_CHECKING:
    from tutti.audio.mixdown import MixSettings
    from tutti.mix.inputs import Input
    from tutti.mix.passes import MixPlan
    from tutti.mix.scratch import RawAudio

__all__ = ["FolderSums", "completes_group", "presum", "sums_folder"]

_BLOCK = 1 << 16  # frames summed at a time ahead of the mix


def sums_folder(prepared_folder: Path) -> Path:
    """Where the sums of a take whose pass 1 is kept in ``prepared_folder`` go."""
    return prepared_folder / "sums"


class _Kept:
    def __init__(self, path: Path, lo: int, hi: int) -> None:
        self._lo = lo
        self._data = np.memmap(path, dtype=np.float32, mode="r", shape=(2, hi - lo))

    def read(self, a: int, b: int) -> npt.NDArray[np.float32]:
        return self._data[:, a - self._lo : b - self._lo]


class _Writer:
    def __init__(self, folder: Path, key: str, lo: int, hi: int) -> None:
        self._folder, self._key, self._lo, self._hi = folder, key, lo, hi
        self._tag = f"{os.getpid()}-{threading.get_ident()}"  # one writer per thread
        self._tmp = folder / f".{key}.{self._tag}.f32.tmp"
        with self._tmp.open("wb") as f:
            f.truncate(2 * (hi - lo) * 4)  # zeros (sparse) where no voice sings
        self._data: np.memmap | None = np.memmap(
            self._tmp, dtype=np.float32, mode="r+", shape=(2, hi - lo)
        )

    def write(self, a: int, sums: npt.NDArray[np.float32]) -> None:
        assert self._data is not None
        self._data[:, a - self._lo : a - self._lo + sums.shape[1]] = sums

    def commit(self) -> None:
        self._close()
        os.replace(self._tmp, self._folder / f"{self._key}.f32")
        meta = self._folder / f".{self._key}.{self._tag}.json.tmp"
        meta.write_text(json.dumps({"lo": self._lo, "hi": self._hi}), encoding="utf-8")
        os.replace(meta, self._folder / f"{self._key}.json")

    def discard(self) -> None:
        self._close()
        self._tmp.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._data is not None:
            del self._data
            self._data = None


class FolderSums:
    """Groups' sums kept in a folder (a :class:`tutti.audio.voicesum.GroupSums`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find(self, key: str, lo: int, hi: int) -> _Kept | None:
        try:
            meta = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
            k_lo, k_hi = int(meta["lo"]), int(meta["hi"])
            if not (k_lo <= lo and hi <= k_hi):
                return None
            path = self.folder / f"{key}.f32"
            if path.stat().st_size != 2 * (k_hi - k_lo) * 4:
                return None
            return _Kept(path, k_lo, k_hi)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def start(self, key: str, lo: int, hi: int) -> _Writer | None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return _Writer(self.folder, key, lo, hi)
        except OSError:  # a full disk: the mix goes on without keeping it
            return None

    def keep_only(self, keys: Iterable[str | None]) -> int:
        """Remove every sum but ``keys`` (the last mix's): how many went.  Blocking."""
        wanted = {k for k in keys if k}
        gone = 0
        for meta in self.folder.glob("*.json"):
            if meta.stem not in wanted:
                meta.unlink(missing_ok=True)
                meta.with_suffix(".f32").unlink(missing_ok=True)
                gone += 1
        return gone


def presum(plan: MixPlan, expected: Sequence[tuple[str | None, str]]) -> int:
    """Sum ahead each group of the mix to come whose recordings are all kept: how many sums
    were made.

    ``expected`` is the take.json the mix is predicted to read, in order: per singer the
    recording's file (None for one still to come) and the part.  From it come each voice's
    place in the order and its pan, as the mix will give them if the prediction holds; when
    it does not, the mix finds no sum under the keys it asks for and sums those groups
    itself (:func:`tutti.audio.voicesum.group_key` names every input of a sum)."""
    from tutti.mix.passes import mix_settings

    if plan.prepared is None:
        return 0
    by_file = {i.rec.file: i for i in plan.items}
    items = [None if file is None else by_file.get(file) for file, _ in expected]
    parts = [
        part if i is None else i.rec.part for i, (_, part) in zip(items, expected, strict=True)
    ]
    # (place in take.json, the recording or None for one still to come, pan), without the muted
    slots = [
        (n, item, pan)
        for n, (item, pan) in enumerate(zip(items, default_pans(parts), strict=True))
        if item is None or not item.mute
    ]
    store = FolderSums(sums_folder(plan.prepared))
    settings = mix_settings(plan)
    made = 0
    for k in range(0, len(slots), GROUP):
        group = slots[k : k + GROUP]
        kept = [(n, item, pan) for n, item, pan in group if item is not None]
        if len(kept) == len(group):  # no recording still to come
            made += _sum_ahead(store, plan, settings, kept)
    return made


def completes_group(
    kept: set[str], expected: Sequence[tuple[str | None, str]], file: str, muted: Sequence[str]
) -> bool:
    """Whether ``file``'s group in the predicted order (``expected`` without the muted) has
    every recording in ``kept``: the time for :func:`presum` to sum it."""
    order = [f for f, _ in expected if f is None or f not in muted]
    if file not in order:
        return False
    k = order.index(file) // GROUP * GROUP
    return all(f is not None and f in kept for f in order[k : k + GROUP])


def _sum_ahead(
    store: FolderSums, plan: MixPlan, settings: MixSettings, group: list[tuple[int, Input, float]]
) -> int:
    """Sum ``group`` (its recordings' kept pass 1) over all it covers into ``store``, unless
    it is there or a recording's pass 1 is not kept: 1 if made."""
    from tutti.audio.mixdown import Voice, match_db, placed_voice

    assert plan.prepared is not None
    backings = [b for b, _ in plan.backings]
    opened: list[RawAudio] = []
    try:
        voices = []
        for n, item, pan in group:
            name = prepared.entry_name(plan.manifest, backings, item, plan.keep_bleed,
                                       plan.no_drift)  # fmt: skip
            found = prepared.load(plan.prepared, name, item)
            if found is None:
                return 0
            raw, analysis, _ = found
            opened.append(raw)
            placed = item.timeline_start - plan.start
            v = Voice(item.name, placed, item.gain_db, pan, order=n, key=name)
            voices.append(placed_voice(raw, v, match_db(settings, analysis), n))
        return _write_sum(store, voices)
    finally:
        for raw in opened:
            raw.close()


def _write_sum(store: FolderSums, group: list[Placed]) -> int:
    """Sum ``group`` over all it covers into ``store`` (unless it is there): 1 if made."""
    key = group_key(group)
    lo, hi = group_span(group)
    if key is None or hi <= lo or store.find(key, lo, hi) is not None:
        return 0
    writer = store.start(key, lo, hi)
    if writer is None:
        return 0
    try:
        for a in range(lo, hi, _BLOCK):
            b = min(hi, a + _BLOCK)
            out = sum_group(group, a, b)
            if out is not None:
                writer.write(a, out)
    except BaseException:
        writer.discard()
        raise
    writer.commit()
    return 1
