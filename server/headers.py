"""Security headers on every reply, and a ``Server`` header that names no library versions.

Every reply forbids MIME sniffing and framing, sends no referrer, and replies that may carry
a token or a join code (every JSON reply) are never cached.  Replies allow no active content
(a strict CSP), except the web app's pages (:mod:`tutti.server.webapp`), whose
:data:`PAGE_CSP` lets them run the app's own scripts and styles only: no inline script, no
other origin.
"""

from __future__ import annotations

from aiohttp import web, web_response

__all__ = ["SECURITY_HEADERS", "PAGE_CSP", "SERVER_NAME", "add_security_headers"]

#: The ``Server`` header of every reply (aiohttp's default names Python's and its version).
SERVER_NAME = "tutti"

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}

#: The Content-Security-Policy of the web app's pages: this origin's files only.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; media-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


async def _stamp(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = SERVER_NAME
    ctype = response.headers.get("Content-Type", "")
    # JSON replies hold tokens (create, join) and join codes (GET /api/session).
    if ctype.startswith("application/json"):
        response.headers["Cache-Control"] = "no-store"


def add_security_headers(app: web.Application) -> None:
    """Stamp :data:`SECURITY_HEADERS` and ``Server: tutti`` on every reply of ``app``."""
    # Replies aiohttp writes before any app sees the request (an unparsable request line)
    # take the module default; without this they would still name aiohttp's version.
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]
    app.on_response_prepare.append(_stamp)
