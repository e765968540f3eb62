"""The invite link a leader shares, ``/j/{code}``: a page for a singer's browser that says what
the session is, what to install on this computer and the one line to copy; and the singer's
install itself, a wheel of this server's own tutti at ``/install/{wheel}``, so the line works on
a private network and always matches the server's version.

``tutti join https://HOST/j/CODE`` reads the same link (``GET /api/invite/{code}`` gives the
title and parts it asks the singer to choose from).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import logging
import shutil
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from string import Template
from urllib.parse import unquote, urlsplit

from aiohttp import web

from tutti import __version__
from tutti.wire import Invite, invite_link

from .app_keys import SERVICES
from .client_address import browser_base_url, client_address
from .errors import ApiError, NotFound, ServiceUnavailable

__all__ = ["add_routes", "WHEEL_NAME", "SingerWheel"]

log = logging.getLogger(__name__)

#: The singer's install: a pure-Python wheel of this tutti (its dependencies come from PyPI).
WHEEL_NAME = f"tutti-{__version__}-py3-none-any.whl"


# --- the page -------------------------------------------------------------------------------

_STYLE = """
body{font:1.25rem/1.5 system-ui,sans-serif;max-width:42rem;margin:0 auto;padding:1.5rem;
color:#1a1a1a;background:#fffdf8}
h1{font-size:2.2rem;line-height:1.2;margin:.5rem 0 1rem}
h2{font-size:1.5rem;margin:2rem 0 .5rem}
.code{font-size:2.5rem;letter-spacing:.2em;font-weight:700}
pre{background:#1f2933;color:#fff;padding:1rem;border-radius:.5rem;font-size:1.1rem;
white-space:pre-wrap;word-break:break-all;user-select:all;-webkit-user-select:all}
.note{background:#fff3c4;padding:.75rem 1rem;border-radius:.5rem}
details{margin:.5rem 0}summary{cursor:pointer;font-weight:600;padding:.25rem 0}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
#: no script at all; only the page's own style block
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)

_PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Sing with $title</title><style>$style</style></head>
<body><main>
<p>You are invited to sing in</p>
<h1>$title</h1>
<p>Voice parts: $parts. Join code: <span class="code">$code</span></p>
<p class="note">You need a computer (not a phone) and a headset: headphones with a microphone,
so that the backing track does not leak into your recording. A wired headset is best.</p>
$device_note
<h2>1. Install tutti on this computer (once)</h2>
$install
<h2>2. Join the session</h2>
<p>Copy this line into the same window and press Enter. tutti asks for your name and your voice
part, then waits for your leader to start.</p>
<pre>tutti join $link</pre>
<p>The first time, measure your headset's delay: <code>tutti calibrate</code> (it tells you what
to do). Any problem: tell your leader the message tutti shows.</p>
</main></body></html>
""")

_OS_STEPS = {
    "Linux": (
        "Open a terminal and type these lines one by one. Close the terminal and open a new "
        "one afterwards.",
        "sudo apt install pipx libportaudio2\npipx ensurepath\npipx install $wheel",
    ),
    "macOS": (
        "Install Python 3.11 or newer from python.org first. Then open Terminal (Applications, "
        "Utilities) and type these lines one by one; close Terminal and open it again "
        "afterwards. When macOS asks whether Terminal may use the microphone, say Allow.",
        "python3 -m pip install --user pipx\npython3 -m pipx ensurepath\n"
        "python3 -m pipx install $wheel",
    ),
    "Windows": (
        "Install Python 3.11 or newer from python.org first and tick \u201cAdd python.exe to "
        "PATH\u201d in its installer. Then open PowerShell (Start menu, type PowerShell) and "
        "type these lines one by one; close PowerShell and open it again afterwards.",
        "py -m pip install --user pipx\npy -m pipx ensurepath\npy -m pipx install $wheel",
    ),
}


def visitor_os(user_agent: str) -> str | None:
    """The computer the page is opened on, from its User-Agent; None for a phone or unknown."""
    ua = user_agent.lower()
    if any(m in ua for m in ("iphone", "ipad", "android")):
        return None
    for marker, name in (("windows", "Windows"), ("mac os x", "macOS"), ("linux", "Linux")):
        if marker in ua:
            return name
    return None


def _steps(os_name: str, wheel_url: str) -> str:
    text, lines = _OS_STEPS[os_name]
    lines = Template(lines).substitute(wheel=wheel_url)
    return f"<p>{html.escape(text)}</p><pre>{html.escape(lines)}</pre>"


def _install_html(mine: str | None, wheel_url: str) -> str:
    """This computer's steps first and open; the other systems folded away."""
    order = [mine] if mine else []
    order += [name for name in _OS_STEPS if name != mine]
    parts = []
    for name in order:
        summary = f"On {name}" + (" (this computer)" if name == mine else "")
        opened = " open" if name == mine else ""
        parts.append(
            f"<details{opened}><summary>{summary}</summary>{_steps(name, wheel_url)}</details>"
        )
    return "\n".join(parts)


def render_invite(invite: Invite, base_url: str, user_agent: str) -> str:
    """The invite page's HTML (every value from the session or request escaped)."""
    mine = visitor_os(user_agent)
    device_note = (
        "" if mine else '<p class="note">Open this link on the computer you will sing with.</p>'
    )
    return _PAGE.substitute(
        title=html.escape(invite.title or "a choir session"),
        parts=html.escape(", ".join(invite.parts)),
        code=html.escape(invite.code),
        style=_STYLE,
        device_note=device_note,
        install=_install_html(mine, f"{base_url}/install/{WHEEL_NAME}"),
        link=html.escape(invite_link(base_url, invite.code)),
    )


_GONE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Invite link not working</title><style>$style</style></head>
<body><main><h1>This invite link does not work</h1>
<p>$message</p><p>Ask your choir leader for a new link.</p></main></body></html>
""")


def _page(body: str, status: int = 200) -> web.Response:
    resp = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    resp.headers["Content-Security-Policy"] = PAGE_CSP
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def invite_page(request: web.Request) -> web.Response:
    """``GET /j/{code}``: the invite page, or a page saying why the link does not work."""
    svc = request.app[SERVICES]
    client = client_address(request, svc.proxies)
    try:
        invite = svc.sessions.invite(request.match_info["code"][:64], client)
    except ApiError as exc:
        return _page(_GONE.substitute(style=_STYLE, message=html.escape(str(exc))), exc.status)
    body = render_invite(invite, browser_base_url(request), request.headers.get("User-Agent", ""))
    return _page(body)


# --- the singer's install ---------------------------------------------------------------------


def _source_tree() -> Path | None:
    """The source folder this tutti runs from, or was installed from (pip's direct_url.json)."""
    import tutti

    here = Path(tutti.__file__).resolve().parent.parent
    if _is_tutti_tree(here):
        return here  # run from a clone, or an editable install of one
    try:
        raw = metadata.distribution("tutti").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    url = json.loads(raw).get("url", "") if raw else ""
    parts = urlsplit(url)
    root = Path(unquote(parts.path))
    return root if parts.scheme == "file" and _is_tutti_tree(root) else None


def _is_tutti_tree(root: Path) -> bool:
    try:
        config = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return bool(config.get("project", {}).get("name") == "tutti")


def _copy_sources(root: Path, dest: Path) -> None:
    """What a wheel is built from (pyproject, README, the package folders), nothing else: the
    tree may hold a venv and recordings, and may not be writable by the server."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    folders = set(config["tool"]["setuptools"]["package-dir"].values())
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (root / name).is_file():
            shutil.copy2(root / name, dest / name)
    for folder in sorted(folders):
        shutil.copytree(root / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))


class SingerWheel:
    """Builds the singer's wheel once per server start, on the first request for it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._built: asyncio.Task[Path | None] | None = None

    async def path(self) -> Path | None:
        """Coroutine: the wheel's path, or None when this server cannot build one."""
        if self._built is None:
            self._built = asyncio.ensure_future(self._build())
        return await asyncio.shield(self._built)

    async def _build(self) -> Path | None:
        root = _source_tree()
        if root is None:
            log.warning("singer install: tutti was not installed from a local folder")
            return None
        work = self.folder / "build"
        await asyncio.to_thread(shutil.rmtree, work, True)
        await asyncio.to_thread(_copy_sources, root, work / "src")
        for isolation in ([], ["--no-build-isolation"]):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation,
                "-w", str(work / "dist"), str(work / "src"),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            built = work / "dist" / WHEEL_NAME
            if proc.returncode == 0 and built.is_file():
                final = self.folder / WHEEL_NAME
                built.replace(final)
                await asyncio.to_thread(shutil.rmtree, work, True)
                return final
            log.warning("singer install: pip wheel failed: %s", err.decode(errors="replace")[-500:])
        return None


async def wheel(request: web.Request) -> web.StreamResponse:
    """``GET /install/{name}``: the singer's wheel (404 for any other name)."""
    if request.match_info["name"] != WHEEL_NAME:
        raise NotFound(f"this server offers tutti as {WHEEL_NAME} only", code="no_such_file")
    singer_wheel = request.app[SERVICES].extras["singer_wheel"]
    assert isinstance(singer_wheel, SingerWheel)
    path = await singer_wheel.path()
    if path is None:
        raise ServiceUnavailable(
            "this server cannot offer tutti for download (it was not installed from a source "
            "folder, or building the package failed: see its log); ask your choir's host where "
            "to install tutti from",
            code="no_singer_install",
        )
    return web.FileResponse(path, headers={"Content-Type": "application/zip"})


def add_routes(app: web.Application) -> None:
    """The invite page and the singer's install (``/api/invite/{code}`` is in http_api)."""
    app[SERVICES].extras["singer_wheel"] = SingerWheel(app[SERVICES].config.data_dir / "install")
    app.router.add_get("/j/{code}", invite_page)
    app.router.add_get("/install/{name}", wheel)
