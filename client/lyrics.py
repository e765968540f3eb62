"""The singer's words for a take: fetched at each take's start (the leader may have uploaded
new ones since), placed on the take's timeline, looked up as the take plays."""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from tutti import wire
from tutti.cues import cue_frames

__all__ = ["TimedWords", "fetch_words"]

log = logging.getLogger(__name__)
_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class TimedWords:
    """A take's lines at their timeline frames (sorted); empty when the part has no words."""

    frames: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def at(self, frame: int) -> tuple[str, str]:
        """``(line now, next line)`` at timeline ``frame`` (empty strings where there is none)."""
        i = bisect.bisect_right(self.frames, frame) - 1
        now = self.lines[i] if i >= 0 else ""
        upcoming = self.lines[i + 1] if i + 1 < len(self.lines) else ""
        return now, upcoming


async def fetch_words(
    http: aiohttp.ClientSession, base_url: str, token: str, part: str, settings: Any, length: int
) -> TimedWords:
    """Coroutine: the words for ``part`` placed on a take of ``length`` frames with ``settings``;
    none when the part has none or the server cannot say (the take goes on without words)."""
    url = f"{base_url}/api/session/lyrics/{quote(part, safe='')}"
    try:
        async with http.get(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=_TIMEOUT
        ) as resp:
            if resp.status == 404:
                return TimedWords()
            resp.raise_for_status()
            lyrics = wire.Lyrics.from_dict(await resp.json(), "lyrics")
    except (aiohttp.ClientError, TimeoutError, wire.WireError) as exc:
        log.warning("no words for this take: %s", exc)
        return TimedWords()
    placed = cue_frames(lyrics.cues, settings, length)
    return TimedWords([f for f, _ in placed], [text for _, text in placed])
