"""Checks a ``tutti serve --wire-log`` file against the wire contract: every line must meet
the JSON Schema that ``tutti wire-schema`` exports and parse as its record."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema

from tutti import takeformat
from tutti.wire.outbound import SERVER_EVENTS
from tutti.wire.record import Record
from tutti.wire.replies import HTTP_REPLIES, ErrorBody
from tutti.wire.schema import ACK_RECORDS, contract_schema, part_schema

__all__ = ["check_wire_log", "MANIFEST_ROUTE"]

#: The one JSON reply outside tutti.wire: the take folder's take.json (tutti.takeformat).
MANIFEST_ROUTE = "GET /api/session/takes/{take_id}/manifest"


def _target(line: dict[str, Any]) -> tuple[tuple[str, str, str], type[Record]]:
    kind, name = line["kind"], line["name"]
    if kind == "event":
        return ("x-events", "server-to-client", name), SERVER_EVENTS[name]
    if kind == "ack":
        return ("x-events", "acks", name), ACK_RECORDS[name]
    if line["status"] >= 400:
        return ("x-http", "replies", "error"), ErrorBody
    return ("x-http", "replies", name), HTTP_REPLIES[name]


def check_wire_log(path: Path) -> Counter[str]:
    """Validate every line; returns how many messages of each kind and name were seen.
    Raises AssertionError naming the first line off the contract."""
    document = contract_schema()
    validators: dict[tuple[str, str, str], jsonschema.Draft202012Validator] = {}
    seen: Counter[str] = Counter()
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = json.loads(text)
        seen[f"{line['kind']} {line['name']}"] += 1
        if line["kind"] == "reply" and line["name"] == MANIFEST_ROUTE and line["status"] < 400:
            takeformat.parse_manifest(line["data"])
            continue
        try:
            where, record = _target(line)
        except KeyError:
            what = f"{line['kind']} {line['name']!r}"
            raise AssertionError(f"line {n}: {what} is not in the contract") from None
        if where not in validators:
            validators[where] = jsonschema.Draft202012Validator(part_schema(document, *where))
        errors = sorted(validators[where].iter_errors(line["data"]), key=str)
        assert not errors, f"line {n} ({line['name']}): {errors[0].message}"
        record.from_dict(line["data"], line["name"])  # the record reads what the schema passed
    return seen
