"""``tutti join LINK``: the invite link a leader shares (``https://HOST/j/CODE``) is all a singer
needs; what the command line leaves out (name, voice part) is asked for in the terminal."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import aiohttp

from tutti import wire
from tutti.errors import ExitCode

from .connection import JoinError, error_of, normalise_url

__all__ = ["parse_invite_link", "fetch_invite", "ask_name", "ask_part", "resolve_join"]

_LINK_PATH = re.compile(r"^(?P<prefix>.*)/j/(?P<code>[A-Za-z0-9-]{1,32})/?$")
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


def parse_invite_link(url: str) -> tuple[str, str] | None:
    """``(server address, join code)`` of an invite link, or None for a plain server address."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    m = _LINK_PATH.match(parts.path)
    if m is None:
        return None
    base = normalise_url(f"{parts.scheme}://{parts.netloc}{m['prefix']}")
    return base, m["code"]


async def fetch_invite(base_url: str, code: str) -> wire.Invite:
    """Coroutine: the session's title and parts behind an invite (:class:`JoinError` if refused)."""
    try:
        async with aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as http:
            async with http.get(f"{base_url}/api/invite/{code}") as resp:
                if resp.status != 200:
                    _, message = await error_of(resp)
                    raise JoinError(
                        message or f"the server refused the invite (HTTP {resp.status})",
                        exit_code=ExitCode.REFUSED,
                    )
                return wire.Invite.from_dict(await resp.json(), "invite")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise JoinError(
            f"cannot reach the tutti server at {base_url} ({exc or type(exc).__name__}); check "
            "the link and your internet connection",
            exit_code=ExitCode.UNREACHABLE,
        ) from None


def ask_name(ask: Callable[[str], str] = input) -> str:
    """The singer's name, asked until it is not empty."""
    while True:
        name = ask("Your name (as your leader will see it): ").strip()
        if name:
            return name
        print("Please type your name and press Enter.")


def ask_part(parts: Sequence[str], ask: Callable[[str], str] = input) -> str:
    """The singer's voice part: by number or by name, asked until it is one of ``parts``."""
    listed = "  ".join(f"{i}) {p}" for i, p in enumerate(parts, 1))
    while True:
        answer = ask(f"Your voice part — {listed}: ").strip()
        if answer.isdigit() and 1 <= int(answer) <= len(parts):
            return parts[int(answer) - 1]
        for p in parts:
            if answer.casefold() == p.casefold():
                return p
        print(f"Please type a number from 1 to {len(parts)}, or the part's name.")


def resolve_join(
    url: str, code: str | None, name: str | None, part: str | None, *, interactive: bool
) -> tuple[str, str, str, str | None]:
    """``(server address, code, name, part)`` for ``tutti join`` from a link or an address and
    the options given; asks in the terminal for what is missing when ``interactive``.

    Raises :class:`JoinError` (exit code 2) for what cannot be asked for, and for refusals.
    """
    link = parse_invite_link(url)
    if link is not None:
        base, link_code = link
        if code is not None and code.strip().upper() != link_code.upper():
            raise JoinError(
                f"the invite link is for code {link_code} but --code says {code}; leave --code "
                "out when you use the link",
                exit_code=ExitCode.USAGE,
            )
        code = link_code
    else:
        base = normalise_url(url)
    if not code:
        raise JoinError(
            "give the invite link your leader sent (https://…/j/CODE), or the server's address "
            "with --code CODE",
            exit_code=ExitCode.USAGE,
        )
    if name is not None and (part is not None or not interactive):
        return base, code, name, part  # without a part the server says which parts there are
    if not interactive:
        raise JoinError("give your name with --name", exit_code=ExitCode.USAGE)
    invite = asyncio.run(fetch_invite(base, code))
    print(f"Joining {invite.title or 'the session'} (parts: {', '.join(invite.parts)})")
    if name is None:
        name = ask_name()
    if part is None:
        part = invite.parts[0] if len(invite.parts) == 1 else ask_part(invite.parts)
    return base, code, name, part


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()
