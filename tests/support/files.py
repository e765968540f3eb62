"""Looking through a live server's data folder: its mix workers make and remove scratch
folders at any moment, so a walk must not fail on what vanished under it."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

__all__ = ["files_under"]


def files_under(root: Path, pattern: str = "*") -> list[Path]:
    """Files below ``root`` whose name matches ``pattern``, skipping what vanished meanwhile."""
    found = []
    for folder, _dirs, names in os.walk(root):  # os.walk skips folders it cannot list
        found += [Path(folder) / n for n in names if fnmatch.fnmatch(n, pattern)]
    return [p for p in found if p.is_file()]
