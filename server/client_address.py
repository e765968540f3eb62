"""Who is asking: the client address of a request, seen through trusted reverse proxies.

Behind nginx (or any reverse proxy) every request arrives from the proxy's address, so
per-address limits (the join-code rate limit) would lump every singer together.  A proxy
appends the address it received the request from to ``X-Forwarded-For``; anyone else can
write anything there.  So the header is believed only as far as it was written by proxies
the operator named (``tutti serve --trust-proxy``):

- the direct peer is not a trusted proxy → the peer's address, the header is ignored;
- else walk ``X-Forwarded-For`` from the right, skipping addresses that are themselves
  trusted proxies; the first one that is not is the client;
- every entry is a trusted proxy → the left-most entry;
- an entry that is not an IP address (a misconfigured proxy) ends the walk at the trusted
  hop that reported it, whose address is used — never a value a client could choose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TypeAlias

from aiohttp import hdrs, web
from yarl import URL

from .errors import BadRequest

__all__ = [
    "IPNetwork",
    "IPAddress",
    "parse_proxies",
    "parse_address",
    "client_address",
    "browser_base_url",
    "browser_scheme",
    "address_bucket",
]

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_proxies(specs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse trusted proxy addresses or CIDR networks (``10.0.0.1``, ``10.0.0.0/8``, ``::1``).

    Raises ``ValueError`` naming the entry that is neither, and what is accepted.
    """
    out: list[IPNetwork] = []
    for spec in specs:
        text = spec.strip()
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"trusted proxy {spec!r} is not an IP address or CIDR network "
                "(accepted: e.g. 127.0.0.1, 10.0.0.0/8, ::1, fd00::/8)"
            ) from None
    return tuple(out)


def parse_address(text: str) -> IPAddress | None:
    """The IP address in ``text`` (IPv4-mapped IPv6 as IPv4), or None if it is not one."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: IPAddress, proxies: tuple[IPNetwork, ...]) -> bool:
    return any(addr.version == net.version and addr in net for net in proxies)


def client_address(request: web.Request, proxies: tuple[IPNetwork, ...]) -> str:
    """The address to key per-client limits on (text), see the module docstring.

    Parameters
    ----------
    request : aiohttp.web.Request
        The request; ``request.remote`` is the direct peer.
    proxies : tuple of IPv4Network or IPv6Network
        Trusted reverse proxies (:func:`parse_proxies`); empty = trust no header.
    """
    remote = request.remote or "unknown"
    peer = parse_address(remote)
    if not proxies or peer is None or not _trusted(peer, proxies):
        return str(peer) if peer is not None else remote
    entries = [
        e.strip()
        for value in request.headers.getall(hdrs.X_FORWARDED_FOR, [])
        for e in value.split(",")
    ]
    entries = [e for e in entries if e]
    reporter = peer  # the nearest trusted hop so far: whoever wrote the entry looked at next
    for entry in reversed(entries):
        addr = parse_address(entry)
        if addr is None:
            return str(reporter)
        if not _trusted(addr, proxies):
            return str(addr)
        reporter = addr
    return str(reporter)


def browser_scheme(request: web.Request) -> str:
    """``https`` when the browser reached this server over TLS (directly, or through a TLS
    proxy that says ``X-Forwarded-Proto: https``), else ``http``.

    The header is believed from anyone: it only changes the reply to the request that carried
    it (a cookie's Secure flag, the links in a page; never cached).
    """
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return "https" if request.secure or forwarded == "https" else "http"


def browser_base_url(request: web.Request) -> str:
    """``scheme://host[:port]`` as the browser reached this server, for links in pages."""
    try:
        return str(URL.build(scheme=browser_scheme(request), authority=request.host))
    except ValueError:
        raise BadRequest(
            f"the request's Host header {request.host[:100]!r} is not a host name",
            code="bad_host",
        ) from None


def address_bucket(client: str) -> str:
    """The key per-address limits count on: the address itself for IPv4, its /64 network
    for IPv6 (one subscriber is given a whole /64 and could otherwise rotate through it)."""
    addr = parse_address(client)
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return client
