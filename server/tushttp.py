"""The tus handler's HTTP edges: its error reply and the request headers it parses."""

from __future__ import annotations

import email.utils
import re

from aiohttp import web

__all__ = ["TusError", "uint_header", "http_date", "header_safe"]

_UINT_RE = re.compile(r"[0-9]{1,19}")


class TusError(Exception):
    """An error response: status, snake_case code and a message for the client."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason
        self.headers = headers or {}

    def response(self, method: str) -> web.Response:
        if method == "HEAD":
            return web.Response(status=self.status, reason=self.reason, headers=self.headers)
        return web.json_response(
            {"error": {"code": self.code, "message": self.message}},
            status=self.status,
            reason=self.reason,
            headers=self.headers,
        )


def uint_header(request: web.Request, name: str) -> int | None:
    """A header that must be a non-negative integer; None when absent."""
    value = request.headers.get(name)
    if value is None:
        return None
    if not _UINT_RE.fullmatch(value.strip()):
        raise TusError(400, "bad_header", f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def http_date(ts: float) -> str:
    """An HTTP date (``Upload-Expires``)."""
    return email.utils.formatdate(ts, usegmt=True)


def header_safe(text: str) -> str:
    """``text`` as a header value can carry it: printable ASCII, at most 500 characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:500]
