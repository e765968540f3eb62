"""Check that a file is audio the server can use, with soundfile, before anything trusts it.

Readable by libsndfile, a known container (WAV, FLAC, OGG; MP3 for a backing, which the
server converts), at least one channel, a positive rate and length, and every frame the
header claims decodable (a truncated file, a header that lies about its size or damage in
the middle is caught: WAV chunk sizes are checked against the file, and every other file is
decoded block by block, never held in memory; linear PCM and float WAV need no decode, since
any bytes are samples).  An MP3 is decoded as the server converts it, by FFmpeg
(:func:`tutti.mix.read.read_blocks`): libsndfile loses its place in one read in blocks.
A recording is checked without the decode (``decode=False``): its pass 1, which the server
starts as it arrives, decodes it anyway and refuses it when it breaks
(:class:`tutti.mix.folder.DamagedAudio`).
WAV in all standard forms is accepted: PCM 16/24/32-bit, float, and WAVE_FORMAT_EXTENSIBLE.
Every refusal is an :class:`AudioCheckError` whose message says what was wrong and what is
accepted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from tutti.mix.read import read_blocks

from .models import TRACK_FORMATS

__all__ = ["AudioCheckError", "AudioInfo", "check_audio"]

#: Frames decoded per block: the whole file is decoded, never held in memory at once.
_BLOCK_FRAMES = 65536
#: WAV encodings in which every byte pattern is a sample: once the chunk sizes fit the file,
#: decoding finds nothing more, and it was a third of the server's CPU per uploaded WAV.
_LINEAR_WAV = frozenset({"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})
#: How far an MP3's decoded length may fall short of its header's: without an encoder's tag
#: the header has only an estimate (from the size and bit rate); more is a cut-off file.
_MP3_ESTIMATE = 0.01
#: libsndfile containers that are one of ours under another name: WAVE_FORMAT_EXTENSIBLE
#: (24- and 32-bit WAVs from sox, DAWs and Audacity) is WAV.
_CONTAINER_ALIASES = {"WAVEX": "WAV"}


class AudioCheckError(ValueError):
    """The file is not acceptable audio; ``str()`` says why and what is accepted."""


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`check_audio` found: container, encoding, rate (Hz), channels, frames."""

    format: str
    subtype: str
    rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.rate


def _check_wav_sizes(path: Path) -> None:
    """Walk a RIFF/WAVE file's chunks; refuse a ``data`` chunk larger than the file holds.

    libsndfile quietly clamps such files to what is present, so a truncated upload or a
    header claiming gigabytes would otherwise pass as a shorter file.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # RF64/W64 and friends: libsndfile's own checks apply
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            cid, clen = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
            if cid == b"data":
                have = size - pos - 8
                if clen > have:
                    raise AudioCheckError(
                        f"the WAV header declares {clen} bytes of audio but the file holds "
                        f"{have}; it is truncated or its header is corrupt"
                    )
                return
            pos += 8 + clen + (clen & 1)
        raise AudioCheckError(
            "the WAV file has no complete 'data' chunk; it is truncated or corrupt"
        )


def _decode_all(f: sf.SoundFile, path: Path, frames: int) -> None:
    """Decode every frame of ``f`` (at ``path``) in blocks; refuse a file whose data ends
    early or breaks.

    Damage in the middle of a FLAC or OGG stream (lost sync, a bad frame CRC) is only found
    by decoding it; checking the two ends lets such a file through.  A FLAC is decoded as the
    mix decodes it (:func:`~tutti.mix.read.read_blocks`: dr_flac skips a frame that fails its
    CRC, so the count falls short), with a fifth less CPU than libsndfile's.
    """
    got = 0
    if f.format == "FLAC":
        blocks = read_blocks(path, f, _BLOCK_FRAMES, int16=True)
    else:
        blocks = f.blocks(blocksize=_BLOCK_FRAMES, dtype="int16", always_2d=True)
    try:
        for block in blocks:
            got += len(block)
            if got > frames:
                break
    except (sf.LibsndfileError, RuntimeError, ValueError, MemoryError) as exc:
        raise AudioCheckError(
            f"the audio data cannot be decoded after frame {got} ({exc}); the file is "
            "truncated or corrupt"
        ) from None
    if got != frames:
        raise AudioCheckError(
            f"the header claims {frames} frames but {got} can be decoded; the file is "
            "truncated or corrupt"
        )


def check_audio(
    path: Path,
    *,
    max_channels: int = 8,
    max_seconds: float = 4 * 3600,
    decode: bool = True,
    mp3: bool = False,
) -> AudioInfo:
    """Open ``path`` with soundfile and check it thoroughly (blocking: run in a thread).

    Parameters
    ----------
    path : Path
        The file.
    max_channels : int
        Largest channel count accepted.
    max_seconds : float
        Longest duration accepted, seconds.
    decode : bool
        Decode every frame of a compressed file (damage in its middle is only found so);
        False checks its header only, for a recording, which its pass 1 decodes.
    mp3 : bool
        Accept MP3 too (a backing's, which the server converts: never a recording's); its
        length is what decodes (:data:`_MP3_ESTIMATE`).

    Raises
    ------
    AudioCheckError
        Unreadable, unknown container, 0 or too many channels, empty, too long, or truncated.
    """
    accepted = f"accepted: WAV, FLAC{', OGG or MP3' if mp3 else ' or OGG'} audio files"
    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        reason = str(exc).replace(f"Error opening {str(path)!r}: ", "").strip()
        raise AudioCheckError(f"not a readable audio file ({reason}); {accepted}") from None
    with f:
        fmt = _CONTAINER_ALIASES.get(f.format, f.format)
        if fmt not in TRACK_FORMATS and not (mp3 and fmt == "MP3"):
            raise AudioCheckError(f"audio container {fmt} is not supported; {accepted}")
        if not 1 <= f.channels <= max_channels:
            raise AudioCheckError(
                f"the file has {f.channels} channels; accepted: 1 to {max_channels}"
            )
        if f.samplerate <= 0:
            raise AudioCheckError(f"the file declares sample rate {f.samplerate}")
        frames = int(f.frames)
        if frames <= 0:
            raise AudioCheckError("the file holds no audio frames; a non-empty file is needed")
        if frames / f.samplerate > max_seconds:
            raise AudioCheckError(
                f"the file claims {frames / f.samplerate:.0f} s of audio; at most "
                f"{max_seconds:.0f} s are accepted"
            )
        if fmt == "WAV":
            _check_wav_sizes(path)
        if fmt == "MP3":
            frames = _mp3_frames(path, frames, int(max_seconds * f.samplerate))
        elif decode and not (fmt == "WAV" and f.subtype in _LINEAR_WAV):
            _decode_all(f, path, frames)
        return AudioInfo(
            format=fmt,
            subtype=f.subtype,
            rate=int(f.samplerate),
            channels=int(f.channels),
            frames=frames,
        )


def _mp3_frames(path: Path, claimed: int, longest: int) -> int:
    """The frames an MP3 decodes to (at most ``longest``); refused when it breaks or falls
    short of the ``claimed`` length by more than an estimate's error."""
    got = 0
    try:
        for block in read_blocks(path, sf.info(str(path)), _BLOCK_FRAMES, int16=False):
            got += len(block)
            if got > longest:
                raise AudioCheckError(
                    f"the file holds more than {longest} frames, the most accepted"
                )
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise AudioCheckError(
            f"the audio data cannot be decoded after frame {got} ({exc}); the file is "
            "truncated or corrupt"
        ) from None
    if got < (1 - _MP3_ESTIMATE) * claimed:
        raise AudioCheckError(
            f"the header claims {claimed} frames but {got} can be decoded; the file is "
            "truncated or corrupt"
        )
    return got
