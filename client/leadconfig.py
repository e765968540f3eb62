"""The leader's side of the config: which sessions this computer leads, with their tokens.

The leader token is kept in the user's config, section ``"leader"``, keyed by server URL,
with ``"current"`` naming the session in use; ``tutti lead token`` / ``adopt`` move it to
another computer (:func:`read_token` takes it in there).
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tutti.client import config
from tutti.client.leader_api import normalize_server_url
from tutti.errors import ExitCode, TuttiError

__all__ = [
    "SESSION_KEY_ENV",
    "TOKEN_ENV",
    "Target",
    "UsageError",
    "read_token",
    "remember_session",
    "remember_take",
    "resolve_target",
]

SECTION = "leader"

#: Environment variable ``adopt`` reads the leader token from (before stdin).
TOKEN_ENV = "TUTTI_LEADER_TOKEN"
#: The host's session key for ``create`` when ``--key`` is not given.
SESSION_KEY_ENV = "TUTTI_SESSION_KEY"

#: What a token looks like: urlsafe base64 (the server's are 43 characters of 32 bytes).
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,512}")


class UsageError(TuttiError):
    """Bad input on the command line; the message says what is accepted."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Target:
    """The session a command acts on."""

    server: str
    session_id: str
    token: str
    code: str = ""


def _leader_section() -> dict[str, Any]:
    sec = config.load().get(SECTION, {})
    return sec if isinstance(sec, dict) else {}


def remember_session(
    server: str, session_id: str, token: str, code: str, title: str, *, adopted: bool = False
) -> Path:
    """Save a session's leader token and make it the current one.

    ``adopted`` marks a token brought from another computer (``tutti lead adopt``): the entry
    gets ``"adopted_at"`` instead of ``"created_at"``.
    """
    data = config.load()
    sec = data.setdefault(SECTION, {})
    if not isinstance(sec, dict):
        raise config.ConfigError(f"section {SECTION!r} of the config must be an object")
    per_server = sec.setdefault(server, {})
    per_server[session_id] = {
        "token": token,
        "code": code,
        "title": title,
        ("adopted_at" if adopted else "created_at"): time.time(),
    }
    sec["current"] = {"server": server, "session_id": session_id}
    return Path(config.save(data))


def resolve_target(args: argparse.Namespace) -> Target:
    """The session from ``--server``/``--session`` or the remembered current one."""
    sec = _leader_section()
    current = sec.get("current") if isinstance(sec.get("current"), dict) else {}
    assert isinstance(current, dict)
    server_arg = getattr(args, "server", None)
    server = normalize_server_url(server_arg) if server_arg else current.get("server")
    if not server:
        raise UsageError(
            "no session yet: create one with `tutti lead create URL --title TITLE`, "
            "adopt one created on another computer with `tutti lead adopt --server URL "
            "--session ID`, or pass --server URL --session ID"
        )
    sessions = sec.get(server, {})
    if not isinstance(sessions, dict):
        sessions = {}
    session_id = getattr(args, "session", None)
    if not session_id:
        if current.get("server") == server:
            session_id = current.get("session_id")
        elif len(sessions) == 1:
            session_id = next(iter(sessions))
    if not session_id:
        raise UsageError(
            f"no session chosen for {server}: pass --session ID "
            f"(known here: {', '.join(sessions) or 'none'})"
        )
    entry = sessions.get(session_id)
    if not isinstance(entry, dict) or not entry.get("token"):
        raise UsageError(
            f"no leader token saved for session {session_id} on {server} on this computer; "
            "on the computer that created it, `tutti lead token` prints the token, and here "
            f"`tutti lead adopt --server {server} --session {session_id}` takes it (on stdin)"
        )
    return Target(server, str(session_id), str(entry["token"]), str(entry.get("code", "")))


def remember_take(target: Target, take_id: str | None) -> None:
    """Keep the id of the take last armed, for ``take start``/``stop`` without an id."""
    data = config.load()
    entry = data.get(SECTION, {}).get(target.server, {}).get(target.session_id)
    if isinstance(entry, dict):
        if take_id is None:
            entry.pop("take_id", None)
        else:
            entry["take_id"] = take_id
        config.save(data)


def read_token() -> str:
    """The leader token for ``adopt``: ``$TUTTI_LEADER_TOKEN``, else one line of stdin.

    At a terminal the line is read without echo.  Raises :class:`UsageError` when there is
    none or it does not look like a token (the message never repeats what was read).
    """
    where = f"${TOKEN_ENV}"
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        where = "stdin"
        stdin = sys.stdin
        if stdin is None or stdin.closed:
            raise UsageError(f"no token: set {TOKEN_ENV} or give it on stdin")
        try:
            if stdin.isatty():
                token = getpass.getpass(
                    "leader token (from `tutti lead token`): ", stream=sys.stderr
                )
            else:
                token = stdin.readline()
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the token from stdin ({exc})") from None
        token = token.strip()
    if not token:
        raise UsageError(
            f"no token on stdin: pipe or paste the line `tutti lead token` printed on the "
            f"computer that created the session (or set {TOKEN_ENV}); nothing was stored"
        )
    if not _TOKEN_RE.fullmatch(token):
        raise UsageError(
            f"what {where} holds ({len(token)} characters) does not look like a leader token: "
            "expected one line of letters, digits, '-' and '_' (43 characters), as "
            "`tutti lead token` prints it; nothing was stored"
        )
    return token
