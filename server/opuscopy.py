"""The browser copy of a server mix: Opus in Ogg, encoded in a thread while the master is
written, so it is ready when the FLAC is.

The master is already on its loudness target (−16 LUFS, ≤ −1 dBTP); the copy is one pass of
libopus (through PyAV) at :data:`OPUS_BITRATE`, 48 kHz (resampled from another session rate),
without the measure-and-correct rounds of ``tutti mix --format opus``
(:mod:`tutti.mix.lossy`): a browser preview needs no tenth of an LU, and those rounds cost
several encodings of the whole take.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tutti.audio.types import AudioArray

__all__ = ["OPUS_BITRATE", "OPUS_COMPLEXITY", "OpusCopy"]

#: The browser copy's bit rate, bits per second (a choir in stereo sounds clean from ~96k).
OPUS_BITRATE = 128_000
#: libopus complexity (0–10): 5 encodes about twice as fast as 10 (docs/benchmarks-mix.md).
OPUS_COMPLEXITY = 5
_DONE = None


class OpusCopy:
    """Encode blocks fed from the mix (float32, (n, channels), at ``rate``) into ``path``.

    Use as a context manager around the mix: the file appears (renamed into place) only when
    the mix ended without an error and every block is encoded; otherwise nothing is left.
    """

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._blocks: queue.Queue[AudioArray | None] = queue.Queue(maxsize=64)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="opus-copy", daemon=True)

    def __enter__(self) -> OpusCopy:
        self._thread.start()
        return self

    def feed(self, block: AudioArray) -> None:
        """Hand one master block on (copied: the mix reuses its buffers)."""
        if self._error is not None:
            raise RuntimeError(f"the Opus copy failed: {self._error}") from self._error
        self._blocks.put(np.array(block, dtype=np.float32, copy=True))

    def __exit__(self, typ: type[BaseException] | None, *_exc: object) -> None:
        self._blocks.put(_DONE)
        self._thread.join()
        if typ is None and self._error is None:
            os.replace(self._tmp, self.path)
            return
        self._tmp.unlink(missing_ok=True)
        if typ is None and self._error is not None:
            raise RuntimeError(f"the Opus copy failed: {self._error}") from self._error

    def _run(self) -> None:
        try:
            self._encode()
        except BaseException as exc:  # handed to the mix's thread by feed() and __exit__
            self._error = exc
            while self._blocks.get() is not _DONE:  # let the mix finish feeding
                pass

    def _encode(self) -> None:
        import av

        from tutti.audio.resample import StreamResampler
        from tutti.mix.lossy import OPUS_RATE

        first = self._blocks.get()
        if first is None:
            return
        channels = first.shape[1]
        layout = "stereo" if channels == 2 else "mono"
        resample = None
        if self.rate != OPUS_RATE:
            resample = StreamResampler(self.rate, OPUS_RATE, channels)
        with av.open(str(self._tmp), "w", format="ogg") as out:
            stream: Any = out.add_stream("libopus", rate=OPUS_RATE, layout=layout)
            stream.bit_rate = OPUS_BITRATE
            stream.codec_context.options = {"compression_level": str(OPUS_COMPLEXITY)}
            pts = 0
            block: AudioArray | None = first
            while block is not None:
                after = self._blocks.get()
                if resample is not None:
                    block = resample(block, last=after is None)
                planar = np.ascontiguousarray(block.T)
                frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
                frame.sample_rate, frame.pts = OPUS_RATE, pts
                pts += block.shape[0]
                for packet in stream.encode(frame):
                    out.mux(packet)
                block = after
            for packet in stream.encode(None):
                out.mux(packet)
