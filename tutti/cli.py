"""The ``tutti`` command: one entry point, a subcommand per job.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code).  Modules are imported only when their subcommand runs,
so ``tutti serve`` never loads PortAudio and ``tutti join`` never loads the server.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from tutti import __version__
from tutti.errors import ExitCode, TuttiError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("tutti.server.cli", "run the session server (SQLite + a local data directory)"),
    "lead": ("tutti.client.lead", "leader's controls: create a session, tracks, takes, download"),
    "join": ("tutti.client.join", "join a session as a singer and sing the takes"),
    "sing": ("tutti.client.sing", "sing in a session through a window in your browser"),
    "calibrate": ("tutti.client.calibrate", "measure your headset's round-trip latency"),
    "devices": ("tutti.client.devices", "list audio input and output devices"),
    "mix": ("tutti.mix.command", "mix a take folder into one choir recording"),
    "wire-schema": (
        "tutti.wire.schema",
        "print the wire contract (Socket.IO events, HTTP bodies) as a JSON Schema",
    ),
    "backup": (
        "tutti.server.backup",
        "back up a server's data folder (also while it runs), restore it",
    ),
}


#: subcommand -> the install extra that brings its libraries (a singer's install has neither)
EXTRAS: dict[str, str] = {"serve": "server", "backup": "server", "mix": "mix"}


def _load(name: str) -> ModuleType | None:
    module, _ = COMMANDS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        if name in EXTRAS and not (exc.name or "").startswith("tutti"):
            raise TuttiError(_missing_extra(name, exc.name or "?")) from None
        raise


def _missing_extra(command: str, library: str) -> str:
    extra = EXTRAS[command]
    return (
        f"this install of tutti is for singing; `tutti {command}` also needs {library} and the "
        f"other libraries of tutti's '{extra}' part. Install tutti again from where you got "
        f"it, with [{extra}] after its path or address: `pip install '/path/to/tutti[{extra}]'`"
        f" or `pipx install --force 'tutti[{extra}] @ ADDRESS'` (docs/singers.md), then run "
        "the command again."
    )


def build_parser(wanted: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``wanted`` subcommand's module is imported to add its options."""
    parser = argparse.ArgumentParser(
        prog="tutti", description="tutti — online community choir sessions, in time."
    )
    parser.add_argument("--version", action="version", version=f"tutti {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == wanted:
            mod = _load(name)
            if mod is not None:
                mod.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(wanted).parse_args(argv)
        mod = _load(args.command)
        if mod is None:
            print(f"tutti {args.command}: not yet available in this version", file=sys.stderr)
            return 2
        return int(mod.run(args) or 0)
    except TuttiError as exc:  # what a command did not report itself
        print(f"tutti {wanted}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


#: Subcommands that end with everything written and closed, whose process may skip the
#: interpreter's teardown: ``tutti mix`` has numba's LLVM loaded, whose teardown costs CPU at
#: exit (docs/benchmarks-mix.md) and frees nothing the operating system would not.
_EXIT_WITHOUT_TEARDOWN = frozenset({"mix"})


def entry() -> None:
    """The ``tutti`` command: :func:`main`, then the process exits with its code."""
    argv = sys.argv[1:]
    code = main(argv)
    if next((a for a in argv if not a.startswith("-")), None) in _EXIT_WITHOUT_TEARDOWN:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
