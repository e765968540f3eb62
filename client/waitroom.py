"""The waiting room as a singer sees it: who is here, the leader's note, who waved just now.

:class:`RoomState` takes the server's ``lobby`` and ``waves`` (parsed at the connection's
edge) and gives the window its view; ``tutti join`` and ``tutti sing`` keep one each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

from tutti.wire import WAVE_EVERY_S, Lobby, Waves

__all__ = ["RoomState", "WAVE_SHOWN_S"]

#: Seconds "Ann waved 👋" stays on the screen.
WAVE_SHOWN_S: Final = 8.0


@dataclass
class RoomState:
    """The latest ``lobby`` (the newest by its server time wins), recent waves, and when
    this singer last waved.  Times are local ``time.monotonic()`` seconds."""

    lobby: Lobby | None = None
    waves: list[tuple[float, str]] = field(default_factory=list)  # (shown until, text)
    waved_at: float = -math.inf
    refusal: str = ""  # why the server refused this singer's last wave

    def on_lobby(self, lobby: Lobby) -> bool:
        """Take a snapshot unless an older one; returns whether the note changed."""
        old = self.lobby
        if old is not None and lobby.at < old.at:
            return False  # another server process's older snapshot arrived late
        self.lobby = lobby
        return old is None and bool(lobby.note) or old is not None and old.note != lobby.note

    def on_waves(self, waves: Waves, now: float) -> list[str]:
        """Take a ``waves``; returns the lines to show ("Ann waved 👋")."""
        lines = [f"{name} waved 👋" for name in waves.names]
        if waves.more:
            lines.append(f"and {waves.more} more waved 👋")
        self.waves = [w for w in self.waves if w[0] > now]
        self.waves += [(now + WAVE_SHOWN_S, line) for line in lines]
        return lines

    def waved(self, now: float) -> None:
        self.waved_at, self.refusal = now, ""

    def view(self, now: float) -> dict[str, Any]:
        """What the window shows of the room."""
        lobby = self.lobby
        wait = max(0.0, self.waved_at + WAVE_EVERY_S - now)  # 0 when never waved (-inf)
        return {
            "here": [] if lobby is None else [s.to_dict() for s in lobby.here],
            "count": 0 if lobby is None else lobby.count,
            "note": "" if lobby is None else lobby.note,
            "waves": [text for until, text in self.waves if until > now],
            "wave_in": math.ceil(wait),  # seconds until this singer may wave again
            "wave_refused": self.refusal,
        }
