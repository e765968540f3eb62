"""The deploy/ files and docs/deploy.md, run as far as this machine allows: a fresh virtual
environment with tutti installed, the systemd unit checked by systemd and its command line
serving, the Caddyfile checked by Caddy, the nginx site checked by nginx."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import unused_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV = "/opt/tutti/venv"


def _exec_start() -> list[str]:
    unit = (DEPLOY / "tutti.service").read_text()
    m = re.search(r"^ExecStart=(.+)$", unit, re.M)
    assert m, "the unit has no ExecStart"
    return shlex.split(m.group(1))


def _documented_install() -> str:
    """What docs/deploy.md tells a host to pip-install, with this tree for the clone."""
    docs = (ROOT / "docs" / "deploy.md").read_text()
    m = re.search(r"^/opt/tutti/venv/bin/pip install (\S+)", docs, re.M)
    assert m, "docs/deploy.md has no pip install line"
    return shlex.split(m.group(1))[0].replace("/opt/tutti/src", str(ROOT))


def _serve_and_probe(argv: list[str], data: Path) -> None:
    """Run the unit's command line on a free port and a test data folder; /healthz answers."""
    port = unused_port()
    argv = [str(data) if a == "/var/lib/tutti" else a for a in argv]
    argv = [str(port) if a == "8765" else a for a in argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("tutti serving on http://127.0.0.1:"), line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fresh_venv_and_the_units_command_line(tmp_path: Path) -> None:
    """docs/deploy.md's install (a venv, pip install of this tree), then the unit's command."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    started = time.monotonic()
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", _documented_install()],
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    print(f"\nfresh install: {time.monotonic() - started:.0f} s")
    argv = _exec_start()
    assert argv[0] == f"{VENV}/bin/tutti" and "--trust-proxy" in argv
    _serve_and_probe([str(venv / "bin" / "tutti"), *argv[1:]], tmp_path / "data")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    tutti = Path(sys.prefix) / "bin" / "tutti"
    assert tutti.exists()
    unit = tmp_path / "tutti.service"
    unit.write_text((DEPLOY / "tutti.service").read_text().replace(f"{VENV}/bin/tutti", str(tutti)))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "tutti.service" not in res.stderr, res.stderr  # no warning about the unit itself


@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy not installed")
def test_caddy_accepts_the_caddyfile() -> None:
    res = subprocess.run(
        ["caddy", "validate", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0 and "Valid configuration" in res.stdout + res.stderr, res.stderr


@pytest.mark.skipif(
    shutil.which("nginx") is None
    and not Path("/usr/sbin/nginx").exists()
    or shutil.which("openssl") is None,
    reason="nginx or openssl not installed",
)
def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    """The shipped site, with a throw-away certificate where Let's Encrypt's would be."""
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=choir.example.org",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    site = (DEPLOY / "nginx" / "tutti.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/choir.example.org/", f"{tmp_path}/")
    site = site.replace(
        "/etc/nginx/snippets/tutti-proxy.conf", str(DEPLOY / "nginx" / "tutti-proxy.conf")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        "events { }\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}/body; {site} }}\n"
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    res = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
