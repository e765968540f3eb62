"""Untrusted input parsed once at the server's edge: JSON text and take-recording metadata.

Python's :func:`json.loads` raises ``RecursionError`` on deep nesting (``"[" * 60000``) and
accepts integers of any size; both would reach the views as a 500 or as a number no audio
file can have.  Everything here turns such input into :class:`EdgeError`, a ``ValueError``
whose message names the field and what is accepted.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "EdgeError",
    "MAX_JSON_DEPTH",
    "RECORDING_INT_RANGES",
    "loads_json",
    "check_recording_fields",
]

#: Deepest nesting of arrays and objects accepted in any JSON a client sends.
MAX_JSON_DEPTH = 32

#: Integer fields of a take's ``recording`` metadata and their accepted range (inclusive).
#: Offsets and lengths stay below 2**40 frames (over 260 days at 48 kHz), far beyond a take
#: but small enough that no timeline arithmetic overflows.
RECORDING_INT_RANGES: dict[str, tuple[int, int]] = {
    "rate": (8000, 192000),
    "channels": (1, 8),
    "frames": (0, 2**40),
    "start_offset": (-(2**40), 2**40),
    "latency": (0, 2**24),
    "overflows": (0, 2**31),
    "underflows": (0, 2**31),
}


class EdgeError(ValueError):
    """Input from a client is not acceptable; ``str()`` names the field and what is accepted."""


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, iteratively (no recursion on hostile input)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v)
    return deepest


def loads_json(raw: bytes | str, what: str) -> Any:
    """Parse ``raw`` as JSON; :class:`EdgeError` for invalid text or nesting deeper than
    :data:`MAX_JSON_DEPTH` (``what`` names the input in the message)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise EdgeError(
            f"{what} is nested too deeply; at most {MAX_JSON_DEPTH} levels of arrays and "
            "objects are accepted"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise EdgeError(f"{what} is not valid JSON ({str(exc)[:120]})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise EdgeError(
            f"{what} is nested too deeply; at most {MAX_JSON_DEPTH} levels of arrays and "
            "objects are accepted"
        )
    return value


def check_recording_fields(fields: dict[str, Any], what: str) -> None:
    """Refuse integer fields of a recording that are not integers or are out of range.

    Only fields present are checked (missing ones are :func:`tutti.takeformat.parse_recording`'s
    to report); ``true``/``false`` are not integers.
    """
    for key, (low, high) in RECORDING_INT_RANGES.items():
        if key not in fields:
            continue
        v = fields[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise EdgeError(
                f"{what}: field {key!r} must be a whole number from {low} to {high} "
                f"(got {type(v).__name__})"
            )
        if not low <= v <= high:
            shown = str(v) if abs(v) < 10**24 else f"a number of {v.bit_length()} bits"
            raise EdgeError(f"{what}: field {key!r} is {shown}; accepted: {low} to {high}")
