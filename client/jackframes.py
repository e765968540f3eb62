"""JACK's own frame counter, read from the audio callback: exact where PortAudio's is not.

PortAudio's JACK host API stamps a callback with ``jack_frame_time()``, an estimate that JACK
interpolates from the wall clock through a filter; on a busy machine it wanders by a period or
more, and by thousands of frames after the server hiccups, so losses read from it are off by
whole periods.  ``jack_last_frame_time()`` is the frame at which the current cycle began,
counted by the server itself: it steps by exactly the frames a client missed.  This module
opens a port-less JACK client only to read it (the library PortAudio loaded, through ctypes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

__all__ = ["JackFrames", "open_jack_frames"]

_JACK_NO_START_SERVER = 0x01
_WRAP = 1 << 32  # jack_nframes_t is a 32-bit counter (about 25 hours at 48 kHz)


class JackFrames:
    """The JACK server's cycle-start frame, unwrapped to a growing count (callback-safe)."""

    def __init__(self, lib: ctypes.CDLL, client: int) -> None:
        self._lib = lib
        self._client = client
        self._last = -1
        self._wraps = 0
        self.buffer_size = int(lib.jack_get_buffer_size(client))
        self.monotonic_offset = 0.0
        self.measure_offset()

    def frame(self) -> int:
        """Frame at which the current JACK cycle began."""
        raw = int(self._lib.jack_last_frame_time(self._client))
        if raw < self._last - _WRAP // 2:
            self._wraps += 1
        self._last = raw
        return raw + self._wraps * _WRAP

    def cycle_time(self) -> float:
        """``time.monotonic()`` seconds at which the cycle :meth:`frame` last read began, from
        the server's own frame timer: every client of the server reads the same value, where
        each one's wake-up time differs by its scheduling (the mapping's spread)."""
        usecs = int(self._lib.jack_frames_to_time(self._client, self._last & (_WRAP - 1)))
        return usecs / 1e6 + self.monotonic_offset

    def measure_offset(self, tries: int = 32) -> float:
        """``time.monotonic() − jack_get_time()`` in seconds, read back to back (the closest
        pair of reads wins); JACK's clock may be another Linux clock than Python's."""
        best, offset = float("inf"), 0.0
        for _ in range(tries):
            a = time.monotonic()
            j = int(self._lib.jack_get_time()) / 1e6
            b = time.monotonic()
            if b - a < best:
                best, offset = b - a, (a + b) / 2 - j
        self.monotonic_offset = offset
        return offset

    def close(self) -> None:
        if self._client:
            self._lib.jack_client_close(self._client)
            self._client = 0


def _load() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("jack") or "libjack.so.0"
    try:
        lib = ctypes.CDLL(name)
        _declare(lib)
    except (OSError, AttributeError):  # no libjack, or one without a function we read
        return None
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    lib.jack_last_frame_time.restype = ctypes.c_uint32
    lib.jack_last_frame_time.argtypes = [ctypes.c_void_p]
    lib.jack_get_buffer_size.restype = ctypes.c_uint32
    lib.jack_get_buffer_size.argtypes = [ctypes.c_void_p]
    lib.jack_frames_to_time.restype = ctypes.c_uint64
    lib.jack_frames_to_time.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.jack_get_time.restype = ctypes.c_uint64
    lib.jack_get_time.argtypes = []
    lib.jack_client_close.restype = ctypes.c_int
    lib.jack_client_close.argtypes = [ctypes.c_void_p]


def open_jack_frames() -> JackFrames | None:
    """A reader of the running JACK server's frame counter, or None where there is none
    (no libjack, no server, or a JACK implementation that refuses the client)."""
    lib = _load()
    if lib is None:
        return None
    status = ctypes.c_int(0)
    client = lib.jack_client_open(
        f"tutti-frames-{os.getpid()}".encode(), _JACK_NO_START_SERVER, ctypes.byref(status)
    )
    if not client:
        return None
    return JackFrames(lib, client)
