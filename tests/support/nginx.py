"""Real nginx for the proxy tests and the cluster benchmark: configured as docs/deploy.md says
(its sticky ``upstream tutti`` block, ``deploy/nginx/tutti-proxy.conf``), checked with
``nginx -t``, run in the foreground under a prefix, stopped (and reaped) when the block ends,
also when it fails."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["NGINX", "running_nginx", "sticky_conf"]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_ROOT = Path(__file__).resolve().parents[2]


def _upstream_from_docs(name: str, ports: list[int]) -> str:
    """The ``upstream tutti`` block of docs/deploy.md as ``upstream NAME``, its servers
    replaced by ``ports`` on this host."""
    doc = (_ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"^upstream tutti \{\n.*?^\}\n", doc, re.M | re.S)
    assert block is not None, "docs/deploy.md has no upstream tutti block"
    lines = [ln for ln in block.group(0).splitlines() if not ln.strip().startswith("server ")]
    lines[0] = f"upstream {name} {{"
    servers = [f"    server 127.0.0.1:{p};" for p in ports]
    return "\n".join([*lines[:-1], *servers, lines[-1]]) + "\n"


def sticky_conf(prefix: Path, sites: dict[int, list[int]], connections: int = 512) -> Path:
    """An nginx.conf under ``prefix``: for each listening port, a server with tutti's proxy
    settings in front of the sticky upstream of those ports (``connections`` per worker)."""
    for d in ("logs", "tmp"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    proxy = (_ROOT / "deploy" / "nginx" / "tutti-proxy.conf").read_text()
    temp = " ".join(
        f"{k}_temp_path {prefix}/tmp/{k};" for k in ("proxy", "fastcgi", "uwsgi", "scgi")
    )
    blocks = []
    for k, (listen, ports) in enumerate(sites.items()):
        (prefix / f"upstream{k}.conf").write_text(_upstream_from_docs(f"tutti{k}", ports))
        site = prefix / f"proxy{k}.conf"
        site.write_text(proxy.replace("http://127.0.0.1:8765", f"http://tutti{k}"))
        blocks.append(
            f"include {prefix}/upstream{k}.conf;\n"
            f"    server {{ listen 127.0.0.1:{listen}; include {site}; }}"
        )
    conf = prefix / "nginx.conf"
    servers = "\n    ".join(blocks)
    conf.write_text(
        f"""
worker_processes 1;
worker_rlimit_nofile {2 * connections};
user root;
error_log {prefix}/logs/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    {temp}
    {servers}
}}
"""
    )
    return conf


@contextmanager
def running_nginx(prefix: Path, conf: Path) -> Iterator[subprocess.Popen[bytes]]:
    """nginx with ``conf`` (under ``prefix``) until the block ends."""
    check = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
