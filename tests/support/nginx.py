"""Real nginx for the proxy tests: checked with ``nginx -t``, run in the foreground under a
test's prefix, stopped (and reaped) when the test ends, also when it fails."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["NGINX", "running_nginx"]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@contextmanager
def running_nginx(prefix: Path, conf: Path) -> Iterator[subprocess.Popen[bytes]]:
    """nginx with ``conf`` (under ``prefix``) until the block ends."""
    check = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
