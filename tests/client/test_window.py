"""The singer's window (client/window.py) refuses what is not its own page, over plain HTTP.

No browser and no audio: the window is served in-process around a real :class:`SingFlow`, and
the link and join steps talk to a real tutti server on port 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest

from tutti.client.sing import SingFlow, level_hint
from tutti.client.window import CSP, Window


@pytest.fixture
async def window() -> AsyncIterator[Window]:
    win = Window(SingFlow())
    await win.start()
    try:
        yield win
    finally:
        await win.close()


def _base(win: Window) -> str:
    return f"http://127.0.0.1:{win.port}"


async def _enter(http: aiohttp.ClientSession, win: Window) -> dict[str, str]:
    """Exchange the secret for the cookie, as the browser does on first load; its header."""
    async with http.get(win.url, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/"
        assert r.headers["Content-Security-Policy"] == CSP
        raw = r.headers["Set-Cookie"]
    morsel = next(iter(SimpleCookie(raw).values()))
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    return {"Cookie": f"{morsel.key}={morsel.value}"}


async def _status(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, dict[str, Any] | str]:
    async with http.request(method, url, allow_redirects=False, **kw) as r:
        is_json = r.content_type == "application/json"
        return r.status, (await r.json()) if is_json else await r.text()


async def test_without_the_secret_or_cookie_nothing_is_served(window: Window) -> None:
    base = _base(window)
    async with aiohttp.ClientSession() as http:
        for method, path in [
            ("GET", "/"),
            ("GET", "/app.js"),
            ("GET", "/api/events"),
            ("GET", "/api/devices"),
            ("POST", "/api/ready"),
            ("GET", "/?s=wrong-secret"),
        ]:
            status, body = await _status(http, method, base + path, json={})
            assert status == 403, (path, body)
            assert isinstance(body, dict) and "tutti sing" in body["error"]
        cookie = await _enter(http, window)
        status, body = await _status(http, "GET", base + "/", headers=cookie)
        assert status == 200 and isinstance(body, str) and '<script type="module"' in body
        # the secret opens the door once: a copied address does not let a second browser in
        async with http.get(window.url, allow_redirects=False) as r:
            assert r.status == 403 and "Set-Cookie" not in r.headers
        status, _ = await _status(http, "GET", base + "/", headers={"Cookie": "tutti_sing_1=x"})
        assert status == 403


async def test_foreign_host_and_origin_are_refused(window: Window) -> None:
    base, port = _base(window), window.port
    async with aiohttp.ClientSession() as http:
        cookie = await _enter(http, window)
        # a site that resolves its own name to 127.0.0.1 (DNS rebinding) sends its own Host
        for host in ["evil.example", f"evil.example:{port}", "127.0.0.1", f"localhost:{port + 1}"]:
            status, body = await _status(http, "GET", base + "/", headers={**cookie, "Host": host})
            assert status == 403 and isinstance(body, dict) and "Host" in body["error"], host
        status, _ = await _status(
            http, "GET", base + "/", headers={**cookie, "Host": f"localhost:{port}"}
        )
        assert status == 200
        post = {"json": {"link": "x"}, "headers": {**cookie, "Origin": "https://evil.example"}}
        status, body = await _status(http, "POST", base + "/api/link", **post)
        assert status == 403 and isinstance(body, dict) and "other web sites" in body["error"]
        own = {**cookie, "Origin": f"http://127.0.0.1:{port}"}
        status, body = await _status(
            http, "POST", base + "/api/link", json={"link": "x"}, headers=own
        )
        assert status == 400 and isinstance(body, dict) and "invite link" in body["error"]


async def test_bad_actions_get_plain_words(window: Window) -> None:
    base = _base(window)
    async with aiohttp.ClientSession() as http:
        cookie = await _enter(http, window)
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("/api/link", {"data": "link=x"}, "JSON"),  # a form post (what another site could send)
            ("/api/link", {"json": ["x"]}, "JSON object"),
            ("/api/link", {"json": {"link": 3}}, "link: a text is needed"),
            ("/api/link", {"json": {"link": "x" * 600}}, "at most 500"),
            ("/api/device", {"json": {"input": "0", "output": 1}}, "device number"),
            ("/api/ready", {"json": {}}, "this step is done already"),
        ]
        for path, kw, words in cases:
            status, body = await _status(http, "POST", base + path, headers=cookie, **kw)
            assert status == 400 and isinstance(body, dict), (path, body)
            assert words in body["error"], (path, body)
        status, _ = await _status(http, "POST", base + "/api/format-disk", json={}, headers=cookie)
        assert status == 404
        status, _ = await _status(http, "GET", base + "/../pyproject.toml", headers=cookie)
        assert status in (403, 404)


async def test_link_and_name_steps_against_a_real_server(window: Window, server: str) -> None:
    base = _base(window)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server}/api/sessions", json={"title": "Sofa choir", "parts": ["S", "A"]}
        ) as r:
            code = (await r.json())["code"]
        cookie = await _enter(http, window)

        async def act(action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with http.post(f"{base}/api/{action}", json=body, headers=cookie) as r:
                return r.status, await r.json()

        status, body = await act("link", {"link": f"{server}/j/NOPE99"})
        assert status == 409 and body["error"], body  # the server's refusal, in its words
        status, body = await act("link", {"link": f"  {server}/j/{code}  "})
        assert status == 200, body
        assert (body["step"], body["title"], body["parts"]) == ("name", "Sofa choir", ["S", "A"])
        status, body = await act("join", {"name": "Ann", "part": "T"})
        assert status == 400 and "S, A" in body["error"]
        status, body = await act("join", {"name": "Ann", "part": "A"})
        assert status == 200 and (body["step"], body["name"], body["part"]) == (
            "device",
            "Ann",
            "A",
        )
        # the page follows by events: the same state arrives there
        async with http.get(f"{base}/api/events", headers=cookie) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            line = await r.content.readline()
        assert line.startswith(b"data: ") and b'"step": "device"' in line


def test_level_hints() -> None:
    assert level_hint(-70.0, False) == "quiet"
    assert level_hint(-20.0, False) == "good"
    assert level_hint(-1.0, False) == "loud"
    assert level_hint(-20.0, True) == "loud"
