"""The server's exception tree and the one middleware that turns errors into JSON.

Every refusal the server makes is an :class:`ApiError` (or a :class:`tutti.wire.WireError`
from payload parsing) and reaches the client as ``{"error": {"code", "message"}}`` with a
proper HTTP status.  aiohttp's own errors (404 for an unknown route, 405, 413 for a body over
``client_max_size``) are rewritten into the same shape, so a client only ever parses one
error format.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tutti.wire import WireError

__all__ = [
    "ApiError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooLarge",
    "UnsupportedMedia",
    "Unprocessable",
    "TooManyRequests",
    "InsufficientStorage",
    "ServiceUnavailable",
    "disk_full",
    "error_body",
    "error_middleware",
]

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refused request: HTTP ``status``, a snake_case ``code`` and a sentence for people.

    The message says what was wrong and what is accepted.  ``details`` adds fields beside
    ``code`` and ``message`` in the error object for programs (e.g. counts and limits).
    """

    status = 400
    default_code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.headers = dict(headers or {})
        self.details = {k: v for k, v in (details or {}).items() if k not in ("code", "message")}

    def to_dict(self) -> dict[str, Any]:
        """``{"code", "message"}`` plus any machine-readable ``details`` (JSON values)."""
        return {"code": self.code, "message": self.message, **self.details}

    def response(self) -> web.Response:
        """The JSON error response."""
        return web.json_response(
            {"error": self.to_dict()}, status=self.status, headers=self.headers
        )

    def to_http(self) -> web.HTTPException:
        """The same error as an aiohttp HTTP exception (for code that must raise those)."""
        exc = web.HTTPException(
            text=json.dumps({"error": self.to_dict()}),
            content_type="application/json",
            headers=self.headers,
        )
        exc.set_status(self.status)
        return exc


class BadRequest(ApiError):
    status = 400
    default_code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    default_code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    default_code = "forbidden"


class NotFound(ApiError):
    status = 404
    default_code = "not_found"


class Conflict(ApiError):
    status = 409
    default_code = "conflict"


class TooLarge(ApiError):
    status = 413
    default_code = "too_large"


class UnsupportedMedia(ApiError):
    status = 415
    default_code = "unsupported_media_type"


class Unprocessable(ApiError):
    status = 422
    default_code = "unprocessable"


class TooManyRequests(ApiError):
    status = 429
    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = retry_after


class InsufficientStorage(ApiError):
    status = 507
    default_code = "disk_full"


class ServiceUnavailable(ApiError):
    status = 503
    default_code = "unavailable"


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON error object ``{"error": {"code", "message"}}``."""
    return {"error": {"code": code, "message": message}}


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _translate_http(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    code = _STATUS_CODES.get(exc.status, "http_error")
    if exc.status == 404:
        message = f"nothing at {request.method} {request.path[:200]}; see docs/protocol.md"
    elif exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"{request.method} is not allowed on {request.path[:200]} (allowed: {allowed})"
    elif exc.status == 413:
        message = (
            f"request body too large: at most {request.app._client_max_size} bytes "
            "are accepted here"
        )
    else:
        message = exc.text or exc.reason
    headers = {
        k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
    }
    return web.json_response(error_body(code, message), status=exc.status, headers=headers)


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk or quota, from the OS or SQLite
    (which rolls the transaction back: nothing half-written stays)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.Error) and "disk is full" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


@web.middleware
async def error_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Translate every error raised by a view into the JSON error shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except WireError as exc:
        return web.json_response(error_body("bad_payload", str(exc)), status=400)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return _translate_http(request, exc)
    except Exception as exc:
        if disk_full(exc):
            log.error("disk full during %s %s: %s", request.method, request.path, exc)
            return InsufficientStorage(
                "the server's disk is full, so nothing was stored; ask the host to free "
                "space (or raise the server's storage), then try again"
            ).response()
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response(
            error_body("internal_error", "the server failed on this request; it is logged"),
            status=500,
        )
