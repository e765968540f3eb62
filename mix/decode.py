"""Pass 1 of ``tutti mix``: every recording and backing track decoded once, in blocks, at the
take's rate (soxr, streaming), measured on the way, into a raw scratch file."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import soundfile as sf

from tutti.audio.resample import StreamResampler
from tutti.audio.types import AudioArray, AudioError, as_audio
from tutti.mix.folder import AudioFile, DamagedAudio, MixError
from tutti.mix.read import read_blocks
from tutti.mix.scratch import RawAudio, stores_int16

if TYPE_CHECKING:  # imported in a thread when the mix starts: see tutti.mix.passes
    from tutti.audio.analysis import VoiceAnalyser

__all__ = ["Stopped", "decode", "analyse", "READ_BLOCK", "DECODE_BLOCK"]

READ_BLOCK = 1 << 16  # frames per read of a scratch file
DECODE_BLOCK = 1 << 18  # frames per read of a recording (1 MB per channel)


class Stopped(Exception):
    """Another part of the mix failed (or a signal came): this one stops at its next block."""


#: What decoding a damaged file raises (the FLAC and MP3 decoders' errors are RuntimeErrors).
_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError)


def decode(
    audio: AudioFile,
    rate: int,
    scratch: Path,
    analyser: VoiceAnalyser | None,
    what: str,
    stop: threading.Event | None = None,
) -> RawAudio:
    """Decode an audio file once, in blocks, at the mix rate (resampled if the file's rate
    differs) into a new raw file ``scratch``, feeding ``analyser``.  A 16-bit file at the mix
    rate is kept as 16-bit integers (exact, half the bytes); anything else as float32.
    Raises :class:`Stopped` at the next block once ``stop`` is set."""
    raw: RawAudio | None = None
    path, info = audio.path, audio.info
    try:
        resample = (
            StreamResampler(info.samplerate, rate, info.channels)
            if info.samplerate != rate
            else None
        )
        int16 = resample is None and stores_int16(info.subtype)
        raw = RawAudio(scratch, info.channels, int16=int16)

        def keep(block: AudioArray) -> None:
            try:
                if analyser is not None:
                    analyser.feed(block)
                else:
                    as_audio(block, name=what)  # finite samples only
            except AudioError as exc:  # as_audio names the recording, the analyser does not
                said = str(exc) if analyser is None else f"{what}: {exc}"
                raise DamagedAudio(said, str(path)) from None
            assert raw is not None
            raw.append(block)

        expected = audio.frames
        decoded = 0
        for block in read_blocks(path, info, DECODE_BLOCK, int16=int16):
            if stop is not None and stop.is_set():
                raise Stopped
            decoded += block.shape[0]
            if decoded > expected:
                raise DamagedAudio(
                    f"{what}: {path.name} holds more than the {expected} frames its header "
                    "says (a damaged header)",
                    str(path),
                )
            if int16:
                if analyser is not None:
                    analyser.feed(block)
                raw.append(block)
            else:
                keep(resample(block) if resample else block)
        if decoded != expected:
            raise DamagedAudio(
                f"{what}: {path.name} gave {decoded} of the {expected} frames its header "
                "promises (cut off or damaged)",
                str(path),
            )
        if resample:
            keep(resample.flush())
        return raw
    except BaseException as exc:
        if raw is not None:
            raw.close()
        if isinstance(exc, _DECODE_ERRORS):
            raise DamagedAudio(f"{what}: decoding {path.name} failed ({exc})", str(path)) from None
        if isinstance(exc, OSError):
            raise MixError(f"{what}: reading {path.name} failed ({exc})") from None
        raise


def analyse(
    raw: RawAudio, rate: int, what: str, stop: threading.Event | None = None
) -> VoiceAnalyser:
    """Measure a recording from its scratch file, in the blocks :func:`_decode` reads (for a
    recording decoded before the analysis code was loaded: same values as fed while decoding)."""
    from tutti.audio.analysis import VoiceAnalyser

    analyser = VoiceAnalyser(rate, raw.channels)
    for a in range(0, raw.frames, DECODE_BLOCK):
        if stop is not None and stop.is_set():
            raise Stopped
        try:
            analyser.feed(raw.read(a, min(raw.frames, a + DECODE_BLOCK)))
        except AudioError as exc:
            raise MixError(f"{what}: {exc}") from None
    return analyser
