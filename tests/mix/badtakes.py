"""A corpus of bad take folders: mutations of one valid generated take, each with the words its
error must name.

:func:`write_base` writes a small valid take (a 24-bit FLAC, a 16-bit WAV at 44.1 kHz in a
sub-folder, a stereo FLAC backing); :func:`cases` lists the mutations: every field of
``take.json`` given wrong types, out-of-range values, lone surrogates, control characters,
nesting 100,000 deep and integers of 4,000 and 5,000 digits; a ``take.json`` that is not
JSON, not UTF-8, too large, a folder, a FIFO or a link out of the folder; audio files missing,
empty, cut off, damaged, replaced by junk, folders, FIFOs or links out, with lying headers
(FLAC STREAMINFO totals, WAV rates and channel counts) or disagreeing with the manifest; and
outputs that cannot be written.  Each case is built from a copy of the base folder.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

RATE = 48000
BEN_RATE = 44100
FRAMES = RATE // 4  # a quarter of a second: every case decodes in milliseconds
BEN_FRAMES = BEN_RATE // 4
ANNA, BEN, PIANO = "anna.flac", "sub/ben.wav", "backing/piano.flac"

_RAW = "@@RAW@@"  # placeholder replaced by a raw JSON literal (Python cannot emit all of them)
BIG = "1" + "0" * 4999  # 5,000 digits: Python's json refuses to convert it
HUGE = "9" * 4000  # 4,000 digits: parses, and is out of every range
DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit
NOT_INT = [
    '"abc"',
    '"48000"',
    "[1]",
    "{}",
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "1.5",
    "true",
    "false",
    BIG,
    HUGE,
]
NOT_TEXT = [
    "1",
    "[]",
    "{}",
    "true",
    '"\\ud800"',
    '"a\\udfffb"',
    '"a\\nb"',
    '"a\\u0000b"',
    '"\\u001b[31mred"',
    '"' + "x" * 201 + '"',
]
BAD_FILE = [
    '"../anna.flac"',
    '"/etc/passwd"',
    '"sub\\\\ben.wav"',
    '""',
    '"."',
    '"sub/../../x.flac"',
    '"' + "x" * 300 + '"',
    '"nope.flac"',
    '"sub"',
    '"a\\u0000.flac"',
    '"\\ud800.flac"',
    '"a\\nb.flac"',
    "1",
    "null",
    "[]",
]


@dataclass(frozen=True)
class Case:
    """One bad take folder: how to make it from the base, and what its error must name."""

    name: str
    mutate: Callable[[Path], None]
    expect: tuple[str, ...]
    options: tuple[str, ...] = ("--stems", "--project")


def _tone(frames: int, channels: int, rate: int, seed: int) -> np.ndarray:
    t = np.arange(frames) / rate
    x = 0.2 * np.sin(2 * np.pi * (220 + 110 * seed) * t)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def base_manifest() -> dict[str, Any]:
    """The valid take.json of :func:`write_base`."""
    rec = {
        "participant_id": "p1",
        "sha256": "ab" * 32,
        "overflows": 0,
        "underflows": 0,
        "latency_source": "measured",
        "shared_clock": True,
        "device": {"name": "usb"},
    }
    return {
        "format": "tutti-take",
        "version": 1,
        "take_id": "t1",
        "title": "Bad takes",
        "rate": RATE,
        "settings": {"title": "x", "rate": RATE, "bpm": 100, "beats_per_bar": 4},
        "backing": [{"part": "all", "file": PIANO, "timeline_start": 100, "sha256": ""}],
        "recordings": [
            {
                "file": ANNA,
                "singer": "Anna",
                "part": "S",
                "rate": RATE,
                "channels": 1,
                "frames": FRAMES,
                "start_offset": 900,
                "latency": 512,
                **rec,
            },
            {
                "file": BEN,
                "singer": "Ben",
                "part": "T",
                "rate": BEN_RATE,
                "channels": 1,
                "frames": BEN_FRAMES,
                "start_offset": 300,
                "latency": 256,
                **rec,
            },
        ],
    }


def write_base(folder: Path) -> Path:
    """A small valid take folder (it must mix: the test checks)."""
    (folder / "sub").mkdir(parents=True)
    (folder / "backing").mkdir()
    sf.write(folder / ANNA, _tone(FRAMES, 1, RATE, 0), RATE, subtype="PCM_24")
    sf.write(folder / BEN, _tone(BEN_FRAMES, 1, BEN_RATE, 1), BEN_RATE, subtype="PCM_16")
    sf.write(folder / PIANO, _tone(FRAMES + 999, 2, RATE, 2), RATE, subtype="PCM_16")
    _dump(folder, base_manifest())
    return folder


def _dump(folder: Path, manifest: dict[str, Any], raw: str | None = None) -> None:
    text = json.dumps(manifest)
    if raw is not None:
        text = text.replace(f'"{_RAW}"', raw)
    (folder / "take.json").write_text(text, encoding="utf-8")


# -- manifest mutations ------------------------------------------------------------------------
Where = tuple[str | int, ...]  # the path to a field: ("recordings", 0, "rate")


def _setter(where: Where, raw: str | None) -> Callable[[Path], None]:
    """Set the field at ``where`` to the JSON literal ``raw`` (None: remove the field)."""

    def mutate(folder: Path) -> None:
        m = base_manifest()
        node: Any = m
        for key in where[:-1]:
            node = node[key]
        if raw is None:
            del node[where[-1]]
        else:
            node[where[-1]] = _RAW
        _dump(folder, m, raw)

    return mutate


def _where_words(where: Where) -> tuple[str, ...]:
    """What the error must name: the list entry (``recordings[1]``) and the field."""
    words: list[str] = []
    if len(where) == 3:
        words.append(f"{where[0]}[{where[1]}]")
    words.append(str(where[-1]))
    return tuple(words)


def _field_cases(where: Where, values: list[str], *, required: bool) -> list[Case]:
    label = "/".join(map(str, where))
    out = []
    for k, raw in enumerate(values):
        # a number too long for Python's json: the error is about take.json, not the field
        words = ("take.json", "digits") if raw == BIG else _where_words(where)
        if raw in ('"nope.flac"', '"sub"'):  # a well-formed name: the error names the file
            words = (raw.strip('"'),)
        out.append(Case(f"{label}={raw[:20]}#{k}", _setter(where, raw), words))
    if required:
        out.append(Case(f"{label} missing", _setter(where, None), _where_words(where)))
    return out


def _int_cases() -> list[Case]:
    bad_rate = [*NOT_INT, "0", "-1", "7999", "192001", "1000000000", str(2**63), "1" + "0" * 30]
    out = _field_cases(("rate",), [*bad_rate, "null"], required=True)
    for i, rate in ((0, RATE), (1, BEN_RATE)):
        rec = ("recordings", i)
        reach = 2 * 3600 * rate
        bad_channels = [*NOT_INT, "0", "-1", "9", str(2**63), "null"]
        bad_frames = [*NOT_INT, "-1", str(24 * 3600 * rate + 1), str(2**63), "null"]
        bad_offset = [*NOT_INT, str(reach + 1), str(-reach - 1), str(2**62), str(-(2**62))]
        bad_latency = [*NOT_INT, "-1", str(10 * rate + 1), str(2**63), "null"]
        out += _field_cases((*rec, "rate"), [*bad_rate, "null"], required=True)
        out += _field_cases((*rec, "channels"), bad_channels, required=True)
        out += _field_cases((*rec, "frames"), bad_frames, required=True)
        out += _field_cases(
            (*rec, "start_offset"), [*bad_offset, "1" + "0" * 12, "null"], required=True
        )
        out += _field_cases((*rec, "latency"), bad_latency, required=True)
    bad_count = [*NOT_INT, "-1", str(10**9 + 1), str(2**64)]
    for key in ("overflows", "underflows"):
        out += _field_cases(("recordings", 0, key), bad_count, required=False)
    bad_start = [*NOT_INT, str(2 * 3600 * RATE + 1), str(-(2**62)), "1000000000000"]
    out += _field_cases(("backing", 0, "timeline_start"), bad_start, required=False)
    return out


def _text_cases() -> list[Case]:
    out = []
    for i in (0, 1):
        for key in ("singer", "part"):
            out += _field_cases(("recordings", i, key), [*NOT_TEXT, "null"], required=True)
    for key in ("take_id", "title"):
        out += _field_cases((key,), NOT_TEXT, required=False)
    out += _field_cases(
        ("recordings", 1, "participant_id"), ["1", "[]", '"\\ud800"'], required=False
    )
    out += _field_cases(
        ("recordings", 0, "sha256"),
        ["1", '"xyz"', '"' + "g" * 64 + '"', '"\\ud800"'],
        required=False,
    )
    out += _field_cases(("backing", 0, "part"), ["1", '"\\ud800"', '"a\\nb"'], required=True)
    for where in (("recordings", 0, "file"), ("recordings", 1, "file"), ("backing", 0, "file")):
        out += _field_cases(where, BAD_FILE, required=True)
    return out


def _nest(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def _other_field_cases() -> list[Case]:
    out = []
    out += _field_cases(
        ("recordings", 1, "latency_source"), ['"guessed"', "1", "null", "[]"], required=False
    )
    out += _field_cases(
        ("recordings", 0, "shared_clock"), ['"yes"', "1", "null", "0"], required=False
    )
    out += _field_cases(
        ("recordings", 0, "device"),
        ['"x"', "[1]", "1", _nest(9), DEEP, '{"\\ud800": 1}', '{"a": ["\\udc80"]}'],
        required=False,
    )
    out += _field_cases(
        ("settings",), ['"x"', "[1]", "1", _nest(9), DEEP, '{"title": "\\ud800"}'], required=False
    )
    out += _field_cases(("version",), ["2", '"1"', "true", "null", "0"], required=True)
    out += _field_cases(("format",), ['"tutti"', "1", "null"], required=True)
    out += _field_cases(
        ("recordings",), ["{}", '"x"', "[]", "null", "[1]", '["x"]', "[{}]", DEEP], required=True
    )
    out += _field_cases(
        ("backing",), ['"x"', "{}", "[1]", "[{}]", '[{"part": "all"}]'], required=False
    )
    return [_deep_words(c) for c in out]


def _deep_words(case: Case) -> Case:
    """JSON nested 100,000 deep fails as a whole (Python's json recurses): it names take.json."""
    if "=[[[[[" in case.name:
        return Case(case.name, case.mutate, ("take.json", "nested"))
    return case


def _many_recordings(folder: Path) -> None:
    m = base_manifest()
    m["recordings"] = [dict(m["recordings"][0], file=f"r{i}.flac") for i in range(1001)]
    _dump(folder, m)


def _same_file_twice(folder: Path) -> None:
    m = base_manifest()
    m["recordings"][1] = dict(m["recordings"][0], file="./" + ANNA)
    _dump(folder, m)


def _manifest_text(text: bytes) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        (folder / "take.json").write_bytes(text)

    return mutate


def _manifest_cases() -> list[Case]:
    good = json.dumps(base_manifest()).encode()
    words = ("take.json",)
    out = [
        Case(f"take.json is {raw[:20]}", _manifest_text(raw.encode()), words)
        for raw in ("[]", '"x"', "1", "null", "", "{", "[" * 100_000, '{"format": NaN}')
    ]
    out += [
        Case("take.json not UTF-8", _manifest_text(b"\xff\xfe{}"), words),
        Case("take.json UTF-16", _manifest_text(json.dumps({}).encode("utf-16")), words),
        Case("take.json cut off", _manifest_text(good[: len(good) // 2]), words),
        Case("take.json huge", _manifest_text(b" " * (17 << 20) + b"{}"), ("take.json", "MiB")),
        Case("1001 recordings", _many_recordings, ("1001 recordings",)),
        Case("same file twice", _same_file_twice, ("same file",)),
        Case("take.json is a folder", _replace_by_dir("take.json"), ("take.json", "regular")),
        Case("take.json is a FIFO", _replace_by_fifo("take.json"), ("take.json", "regular")),
        Case("take.json links out", _link_out("take.json"), ("take.json", "outside")),
        Case("take.json dangling", _link_to("take.json", "/nonexistent/x"), ("take.json",)),
        Case("no take.json", _remove("take.json"), ("no take.json",)),
        Case("empty folder", _empty_folder, ("empty",)),
    ]
    return out


# -- file mutations ----------------------------------------------------------------------------
def _remove(rel: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        (folder / rel).unlink()

    return mutate


def _empty_folder(folder: Path) -> None:
    for p in list(folder.iterdir()):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _replace_by_dir(rel: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        (folder / rel).unlink()
        (folder / rel).mkdir()

    return mutate


def _replace_by_fifo(rel: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        (folder / rel).unlink()
        os.mkfifo(folder / rel)

    return mutate


def _link_out(rel: str) -> Callable[[Path], None]:
    """``rel`` becomes a link to a copy of itself outside the folder (a valid file, outside)."""

    def mutate(folder: Path) -> None:
        outside = folder.parent / ("outside-" + rel.replace("/", "-"))
        shutil.move(folder / rel, outside)
        (folder / rel).symlink_to(outside)

    return mutate


def _link_to(rel: str, target: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        (folder / rel).unlink()
        (folder / rel).symlink_to(target)

    return mutate


def _link_dir_out(rel: str) -> Callable[[Path], None]:
    """A whole sub-folder moved out and linked back in."""

    def mutate(folder: Path) -> None:
        outside = folder.parent / f"outside-{rel}"
        shutil.move(folder / rel, outside)
        (folder / rel).symlink_to(outside, target_is_directory=True)

    return mutate


def _loop(rel: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        (folder / rel).unlink()
        (folder / rel).symlink_to(folder / rel)

    return mutate


def _bytes(rel: str, edit: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        path = folder / rel
        path.write_bytes(edit(path.read_bytes()))

    return mutate


def _flip_middle(data: bytes) -> bytes:
    b = bytearray(data)
    mid = len(b) // 2
    b[mid : mid + 16] = bytes(x ^ 0x5A for x in b[mid : mid + 16])
    return bytes(b)


def _junk(data: bytes) -> bytes:
    return np.random.default_rng(len(data)).integers(0, 256, len(data), np.uint8).tobytes()


def _flac_total(total: int | Callable[[int], int]) -> Callable[[bytes], bytes]:
    """Rewrite STREAMINFO's 36-bit total-samples field (bytes 21-25 of the file)."""

    def edit(data: bytes) -> bytes:
        b = bytearray(data)
        old = ((b[21] & 0x0F) << 32) | int.from_bytes(b[22:26], "big")
        new = total(old) if callable(total) else total
        b[21] = (b[21] & 0xF0) | ((new >> 32) & 0x0F)
        b[22:26] = (new & 0xFFFFFFFF).to_bytes(4, "big")
        return bytes(b)

    return edit


def _flac_rate(rate: int) -> Callable[[bytes], bytes]:
    """Rewrite STREAMINFO's 20-bit sample rate."""

    def edit(data: bytes) -> bytes:
        b = bytearray(data)
        b[18], b[19] = (rate >> 12) & 0xFF, (rate >> 4) & 0xFF
        b[20] = ((rate & 0x0F) << 4) | (b[20] & 0x0F)
        return bytes(b)

    return edit


def _then(*edits: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        for e in edits:
            data = e(data)
        return data

    return edit


def _wav_field(offset: int, fmt: str, value: int) -> Callable[[bytes], bytes]:
    """Rewrite a field of the WAV 'fmt ' chunk (offsets from the file start, canonical header)."""

    def edit(data: bytes) -> bytes:
        return data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt) :]

    return edit


def _rewrite(rel: str, audio: np.ndarray, rate: int, **kw: Any) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        path = folder / rel
        path.unlink()
        sf.write(path, audio, rate, **kw)

    return mutate


def _common_file_cases(rel: str) -> list[Case]:
    words = (rel.rsplit("/", 1)[-1],)
    cut = [
        ("10 bytes", lambda d: d[:10]),
        ("header only", lambda d: d[:44]),
        ("cut at 1/3", lambda d: d[: len(d) // 3]),
        ("cut at 2/3", lambda d: d[: 2 * len(d) // 3]),
        ("last byte cut", lambda d: d[:-1]),
        ("junk", _junk),
        ("empty", lambda d: b""),
    ]
    out = [Case(f"{rel} {label}", _bytes(rel, edit), words) for label, edit in cut]
    out += [
        Case(f"{rel} missing", _remove(rel), (*words, "missing")),
        Case(f"{rel} is a folder", _replace_by_dir(rel), (*words, "regular")),
        Case(f"{rel} is a FIFO", _replace_by_fifo(rel), (*words, "regular")),
        Case(f"{rel} links out", _link_out(rel), (*words, "outside")),
        Case(f"{rel} links to /dev/zero", _link_to(rel, "/dev/zero"), (*words, "outside")),
        Case(f"{rel} links to itself", _loop(rel), words),
    ]
    return out


def _flac_cases(rel: str, frames: int, channels: int, *, recording: bool) -> list[Case]:
    """Damaged and lying FLAC files.  A backing track has no rate or length in the manifest
    to disagree with, so only a recording is given a header rate or length that is merely
    different (for a backing, a stream that is consistently at 44.1 kHz or shorter is valid)."""
    words = (rel.rsplit("/", 1)[-1],)
    edits = [
        ("bytes flipped in the middle", _flip_middle),
        ("STREAMINFO total too large", _flac_total(lambda n: n + 5000)),
        ("STREAMINFO total too small", _flac_total(lambda n: n - 5000)),
        ("STREAMINFO total 2**36-1", _flac_total(2**36 - 1)),
        ("STREAMINFO rate 1 Hz", _flac_rate(1)),
        ("STREAMINFO rate 655350", _flac_rate(655350)),
    ]
    tone = _tone(frames, channels, RATE, 3)
    out = []
    if recording:
        edits += [
            ("STREAMINFO total 0, cut", _then(_flac_total(0), lambda d: d[: 2 * len(d) // 3])),
            ("STREAMINFO rate 22050", _flac_rate(22050)),
        ]
        out += [
            Case(f"{rel} at 44100 Hz", _rewrite(rel, tone, 44100, format="FLAC"), words),
            Case(f"{rel} shorter", _rewrite(rel, tone[: frames // 2], RATE, format="FLAC"), words),
        ]
    out += [Case(f"{rel} {label}", _bytes(rel, edit), words) for label, edit in edits]
    three = _tone(frames, 3, RATE, 3)
    out.append(Case(f"{rel} 3 channels", _rewrite(rel, three, RATE, format="FLAC"), words))
    return out


def _wav_cases(rel: str) -> list[Case]:
    words = (rel.rsplit("/", 1)[-1],)
    edits = [
        ("format code 0x9999", _wav_field(20, "<H", 0x9999)),
        ("2 channels in the header", _wav_field(22, "<H", 2)),
        ("rate 22050 in the header", _wav_field(24, "<I", 22050)),
        ("rate 1 in the header", _wav_field(24, "<I", 1)),
        ("rate 2**32-1 in the header", _wav_field(24, "<I", 2**32 - 1)),
        ("0 bits per sample", _wav_field(34, "<H", 0)),
    ]
    out = [Case(f"{rel} {label}", _bytes(rel, edit), words) for label, edit in edits]
    bad = _tone(BEN_FRAMES, 1, BEN_RATE, 1)
    bad[100, 0] = np.nan
    out += [
        Case(f"{rel} NaN sample", _rewrite(rel, bad, BEN_RATE, subtype="FLOAT"), (*words, "NaN")),
        Case(f"{rel} stereo", _rewrite(rel, np.repeat(bad * 0, 2, axis=1), BEN_RATE), words),
        Case(f"{rel} no frames", _rewrite(rel, bad[:0], BEN_RATE), (*words, "no audio")),
    ]
    return out


def _file_cases() -> list[Case]:
    out = []
    for rel in (ANNA, BEN, PIANO):
        out += _common_file_cases(rel)
    out += _flac_cases(ANNA, FRAMES, 1, recording=True)
    out += _flac_cases(PIANO, FRAMES + 999, 2, recording=False)
    out += _wav_cases(BEN)
    out += [
        Case("sub/ links out", _link_dir_out("sub"), ("ben.wav", "outside")),
        Case("backing/ links out", _link_dir_out("backing"), ("piano.flac", "outside")),
        Case(
            "backing at 4000 Hz",
            _rewrite(PIANO, _tone(999, 1, 4000, 2), 4000, format="FLAC"),
            ("piano.flac", "Hz"),
        ),
    ]
    return out


# -- outputs that cannot be written ------------------------------------------------------------
def _occupy(rel: str, *, link: bool) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        if link:
            (folder.parent / "elsewhere").mkdir()
            (folder / rel).symlink_to(folder.parent / "elsewhere")
        else:
            (folder / rel).write_bytes(b"x")

    return mutate


def _output_cases() -> list[Case]:
    return [
        Case("mix-stems is a file", _occupy("mix-stems", link=False), ("mix-stems",)),
        Case("mix-stems links out", _occupy("mix-stems", link=True), ("mix-stems",)),
        Case("mix.flac is a folder", _replace_mix_by_dir, ("mix.flac", "folder")),
    ]


def _replace_mix_by_dir(folder: Path) -> None:
    (folder / "mix.flac").mkdir()


def kinds() -> dict[str, list[Case]]:
    """The corpus by kind of failure (its fields, the manifest, the files, the outputs)."""
    return {
        "int fields": _int_cases(),
        "text fields": _text_cases(),
        "other fields": _other_field_cases(),
        "manifest": _manifest_cases(),
        "files": _file_cases(),
        "outputs": _output_cases(),
    }


def cases() -> list[Case]:
    """Every bad take folder of the corpus (names are unique)."""
    out = [c for group in kinds().values() for c in group]
    names = [c.name for c in out]
    assert len(set(names)) == len(names), "case names must be unique"
    return out
