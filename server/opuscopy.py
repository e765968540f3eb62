"""The browser copy of a server mix: Opus in Ogg, encoded while the master is written, in
segments on the two cores, so it is ready about when the FLAC is.

The master is already on its loudness target (−16 LUFS, ≤ −1 dBTP); the copy is one pass of
libopus (through PyAV) at :data:`OPUS_BITRATE`, 48 kHz (resampled from another session rate),
without the measure-and-correct rounds of ``tutti mix --format opus``
(:mod:`tutti.mix.lossy`): a browser preview needs no tenth of an LU, and those rounds cost
several encodings of the whole take.

libopus runs one frame after the other, and on a 5-minute take it is the longest part of the
mix (about 2 s of one core, docs/benchmarks-mix.md).  A 48 kHz master is therefore cut into
up to :data:`SEGMENTS` segments of at least :data:`SEGMENT_MIN_S`, each encoded by its own
encoder (PyAV lets go of the GIL while libopus works), which starts :data:`WARM_UP_S` before
its segment.  The file holds each encoder's packets of its own segment, on one Ogg stream; an
encoder has heard the same second of music before its first kept packet, so its state there
(band energies, pitch pre-filter, bit reservoir) is close to the one before it, and the
decoded copy runs on without a seam (tests/server/test_mix_ready.py measures it).  Segments
later in the master start later (the master is written in order), so more and shorter ones
leave less of the copy to encode after the master's last block.
"""

from __future__ import annotations

import fractions
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tutti.audio.types import AudioArray

__all__ = ["OPUS_BITRATE", "OPUS_COMPLEXITY", "SEGMENTS", "SEGMENT_MIN_S", "WARM_UP_S", "OpusCopy"]

#: The browser copy's bit rate, bits per second (a choir in stereo sounds clean from ~96k).
OPUS_BITRATE = 128_000
#: libopus complexity (0–10): at 128 kbit/s, 0 decodes as close to the master as 5 and
#: costs half a core-second less per 5 minutes, on the path to "the mix is ready"
#: (docs/benchmarks-mix.md).
OPUS_COMPLEXITY = 0
#: Most encoders at once (a few per core: the ones that start late finish soon after the master).
SEGMENTS = 4
#: The shortest segment, seconds (a master shorter than two is encoded in one).
SEGMENT_MIN_S = 10.0
#: What an encoder hears before its first kept packet, seconds.
WARM_UP_S = 1.0
_RATE = 48000  # Opus runs at 48 kHz (tutti.mix.lossy.OPUS_RATE)
_FRAME = 960  # samples per Opus packet (20 ms, libopus's default as FFmpeg opens it)
_DELAY = 312  # libopus's look-ahead: packet k starts at k·960 − 312
#: Blocks waiting per encoder: the master runs ahead of the first seg's encoder so that the
#: second one gets its blocks early (a 5-minute take is ~220 blocks of 65,536 frames).
_WAITING = 256
_DONE = None


def _options() -> dict[str, str]:
    return {"compression_level": str(OPUS_COMPLEXITY)}


@dataclass
class _Segment:
    """One encoder over master frames [lo, hi) (blocks fed in order), keeping the packets
    that start in [keep_lo, keep_hi) on the master's timeline."""

    lo: int
    hi: int
    keep_lo: int
    keep_hi: int
    blocks: queue.Queue[AudioArray | None] = field(
        default_factory=lambda: queue.Queue(maxsize=_WAITING)
    )
    packets: list[Any] = field(default_factory=list)
    layout: str = "stereo"


class OpusCopy:
    """Encode blocks fed from the mix (float32, (n, channels), at ``rate``) into ``path``.

    Use as a context manager around the mix, which calls :meth:`begin` with the master's
    length and then :meth:`feed` with every block: the file appears (renamed into place) only
    when the mix ended without an error and every block is encoded; otherwise nothing is left.
    """

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._segments: list[_Segment] = []
        self._threads: list[threading.Thread] = []
        self._at = 0  # master frames fed so far
        self._error: BaseException | None = None

    def __enter__(self) -> OpusCopy:
        return self

    def begin(self, frames: int) -> None:
        """The master is ``frames`` long: start the encoders (several when it is long)."""
        n = (
            1
            if self.rate != _RATE
            else max(1, min(SEGMENTS, int(frames // (SEGMENT_MIN_S * _RATE))))
        )
        joins = [frames * k // n // _FRAME * _FRAME for k in range(1, n)]
        warm = int(WARM_UP_S * _RATE) // _FRAME * _FRAME
        starts, ends = [0, *joins], [*joins, frames]
        self._segments = [
            _Segment(
                max(0, lo - warm) if k else 0,
                hi,
                lo - _DELAY,
                hi - _DELAY if k < n - 1 else frames,
            )
            for k, (lo, hi) in enumerate(zip(starts, ends, strict=True))
        ]
        for k, seg in enumerate(self._segments):
            t = threading.Thread(target=self._run, args=(seg,), name=f"opus-{k}", daemon=True)
            self._threads.append(t)
            t.start()

    def feed(self, block: AudioArray) -> None:
        """Hand one master block on (copied: the mix reuses its buffers)."""
        if self._error is not None:
            raise RuntimeError(f"the Opus copy failed: {self._error}") from self._error
        a, b = self._at, self._at + block.shape[0]
        self._at = b
        for seg in self._segments:
            lo, hi = max(a, seg.lo), min(b, seg.hi)
            if lo < hi:
                seg.blocks.put(np.array(block[lo - a : hi - a], dtype=np.float32, copy=True))

    def __exit__(self, typ: type[BaseException] | None, *_exc: object) -> None:
        for seg in self._segments:
            seg.blocks.put(_DONE)
        for t in self._threads:
            t.join()
        try:
            if typ is None and self._error is None and self._segments:
                self._write()
                os.replace(self._tmp, self.path)
                return
        except BaseException as exc:
            self._error = exc
        self._tmp.unlink(missing_ok=True)
        if typ is None and self._error is not None:
            raise RuntimeError(f"the Opus copy failed: {self._error}") from self._error

    def _run(self, seg: _Segment) -> None:
        try:
            self._encode(seg)
        except BaseException as exc:  # handed to the mix's thread by feed() and __exit__
            self._error = exc
            while seg.blocks.get() is not _DONE:  # let the mix finish feeding
                pass

    def _encode(self, seg: _Segment) -> None:
        import av

        from tutti.audio.resample import StreamResampler

        first = seg.blocks.get()
        if first is None:
            return
        channels = first.shape[1]
        layout = seg.layout = "stereo" if channels == 2 else "mono"
        resample = None
        if self.rate != _RATE:
            resample = StreamResampler(self.rate, _RATE, channels)
        cc: Any = av.CodecContext.create("libopus", "w")
        cc.sample_rate, cc.layout, cc.format = _RATE, layout, "flt"
        cc.bit_rate, cc.options = OPUS_BITRATE, _options()
        cc.time_base = fractions.Fraction(1, _RATE)
        pts = 0
        block: AudioArray | None = first
        while block is not None:
            after = seg.blocks.get()
            if resample is not None:
                block = resample(block, last=after is None)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(block.T), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = _RATE, pts
            pts += block.shape[0]
            self._keep(seg, cc.encode(frame))
            block = after
        self._keep(seg, cc.encode(None))

    @staticmethod
    def _keep(seg: _Segment, packets: list[Any]) -> None:
        for packet in packets:
            at = packet.pts + seg.lo  # where it starts on the master's timeline
            if seg.keep_lo <= at < seg.keep_hi:
                packet.pts = packet.dts = at
                seg.packets.append(packet)

    def _write(self) -> None:
        """Mux the kept packets, in order, into one Ogg Opus stream."""
        import av

        with av.open(str(self._tmp), "w", format="ogg") as out:
            # opened by the first mux with the segments' settings: the same Opus header
            stream: Any = out.add_stream("libopus", rate=_RATE, layout=self._segments[0].layout)
            stream.bit_rate = OPUS_BITRATE
            stream.codec_context.options = _options()
            for seg in self._segments:
                for packet in seg.packets:
                    packet.stream = stream
                    out.mux(packet)
