"""The invite link ``/j/CODE``: the page a singer's browser opens (title, parts, this computer's
install steps first, the one line to copy), its strict CSP, its answers for wrong and closed
codes, ``GET /api/invite/CODE`` for ``tutti join LINK``, and the address behind a proxy."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path

import aiohttp

from tests.server.helpers import bearer, create_session, error_of
from tests.support.server import RunningServer, running_server
from tutti.wire import Invite

LINUX = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36"
WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/156.0"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 Mobile"


def _pre_blocks(page: str) -> list[str]:
    return [html.unescape(b) for b in re.findall(r"<pre>(.*?)</pre>", page, re.S)]


async def _page(http: aiohttp.ClientSession, code: str, ua: str) -> tuple[int, str, str]:
    async with http.get(f"/j/{code}", headers={"User-Agent": ua}) as r:
        assert r.content_type == "text/html"
        return r.status, await r.text(), r.headers["Content-Security-Policy"]


async def test_page_names_the_session_and_gives_the_line_to_copy(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    title = 'Zoë\'s <b>"Sofa"</b> Choir & friends'
    leader = await create_session(http, title=title, parts=["S", "A", "Bar"])
    status, page, csp = await _page(http, leader.code, LINUX)
    assert status == 200
    assert html.escape(title) in page and "<b>" not in page
    assert "S, A, Bar" in page and leader.code in page
    blocks = _pre_blocks(page)
    assert blocks[-1] == f"tutti join {server.url}/j/{leader.code}"
    # this computer's steps come first and open; the others are folded
    assert (
        page.index("On Linux (this computer)") < page.index("On macOS") < page.index("On Windows")
    )
    assert "<details open><summary>On Linux" in page and "<details open><summary>On Win" not in page
    assert f"pipx install {server.url}/install/tutti-" in blocks[0]
    assert blocks[0].endswith("-py3-none-any.whl")
    # no script may run; the one style block is allowed by its hash
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style is not None and "<script" not in page
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in csp and "script-src" not in csp
    assert csp.startswith("default-src 'none'")


async def test_page_puts_windows_first_and_tells_a_phone_to_use_a_computer(
    http: aiohttp.ClientSession,
) -> None:
    leader = await create_session(http, title="Thursday choir")
    _, page, _ = await _page(http, leader.code, WINDOWS)
    assert page.index("On Windows (this computer)") < page.index("On Linux")
    assert "py -m pipx install" in _pre_blocks(page)[0]
    assert "Open this link on the computer" not in page
    _, page, _ = await _page(http, leader.code, IPHONE)
    assert "Open this link on the computer you will sing with" in page
    assert "(this computer)" not in page


async def test_invite_json_is_what_tutti_join_reads(http: aiohttp.ClientSession) -> None:
    leader = await create_session(http, title="Evensong", parts=["S1", "S2", "A"])
    async with http.get(f"/api/invite/{leader.code.lower()}") as r:
        assert r.status == 200
        invite = Invite.from_dict(await r.json())
    assert invite == Invite(leader.code, "Evensong", ("S1", "S2", "A"))


async def test_wrong_and_closed_codes_get_a_page_that_says_what_to_do(
    http: aiohttp.ClientSession,
) -> None:
    status, page, _ = await _page(http, "ZZZZZZ", LINUX)
    assert status == 404 and "This invite link does not work" in page
    assert "Ask your choir leader for a new link" in page and "pipx" not in page
    async with http.get("/api/invite/ZZZZZZ") as r:
        assert r.status == 404 and (await error_of(r))["code"] == "bad_code"
    leader = await create_session(http, title="Closed one")
    async with http.post("/api/session/close", headers=bearer(leader.token)) as r:
        assert r.status == 200
    status, page, _ = await _page(http, leader.code, LINUX)
    assert status == 403 and "does not work" in page and "Closed one" not in page
    status, page, _ = await _page(http, "x" * 5000, LINUX)
    assert status == 404


async def test_guessing_codes_through_invite_links_is_limited(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", join_failures_per_minute=3) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            statuses = []
            for i in range(12):
                async with http.get(f"/j/GUESS{i % 10}") as r:
                    statuses.append(r.status)
            async with http.get("/api/invite/GUESS9") as r:
                statuses.append(r.status)
    assert statuses[:3] == [404, 404, 404] and statuses[-1] == 429, statuses


async def test_the_link_follows_the_tls_proxy_and_the_host_asked_by(
    http: aiohttp.ClientSession,
) -> None:
    leader = await create_session(http)
    behind_tls = {"X-Forwarded-Proto": "https", "Host": "choir.example.org", "User-Agent": LINUX}
    async with http.get(f"/j/{leader.code}", headers=behind_tls) as r:
        page = await r.text()
    assert _pre_blocks(page)[-1] == f"tutti join https://choir.example.org/j/{leader.code}"


async def test_only_the_singers_wheel_is_offered(http: aiohttp.ClientSession) -> None:
    async with http.get("/install/other-1.0-py3-none-any.whl") as r:
        assert r.status == 404 and "tutti-" in await r.text()
