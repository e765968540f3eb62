"""The one root of the errors a ``tutti`` command reports to its user, and the exit codes.

Every command ends with one of :class:`ExitCode`; an error that reaches the command line is a
:class:`TuttiError` whose message is a sentence for the person at the keyboard and whose
:attr:`TuttiError.exit_code` says which code the shell sees.  The table is in the README.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "TuttiError", "EXIT_CODES_HELP"]


class ExitCode(IntEnum):
    """What a ``tutti`` command's exit status means, the same for every command."""

    OK = 0
    FAILED = 1  #: the command could not do its job (see its message)
    USAGE = 2  #: a bad argument, option or configuration file
    UNREACHABLE = 3  #: no tutti server answers at that address
    REFUSED = 4  #: the server said no: bad join code, closed session, wrong token
    DEVICE = 5  #: the audio device cannot be opened or used
    INCOMPLETE = 6  #: done, but not all of it: recordings still missing from a download
    INTERRUPTED = 130  #: stopped with Ctrl-C


class TuttiError(RuntimeError):
    """An error for the user: ``str(exc)`` says what went wrong and what to do."""

    #: The exit code of a command that ends with this error (a class may set its own).
    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


#: The table for ``--help`` (the README has the same one).
EXIT_CODES_HELP = (
    "exit codes: 0 done, 1 failed, 2 bad arguments or configuration, 3 server unreachable, "
    "4 refused by the server, 5 audio device problem, 6 incomplete (recordings missing), "
    "130 interrupted"
)
