"""``tutti lead``: the choir leader's controls.

Sub-commands (each a small coroutine over :class:`tutti.client.leader_api.LeaderClient`)::

    tutti lead create URL --title T [--rate] [--bpm] [--meter 4/4] [--count-in] [--parts S,A,T,B]
                                    [--tempo-map FILE.json]
    tutti lead track PART FILE
    tutti lead lyrics PART FILE
    tutti lead note ["TEXT"]                      (the waiting room's note; '' clears it)
    tutti lead roster [--json]
    tutti lead take arm | start [--lead S] | stop | run --seconds N
    tutti lead takes [--json]
    tutti lead download TAKE_ID [DIR] [--wait S]
    tutti lead close
    tutti lead watch
    tutti lead token [--json]
    tutti lead adopt --server URL --session ID     (the token on stdin or in $TUTTI_LEADER_TOKEN)

``--server URL`` and ``--session ID`` choose the session; by default the one the last
``create`` made (the leader token is kept in the user's config, section ``"leader"``, keyed by
server URL, with ``"current"`` naming the session in use).  To lead from another computer,
``token`` prints the saved token there and ``adopt`` on the other computer checks it against
the server and saves it as if the session had been created there.

Exit codes: 0 done; 1 the server refused or the action failed (the message says why); 2 bad
input on the command line or no session chosen; 3 the server could not be reached or is not a
tutti server; 6 ``download`` wrote the take but some expected singers' recordings are missing.
Data goes to stdout (``--json`` for machine-readable output); progress and messages go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from tutti import takeformat, wire
from tutti.client.leadargs import add_arguments, settings_from_args
from tutti.client.leadconfig import (
    SESSION_KEY_ENV,
    Target,
    UsageError,
    read_token,
    remember_session,
    remember_take,
    resolve_target,
)
from tutti.client.leader_api import LeaderClient, LeaderError, normalize_server_url
from tutti.errors import ExitCode, TuttiError
from tutti.fsutil import write_json_atomic

__all__ = ["add_arguments", "run"]

# -- output helpers -------------------------------------------------------------------------


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _out_console() -> Console:
    con = Console(highlight=False)
    if not con.is_terminal:  # a pipe or a file: don't squeeze tables into 80 columns
        con = Console(highlight=False, width=160)
    return con


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def _transfer_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=not console.is_terminal,
        disable=not console.is_terminal,
    )


def _shown_in(prog: Progress, task: TaskID) -> Callable[[int, int | None], None]:
    """A transfer's ``progress(done, total)`` callback that moves ``task``'s bar."""

    def update(done: int, total: int | None) -> None:
        prog.update(task, completed=done, total=total)

    return update


def _fmt_db(v: Any) -> str:
    return "—" if not isinstance(v, (int, float)) else f"{v:6.1f} dB"


def _fmt_latency(p: wire.RosterEntry, rate: int | None) -> str:
    lat = p.latency_frames
    if lat is None:
        return "not calibrated"
    ms = f" ({lat / rate * 1000:.1f} ms)" if rate else ""
    return f"{lat} frames{ms} {p.latency_source or '?'}"


def _fmt_clock(p: wire.RosterEntry) -> str:
    if p.clock is None:
        return "not synced"
    return f"±{p.clock.error_bound * 1000:.2f} ms"


# -- the sub-commands -----------------------------------------------------------------------


def _spaced(code: str) -> str:
    return " ".join(code)


async def _create(args: argparse.Namespace) -> int:
    server = normalize_server_url(args.url)
    settings = settings_from_args(args)
    async with LeaderClient(server) as api:
        await api.health()
        key = args.key or os.environ.get(SESSION_KEY_ENV) or None
        created = await api.create_session(settings, session_key=key)
    made = created.settings
    path = remember_session(
        server, created.session_id, created.leader_token, created.code, made.title
    )
    if args.json:
        _print_json(
            {
                "server": server,
                "session_id": created.session_id,
                "code": created.code,
                "invite_link": wire.invite_link(server, created.code),
                "settings": made.to_dict(),
                "config": str(path),
            }
        )
        return ExitCode.OK
    out = _out_console()
    body = Text.assemble(
        ("Join code\n\n", "bold"),
        (_spaced(created.code), "bold reverse"),
        "\n\nSend your singers this link (it shows them what to install and do):\n",
        (wire.invite_link(server, created.code), "bold cyan"),
        "\n\nSingers who have tutti run:\n",
        (f"tutti join {server} --code {created.code} --name 'Your Name' --part PART", "cyan"),
        f"\n\nparts: {', '.join(made.parts)} · {made.bpm:g} bpm "
        f"{made.beats_per_bar}/{made.beat_unit} · {made.rate} Hz",
        justify="center",
    )
    out.print(Panel(body, title=made.title, expand=False, padding=(1, 4)))
    out.print(f"session {created.session_id} on {server} (leader token saved in {path})")
    return ExitCode.OK


def _check_audio_file(path: Path) -> tuple[int, int, int]:
    """(rate, channels, frames) of a local audio file, or a UsageError naming the problem."""
    import soundfile as sf

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise UsageError(
            f"{path} is not an audio file tutti can read ({exc}); upload WAV, FLAC, OGG or MP3"
        ) from None
    if info.format not in ("WAV", "WAVEX", "FLAC", "OGG", "MP3"):
        raise UsageError(f"{path}: format {info.format} not accepted; upload WAV, FLAC, OGG or MP3")
    return int(info.samplerate), int(info.channels), int(info.frames)


async def _track(args: argparse.Namespace, target: Target) -> int:
    rate, channels, frames = _check_audio_file(args.file)
    err = _err_console()
    async with LeaderClient(target.server, target.token) as api:
        sess = await api.session()
        parts, srate = sess.settings.parts, sess.settings.rate
        if args.part not in parts:
            raise UsageError(f"part {args.part!r} is not one of this session's parts {list(parts)}")
        size = args.file.stat().st_size
        with _transfer_progress(err) as prog:
            task = prog.add_task(f"{args.part} ← {args.file.name}", total=size)
            info = await api.upload_track(
                args.part, args.file, progress=lambda done, _t: prog.update(task, completed=done)
            )
    if args.json:
        _print_json(info.to_dict())
    else:
        secs = frames / rate if rate else 0.0
        converted = f", converted to {srate} Hz" if rate != srate else ""
        _out_console().print(
            f"backing for {args.part}: {args.file.name}, {secs:.1f} s, {channels} ch"
            f"{converted}, sha256 {info.sha256[:12]}…"
        )
    return ExitCode.OK


async def _lyrics(args: argparse.Namespace, target: Target) -> int:
    try:
        text = args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.file}: {exc.strerror or exc}") from None
    async with LeaderClient(target.server, target.token) as api:
        lyrics = await api.upload_lyrics(args.part, text)
    if args.json:
        _print_json(lyrics.to_dict())
        return ExitCode.OK
    first = lyrics.cues[0]
    at = (
        f"{int(first.seconds // 60)}:{first.seconds % 60:04.1f} after the backing starts"
        if first.seconds is not None
        else f"{'count-in ' if first.count_in else ''}bar {first.bar} beat {first.beat}"
    )
    _out_console().print(
        f"words for {args.part}: {len(lyrics.cues)} timed lines, the first at {at}; singers "
        "see them from the next take"
    )
    return ExitCode.OK


async def _note(args: argparse.Namespace, target: Target) -> int:
    if args.text is not None:
        try:
            wire.check_note(args.text)  # refused here with the server's words, before sending
        except wire.WireError as exc:
            raise UsageError(str(exc)) from None
    async with LeaderClient(target.server, target.token) as api:
        note = await api.note() if args.text is None else await api.set_note(args.text)
    if args.json:
        _print_json(wire.Note(note).to_dict())
    elif args.text is None:
        _out_console().print(escape(note) if note else "no note in the waiting room")
    else:
        said = f"the waiting room's note is now: {escape(note)}" if note else "the note is cleared"
        _out_console().print(f"{said} (singers see it within a second)")
    return ExitCode.OK


def _fmt_dropouts(p: wire.RosterEntry, rate: int | None) -> str:
    """A singer's own dropouts (from their frame accounting) and the audio they cost."""
    count, lost = p.dropouts, p.lost_frames
    if not count:
        return "0"
    return f"[yellow]{count} ({lost / (rate or 48000) * 1000:.0f} ms)[/]"


def roster_table(participants: Sequence[wire.RosterEntry], rate: int | None) -> Table:
    """The roster as a rich table (shared with the watch view)."""
    t = Table(show_header=True, header_style="bold", expand=False)
    for col in ("name", "part", "connected", "latency", "clock", "level", "peak", "dropouts"):
        t.add_column(col)
    for p in participants:
        lv = p.level
        clip = " [red]CLIP[/]" if lv is not None and lv.clipped else ""
        t.add_row(
            p.name,
            p.part,
            "[green]yes[/]" if p.connected else "[red]no[/]",
            _fmt_latency(p, rate),
            _fmt_clock(p),
            _fmt_db(lv.rms_db if lv else None),
            _fmt_db(lv.peak_db if lv else None) + clip,
            _fmt_dropouts(p, rate),
        )
    return t


async def _roster(args: argparse.Namespace, target: Target) -> int:
    async with LeaderClient(target.server, target.token) as api:
        participants = await api.roster()
        rate = None if args.json else (await api.session()).settings.rate
    if args.json:
        _print_json(wire.Roster(participants).to_dict())
        return ExitCode.OK
    out = _out_console()
    if not participants:
        code = f" (join code {target.code})" if target.code else ""
        out.print(f"nobody has joined yet{code}")
        return ExitCode.OK
    out.print(roster_table(participants, rate))
    return ExitCode.OK


def _find_take(takes: Sequence[wire.TakeInfo], state: str) -> wire.TakeInfo | None:
    found = None
    for t in takes:
        if t.state == state:
            found = t
    return found


async def start_take(
    api: LeaderClient, take_id: str | None, lead_s: float | None
) -> wire.TakeStarted:
    """Start ``take_id`` or the armed take, arming one first if none is armed."""
    if take_id is None:
        armed = _find_take(await api.takes(), "armed")
        take_id = armed.take_id if armed else (await api.arm_take()).take_id
    return await api.start_take(take_id, lead_s)


async def stop_take(api: LeaderClient, take_id: str | None) -> wire.TakeStopped:
    """Stop ``take_id`` or the running take."""
    if take_id is None:
        running = _find_take(await api.takes(), "running")
        if running is None:
            raise LeaderError(
                "no take is running; start one with `tutti lead take start`", code="no_take"
            )
        take_id = running.take_id
    return await api.stop_take(take_id)


async def _take(args: argparse.Namespace, target: Target) -> int:
    out = _out_console()
    step = args.take_action
    async with LeaderClient(target.server, target.token) as api:
        res: dict[str, Any]
        if step == "arm":
            armed = await api.arm_take()
            remember_take(target, armed.take_id)
            res = armed.to_dict()
            msg = f"take {armed.take_id} armed; {len(armed.expected)} singer(s) expected"
        elif step == "start":
            started = await start_take(api, args.take, args.lead)
            remember_take(target, started.take_id)
            res = started.to_dict()
            ahead = started.t0 - started.server_time
            msg = f"take {started.take_id} starts in {ahead:.1f} s (count-in first)"
        elif step == "stop":
            stopped = await stop_take(api, args.take)
            res = stopped.to_dict()
            msg = f"take {stopped.take_id} stopped; singers are uploading (see `tutti lead takes`)"
        else:  # run
            if args.seconds <= 0:
                raise UsageError("--seconds must be > 0")
            started = await start_take(api, None, args.lead)
            remember_take(target, started.take_id)
            ahead = started.t0 - started.server_time
            _err_console().print(
                f"take {started.take_id}: count-in in {ahead:.1f} s, recording {args.seconds:g} s"
            )
            await asyncio.sleep(max(0.0, ahead) + args.seconds)
            stopped = await api.stop_take(started.take_id)
            res = {**started.to_dict(), **stopped.to_dict()}
            msg = f"take {stopped.take_id} done; singers are uploading (see `tutti lead takes`)"
    if args.json:
        _print_json(res)
    else:
        out.print(msg)
    return ExitCode.OK


async def _takes(args: argparse.Namespace, target: Target) -> int:
    async with LeaderClient(target.server, target.token) as api:
        takes = await api.takes()
    if args.json:
        _print_json(wire.TakeList(takes).to_dict())
        return ExitCode.OK
    out = _out_console()
    if not takes:
        out.print("no takes yet; run one with `tutti lead take start`")
        return ExitCode.OK
    t = Table(show_header=True, header_style="bold")
    for col in ("#", "take", "state", "singers", "uploaded"):
        t.add_column(col)
    colours = {"uploaded": "green", "failed": "red", "missed": "red", "uploading": "yellow"}
    for number, take in enumerate(takes, start=1):
        singers = take.singers
        done = sum(1 for s in singers if s.state == "uploaded")
        who = ", ".join(
            f"{s.name} ({s.part}): [{colours.get(s.state, 'white')}]{s.state}[/]" for s in singers
        )
        t.add_row(str(number), take.take_id, take.state, who or "—", f"{done}/{len(singers)}")
    out.print(t)
    return ExitCode.OK


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``take.json`` atomically (it is written last: its presence means complete)."""
    return write_json_atomic(folder / takeformat.MANIFEST_NAME, manifest, indent=2)


def _missing_singers(take: wire.TakeInfo) -> list[wire.TakeSingerInfo]:
    return [s for s in take.singers if s.state != "uploaded"]


def _awaited(missing: list[wire.TakeSingerInfo]) -> list[wire.TakeSingerInfo]:
    """The missing recordings that may still come ("missed" ones never will)."""
    return [s for s in missing if s.state != "missed"]


def resolve_take(takes: Sequence[wire.TakeInfo], ref: str) -> wire.TakeInfo:
    """The take ``ref`` names: ``last``, its number in ``tutti lead takes`` (1 = first), its
    id, or a unique prefix of its id.  Raises :class:`LeaderError` naming what is accepted."""
    if not takes:
        raise LeaderError("this session has no takes yet", code="unknown_take")
    if ref == "last":
        return takes[-1]
    if ref.isdigit() and 1 <= int(ref) <= len(takes) and len(ref) <= 4:
        return takes[int(ref) - 1]
    exact = [t for t in takes if t.take_id == ref]
    if exact:
        return exact[0]
    prefixed = [t for t in takes if t.take_id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    what = "is ambiguous" if prefixed else "matches no take"
    raise LeaderError(
        f"take {ref!r} {what} in this session; give 'last', a number 1–{len(takes)}, "
        "or a take id (see `tutti lead takes`)",
        code="unknown_take",
    )


async def _download(args: argparse.Namespace, target: Target) -> int:
    err = _err_console()
    async with LeaderClient(target.server, target.token) as api:
        deadline = time.monotonic() + max(0.0, args.wait)
        while True:
            take = resolve_take(await api.takes(), args.take_id)
            missing = _missing_singers(take)
            # "failed" is not final: a singer's client retries until the server has the take
            if not _awaited(missing) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
        take_id = take.take_id
        folder: Path = args.dir if args.dir is not None else Path(f"take-{take_id}")
        raw = await api.manifest(take_id)
        try:
            manifest = takeformat.parse_manifest(raw)
        except takeformat.TakeFormatError as exc:
            raise LeaderError(
                f"the server sent an invalid take manifest: {exc}", code="bad_manifest"
            ) from exc
        files = [(r.file, r.sha256) for r in manifest.recordings]
        files += [(b.file, b.sha256) for b in manifest.backing]
        folder.mkdir(parents=True, exist_ok=True)
        total_bytes = 0
        with _transfer_progress(err) as prog:
            for rel, sha in files:
                dest = folder / rel
                task = prog.add_task(rel, total=None)
                total_bytes += await api.download_file(
                    take_id,
                    rel,
                    dest,
                    sha256=sha,
                    progress=_shown_in(prog, task),
                )
    path = _write_manifest(folder, manifest.to_dict())
    summary = {
        "take_id": take_id,
        "dir": str(folder),
        "manifest": str(path),
        "recordings": [r.file for r in manifest.recordings],
        "backing": [b.file for b in manifest.backing],
        "bytes_downloaded": total_bytes,
        "missing": [s.to_dict() for s in missing],
    }
    if args.json:
        _print_json(summary)
    else:
        _out_console().print(
            f"take {take_id}: {len(manifest.recordings)} recording(s), "
            f"{len(manifest.backing)} backing track(s) in {folder} — mix with "
            f"`tutti mix {folder}`"
        )
    for s in missing:
        if s.state == "missed":
            err.print(f"[yellow]{s.name} did not record this take: {s.detail}[/]")
    if _awaited(missing):
        names = ", ".join(f"{s.name} ({s.state})" for s in _awaited(missing))
        err.print(
            f"[yellow]not yet uploaded: {names}[/]; run the same command later "
            "(or with --wait S) to fetch them"
        )
    if missing:
        return ExitCode.INCOMPLETE
    return ExitCode.OK


async def _close(args: argparse.Namespace, target: Target) -> int:
    async with LeaderClient(target.server, target.token) as api:
        await api.close_session()
    _out_console().print(f"session {target.session_id} closed; singers can no longer join")
    return ExitCode.OK


async def _delete(args: argparse.Namespace, target: Target) -> int:
    if bool(args.take) == bool(args.whole_session):
        raise UsageError("name one take to delete, or --whole-session (not both)")
    what = (
        f"take {args.take} and its recordings"
        if args.take
        else f"session {target.session_id}: its singers, every take and recording"
    )
    if not args.yes and not _confirmed(f"Delete {what}? This cannot be undone. [y/N] "):
        _err_console().print("nothing was deleted")
        return ExitCode.FAILED
    async with LeaderClient(target.server, target.token) as api:
        if args.take:
            await api.delete_take(args.take)
        else:
            await api.delete_session()
    _out_console().print(f"deleted {what}")
    return ExitCode.OK


def _confirmed(question: str) -> bool:
    """Ask on the terminal; anything but yes (or no terminal to ask on) is no."""
    if not sys.stdin.isatty():
        raise UsageError("deleting asks first: run it in a terminal, or add --yes")
    return input(question).strip().lower() in ("y", "yes")


async def _token(args: argparse.Namespace, target: Target) -> int:
    err = _err_console()
    err.print(
        f"[yellow]warning:[/] this token gives full control of session {target.session_id} "
        "(takes, every recording, closing it); share it only over a private channel",
        markup=True,
    )
    if args.json:
        _print_json({"server": target.server, "session": target.session_id, "token": target.token})
        return ExitCode.OK
    sys.stdout.write(
        f"server:  {target.server}\nsession: {target.session_id}\ntoken:   {target.token}\n"
    )
    sys.stdout.flush()
    err.print(
        f"on the other computer run `tutti lead adopt --server {target.server} "
        f"--session {target.session_id}` and paste the token"
    )
    return ExitCode.OK


async def _adopt(args: argparse.Namespace) -> int:
    server = normalize_server_url(args.server)
    session_id = str(args.session).strip()
    if not session_id:
        raise UsageError("--session must name the session id `tutti lead token` printed")
    token = read_token()
    async with LeaderClient(server, token) as api:
        try:
            sess = await api.session()
        except LeaderError as exc:
            if exc.status in (401, 403):
                raise LeaderError(
                    f"{server} refused this token ({exc.status} {exc.code}): it is not the "
                    "leader token of a session there — it may be cut short or mistyped, or "
                    "the session's data is gone. Copy it again with `tutti lead token` on the "
                    "computer that created the session; nothing was stored",
                    status=exc.status,
                    code=exc.code,
                ) from None
            raise
    found = sess.session_id
    if sess.role != "leader":
        raise LeaderError(
            f"this token belongs to a {sess.role} of session {found} "
            f"({sess.name or '?'}), not to its leader; use the token `tutti lead token` "
            "prints; nothing was stored",
            code="not_leader",
        )
    if found != session_id:
        raise LeaderError(
            f"this token leads session {found} on {server}, not {session_id}; check --session "
            "(`tutti lead token` prints both); nothing was stored",
            code="wrong_session",
        )
    title, code, state = sess.settings.title, sess.code or "", sess.state
    path = remember_session(server, session_id, token, code, title, adopted=True)
    if args.json:
        _print_json(
            {
                "server": server,
                "session": session_id,
                "code": code,
                "title": title,
                "state": state,
                "config": str(path),
            }
        )
        return ExitCode.OK
    closed = " (the session is closed)" if state == "closed" else ""
    _out_console().print(
        f"now leading “{escape(title)}”: session {session_id} on {server}, join code "
        f"{code}{closed} (leader token saved in {path})"
    )
    return ExitCode.OK


async def _watch(args: argparse.Namespace, target: Target) -> int:
    from tutti.client.leadview import watch

    code: int = await watch(target.server, target.token, lead_s=args.lead, duration=args.duration)
    return code


_ACTIONS: dict[str, Callable[[argparse.Namespace, Target], Awaitable[int]]] = {
    "track": _track,
    "lyrics": _lyrics,
    "note": _note,
    "roster": _roster,
    "take": _take,
    "takes": _takes,
    "download": _download,
    "close": _close,
    "delete": _delete,
    "watch": _watch,
    "token": _token,
}


async def _main(args: argparse.Namespace) -> int:
    if args.action == "create":
        return await _create(args)
    if args.action == "adopt":
        return await _adopt(args)
    target = resolve_target(args)
    return await _ACTIONS[args.action](args, target)


def run(args: argparse.Namespace) -> int:
    """Run one ``tutti lead`` action; returns the exit code (see the module docstring)."""
    err = _err_console()
    if not hasattr(args, "json"):
        args.json = False
    try:
        code: int = asyncio.run(_main(args))
        return code
    except TuttiError as exc:
        err.print(f"[red]tutti lead {args.action}:[/] {escape(str(exc))}", markup=True)
        return int(exc.exit_code)
