"""The user's tutti configuration and local data folders.

One JSON file, ``$XDG_CONFIG_HOME/tutti/config.json`` (default ``~/.config/tutti``), with a
top-level object per concern: ``"calibration"`` (round-trip latency per device and rate),
``"leader"`` (leader tokens per server and session), ``"singer"`` (participant tokens).
``TUTTI_CONFIG_DIR`` and ``TUTTI_DATA_DIR`` override the folders (tests use them).

Writes are atomic (temporary file, fsync, ``os.replace``), so a crash never leaves a
half-written config behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tutti.errors import ExitCode, TuttiError
from tutti.fsutil import write_json_atomic

__all__ = [
    "ConfigError",
    "SavedJoin",
    "config_dir",
    "data_dir",
    "load",
    "save",
    "update_section",
    "saved_join",
    "remember_join",
]


class ConfigError(TuttiError):
    """The configuration file exists but cannot be read as tutti configuration."""

    exit_code = ExitCode.USAGE


def config_dir() -> Path:
    """Folder of ``config.json`` (created on demand)."""
    env = os.environ.get("TUTTI_CONFIG_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tutti"


def data_dir() -> Path:
    """Folder for local takes, cached backing tracks and other client data."""
    env = os.environ.get("TUTTI_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tutti"


def _path() -> Path:
    return config_dir() / "config.json"


def load() -> dict[str, Any]:
    """The whole configuration (an empty dict if there is none yet)."""
    path = _path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def save(data: dict[str, Any]) -> Path:
    """Write the whole configuration atomically (mode 0600: it holds tokens); returns its path."""
    return write_json_atomic(_path(), data, indent=2, mode=0o600)


def update_section(section: str, key: str, value: Any) -> Path:
    """Set ``config[section][key] = value`` (``None`` removes the key) and save."""
    data = load()
    sec = data.setdefault(section, {})
    if not isinstance(sec, dict):
        raise ConfigError(f"section {section!r} of {_path()} must be an object")
    if value is None:
        sec.pop(key, None)
    else:
        sec[key] = value
    return save(data)


@dataclass(frozen=True)
class SavedJoin:
    """A singer's token for one session, kept so that ``tutti join`` again is the same singer."""

    token: str
    participant_id: str
    part: str
    session_id: str


def saved_join(key: str) -> SavedJoin | None:
    """The saved join under ``key`` (server, code and name), or None if there is none usable."""
    sec = load().get("singer")
    entry = sec.get(key) if isinstance(sec, dict) else None
    if not isinstance(entry, dict):
        return None
    try:
        saved = SavedJoin(**{k: str(entry[k]) for k in SavedJoin.__dataclass_fields__})
    except KeyError:
        return None  # written by an older tutti: join anew
    return saved if saved.token else None


def remember_join(key: str, saved: SavedJoin) -> Path:
    return update_section("singer", key, asdict(saved))
