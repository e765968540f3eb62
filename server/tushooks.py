"""What the tus handler (:mod:`tutti.server.tus`) asks of the application: who may upload
what, and what becomes of a finished upload (:class:`tutti.server.take_uploads` is tutti's)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from aiohttp import web

__all__ = ["UploadHooks", "VerificationError"]


class VerificationError(Exception):
    """The completed upload is not acceptable; ``str()`` is the reason for the client."""


class UploadHooks(Protocol):
    """What the application decides about uploads.  All methods are coroutines."""

    async def authorize_create(
        self, request: web.Request, metadata: dict[str, str], length: int
    ) -> str:
        """Allow a new upload of ``length`` bytes with ``metadata``; return its owner key.

        Raise an aiohttp HTTP exception (e.g. ``web.HTTPForbidden``) to refuse.  The
        handler counts the new upload in :meth:`TusHandler.open_uploads` from the moment
        this returns, without suspending in between: a limit checked here against
        ``open_uploads(owner)`` with no ``await`` after the check holds under concurrent
        requests.
        """
        ...

    async def created(self, upload_id: str, metadata: dict[str, str], owner: str) -> None:
        """Note that the upload ``authorize_create`` allowed now exists (its state is durable).

        The place for side effects of a new upload (announcing it), so that nothing is
        announced for a creation refused later.  An exception here is logged; the upload
        stays created.
        """
        ...

    async def authorize_access(self, request: web.Request, owner: str) -> None:
        """Allow ``request`` (HEAD, PATCH, DELETE) to touch an upload owned by ``owner``.

        Raise an aiohttp HTTP exception to refuse.
        """
        ...

    async def complete(
        self, upload_id: str, path: Path, metadata: dict[str, str], owner: str, sha256_hex: str
    ) -> None:
        """Verify a fully received upload and move ``path`` into place atomically.

        ``path`` is fsynced; ``sha256_hex`` is the sha256 of all its bytes.  Raise
        :class:`VerificationError` to refuse (the client gets 422 with the reason; the
        upload is kept as failed).  Any other exception leaves the upload fully received but
        not completed: completion is retried by an empty PATCH and at the next start-up.
        The data file is the hook's to move: once it is gone, the upload counts as completed.
        """
        ...
