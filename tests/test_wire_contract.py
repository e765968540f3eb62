"""The wire contract: the JSON Schema ``tutti wire-schema`` exports and the records agree.

For every record of the contract (each Socket.IO event both ways, each ack, each HTTP body)
an instance built from its field declarations must pass the schema and read back equal;
each field then gets a value of the wrong type, and one outside its range or choices where
it has them: the schema and the record's parser must both refuse it.  The e2e session test
checks every message a real server sent against the same schema (tests/support/wirecheck).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tutti import wire
from tutti.wire.outbound import SERVER_EVENTS
from tutti.wire.record import Record
from tutti.wire.replies import HTTP_REPLIES, HTTP_REQUESTS
from tutti.wire.schema import (
    ACK_RECORDS,
    CLIENT_EVENTS,
    CONNECT_AUTH,
    contract_schema,
    part_schema,
)

DOCUMENT = contract_schema()

PARTS: list[tuple[str, str, str, type[Record]]] = [
    *(("x-events", "server-to-client", n, r) for n, r in SERVER_EVENTS.items()),
    *(("x-events", "client-to-server", n, r) for n, r in CLIENT_EVENTS.items()),
    ("x-events", "client-to-server", "connect (auth)", CONNECT_AUTH),
    *(("x-events", "acks", n, r) for n, r in ACK_RECORDS.items()),
    *(("x-http", "requests", n, r) for n, r in HTTP_REQUESTS.items()),
    *(("x-http", "replies", n, r) for n, r in HTTP_REPLIES.items()),
]
IDS = [f"{kind}:{name}" for _, kind, name, _ in PARTS]


def _inner(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _sample(tp: Any, meta: Any) -> Any:
    """A valid JSON value for a field: inside its range, the first of its choices."""
    tp = _inner(tp)
    if meta.get("one_of"):
        return meta["one_of"][0]
    if isinstance(tp, type) and issubclass(tp, Record):
        return _instance(tp)
    if tp is bool:
        return True
    if tp is int or tp is float:
        lo = meta.get("lo")
        v = lo + 1 if lo is not None else 7
        hi = meta.get("hi")
        v = min(v, hi) if hi is not None else v
        return int(v) if tp is int else float(v)
    if tp is str:
        return "S"  # a valid voice part, name, id
    origin = typing.get_origin(tp)
    if origin is tuple:
        return [_sample(typing.get_args(tp)[0], {})]
    if origin is dict:
        return {"S": _sample(typing.get_args(tp)[1], {})}
    raise AssertionError(f"no sample for {tp!r}")


def _instance(record: type[Record]) -> dict[str, Any]:
    hints = typing.get_type_hints(record)
    fields = dataclasses.fields(record)  # type: ignore[arg-type]
    return {f.name: _sample(hints[f.name], f.metadata) for f in fields}


def _wrong(tp: Any, meta: Any) -> list[Any]:
    """Values a field must refuse: another JSON type, and past its range or choices."""
    optional = _inner(tp) is not tp
    tp = _inner(tp)
    bad: list[Any] = [[1, 2]] if typing.get_origin(tp) is not tuple else [{"a": 1}]
    if not optional:
        bad.append(None)
    if tp is int or tp is float:
        bad.append("7")
        if meta.get("hi") is not None:
            bad.append(meta["hi"] + 1)
        if meta.get("lo") is not None:
            bad.append(meta["lo"] - 1)
    if tp is int:
        bad.append(1.5)
    if tp is str:
        bad.append(7)
        if meta.get("maxlen") is not None:
            bad.append("x" * (meta["maxlen"] + 1))
    if meta.get("one_of"):
        bad.append("not-one-of-them" if isinstance(meta["one_of"][0], str) else 3)
    if tp is bool:
        bad.append(1)
    return bad


def _validator(section: str, kind: str, name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(part_schema(DOCUMENT, section, kind, name))


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(DOCUMENT)
    # every event name has its record, in one direction or the other
    names = {v for k, v in vars(wire.Ev).items() if k.isupper()}
    events = DOCUMENT["x-events"]
    sent = set(events["server-to-client"]) | set(events["client-to-server"])
    assert sent == names | {"connect (auth)"}


@pytest.mark.parametrize(("section", "kind", "name", "record"), PARTS, ids=IDS)
def test_schema_and_record_accept_the_same_instance(
    section: str, kind: str, name: str, record: type[Record]
) -> None:
    payload = _instance(record)
    _validator(section, kind, name).validate(payload)
    parsed = record.from_dict(payload, name)
    assert json.loads(json.dumps(parsed.to_dict())) == payload  # one to_dict/from_dict pair


@pytest.mark.parametrize(("section", "kind", "name", "record"), PARTS, ids=IDS)
def test_schema_and_record_refuse_the_same_misfits(
    section: str, kind: str, name: str, record: type[Record]
) -> None:
    validator = _validator(section, kind, name)
    hints = typing.get_type_hints(record)
    tried = 0
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        for value in _wrong(hints[f.name], f.metadata):
            payload = _instance(record) | {f.name: value}
            assert not validator.is_valid(payload), (f.name, value)
            with pytest.raises(wire.WireError):
                record.from_dict(payload, name)
            tried += 1
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required:
            payload = {k: v for k, v in _instance(record).items() if k != f.name}
            assert not validator.is_valid(payload), f.name
            with pytest.raises(wire.WireError, match=f.name):
                record.from_dict(payload, name)
    assert tried >= 2 * len(dataclasses.fields(record))  # type: ignore[arg-type]


def test_records_clients_send_refuse_unknown_fields_and_server_records_keep_reading() -> None:
    probe = _instance(wire.SessionSettings) | {"tempo": 1}
    with pytest.raises(wire.WireError, match="unknown field"):
        wire.SessionSettings.from_dict(probe)
    assert not _validator("x-http", "requests", "POST /api/sessions").is_valid(probe)
    # a newer server may add a field: this client still reads the event
    newer = _instance(wire.TakeStop) | {"reason": "the leader pressed stop"}
    assert wire.TakeStop.from_dict(newer).take_id == "S"
    _validator("x-events", "server-to-client", wire.Ev.TAKE_STOP).validate(newer)


def run_tutti(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tutti", *argv], capture_output=True, text=True, timeout=60
    )


def test_tutti_wire_schema_prints_the_document(tmp_path: Any) -> None:
    res = run_tutti("wire-schema")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == json.loads(json.dumps(DOCUMENT))
    out = tmp_path / "tutti-wire.schema.json"
    assert run_tutti("wire-schema", "--out", str(out)).returncode == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(DOCUMENT))


ROOT = Path(__file__).resolve().parents[1]

#: Modules that read tutti's own files, not the wire (each a format of its own).
LOCAL_FILES = {
    "server/uploads.py": "a tus upload's state file in the data folder",
    "server/invite.py": "pip's direct_url.json of the installed tutti",
    "server/presence.py": "the live roster state the server processes keep in Redis",
    "client/calibrate.py": "the calibration section of the config file",
    "client/sing.py": "the calibration section of the config file (a headset measured before)",
    "client/config.py": "the config file",
    "client/leadconfig.py": "the leader's saved sessions in the config file",
    "client/takestore.py": "the take journal on the singer's disk",
    "client/uploader.py": "the upload journal on the singer's disk",
    "mix/inputs.py": "the leader's gains file",
}
#: Lookups by field name on something that is not a payload: HTTP headers, the environment,
#: the URL's path parameters.
NOT_PAYLOADS = re.compile(r"(headers|environ|match_info)\.get\(")
FIELD_LOOKUP = re.compile(r"""\.get\(\s*["']""")


def test_no_field_lookups_on_wire_payloads_outside_tutti_wire() -> None:
    """Payloads are parsed once, into records, by tutti.wire: no ``.get("field")`` on them
    in the server, the clients or the mixer."""
    found = []
    for folder in ("server", "client", "mix"):
        for path in sorted((ROOT / folder).glob("*.py")):
            rel = f"{folder}/{path.name}"
            if rel in LOCAL_FILES:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if FIELD_LOOKUP.search(NOT_PAYLOADS.sub("", line)):
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
    assert all((ROOT / rel).is_file() for rel in LOCAL_FILES)  # the list stays true


def test_clock_bands_grade_the_error_bound_as_the_lead_view_colours_it() -> None:
    graded = [wire.clock_band(s) for s in (0.0, 0.0019, 0.002, 0.0099, 0.010, 1.0)]
    assert graded == [0, 0, 1, 1, 2, 2]
