"""The take format's parser: every field typed and in range, the error naming the field.

The server parses a singer's tus ``recording`` metadata with :func:`parse_recording`, so each
value refused here is a 400 there instead of a 500 (issue #10)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tutti.takeformat import (
    TakeFormatError,
    check_relpath,
    parse_manifest,
    parse_recording,
)


def recording(**changes: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "file": "a.flac",
        "singer": "Anna",
        "part": "S",
        "rate": 48000,
        "channels": 1,
        "frames": 480000,
        "start_offset": 1536,
        "latency": 512,
    }
    rec.update(changes)
    return {k: v for k, v in rec.items() if v is not ...}


def manifest(**changes: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "format": "tutti-take",
        "version": 1,
        "rate": 48000,
        "recordings": [recording()],
        "backing": [{"part": "all", "file": "b.flac", "timeline_start": 100}],
    }
    m.update(changes)
    return m


def refused(d: Any, *words: str) -> str:
    with pytest.raises(TakeFormatError) as info:
        parse_recording(d, "upload metadata 'recording'")
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    assert "\n" not in msg and len(msg) < 300
    return msg


def test_a_valid_recording_round_trips() -> None:
    rec = parse_recording(recording(overflows=2, device={"name": "USB", "api": ["ALSA"]}))
    assert parse_recording(rec.to_dict()) == rec
    assert rec.overflows == 2 and rec.timeline_start == 1024


def test_optional_fields_may_be_null_or_missing() -> None:
    nulls = {"overflows": None, "underflows": None, "participant_id": None, "sha256": None,
             "device": None}  # fmt: skip
    rec = parse_recording(recording(**nulls))
    assert (rec.overflows, rec.underflows, rec.participant_id, rec.sha256) == (0, 0, "", "")
    assert rec.device == {}


@pytest.mark.parametrize("value", ["abc", [1], math.inf, {}, True, 1.5, -1, 10**9 + 1, 10**30])
@pytest.mark.parametrize("key", ["overflows", "underflows"])
def test_drop_counts_are_small_non_negative_integers(key: str, value: Any) -> None:
    refused(recording(**{key: value}), key, "0 to 1000000000")


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("latency", 10**30, "0 to 480000"),
        ("latency", -1, "0 to 480000"),
        ("start_offset", 10**30, "-345600000 to 345600000"),
        ("start_offset", -(2**62), "-345600000 to 345600000"),
        ("frames", 24 * 3600 * 48000 + 1, "0 to 4147200000"),
        ("rate", 10**9, "8000 to 192000"),
        ("rate", 2**63, "8000 to 192000"),
        ("channels", 0, "1 to 8"),
        ("rate", "48000", "8000 to 192000"),
        ("latency", False, "0 to 480000"),
    ],
)
def test_numbers_are_typed_and_bounded(key: str, value: Any, accepted: str) -> None:
    refused(recording(**{key: value}), f"'{key}'", accepted)


def test_bounds_follow_the_recordings_rate() -> None:
    # two hours of offset at 8 kHz are 57.6 M frames; at 48 kHz 345.6 M
    refused(recording(rate=8000, start_offset=57_600_001), "'start_offset'", "57600000")
    assert parse_recording(recording(start_offset=57_600_001)).start_offset == 57_600_001


def test_a_huge_integer_is_not_printed() -> None:
    msg = refused(recording(frames=10**4000), "'frames'", "about 4000 digits")
    assert "0000000000" not in msg


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", "a\nb", "\x1b[2J", "x" * 201, 7, None])
@pytest.mark.parametrize("key", ["singer", "part"])
def test_names_are_printable_text(key: str, value: Any) -> None:
    refused(recording(**{key: value}), key)


@pytest.mark.parametrize("path", ["\ud800.flac", "a\nb.flac", "a\x00b.flac", "x" * 256, ""])
def test_file_names_are_printable_and_short(path: str) -> None:
    with pytest.raises(TakeFormatError, match="recording.file"):
        check_relpath(path, "recording.file")


def test_names_with_accents_and_spaces_are_fine() -> None:
    rec = parse_recording(recording(singer="Zoë Ångström", part="Alto 2", file="zoë/take 1.flac"))
    assert rec.singer == "Zoë Ångström" and rec.file == "zoë/take 1.flac"


def test_free_form_objects_are_bounded() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(9):
        node["a"] = {}
        node = node["a"]
    refused(recording(device=deep), "'device'", "8 levels")
    refused(recording(device={"name": ["\udc80"]}), "'device'", "surrogate")
    refused(recording(device=[1]), "'device'", "object")


def test_sha256_is_hex() -> None:
    refused(recording(sha256="z" * 64), "'sha256'", "64 hex digits")
    assert parse_recording(recording(sha256="AB" * 32)).sha256 == "AB" * 32


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"rate": 10**30}, ("'rate'", "8000 to 192000")),
        ({"version": True}, ("version",)),
        ({"title": "\ud800"}, ("'title'", "surrogate")),
        ({"take_id": 12}, ("'take_id'", "string")),
        ({"settings": [1]}, ("'settings'", "object")),
        ({"backing": [{"part": "all", "file": "b.flac", "timeline_start": "0"}]},
         ("backing[0]", "'timeline_start'")),
        ({"backing": [{"part": "all", "file": "b.flac", "timeline_start": 10**12}]},
         ("backing[0]", "'timeline_start'", "345600000")),
        ({"recordings": [recording()] * 2}, ("same file",)),
        ({"recordings": [recording(file=f"r{i}.flac") for i in range(1001)]}, ("1001",)),
    ],
)  # fmt: skip
def test_manifest_fields_are_checked(changes: dict[str, Any], words: tuple[str, ...]) -> None:
    with pytest.raises(TakeFormatError) as info:
        parse_manifest(manifest(**changes))
    for w in words:
        assert w in str(info.value), str(info.value)


def test_a_valid_manifest_parses() -> None:
    m = parse_manifest(manifest(title="Ave verum", settings={"bpm": 72}))
    assert m.rate == 48000 and m.backing[0].timeline_start == 100
    assert parse_manifest(m.to_dict()) == m
