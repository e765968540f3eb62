"""HTTP views of the server's mix: its state, a remix, its files, the take folder as a zip,
share links and the share page (``/listen/<token>``).

The leader reads and changes everything; a singer of the session may GET the mix's state
and files (the listen-back of ``tutti join``); a share token opens its one take's page and
Opus file.  The contract is in ``docs/protocol.md`` ("Server mix").
"""

from __future__ import annotations

import asyncio
import html
import string
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from zipstream import ZIP_STORED, ZipStream

from tutti.takeformat import MANIFEST_NAME
from tutti.wire import ShareLink, TakeMix

from .app_keys import SERVICES, Services
from .auth import bearer_token
from .download import send_file
from .edge import EdgeError, loads_json
from .errors import BadRequest, NotFound
from .mixing import Mixes
from .models import Principal, Take
from .share import ShareLinks
from .take_uploads import TakeUploadHooks
from .webapp import web_dir
from .wirejson import record_response

__all__ = ["add_routes", "listen_dir", "LISTEN_CSP"]


#: The share page's files (a template, the 404 page and a stylesheet).
def listen_dir() -> Path:
    """The share page's files: ``listen/`` in the web app's folder (``$TUTTI_WEB_DIR`` for an
    installed server)."""
    return web_dir() / "listen"


#: The share page runs no script: it may load its stylesheet and its audio, nothing else.
LISTEN_CSP = (
    "default-src 'none'; style-src 'self'; media-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_TYPES = {"opus": "audio/ogg; codecs=opus", "flac": "audio/flac"}
_MIXES = web.AppKey("mixes", Mixes)
_SHARES = web.AppKey("shares", ShareLinks)


def _who(request: web.Request) -> tuple[Services, Principal]:
    svc = request.app[SERVICES]
    return svc, svc.sessions.principal(bearer_token(request))


def _take(request: web.Request, *, singers: bool = False) -> tuple[Take, Principal]:
    """The route's take, for its session's leader (and its singers when ``singers``)."""
    svc, p = _who(request)
    if not (singers or p.is_leader):
        svc.sessions.require_leader(p, "change a take's mix or share it")
    return svc.takes.get(p, request.match_info["take_id"]), p


def _reply(status: TakeMix, code: int = 200) -> web.Response:
    return record_response(status, code)


async def get_mix(request: web.Request) -> web.Response:
    take, _ = _take(request, singers=True)
    await request.app[_MIXES].forget_removed(take)
    return _reply(request.app[_MIXES].status(take))


async def post_mix(request: web.Request) -> web.Response:
    _, p = _who(request)
    request.app[SERVICES].sessions.require_leader(p, "remix a take")
    payload = None
    if request.can_read_body:
        try:
            payload = loads_json(await request.read(), "the body")
        except EdgeError as exc:
            raise BadRequest(str(exc), code="bad_json") from None
    return _reply(await request.app[_MIXES].remix(p, request.match_info["take_id"], payload), 202)


async def _send_mix(request: web.Request, take: Take, fmt: str) -> web.StreamResponse:
    await request.app[_MIXES].forget_removed(take)  # a deleted voice is never served
    found = request.app[_MIXES].file(take, fmt)
    if found is None:
        raise NotFound(
            f"take {take.take_id} has no mix yet; it is made when the uploads are complete",
            code="no_mix",
        )
    path, sha = found
    return await send_file(request, path, sha256=sha, content_type=_TYPES[fmt])


async def mix_file(request: web.Request) -> web.StreamResponse:
    take, _ = _take(request, singers=True)
    return await _send_mix(request, take, request.match_info["fmt"])


def _zip_chunks(zs: ZipStream) -> Iterator[bytes]:
    yield from zs


async def download_zip(request: web.Request) -> web.StreamResponse:
    """The take folder as ``tutti lead download`` writes it, as a zip streamed while read."""
    svc, p = _who(request)
    take_id = request.match_info["take_id"]
    manifest = svc.takes.manifest(p, take_id)
    take = svc.takes.get(p, take_id)
    folder = svc.takes.folder(take.session_id, take.take_id)
    zs = ZipStream(compress_type=ZIP_STORED, sized=True)  # audio does not deflate: stored
    root = f"take-{take.take_id}"
    for rec in manifest.recordings:
        zs.add_path(str(folder / rec.file), f"{root}/{rec.file}")
    for b in manifest.backing:
        zs.add_path(str(svc.tracks.path(b.sha256)), f"{root}/{b.file}")
    text = _manifest_text(manifest.to_dict())
    zs.add(text, f"{root}/{MANIFEST_NAME}")
    resp = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{root}.zip"',
        }
    )
    resp.content_length = len(zs)
    await resp.prepare(request)
    chunks = _zip_chunks(zs)
    while (chunk := await asyncio.to_thread(next, chunks, b"")) != b"":
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def _manifest_text(doc: object) -> bytes:
    """``take.json`` byte for byte as :func:`tutti.fsutil.write_json_atomic` writes it."""
    import json

    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


async def post_share(request: web.Request) -> web.Response:
    take, _ = _take(request)
    token = await request.app[_SHARES].create(take.session_id, take.take_id)
    return record_response(ShareLink(f"/listen/{token}"), 201)


async def delete_share(request: web.Request) -> web.Response:
    take, _ = _take(request)
    revoked = await request.app[_SHARES].revoke(take.take_id)
    return web.json_response({"revoked": revoked})


def _shared_take(request: web.Request) -> Take | None:
    shared = request.app[_SHARES].lookup(request.match_info["token"])
    if shared is None:
        return None
    take = request.app[SERVICES].store.get_take(shared.take_id)
    return take if take is not None and take.session_id == shared.session_id else None


def _page(name: str, status: int, **values: str) -> web.Response:
    text = (listen_dir() / name).read_text(encoding="utf-8")
    body = string.Template(text).substitute({k: html.escape(v) for k, v in values.items()})
    headers = {"Content-Security-Policy": LISTEN_CSP, "Cache-Control": "no-store"}
    return web.Response(text=body, status=status, content_type="text/html", headers=headers)


def _gone() -> web.Response:
    return _page("gone.html", 404)


async def listen_page(request: web.Request) -> web.Response:
    take = _shared_take(request)
    if take is None:
        return _gone()
    number = 1 + [t.take_id for t in request.app[SERVICES].store.takes(take.session_id)].index(
        take.take_id
    )
    token = request.match_info["token"]
    title = take.settings.title or "Our choir"
    return _page("index.html", 200, title=title, number=str(number),
                 audio=f"/listen/{token}/mix.opus")  # fmt: skip


async def listen_audio(request: web.Request) -> web.StreamResponse:
    take = _shared_take(request)
    if take is not None:
        await request.app[_MIXES].forget_removed(take)
    if take is None or request.app[_MIXES].file(take, "opus") is None:
        return _gone()
    return await _send_mix(request, take, "opus")


async def listen_style(request: web.Request) -> web.Response:
    css = await asyncio.to_thread((listen_dir() / "style.css").read_text, encoding="utf-8")
    return web.Response(
        text=css, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )


def add_routes(app: web.Application, hooks: TakeUploadHooks) -> None:
    """Register the mix, zip and share routes on ``app`` and run the mix workers with it;
    the last upload of a take (``hooks``) starts its mix."""
    svc = app[SERVICES]
    config = svc.config
    mixes = Mixes(svc.store, svc.takes, svc.realtime, svc.tracks.path,
                  memory=config.mix_memory, memory_bytes=config.mix_memory_bytes)  # fmt: skip
    app[_MIXES] = mixes
    app[_SHARES] = ShareLinks(svc.config.data_dir / "shares.json")
    svc.extras["mixes"] = mixes
    hooks.settled = mixes.upload_settled
    mixes.refuse = hooks.refuse_damaged
    svc.takes.stopped = mixes.take_stopped
    svc.takes.removed = mixes.takes_removed
    app.cleanup_ctx.append(mixes.run)
    r = app.router
    take = "/api/session/takes/{take_id}"
    r.add_get(f"{take}/mix", get_mix)
    r.add_post(f"{take}/mix", post_mix)
    r.add_get(take + "/mix/mix.{fmt:opus|flac}", mix_file)
    r.add_get(f"{take}/download.zip", download_zip)
    r.add_post(f"{take}/share", post_share)
    r.add_delete(f"{take}/share", delete_share)
    r.add_get("/listen/style.css", listen_style)
    r.add_get("/listen/{token}", listen_page)
    r.add_get("/listen/{token}/mix.opus", listen_audio)
