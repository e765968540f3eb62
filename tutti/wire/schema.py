"""The whole wire contract as one JSON Schema document, read from the records.

``tutti wire-schema`` prints it (or writes it with ``--out``), so the browser code checks
messages against the same contract as the Python clients.  ``$defs`` holds every record
once; ``x-events`` maps each Socket.IO event, by direction, and ``x-http`` each API route's
request and reply body, to a reference into ``$defs``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tutti.wire.contract import (
    PROTOCOL_VERSION,
    CalibrationReport,
    ClockProbe,
    ClockReply,
    ClockReport,
    ConnectAuth,
    Ev,
    LevelReport,
    SessionSettings,
    TakeState,
    Wave,
)
from tutti.wire.outbound import SERVER_EVENTS
from tutti.wire.record import Record
from tutti.wire.replies import HTTP_REPLIES, HTTP_REQUESTS

__all__ = ["CLIENT_EVENTS", "ACK_RECORDS", "contract_schema", "part_schema", "add_arguments", "run"]

#: Every client-to-server event and the record it carries.
CLIENT_EVENTS: dict[str, type[Record]] = {
    Ev.CLOCK_PROBE: ClockProbe,
    Ev.CLOCK_REPORT: ClockReport,
    Ev.LEVEL: LevelReport,
    Ev.CALIBRATION: CalibrationReport,
    Ev.TAKE_STATE: TakeState,
    Ev.WAVE: Wave,
}

#: What a client connects with (the Socket.IO ``auth`` object).
CONNECT_AUTH: type[Record] = ConnectAuth

#: Events the server acknowledges with a reply, and the reply's record.
ACK_RECORDS: dict[str, type[Record]] = {Ev.CLOCK_PROBE: ClockReply}


def contract_schema() -> dict[str, Any]:
    """A JSON Schema (2020-12) document: ``$defs`` per record, and per direction and event
    name a reference to the record it carries."""
    defs: dict[str, Any] = {}
    SessionSettings.json_schema(defs)
    server = {name: rec.json_schema(defs) for name, rec in sorted(SERVER_EVENTS.items())}
    client = {name: rec.json_schema(defs) for name, rec in sorted(CLIENT_EVENTS.items())}
    client["connect (auth)"] = CONNECT_AUTH.json_schema(defs)
    acks = {name: rec.json_schema(defs) for name, rec in sorted(ACK_RECORDS.items())}
    requests = {route: rec.json_schema(defs) for route, rec in sorted(HTTP_REQUESTS.items())}
    replies = {route: rec.json_schema(defs) for route, rec in sorted(HTTP_REPLIES.items())}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:tutti:wire:{PROTOCOL_VERSION}",
        "title": f"tutti wire contract, protocol {PROTOCOL_VERSION}",
        "x-protocol-version": PROTOCOL_VERSION,
        "x-events": {"server-to-client": server, "client-to-server": client, "acks": acks},
        "x-http": {"requests": requests, "replies": replies},
        "$defs": defs,
    }


def part_schema(document: dict[str, Any], section: str, kind: str, name: str) -> dict[str, Any]:
    """The schema one message must meet (``section`` ``x-events`` or ``x-http``), resolvable
    on its own: the document's ``$defs`` and the reference."""
    ref = document[section][kind][name]
    return {"$schema": document["$schema"], "$defs": document["$defs"], **ref}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, help="write the schema to this file (default: standard output)"
    )


def run(args: argparse.Namespace) -> int:
    text = json.dumps(contract_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0
