"""The join-code rate limit behind a reverse proxy: ``X-Forwarded-For`` names the client only
when the direct peer is a trusted proxy (real server on port 0; the test client plays nginx)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from tests.server.helpers import create_session, error_of
from tests.support.server import running_server
from tutti.server.app import init_app
from tutti.server.app_keys import Config
from tutti.server.client_address import client_address, parse_proxies

LIMIT = 10  # Config.join_failures_per_minute


async def wrong_join(http: aiohttp.ClientSession, forwarded: str | None) -> int:
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    async with http.post(
        "/api/join", json={"code": "WRONG2", "name": "Eve", "part": "S"}, headers=headers
    ) as r:
        if r.status == 429:
            assert (await error_of(r))["code"] == "rate_limited"
        return r.status


async def right_join(http: aiohttp.ClientSession, code: str, forwarded: str) -> int:
    async with http.post(
        "/api/join",
        json={"code": code, "name": "Ann", "part": "S"},
        headers={"X-Forwarded-For": forwarded},
    ) as r:
        await r.read()
        return r.status


async def test_singers_behind_a_trusted_proxy_each_get_their_own_limit(tmp_path: Path) -> None:
    async with running_server(
        tmp_path / "data", trusted_proxies=("127.0.0.1", "10.0.0.0/8")
    ) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            leader = await create_session(http)
            eve = [await wrong_join(http, "203.0.113.5") for _ in range(LIMIT + 1)]
            assert eve == [404] * LIMIT + [429]
            # a forged left part does not help: the right-most untrusted entry is the client
            assert await wrong_join(http, "198.51.100.9, 203.0.113.5") == 429
            # nor does arriving through a second trusted hop (10.1.2.3 is skipped)
            assert await wrong_join(http, "203.0.113.5, 10.1.2.3") == 429
            # the right code is still admitted: a wrong code is limited per address and
            # code, so one mistyping singer cannot lock out the room
            assert await right_join(http, leader.code, "203.0.113.5") == 200
            # another singer behind the same proxy is not affected
            assert await wrong_join(http, "203.0.113.6") == 404
            assert await right_join(http, leader.code, "203.0.113.6") == 200
            assert await right_join(http, leader.code, "2001:db8::7, 10.9.9.9") == 200
            # no header from the proxy: the proxy itself is the client, with its own limit
            assert await wrong_join(http, None) == 404


@pytest.mark.parametrize(
    "trusted", [(), ("10.0.0.0/8", "::1")], ids=["no trusted proxies", "peer not among them"]
)
async def test_forwarded_header_from_an_untrusted_peer_is_ignored(
    tmp_path: Path, trusted: tuple[str, ...]
) -> None:
    async with running_server(tmp_path / "data", trusted_proxies=trusted) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            leader = await create_session(http)
            statuses = [await wrong_join(http, f"203.0.113.{i}") for i in range(LIMIT)]
            assert statuses == [404] * LIMIT
            # a new forged address each time changed nothing: 127.0.0.1 is locked out
            assert await wrong_join(http, "198.51.100.1") == 429
            assert await right_join(http, leader.code, "198.51.100.2") == 200


@pytest.mark.parametrize(
    "peer, header, want",
    [
        ("127.0.0.1", None, "127.0.0.1"),  # no header: the peer
        ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "10.0.0.2, 10.0.0.1", "10.0.0.2"),  # all trusted: the left-most
        ("127.0.0.1", "203.0.113.5, not-an-ip", "127.0.0.1"),  # garbage: the hop that wrote it
        ("127.0.0.1", "203.0.113.5, 10.0.0.1, bad", "127.0.0.1"),
        ("127.0.0.1", "bad, 10.0.0.1", "10.0.0.1"),
        ("127.0.0.1", " 203.0.113.5 ,, ", "203.0.113.5"),  # spaces and empty entries
        ("::ffff:127.0.0.1", "203.0.113.5", "203.0.113.5"),  # IPv4-mapped peer
        ("::1", "2001:db8::1", "2001:db8::1"),
        ("192.0.2.1", "203.0.113.5", "192.0.2.1"),  # untrusted peer: header ignored
    ],
)
def test_client_address_rules(peer: str, header: str | None, want: str) -> None:
    proxies = parse_proxies(["127.0.0.1", "10.0.0.0/8", "::1"])
    headers = {} if header is None else {"X-Forwarded-For": header}
    request = make_mocked_request("POST", "/api/join", headers=headers).clone(remote=peer)
    assert client_address(request, proxies) == want


def test_bad_trusted_proxy_is_refused_with_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an IP address or CIDR"):
        init_app(Config(data_dir=tmp_path, trusted_proxies=("127.0.0.1", "10.0.0.0/33")))
