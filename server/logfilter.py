"""Malformed requests and frames logged as one line per kind per minute, never a traceback.

aiohttp (a request it cannot parse), Engine.IO and Socket.IO (a frame they cannot decode)
log each such input with a full traceback at ERROR.  Anyone can send them, so the log
would grow as fast as an attacker types.  :class:`MalformedInputFilter` sits on those
libraries' loggers: a record carrying an exception becomes one WARNING line naming the
exception, and repeats of the same kind within the window are counted, not written; the
next line written says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LIBRARY_LOGGERS", "MalformedInputFilter", "install_malformed_input_filter"]

#: Loggers of the libraries that parse what clients send before tutti sees it.
LIBRARY_LOGGERS = ("aiohttp.server", "engineio.server", "socketio.server")


class MalformedInputFilter(logging.Filter):
    """Rewrite library records with a traceback into one rate-limited WARNING line.

    Parameters
    ----------
    window_s : float
        At most one line per logger and exception type in this many seconds.
    clock : callable
        Monotonic seconds (injectable for tests).
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._skipped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[1] is None:
            return True
        exc = record.exc_info[1]
        kind = (record.name, type(exc).__name__)
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.window_s:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return False
        skipped = self._skipped.pop(kind, 0)
        self._last[kind] = now
        if len(self._last) > 1000:  # bound memory: forget kinds not seen for a window
            for k in [k for k, t in self._last.items() if now - t >= self.window_s]:
                self._last.pop(k, None)
        try:
            original = record.getMessage()
        except Exception:  # a record that cannot be formatted still gets its one line
            original = str(record.msg)
        detail = " ".join(str(exc).split())[:200]
        record.msg = "%s (%s: %s); %d more like it in the previous %.0f s were not logged"
        record.args = (original, type(exc).__name__, detail, skipped, self.window_s)
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_malformed_input_filter(window_s: float = 60.0) -> None:
    """Put one :class:`MalformedInputFilter` on each of :data:`LIBRARY_LOGGERS` (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MalformedInputFilter) for f in logger.filters):
            logger.addFilter(MalformedInputFilter(window_s))
