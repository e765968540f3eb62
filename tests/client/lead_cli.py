"""Run the ``tutti`` command in-process for tests of ``tutti lead``.

:func:`run_cli` calls :func:`tutti.cli.main` in a worker thread (the command makes its own
event loop with ``asyncio.run``) with stdout and stderr redirected into strings, so a test's
event loop — and a real server running in it — keeps serving while the command runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
from dataclasses import dataclass
from typing import Any

from tutti.cli import main

__all__ = ["CliResult", "run_cli"]

_lock = threading.Lock()  # sys.stdout is process-wide: one command at a time


@dataclass(frozen=True)
class CliResult:
    """Exit code and the two output streams of one command."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def _call(argv: tuple[str, ...]) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    with _lock, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse: --help, usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return CliResult(int(code), out.getvalue(), err.getvalue())


async def run_cli(*argv: str) -> CliResult:
    """Coroutine: run ``tutti *argv`` and return its exit code and output."""
    return await asyncio.to_thread(_call, argv)
