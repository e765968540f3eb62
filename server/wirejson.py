"""How the server writes the contract's records as JSON: with orjson, from their dataclass
fields, without building :meth:`~tutti.wire.Record.to_dict`'s dicts first.

orjson writes a record as the same JSON object as ``json.dumps(record.to_dict())`` (every
field, null where there is none, tuples as arrays: ``tests/server/test_wirejson.py``), about
30× faster for a roster of 1,000 singers (docs/benchmarks-server.md).  One difference: a
float that is not finite is written as null, where the standard library writes ``NaN``, which
no browser parses.

Only records take this path.  python-socketio's JSON module is one per process, shared with
any client in it, so everything else (what clients send, engine.io's handshake) is encoded by
the standard library exactly as before, and parsing is the standard library's throughout.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web

from tutti.wire import Record

__all__ = ["SocketJSON", "record_bytes", "record_response"]

_OPTIONS = orjson.OPT_NON_STR_KEYS


def record_bytes(record: Record) -> bytes:
    """``record`` as UTF-8 JSON."""
    return orjson.dumps(record, option=_OPTIONS)


def record_response(record: Record, status: int = 200) -> web.Response:
    """An HTTP JSON reply holding ``record``."""
    return web.Response(body=record_bytes(record), status=status, content_type="application/json")


def _holds_record(obj: Any, depth: int = 2) -> bool:
    """Whether ``obj`` is a record or holds one within ``depth`` levels of lists and dicts
    (a packet's ``[event, record]``; an emit to other processes, ``{"data": [event, record]}``)."""
    if isinstance(obj, Record):
        return True
    if depth == 0:
        return False
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else ()
    return any(_holds_record(x, depth - 1) for x in items)


class SocketJSON:
    """python-socketio's ``json`` for the server and its Redis manager: what carries a
    record is written by orjson, anything else by the standard library (unchanged)."""

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        if _holds_record(obj):
            return orjson.dumps(obj, option=_OPTIONS).decode()
        return json.dumps(obj, **kwargs)

    @staticmethod
    def loads(s: str | bytes, **kwargs: Any) -> Any:
        return json.loads(s, **kwargs)
