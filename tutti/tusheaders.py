"""tus 1.0 on the wire, for both sides: the protocol version and the ``Upload-Metadata`` and
``Upload-Checksum`` headers, spelled once (the server in :mod:`tutti.server.tus`, the singer's
uploader in :mod:`tutti.client.uploader`)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Collection

try:  # ISA-L's CRC-32 is zlib's, ~14x faster: the server's (the `server` extra installs it)
    from isal.isal_zlib import crc32
except ImportError:  # a singer's install: one upload at a time, zlib's is plenty
    from zlib import crc32

__all__ = [
    "TUS_VERSION",
    "Crc32",
    "parse_metadata",
    "encode_metadata",
    "parse_checksum",
    "upload_checksum",
]

TUS_VERSION = "1.0.0"


def parse_metadata(header: str | None) -> dict[str, str]:
    """Decode an ``Upload-Metadata`` header: ``key base64value`` pairs separated by commas.

    A key may stand alone (empty value).  Keys are unique printable ASCII without spaces or
    commas; values are standard base64 of UTF-8 text.  Raises ``ValueError`` naming the key.
    """
    if header is None or not header.strip():
        return {}
    out: dict[str, str] = {}
    for item in header.split(","):
        parts = item.strip().split(" ")
        key = parts[0]
        if len(parts) > 2 or not key:
            raise ValueError(
                f"Upload-Metadata entry {item.strip()!r} is malformed: expected 'key base64value'"
            )
        if not (key.isascii() and key.isprintable()):
            raise ValueError(f"Upload-Metadata key {key!r} must be printable ASCII")
        if key in out:
            raise ValueError(f"Upload-Metadata key {key!r} appears twice")
        value = ""
        if len(parts) == 2:
            try:
                value = base64.b64decode(parts[1], validate=True).decode("utf-8")
            except binascii.Error:
                raise ValueError(
                    f"Upload-Metadata value of key {key!r} is not valid base64"
                ) from None
            except UnicodeDecodeError:
                raise ValueError(
                    f"Upload-Metadata value of key {key!r} is not UTF-8 text"
                ) from None
        out[key] = value
    return out


def encode_metadata(metadata: dict[str, str]) -> str:
    """Encode ``metadata`` as an ``Upload-Metadata`` header value (inverse of parse_metadata)."""
    return ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}" if v else k for k, v in metadata.items()
    )


def parse_checksum(header: str, supported: Collection[str]) -> tuple[str, bytes]:
    """Decode an ``Upload-Checksum`` header (``algorithm base64digest``).

    Returns the algorithm name (lower case) and the raw digest.  Raises ``ValueError`` for
    an algorithm not in ``supported`` or a malformed value.
    """
    parts = header.strip().split(" ")
    if len(parts) != 2:
        raise ValueError("Upload-Checksum must be '<algorithm> <base64 digest>'")
    algo, encoded = parts[0].lower(), parts[1]
    if algo not in supported:
        raise ValueError(
            f"Upload-Checksum algorithm {parts[0]!r} is not supported; "
            f"supported: {', '.join(supported)}"
        )
    try:
        return algo, base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("Upload-Checksum digest is not valid base64") from None


class Crc32:
    """CRC-32 (zlib's) with :mod:`hashlib`'s interface, for ``Upload-Checksum: crc32``.

    The digest is the 4-byte big-endian CRC.  It guards a chunk against damage in transit
    (what the tus checksum is for) at about a third of sha256's CPU time; the whole file is
    still checked with sha256 once it has arrived.  With ISA-L's (``isal``) it costs a
    fifteenth of zlib's: a storm of 50 uploads spent a seventh of the server's time in zlib's.
    """

    def __init__(self, crc: int = 0) -> None:
        self._crc = crc

    def update(self, data: bytes, /) -> None:
        self._crc = crc32(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")

    def hexdigest(self) -> str:
        return self.digest().hex()

    def copy(self) -> Crc32:
        return Crc32(self._crc)


def upload_checksum(algorithm: str, chunk: bytes) -> str:
    """The ``Upload-Checksum`` header value for ``chunk``: ``crc32`` or ``sha256``, then
    the base64 digest."""
    digest = Crc32() if algorithm == "crc32" else hashlib.new(algorithm)
    digest.update(chunk)
    return f"{algorithm} " + base64.b64encode(digest.digest()).decode("ascii")
