"""``tutti lead``'s command line: its sub-commands and options, and the session settings
``create`` builds from them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tutti import wire
from tutti.client.leadconfig import SESSION_KEY_ENV, TOKEN_ENV, UsageError
from tutti.errors import EXIT_CODES_HELP

__all__ = ["add_arguments", "settings_from_args"]


def _lead_arg(p: argparse.ArgumentParser) -> None:
    """``--lead S``: how far ahead ``take start`` and ``take run`` schedule the count-in."""
    p.add_argument(
        "--lead",
        type=float,
        default=None,
        metavar="S",
        help="seconds from now until the count-in starts (≥ 1, default 2)",
    )


def _common(p: argparse.ArgumentParser, *, with_json: bool = False) -> None:
    g = p.add_argument_group("session")
    g.add_argument(
        "--server",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="server URL (default: the session's server from your config)",
    )
    g.add_argument(
        "--session",
        metavar="ID",
        default=argparse.SUPPRESS,
        help="session id (default: the last session you created)",
    )
    if with_json:
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``tutti lead``'s sub-commands to ``parser``."""
    parser.epilog = EXIT_CODES_HELP
    parser.add_argument("--server", metavar="URL", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--session", metavar="ID", default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("create", help="create a session and print the join code")
    p.add_argument("url", metavar="URL", help="the tutti server, e.g. http://127.0.0.1:8765")
    p.add_argument(
        "--key",
        default=None,
        help=f"the server host's session key (default: ${SESSION_KEY_ENV}); not needed on "
        "a server started with --open",
    )
    p.add_argument("--title", required=True, help="the session's title (1–120 characters)")
    p.add_argument("--rate", type=int, default=48000, help="sample rate in Hz (default 48000)")
    p.add_argument("--bpm", type=float, default=100.0, help="tempo in beats per minute")
    p.add_argument("--meter", default="4/4", help="beats per bar / beat unit (default 4/4)")
    p.add_argument(
        "--count-in",
        type=int,
        default=1,
        metavar="BARS",
        help="bars of click before the song (default 1)",
    )
    p.add_argument(
        "--parts", default="S,A,T,B", help="voice parts, comma-separated (default S,A,T,B)"
    )
    p.add_argument(
        "--tempo-map",
        type=Path,
        metavar="FILE.json",
        help='tempo changes: a JSON list of {"bar", "bpm", "beats_per_bar"?}',
    )
    p.add_argument(
        "--max-take-seconds",
        type=int,
        default=None,
        help="longest take in seconds (default: the server's, 900)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")

    p = sub.add_parser("track", help="upload the backing track for a voice part")
    p.add_argument("part", metavar="PART", help="voice part (one of the session's parts)")
    p.add_argument(
        "file", metavar="FILE", type=Path, help="WAV, FLAC, OGG or MP3 (another rate is converted)"
    )
    _common(p, with_json=True)

    p = sub.add_parser("lyrics", help="upload a part's words, timed (LRC or BAR:BEAT lines)")
    p.add_argument("part", metavar="PART", help="voice part (one of the session's parts)")
    p.add_argument(
        "file",
        metavar="FILE",
        type=Path,
        help="UTF-8 text: LRC ('[01:02.50] words', times from the backing's start) or cues "
        "('12:1 words' = bar 12 beat 1 of the song, 'in 1:1 words' in the count-in)",
    )
    _common(p, with_json=True)

    p = sub.add_parser("note", help="a short note for the singers' waiting room")
    p.add_argument(
        "text",
        metavar="TEXT",
        nargs="?",
        help=f"plain text, at most {wire.NOTE_MAX_CHARS} characters; '' clears the note; "
        "left out: print the note",
    )
    _common(p, with_json=True)

    p = sub.add_parser("roster", help="who has joined: parts, connection, latency, clock, level")
    _common(p, with_json=True)

    p = sub.add_parser("take", help="arm, start or stop a take")
    tsub = p.add_subparsers(dest="take_action", metavar="STEP", required=True)
    q = tsub.add_parser("arm", help="arm a take (the singers get ready)")
    _common(q, with_json=True)
    q = tsub.add_parser("start", help="start the armed take (arms one first if needed)")
    _lead_arg(q)
    q.add_argument("--take", metavar="TAKE_ID", help="the take (default: the armed one)")
    _common(q, with_json=True)
    q = tsub.add_parser("stop", help="stop the running take")
    q.add_argument("--take", metavar="TAKE_ID", help="the take (default: the running one)")
    _common(q, with_json=True)
    q = tsub.add_parser("run", help="arm, start, and stop after --seconds")
    q.add_argument("--seconds", type=float, required=True, help="length of the take (seconds)")
    _lead_arg(q)
    _common(q, with_json=True)

    p = sub.add_parser("takes", help="list takes with each singer's upload state")
    _common(p, with_json=True)

    p = sub.add_parser("download", help="download a take folder for `tutti mix`")
    p.add_argument(
        "take_id",
        metavar="TAKE",
        help="'last', the take's number in `tutti lead takes`, or its id (or prefix)",
    )
    p.add_argument(
        "dir",
        metavar="DIR",
        nargs="?",
        type=Path,
        help="destination folder (default ./take-TAKE_ID)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for every expected singer's upload",
    )
    _common(p, with_json=True)

    p = sub.add_parser("close", help="close the session (no more joins or takes)")
    _common(p)

    p = sub.add_parser(
        "delete", help="delete a take, or the whole session, with every recording, for good"
    )
    p.add_argument("take", nargs="?", metavar="TAKE_ID", help="the take to delete")
    p.add_argument(
        "--whole-session",
        action="store_true",
        help="delete the session itself: its singers, every take and recording, its tracks",
    )
    p.add_argument("--yes", action="store_true", help="do it without asking (for scripts)")
    _common(p)

    p = sub.add_parser("watch", help="live view of the roster; keys: s start, x stop, q quit")
    p.add_argument(
        "--lead",
        type=float,
        default=None,
        metavar="S",
        help="seconds of lead before a take started with 's'",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="quit after S seconds (default: run until q or Ctrl-C)",
    )
    _common(p)

    p = sub.add_parser(
        "token",
        help="print the session's leader token, to lead it from another computer",
        description="Print the leader token saved here for the session, with its server and "
        "id. Anyone holding it has full control of the session: pass it only to yourself or a "
        "co-leader, over a private channel.",
    )
    _common(p, with_json=True)

    p = sub.add_parser(
        "adopt",
        help="lead a session created on another computer (token on stdin)",
        description="Read the leader token (printed by `tutti lead token` on the computer that "
        f"created the session) from ${TOKEN_ENV} or else from stdin (one line; typed without "
        "echo at a terminal), check it with the server, then save it here and make the session "
        "the current one. The token is never taken as an argument: arguments land in shell "
        "history and in the process list.",
    )
    g = p.add_argument_group("session")
    g.add_argument("--server", metavar="URL", required=True, help="the session's server URL")
    g.add_argument("--session", metavar="ID", required=True, help="the session id")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    meter = str(args.meter).strip()
    try:
        bpb_s, unit_s = meter.split("/")
        bpb, unit = int(bpb_s), int(unit_s)
    except ValueError:
        raise UsageError(
            f"--meter {meter!r}: give beats per bar and beat unit like 4/4, 3/4 or 6/8"
        ) from None
    parts = [p.strip() for p in str(args.parts).split(",") if p.strip()]
    settings: dict[str, Any] = {
        "title": args.title,
        "rate": args.rate,
        "bpm": args.bpm,
        "beats_per_bar": bpb,
        "beat_unit": unit,
        "count_in_bars": args.count_in,
        "parts": parts,
    }
    if args.max_take_seconds is not None:
        settings["max_take_seconds"] = args.max_take_seconds
    if args.tempo_map is not None:
        try:
            raw = json.loads(Path(args.tempo_map).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"--tempo-map {args.tempo_map}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--tempo-map {args.tempo_map}: not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        if isinstance(raw, dict) and "tempo_map" in raw:
            raw = raw["tempo_map"]
        settings["tempo_map"] = raw
    try:
        checked = wire.parse_settings(settings)
    except wire.WireError as exc:
        raise UsageError(str(exc)) from None
    return checked.to_dict()
