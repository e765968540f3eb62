"""Reading an audio file block by block for ``tutti mix`` (pass 1 decodes every recording once).

FLAC files (what ``tutti join`` records) are decoded with miniaudio's dr_flac, MP3 (only ever
a leader's backing, which the server converts) with FFmpeg's decoder through PyAV: read in
blocks, libsndfile's loses its place in an MP3 at every block, and FFmpeg takes off the
encoder's delay and padding as the file's LAME tag gives them.  Everything else (WAV, OGG, …)
is read with libsndfile through soundfile.  Both give the same samples — FLAC is
lossless, and 24-bit samples fit float32 exactly (``tests/audio/test_mixread.py`` compares
them) — but dr_flac is the faster (libsndfile copies every sample through its own buffer
once more; the figures are in docs/benchmarks-mix.md).

A damaged FLAC frame fails its CRC and dr_flac skips it, and a cut-off file simply ends: either
way the file yields fewer frames than its header promises, which the caller checks.  A FLAC
written by a streaming encoder may leave its length out of the header (STREAMINFO total 0,
which libsndfile reports as 2**63 - 1 frames): :func:`count_flac_frames` decodes it to count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import miniaudio
import numpy as np
import numpy.typing as npt
import soundfile as sf

__all__ = ["UNKNOWN_LENGTH", "count_flac_frames", "read_blocks"]

#: what libsndfile reports as the length of a FLAC whose header does not give one
UNKNOWN_LENGTH = 2**63 - 1
_COUNT_CHUNK = 1 << 16  # frames per decoded chunk while counting


def read_blocks(path: Path, info: Any, block: int, *, int16: bool) -> Iterator[npt.NDArray[Any]]:
    """Yield the file's frames in blocks of at most ``block`` frames, (frames, channels).

    Parameters
    ----------
    path : Path
    info : soundfile info
        ``sf.info(path)`` (format, subtype, channels, samplerate).
    block : int
        Frames per block.
    int16 : bool
        Yield int16 samples (only for a 16-bit file: exact); otherwise float32 in [-1, 1].

    Raises
    ------
    RuntimeError
        The decoder failed (the message says why); ``sf.LibsndfileError`` from soundfile.

    Notes
    -----
    A block may be a view of a buffer that the next block overwrites: use it (or copy it)
    before asking for the next.
    """
    if info.format == "FLAC":
        yield from _flac_blocks(path, info.channels, info.samplerate, block, int16=int16)
        return
    if info.format == "MP3":
        yield from _mp3_blocks(path, info.channels, block)
        return
    with sf.SoundFile(str(path)) as f:
        # large reads into one buffer: soundfile seeks after every read
        buf = np.empty(
            (max(1, min(block, f.frames)), f.channels), np.int16 if int16 else np.float32
        )
        while True:
            got = f.read(out=buf)
            if got.shape[0] == 0:
                return
            yield got


def _flac_blocks(
    path: Path, channels: int, rate: int, block: int, *, int16: bool
) -> Iterator[npt.NDArray[Any]]:
    try:
        if int16:
            stream = miniaudio.flac_stream_file(str(path), frames_to_read=block)
            dtype: type[np.generic] = np.int16
        else:
            stream = miniaudio.stream_file(
                str(path),
                output_format=miniaudio.SampleFormat.FLOAT32,
                nchannels=channels,
                sample_rate=rate,
                frames_to_read=block,
            )
            dtype = np.float32
        with closing(stream):
            for chunk in stream:
                yield np.frombuffer(chunk, dtype=dtype).reshape(-1, channels)
    except miniaudio.MiniaudioError as exc:
        raise RuntimeError(f"the FLAC decoder failed: {exc}") from None


def _mp3_blocks(path: Path, channels: int, block: int) -> Iterator[npt.NDArray[np.float32]]:
    import av

    pending: list[npt.NDArray[np.float32]] = []
    held = 0
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.audio[0]):
                got = frame.to_ndarray()
                got = got.T if frame.format.is_planar else got.reshape(-1, channels)
                samples = np.asarray(got, np.float32)
                if got.dtype.kind == "i":  # a fixed-point decoder's
                    samples /= np.float32(2 ** (8 * got.dtype.itemsize - 1))
                pending.append(samples)
                held += samples.shape[0]
                if held >= block:  # the decoder's 1,152-frame pieces, gathered
                    yield np.ascontiguousarray(np.concatenate(pending), np.float32)
                    pending, held = [], 0
    except av.FFmpegError as exc:
        raise RuntimeError(f"the MP3 decoder failed: {exc}") from None
    if pending:
        yield np.ascontiguousarray(np.concatenate(pending), np.float32)


def count_flac_frames(path: Path, channels: int, limit: int) -> int:
    """Frames in a FLAC file, by decoding it (for a header that gives no length).

    Stops once more than ``limit`` frames have been counted and returns that count (a
    file too long to mix is not decoded to its end).

    Raises
    ------
    RuntimeError
        The decoder failed (the message says why).
    """
    counted = 0
    try:
        with closing(miniaudio.flac_stream_file(str(path), frames_to_read=_COUNT_CHUNK)) as s:
            for chunk in s:
                counted += len(chunk) // channels
                if counted > limit:
                    break
    except miniaudio.MiniaudioError as exc:
        raise RuntimeError(f"the FLAC decoder failed: {exc}") from None
    return counted
