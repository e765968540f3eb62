"""A local TCP port that nothing listens on (bound once by the OS, then released)."""

from __future__ import annotations

import socket


def unused_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago: a server can be started on it, and a
    client connecting to it before then is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
