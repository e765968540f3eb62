"""The server's JSON for records (server/wirejson.py) is the object ``Record.to_dict`` makes,
for every record of the contract, and python-socketio's packets are unchanged otherwise."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any

import pytest
import socketio.packet

import tutti.wire as wire
from tutti.server.wirejson import SocketJSON, record_bytes
from tutti.wire import Clocks, LiveClock, Record

RECORDS = sorted(
    (
        c
        for c in vars(wire).values()
        if isinstance(c, type) and issubclass(c, Record) and c is not Record
    ),
    key=lambda c: c.__name__,
)


def _value(tp: Any, depth: int, filled: bool) -> Any:
    """A value of type ``tp``: awkward strings, both ends of an optional (``filled``)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], depth, filled) if filled else None
    origin = typing.get_origin(tp)
    if origin is tuple:
        return tuple(_value(args[0], depth + 1, filled) for _ in range(2))
    if origin is dict:
        return {f'k"{i}é': _value(args[1], depth + 1, filled) for i in range(2)}
    if isinstance(tp, type) and issubclass(tp, Record):
        return _record(tp, depth + 1, filled)
    if typing.get_origin(tp) is typing.Literal:
        return args[0]
    return {bool: True, int: 2**40 + 3, float: -0.1 + depth, str: 'Zoë "Z" Ñ 🎶\\\n\u2028'}[tp]


def _record(cls: type[Record], depth: int = 0, filled: bool = True) -> Record:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    return cls(**{f.name: _value(hints[f.name], depth, filled) for f in fields})


@pytest.mark.parametrize("filled", [True, False], ids=["values", "nulls"])
@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_every_record_is_written_as_its_to_dict(cls: type[Record], filled: bool) -> None:
    record = _record(cls, filled=filled)
    assert json.loads(record_bytes(record)) == record.to_dict()
    packet = socketio.packet.Packet(socketio.packet.EVENT, data=["ev", record])
    packet.json = SocketJSON
    expected = socketio.packet.Packet(socketio.packet.EVENT, data=["ev", record.to_dict()])
    assert json.loads(packet.encode()[1:]) == json.loads(expected.encode()[1:])


def test_the_contract_has_records_to_check() -> None:
    names = {c.__name__ for c in RECORDS}
    assert {"Roster", "Clocks", "Levels", "TakeUpdates", "Lobby", "TakeStart"} <= names


def test_a_float_that_is_not_finite_is_written_as_null() -> None:
    """The standard library would write NaN, which JSON.parse refuses."""
    out = json.loads(record_bytes(Clocks({"p": LiveClock(math.nan, math.inf, 0.001)})))
    assert out == {"clocks": {"p": {"offset": None, "error_bound": None, "rtt_min": 0.001}}}


def test_anything_but_a_record_is_encoded_as_before() -> None:
    """A client in the same process (tests, the bench) sends exactly what it sent: NaN
    stays NaN, separators as asked."""
    data = ["ev", {"x": math.nan, "n": [1, 2]}]
    assert SocketJSON.dumps(data, separators=(",", ":")) == json.dumps(data, separators=(",", ":"))
    assert SocketJSON.loads('["a",{"b":NaN}]')[1]["b"] != 0


def test_an_emit_to_other_processes_carries_the_record() -> None:
    """The Redis manager's message holds the packet's data one level down."""
    record = _record(wire.TakeUpdates)
    message = {"method": "emit", "event": "ev", "data": [record], "room": "r", "skip_sid": None}
    assert SocketJSON.loads(SocketJSON.dumps(message))["data"] == [record.to_dict()]
