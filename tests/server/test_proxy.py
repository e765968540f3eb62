"""tutti behind real nginx, with the proxy settings shipped in deploy/: a take runs through it
(join, clock sync, take start over WebSocket, a tus upload cut and resumed, download) and the
join-code limit sees each client's own address, not the proxy's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.server.helpers import Recorder, create_session, error_of, join, tus_create, write_audio
from tests.server.test_tus_integration import recording
from tests.server.tus_support import raw_patch_cut, wait_offset
from tests.support.nginx import NGINX, running_nginx
from tests.support.ports import unused_port
from tests.support.server import ServeProcess
from tutti.wire import Ev

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx not installed (apt-get install nginx)"
)


def _nginx_conf(prefix: Path, listen: int, upstream: int) -> Path:
    """An nginx.conf for a test: plain HTTP on loopback, the shipped proxy settings inside."""
    proxy = (ROOT / "deploy" / "nginx" / "tutti-proxy.conf").read_text()
    (prefix / "tutti-proxy.conf").write_text(
        proxy.replace("127.0.0.1:8765", f"127.0.0.1:{upstream}")
    )
    for d in ("logs", "tmp"):
        (prefix / d).mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
user root;
error_log {prefix}/logs/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{listen};
        include {prefix}/tutti-proxy.conf;
    }}
}}
"""
    )
    return conf


@pytest.fixture
def nginx_in_front(tmp_path: Path) -> Iterator[tuple[str, ServeProcess]]:
    """``tutti serve --trust-proxy 127.0.0.1`` behind nginx; yields nginx's URL."""
    upstream, listen = unused_port(), unused_port()
    serve = ServeProcess(tmp_path / "data", "--port", str(upstream), "--trust-proxy", "127.0.0.1")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = _nginx_conf(prefix, listen, upstream)
    with running_nginx(prefix, conf):
        yield f"http://127.0.0.1:{listen}", serve


async def _until_up(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"{url}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("nginx never passed /healthz through")


async def test_a_take_through_nginx(
    nginx_in_front: tuple[str, ServeProcess], tmp_path: Path
) -> None:
    url, serve = nginx_in_front
    await serve.start()
    try:
        await _until_up(url)
        flac = tmp_path / "take.flac"
        sha = write_audio(flac, frames=96000, fmt="FLAC")
        data = flac.read_bytes()
        async with aiohttp.ClientSession(url) as http:
            leader = await create_session(http)
            ann = await join(http, leader.code, "Ann", "S")
            sock = Recorder()
            await sock.connect(url, ann.token)  # a WebSocket through nginx
            try:
                await sock.wait(Ev.WELCOME)
                probe = await sock.client.call(Ev.CLOCK_PROBE, {"t0": 1.0}, timeout=5)
                assert probe["t0"] == 1.0 and probe["server_time"] > 0
                async with http.post("/api/session/takes", headers=leader.headers) as r:
                    take_id = (await r.json())["take_id"]
                async with http.post(
                    f"/api/session/takes/{take_id}/start",
                    json={"lead_s": 1.0},
                    headers=leader.headers,
                ) as r:
                    assert r.status == 200
                start = await sock.wait(Ev.TAKE_START)
                assert start["take_id"] == take_id
            finally:
                await sock.close()
            meta = {
                "take_id": take_id,
                "filename": "take.flac",
                "sha256": sha,
                "recording": recording(96000),
            }
            r = await tus_create(http, ann.token, len(data), meta)
            assert r.status == 201, await r.text()
            location = r.headers["Location"]
            assert location.startswith("/files/") or location.startswith(url)
            # the singer's connection to the proxy drops in the middle of the body
            cut = len(data) // 2 + 17
            port = int(url.rsplit(":", 1)[1])
            await raw_patch_cut(
                "127.0.0.1", port, location, 0, len(data), data[:cut], owner=ann.token, pause=0.5
            )
            kept = await wait_offset(http, location, cut, owner=ann.token)
            assert 0 < kept <= cut, kept  # what nginx passed on before the cut is kept
            async with http.patch(
                location,
                data=data[kept:],
                headers={
                    "Tus-Resumable": "1.0.0",
                    "Authorization": f"Bearer {ann.token}",
                    "Upload-Offset": str(kept),
                    "Content-Type": "application/offset+octet-stream",
                },
            ) as r:
                assert r.status == 204, await r.text()
            async with http.get(
                f"/api/session/takes/{take_id}/manifest", headers=leader.headers
            ) as r:
                rec = next(x for x in (await r.json())["recordings"])
            async with http.get(
                f"/api/session/takes/{take_id}/files/{rec['file']}", headers=leader.headers
            ) as r:
                assert r.status == 200 and await r.read() == data
    finally:
        await serve.stop()


async def test_the_join_limit_sees_the_singers_address(
    nginx_in_front: tuple[str, ServeProcess],
) -> None:
    url, serve = nginx_in_front
    await serve.start()
    try:
        await _until_up(url)
        async with aiohttp.ClientSession(url) as http:
            leader = await create_session(http)
        wrong = {
            "code": "ZZZZZZ" if leader.code != "ZZZZZZ" else "YYYYYY",
            "name": "X",
            "part": "S",
        }

        async def attempt(source: str) -> dict[str, object]:
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            async with aiohttp.ClientSession(url, connector=connector) as http:
                async with http.post("/api/join", json=wrong) as r:
                    return {"status": r.status, **(await error_of(r))}

        seen = [await attempt("127.0.0.5") for _ in range(12)]
        assert seen[0]["status"] == 404 and seen[0]["code"] == "bad_code"
        assert seen[-1]["status"] == 429, seen[-1]
        # another singer's address, through the same proxy, is not locked out
        other = await attempt("127.0.0.6")
        assert other["status"] == 404 and other["code"] == "bad_code", other
    finally:
        await serve.stop()
