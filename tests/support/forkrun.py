"""Run ``tutti`` command lines each in a fresh process without paying Python's imports each time.

A warm interpreter (:class:`ForkRunner`) imports ``tutti`` and the mix's libraries once, then
forks one child per command line: the child gets its own working folder, environment, stdout
and stderr, runs :func:`tutti.cli.entry` as ``python -m tutti`` does, and its real exit status
(or the signal that ended it) comes back.  Tests that check hundreds of command lines use it for
the bulk and keep real ``python -m tutti`` subprocesses for a few of each kind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

# The warm interpreter: one JSON request a line on stdin, one JSON reply a line on stdout.
_SERVER = r"""
import json, os, signal, sys, time, traceback
import numpy, scipy.signal, soundfile
import tutti.cli, tutti.mix.command
try:
    import numba  # noqa: F401  (the mix's JIT library, when installed)
except ImportError:
    pass
reply = os.fdopen(os.dup(1), "w")

def child(req):
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    import tempfile
    tempfile.tempdir = None  # TMPDIR is read afresh, as in a new process
    for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    os.close(0)
    signal.alarm(max(1, int(req["timeout"] + 0.999)))  # a hang ends like a killed process
    sys.argv = ["tutti", *req["argv"]]
    code = 1
    try:
        tutti.cli.entry()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

for line in sys.stdin:
    req = json.loads(line)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        child(req)
    _, status = os.waitpid(pid, 0)
    seconds = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)  # negative: the signal that ended it
    reply.write(json.dumps({"code": code, "seconds": seconds}) + "\n")
    reply.flush()
"""


@dataclass
class Ran:
    """One command line's end: exit status (None: it did not end within the timeout)."""

    code: int | None
    stdout: str
    stderr: str
    seconds: float


class ForkRunner:
    """One warm interpreter; :meth:`run` may be called from one thread at a time."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()

    def run(
        self, argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float, spool: Path
    ) -> Ran:
        """Run ``tutti ARGV`` in a forked child; its stdout/stderr go through ``spool``.*"""
        out, err = spool.with_suffix(".out"), spool.with_suffix(".err")
        req = {"argv": argv, "cwd": str(cwd), "env": env, "timeout": timeout,
               "stdout": str(out), "stderr": str(err)}  # fmt: skip
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(json.dumps(req) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork runner ended (status {self._proc.poll()})")
        reply = json.loads(line)
        code = reply["code"]
        text = [p.read_text(errors="replace") if p.exists() else "" for p in (out, err)]
        timed_out = code == -signal.SIGALRM or reply["seconds"] > timeout
        return Ran(None if timed_out else code, text[0], text[1], reply["seconds"])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
