"""Where each singer sits in the stereo picture, and the constant-power pan law.

Default layout by voice part, as a choir often stands facing the audience: sopranos and
tenors left of centre, altos and basses right of centre (``PART_CENTRES``).  Singers of one
part are spread evenly around their part's centre (``SPREAD`` wide), so a section sounds
like a group rather than one point.  Parts the table does not know sit in the centre, spread
the same way.

Pan positions run from −1 (hard left) through 0 (centre) to +1 (hard right).  The pan law
is constant power: left = cos θ, right = sin θ with θ = (pan + 1)·π/4, so left² + right² = 1
and a centred voice is −3 dB in each channel.

Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tutti.audio.types import AudioError

__all__ = ["PART_CENTRES", "SPREAD", "part_family", "default_pans", "pan_gains"]

#: Centre position of each voice-part family (−1 left … +1 right).
PART_CENTRES: dict[str, float] = {"S": -0.5, "T": -0.2, "A": 0.5, "B": 0.2}
#: Width (in pan units) over which the singers of one part are spread.
SPREAD = 0.3

_FAMILIES = {
    "S": ("S", "SOP", "SOPRANO"),
    "A": ("A", "ALT", "ALTO", "CONTRALTO"),
    "T": ("T", "TEN", "TENOR"),
    "B": ("B", "BAS", "BASS", "BARITONE", "BAR"),
}


def part_family(part: str) -> str | None:
    """The family ``"S"``, ``"A"``, ``"T"`` or ``"B"`` of a part name (``"S2"``, ``"Alto 1"``).

    Returns None for names that belong to no family (e.g. ``"Solo"``).
    """
    name = "".join(c for c in part.upper() if c.isalpha())
    for family, names in _FAMILIES.items():
        if name in names:
            return family
    return None


def default_pans(parts: Sequence[str]) -> list[float]:
    """Default pan position of each singer, given each singer's part (in mix order).

    Singers of the same part are spread evenly over ``SPREAD`` around the part's centre, in
    the order given; a part with one singer sits on its centre.
    """
    groups: dict[str | None, list[int]] = {}
    for i, part in enumerate(parts):
        groups.setdefault(part_family(part), []).append(i)
    pans = [0.0] * len(parts)
    for family, members in groups.items():
        centre = PART_CENTRES.get(family or "", 0.0)
        k = len(members)
        for j, i in enumerate(members):
            offset = 0.0 if k == 1 else SPREAD * (j / (k - 1) - 0.5)
            pans[i] = max(-1.0, min(1.0, centre + offset))
    return pans


def pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power (left, right) gains for ``pan`` in [−1, 1]."""
    if not -1.0 <= pan <= 1.0 or math.isnan(pan):
        raise AudioError(f"pan {pan}; accepted: −1 (left) to +1 (right)")
    theta = (pan + 1.0) * math.pi / 4.0
    return math.cos(theta), math.sin(theta)
