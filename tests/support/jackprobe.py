"""An exact-frame JACK injector for timeline tests, and the rig that wires singers to it.

Each singer's headset output is wired straight back to its own microphone (a digital
loopback), so no other client sits in a singer's path and a singer whose process stops holds
up nobody else.  :class:`Injector`, made with the ``jack`` package (JACK-Client), has only
outputs, one per singer, wired into the singers' microphones: it adds a test's bursts to every
microphone at one JACK frame (``last_frame_time``, exact to the sample).  Nothing feeds it, so
nothing can hold it up.  (A client that listens to the singers cannot be the judge: JACK runs
it before or after a singer as the graph is re-sorted, so what it hears moves by a period.)
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Injector", "Probes"]


def _client(prefix: str) -> Any:
    import jack  # JACK-Client; libjack finds the test's server through JACK_DEFAULT_SERVER

    return jack.Client(f"{prefix}-{uuid.uuid4().hex[:6]}", no_start_server=True)


class Injector:
    """Outputs ``out_0 … out_{n-1}``; :meth:`inject` plays a burst on all at one JACK frame."""

    def __init__(self, n: int) -> None:
        self.client = _client("inject")
        self.ports = [self.client.outports.register(f"out_{k}") for k in range(n)]
        self._events: list[tuple[int, npt.NDArray[np.float32]]] = []
        self.now = 0  # JACK frame of the last cycle seen
        self.client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        f = self.client.last_frame_time
        self.now = f
        bufs = [p.get_array() for p in self.ports]
        for b in bufs:
            b.fill(0.0)
        for at, burst in self._events:
            lo, hi = max(at, f), min(at + burst.shape[0], f + frames)
            if lo < hi:
                for b in bufs:
                    b[lo - f : hi - f] += burst[lo - at : hi - at]

    def start(self) -> Injector:
        self.client.activate()
        return self

    def inject(self, burst: npt.NDArray[np.float32], ahead: int) -> int:
        """Schedule ``burst`` (mono) ``ahead`` frames after the current cycle; its JACK frame."""
        at = int(self.client.frame_time) + ahead
        self._events.append((at, burst.astype(np.float32)))
        return at

    def stop(self) -> None:
        self.client.deactivate()
        self.client.close()


class Probes:
    """The timeline tests' rig (tests/e2e/choir.py's ``Rig``): singers on digital loopback,
    fed by one :class:`Injector`."""

    def __init__(self, n: int) -> None:
        self.injector = Injector(n)

    def start(self) -> Probes:
        self.injector.start()
        return self

    def wire(self, k: int, client: str) -> None:
        """A singer's PortAudio client: its output to its own input, and the injector's
        ``out_k`` into its input too."""
        from tests.support.jack import jack_connect

        jack_connect(f"{client}:out_0", f"{client}:in_0")
        jack_connect(self.injector.ports[k].name, f"{client}:in_0")

    def calibrating(self, k: int, on: bool) -> None:
        """Nothing to switch: the loopback is what calibration measures."""

    def stop(self) -> None:
        self.injector.stop()
