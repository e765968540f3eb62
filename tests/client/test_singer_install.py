"""A new singer, end to end, as the invite link tells it: open ``/j/CODE``, run the page's
``pipx install`` line (the wheel comes from the choir's own server), then the page's ``tutti
join`` line, answering the name and part questions in a terminal; the singer arrives in the
leader's roster; ``tutti sing`` serves its window from the install.  The install pulls only
what singing needs, and asking it to mix or serve says what to install instead of a
traceback."""

from __future__ import annotations

import html
import json
import os
import pty
import re
import shlex
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess

#: what only the mixer or the server needs; a singer's install must not pull any of it
NOT_FOR_SINGERS = ("numba", "llvmlite", "pyloudnorm", "soxr", "miniaudio", "prometheus_client")
LINUX_BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36"


def _http(url: str, body: Any = None, token: str = "", ua: str = "") -> Any:
    headers = {"User-Agent": ua} if ua else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        text = r.read().decode()
    return text if ua else json.loads(text)


def _page_lines(url: str, code: str) -> tuple[list[str], str]:
    """The invite page's install lines for Linux and its join line."""
    page = _http(f"{url}/j/{code}", ua=LINUX_BROWSER)
    blocks = [html.unescape(b) for b in re.findall(r"<pre>(.*?)</pre>", page, re.S)]
    return blocks[0].splitlines(), blocks[-1]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PIPX_HOME": str(home / "pipx"), "PIPX_BIN_DIR": str(home / "bin")}


def _pipx_install(line: str, home: Path) -> None:
    argv = shlex.split(line)
    assert argv[:2] == ["pipx", "install"] and len(argv) == 3, line
    started = time.monotonic()
    res = subprocess.run(argv, env=_env(home), capture_output=True, text=True, timeout=840)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    print(f"\nsinger's pipx install from the server: {time.monotonic() - started:.0f} s")


def _roster(url: str, token: str) -> dict[str, tuple[str, bool]]:
    roster = _http(f"{url}/api/session/roster", token=token)
    return {e["name"]: (e["part"], e["connected"]) for e in roster["participants"]}


def _end(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 20 s; reaped either way."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextmanager
def _singer(home: Path, argv: list[str], answers: str = "") -> Iterator[subprocess.Popen[bytes]]:
    """``tutti join`` from the singer's install, its stdin a terminal fed ``answers``."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [str(home / "bin" / "tutti"), *argv],
        stdin=secondary,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(home),
    )
    os.close(secondary)
    try:
        os.write(primary, answers.encode())
        yield proc
    finally:
        _end(proc)
        os.close(primary)


def _wait_for(what: str, check: Any, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        assert proc.poll() is None, f"tutti join ended with {proc.returncode} before {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _window_of_installed_sing(home: Path, link: str) -> tuple[str, str]:
    """The page and script that ``tutti sing LINK`` of the install serves, as a browser gets
    them (the printed address once, then the cookie)."""
    argv = [str(home / "bin" / "tutti"), "sing", "--no-browser", link]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(home))
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().decode() for _ in range(2)]
        address = lines[1].strip()
        assert address.startswith("http://127.0.0.1:"), lines
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(address, timeout=30) as r:
            page = r.read().decode()
        with browser.open(address.split("?")[0] + "app.js", timeout=30) as r:
            script = r.read().decode()
        return page, script
    finally:
        _end(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _site_packages(home: Path) -> Path:
    found = list((home / "pipx" / "venvs" / "tutti").glob("lib/python3*/site-packages"))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("pipx") is None, reason="no pipx (scripts/test.sh installs it)")
def test_a_new_singer_installs_and_joins_from_the_invite_link(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    url = server.start(timeout=60)
    try:
        created = _http(f"{url}/api/sessions", {"title": "Sofa choir", "parts": ["S", "A"]})
        code, token = created["code"], created["leader_token"]
        install, join_line = _page_lines(url, code)
        assert join_line == f"tutti join {url}/j/{code}"
        home = tmp_path / "singer"
        _pipx_install(install[-1], home)

        site = _site_packages(home)
        present = [name for name in NOT_FOR_SINGERS if (site / name).is_dir()]
        assert present == [], f"a singer's install pulled {present}"
        # `tutti sing` serves its window from the install (tutti/client/window.py: page_dir)
        shipped = site / "tutti" / "singerpage"
        assert sorted(p.name for p in shipped.glob("*.*")) == ["app.js", "index.html", "style.css"]

        # the page's line, nothing else: the name and part are asked for in the terminal
        argv = [*shlex.split(join_line)[1:], "--no-audio", "--plain"]
        with _singer(home, argv, answers="Ann\n2\n") as proc:
            _wait_for(
                "Ann in the roster", lambda: _roster(url, token).get("Ann") == ("A", True), proc
            )
        # with every answer given on the command line it asks nothing
        with _singer(home, [*argv, "--name", "Ben", "--part", "S"]) as proc:
            _wait_for(
                "Ben in the roster", lambda: _roster(url, token).get("Ben") == ("S", True), proc
            )
        # `tutti sing` serves its window from what the install holds
        page, script = _window_of_installed_sing(home, f"{url}/j/{code}")
        assert '<script type="module" src="/app.js">' in page and "EventSource" in script
    finally:
        server.stop()

    env = _env(home)
    mix = subprocess.run([str(home / "bin" / "tutti"), "mix", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert mix.returncode == 1 and "[mix]" in mix.stderr and "Traceback" not in mix.stderr
