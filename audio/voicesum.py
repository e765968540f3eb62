"""The voice pass's sums: the placed voices summed in fixed groups, and the key that names a
group's sum, so that a sum made once is read again instead of made again.

The voices are taken in their mix order (``order``: the recording's place in take.json) and
summed eight at a time, each group from zero, in float32; the voice pass adds the groups in
order.  Each sample of a group's sum depends only on the group's voices at that sample (the
same operations in the same order whatever the block), so a group's sum over any range of the
timeline is the same bits as the voice pass's.  A group whose voices all have a ``key`` (what
identifies their audio: the server's kept pass 1, :mod:`tutti.mix.prepared`) gets a key of
its own from them, their places and their gains; a :class:`GroupSums` store keeps sums by
that key (:mod:`tutti.mix.groupsums`).  The server sums a take's groups while the last
recordings are still uploading, and a remix that changes one singer's gain sums one group.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from tutti.audio.buses import Source
from tutti.audio.kernels import pan_add

__all__ = ["GROUP", "GroupSums", "Placed", "SumReader", "SumWriter", "group_key", "group_span",
           "groups_of", "sum_group"]  # fmt: skip

GROUP = 8  # voices summed by one task of the voice pass (fixed: the sum does not depend on jobs)
_KEY_VERSION = 1  # raised when the way a group is summed changes (old sums no longer match)


@dataclass(frozen=True)
class Placed:
    """A voice ready to mix: its source, timeline start and left/right gains; its place in
    the mix order and what identifies its audio ("" when nothing does: never kept)."""

    source: Source
    start: int
    left: float
    right: float
    order: int = 0
    key: str = ""


class SumReader(Protocol):
    """A group's sum kept earlier."""

    def read(self, a: int, b: int) -> npt.NDArray[np.float32]:
        """Timeline frames [a, b), within the range it was kept for: float32 (2, b - a)."""
        ...


class SumWriter(Protocol):
    """A group's sum being kept: written by range (any order, from several threads), then
    committed; a sum never committed is never found."""

    def write(self, a: int, sums: npt.NDArray[np.float32]) -> None:
        """Frames [a, a + n) of the sum (float32 (2, n)), within the range it is kept for."""
        ...

    def commit(self) -> None:
        """Every range is written: keep it."""
        ...

    def discard(self) -> None:
        """Keep nothing."""
        ...


class GroupSums(Protocol):
    """Where groups' sums are kept, by :func:`group_key`."""

    def find(self, key: str, lo: int, hi: int) -> SumReader | None:
        """The sum ``key`` if it was kept over at least timeline frames [lo, hi)."""
        ...

    def start(self, key: str, lo: int, hi: int) -> SumWriter | None:
        """Keep the sum ``key`` over frames [lo, hi) (None: it is not kept)."""
        ...


def groups_of(placed: Sequence[Placed]) -> list[list[Placed]]:
    """The voice pass's groups: the voices in mix order, :data:`GROUP` at a time."""
    ordered = sorted(placed, key=lambda p: p.order)
    return [ordered[i : i + GROUP] for i in range(0, len(ordered), GROUP)]


def group_span(group: Sequence[Placed], frames: int | None = None) -> tuple[int, int]:
    """Timeline frames [lo, hi) the group's voices cover from frame 0 (to ``frames`` when
    given): outside it the group's sum is zero.  Empty (lo ≥ hi) when it covers nothing."""
    lo = max(0, min(p.start for p in group))
    hi = max(p.start + p.source.frames for p in group)
    return lo, hi if frames is None else min(hi, frames)


def group_key(group: Sequence[Placed]) -> str | None:
    """The name of the group's sum: a digest of its voices (their audio's keys, lengths,
    places and exact gains, in order); None when a voice's audio has no key."""
    if any(not p.key for p in group):
        return None
    what = [_KEY_VERSION] + [
        [p.key, p.source.frames, p.start, p.left.hex(), p.right.hex()] for p in group
    ]
    return hashlib.sha256(json.dumps(what).encode("ascii")).hexdigest()[:40]


def sum_group(group: Sequence[Placed], a: int, b: int) -> npt.NDArray[np.float32] | None:
    """Stereo sum of ``group`` over timeline frames [a, b), channel-major: float32
    (2, b - a) (None if none overlaps).

    Left and right are summed in two contiguous rows (not the strided columns of a
    (frames, 2) array) and without BLAS (whose own threads would compete with ours).  A
    16-bit recording is read as stored and scaled to float32 in the same multiplication
    as its gain, both rows in one pass (:func:`tutti.audio.kernels.pan_add`).
    """
    sums: npt.NDArray[np.float32] | None = None
    for p in group:
        lo, hi = max(a, p.start), min(b, p.start + p.source.frames)
        if hi <= lo:
            continue
        seg, scale = p.source.read_scaled(lo - p.start, hi - p.start)
        mono = seg[:, 0] if seg.shape[1] == 1 else seg.mean(axis=1, dtype=np.float32)
        if sums is None:
            sums = np.zeros((2, b - a), dtype=np.float32)
        pan_add(
            np.ascontiguousarray(mono),
            np.float32(p.left * scale),
            np.float32(p.right * scale),
            sums[0, lo - a : hi - a],
            sums[1, lo - a : hi - a],
        )
    return sums
