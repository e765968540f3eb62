"""A folder of its own on the machine's tmpfs (``/dev/shm``), where the server's mixes work
(tutti.server.mixwork)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


@contextmanager
def shm_folder() -> Iterator[Path]:
    """A fresh folder in ``/dev/shm``, removed afterwards (the test is skipped without it)."""
    if not SHM.is_dir():
        pytest.skip("needs /dev/shm, a tmpfs")
    folder = Path(tempfile.mkdtemp(prefix="tutti-test-", dir=SHM))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
