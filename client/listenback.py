"""Listen-back in ``tutti join``: the choir's mix of a take, into the singer's headset.

When the server's mix of a take is ready (``take.mix``, :mod:`tutti.server.mixing`), the
singer is told "The choir's mix of take N is ready — press L to listen"; the key fetches the
mix (FLAC, with the singer's own token: the mix endpoints let a singer of the session read)
and plays it through the engine's output stream, as a take's program without recording.

Three pieces, kept apart: :class:`ListenBack` (which mix is ready, what the singer is told),
:func:`fetch_mix` (download and decode, in the engine's layout) and :class:`KeyReader`
(single keys from a terminal in cbreak mode; nothing without a terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import termios
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from tutti.audio.types import AudioArray
from tutti.wire import TakeMix, error_message

__all__ = ["KEY", "ListenBack", "KeyReader", "ListenError", "fetch_mix"]

#: The key that plays the latest ready mix (either case).
KEY = "l"
#: Largest mix fetched, bytes (a 24-bit stereo FLAC of an hour is about 1 GB; this is 2 h).
MAX_MIX_BYTES = 2 << 30


class ListenError(Exception):
    """The mix could not be fetched or played; the message says why, for the singer."""


async def fetch_mix(
    http: aiohttp.ClientSession,
    base_url: str,
    token: str,
    path: str,
    *,
    rate: int,
    channels: int,
) -> AudioArray:
    """Coroutine: the mix at ``path`` (the server's FLAC), decoded as float32 (frames,
    ``channels``) at ``rate`` Hz (the session's, which the mix keeps)."""
    import soundfile as sf

    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with http.get(base_url.rstrip("/") + path, headers=headers) as r:
            if r.status != 200:
                body = await r.json(content_type=None) if r.content_type.endswith("json") else None
                why = error_message(body) or f"HTTP {r.status}"
                raise ListenError(f"the server did not give the mix: {why}")
            if (r.content_length or 0) > MAX_MIX_BYTES:
                raise ListenError("the mix is larger than this client plays")
            data = await r.read()
    except aiohttp.ClientError as exc:
        raise ListenError(f"the mix could not be downloaded ({exc})") from None

    def decode() -> tuple[AudioArray, int]:
        audio, got_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return audio, int(got_rate)

    try:
        audio, got_rate = await asyncio.to_thread(decode)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ListenError(f"the mix is not playable audio ({exc})") from None
    if got_rate != rate:
        raise ListenError(f"the mix is at {got_rate} Hz; the headset runs at {rate} Hz")
    return _to_channels(audio, channels)


def _to_channels(audio: AudioArray, channels: int) -> AudioArray:
    """Stereo to the engine's outputs: folded to mono for one, left/right on the first two."""
    if channels == audio.shape[1]:
        return audio
    if channels == 1:
        mono: AudioArray = audio.mean(axis=1, keepdims=True, dtype=np.float32)
        return mono
    out = np.zeros((len(audio), channels), dtype=np.float32)
    n = min(channels, audio.shape[1])
    out[:, :n] = audio[:, :n]
    return out


@dataclass
class ListenBack:
    """Which take's mix the singer may hear, and what they are told of it.

    ``take_ids`` lists the session's takes in the order this client saw them armed, so a
    take is named by its number; ``note`` shows a sentence to the singer."""

    note: Callable[[str], None]
    take_ids: list[str] = field(default_factory=list)
    ready: TakeMix | None = None

    def take_armed(self, take_id: str) -> None:
        if take_id not in self.take_ids:
            self.take_ids.append(take_id)

    def label(self, take_id: str) -> str:
        if take_id in self.take_ids:
            return f"take {self.take_ids.index(take_id) + 1}"
        return "the last take"

    def on_mix(self, mix: TakeMix) -> None:
        """A ``take.mix``: a ready mix becomes the one the key plays, and the singer is told."""
        if mix.state != "ready" or mix.files is None:
            return
        if self.ready is not None and self.ready.take_id == mix.take_id:
            if self.ready.version >= mix.version:
                return
        self.ready = mix
        self.note(f"The choir's mix of {self.label(mix.take_id)} is ready — press L to listen")

    def path(self) -> str | None:
        """Where the mix to play is fetched (the FLAC: lossless, decoded by libsndfile)."""
        return None if self.ready is None or self.ready.files is None else self.ready.files.flac


class KeyReader:
    """Single keys from a terminal (cbreak mode) handed to ``on_key`` in the event loop;
    does nothing when ``fd`` is not a terminal (``tutti join`` in a script or a test)."""

    def __init__(self, on_key: Callable[[str], Awaitable[None]], fd: int | None = None) -> None:
        self.on_key = on_key
        self.fd = fd
        self._old: list[Any] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> bool:
        """Start reading (needs a running loop); False when there is no terminal."""
        if self.fd is None:
            try:
                self.fd = sys.stdin.fileno()
            except (OSError, ValueError, AttributeError):  # no stdin, or a pseudo-file
                return False
        if not os.isatty(self.fd):
            return False
        self._old = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        asyncio.get_running_loop().add_reader(self.fd, self._readable)
        return True

    def _readable(self) -> None:
        assert self.fd is not None
        try:
            text = os.read(self.fd, 32).decode("utf-8", "replace")
        except OSError:
            return
        for ch in text:
            self.feed(ch)

    def feed(self, ch: str) -> None:
        """Hand one key on (its handler runs as a task)."""
        task = asyncio.ensure_future(self.on_key(ch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        """Stop reading and give the terminal its mode back."""
        if self._old is None or self.fd is None:
            return
        with contextlib.suppress(ValueError, RuntimeError):
            asyncio.get_running_loop().remove_reader(self.fd)
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._old)
        self._old = None
