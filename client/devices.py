"""Audio devices: listing, choosing, checking — and the ``tutti devices`` command.

PortAudio (through sounddevice) numbers devices per process; the numbers change when a sound
card is plugged in or a JACK server starts.  Everything the user keeps (calibration in the
config) is therefore keyed by :func:`device_key` — host API and device name — not by number.

Errors are :class:`DeviceError` with a message that says what was asked for, what is there
and what to do (``tutti devices`` lists the choices).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

import sounddevice as sd

from tutti.errors import ExitCode, TuttiError

__all__ = [
    "DeviceError",
    "DeviceInfo",
    "DeviceSpec",
    "list_devices",
    "resolve_device",
    "check_duplex",
    "device_key",
    "rescan",
    "set_jack_client_name",
    "add_arguments",
    "run",
]

#: What a user may name a device by: its number, part of its name, an (input, output) pair,
#: or None for the system default.
DeviceSpec = int | str | tuple[int | str | None, int | str | None] | None


class DeviceError(TuttiError):
    """No such device, or the device cannot do what was asked (channels, sample rate)."""

    exit_code = ExitCode.DEVICE


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device as the user sees it.

    Attributes
    ----------
    index : int
        PortAudio device number (valid for this process only).
    name, hostapi : str
        Device and host API names ("JACK Audio Connection Kit", "ALSA", ...).
    max_input_channels, max_output_channels : int
        Channel counts.
    default_samplerate : float
        The device's default rate in Hz.
    low_input_latency, low_output_latency, high_input_latency, high_output_latency : float
        Latencies the device *reports*, in seconds (not measured; see ``tutti calibrate``).
    default_input, default_output : bool
        Whether it is the default input/output device.
    """

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    low_input_latency: float
    low_output_latency: float
    high_input_latency: float
    high_output_latency: float
    default_input: bool
    default_output: bool

    @property
    def key(self) -> str:
        """Stable name for the config: ``"<host API>:<device name>"``."""
        return f"{self.hostapi}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = self.key
        return d


def rescan() -> None:
    """Re-initialise PortAudio so that it sees devices that appeared since start-up.

    Only call this while no stream is open (e.g. after starting a JACK server).
    """
    sd._terminate()
    sd._initialize()


def set_jack_client_name(name: str) -> None:
    """Name this process's JACK client (PortAudio's default is "PortAudio"), then rescan.

    JACK shows each process's streams as ports of one client; a known name lets a user (or
    a test harness) find and connect them with ``jack_connect``.  Call this before opening
    streams.  Raises :class:`DeviceError` if this PortAudio build has no JACK support.
    """
    import ctypes

    if not name or len(name) > 60 or ":" in name:
        raise DeviceError(f"JACK client name must be 1–60 characters without ':', not {name!r}")
    try:
        lib = ctypes.CDLL(sd._libname)
        fn = lib.PaJack_SetClientName
    except (OSError, AttributeError) as exc:
        raise DeviceError("this PortAudio library has no JACK support") from exc
    fn.argtypes = [ctypes.c_char_p]
    fn.restype = ctypes.c_int
    # PortAudio keeps the pointer until it initialises: keep the bytes alive for the process.
    _JACK_NAME_KEEPALIVE.append(name.encode())
    if fn(_JACK_NAME_KEEPALIVE[-1]) != 0:
        raise DeviceError(f"PortAudio refused the JACK client name {name!r}")
    rescan()


_JACK_NAME_KEEPALIVE: list[bytes] = []


def _defaults() -> tuple[int, int]:
    din, dout = sd.default.device
    try:
        if din is None or din < 0:
            din = sd.query_devices(kind="input")["index"]
    except (sd.PortAudioError, ValueError):
        din = -1
    try:
        if dout is None or dout < 0:
            dout = sd.query_devices(kind="output")["index"]
    except (sd.PortAudioError, ValueError):
        dout = -1
    return int(din), int(dout)


def list_devices() -> list[DeviceInfo]:
    """All devices PortAudio knows, in PortAudio's order."""
    hostapis = sd.query_hostapis()
    din, dout = _defaults()
    out: list[DeviceInfo] = []
    for d in sd.query_devices():
        out.append(
            DeviceInfo(
                index=int(d["index"]),
                name=str(d["name"]),
                hostapi=str(hostapis[d["hostapi"]]["name"]),
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_samplerate=float(d["default_samplerate"]),
                low_input_latency=float(d["default_low_input_latency"]),
                low_output_latency=float(d["default_low_output_latency"]),
                high_input_latency=float(d["default_high_input_latency"]),
                high_output_latency=float(d["default_high_output_latency"]),
                default_input=int(d["index"]) == din,
                default_output=int(d["index"]) == dout,
            )
        )
    return out


def _describe_choices(devs: list[DeviceInfo], kind: str) -> str:
    usable = [
        d for d in devs if (d.max_input_channels if kind == "input" else d.max_output_channels) > 0
    ]
    if not usable:
        return f"there are no {kind} devices (is a sound card connected / the JACK server running?)"
    names = ", ".join(f"{d.index}: {d.name!r} [{d.hostapi}]" for d in usable)
    return f"{kind} devices are {names} (see `tutti devices`)"


def _resolve_one(spec: int | str | None, kind: str, devs: list[DeviceInfo]) -> DeviceInfo:
    channels = "max_input_channels" if kind == "input" else "max_output_channels"
    if spec is None:
        din, dout = _defaults()
        idx = din if kind == "input" else dout
        for d in devs:
            if d.index == idx and getattr(d, channels) > 0:
                return d
        raise DeviceError(f"no default {kind} device: {_describe_choices(devs, kind)}")
    if isinstance(spec, str) and spec.strip().lstrip("-").isdigit():
        spec = int(spec.strip())
    if isinstance(spec, bool) or not isinstance(spec, int | str):
        raise DeviceError(f"device must be a number or a name, not {spec!r}")
    if isinstance(spec, int):
        for d in devs:
            if d.index == spec:
                if getattr(d, channels) == 0:
                    raise DeviceError(
                        f"device {spec} ({d.name!r}) has no {kind} channels; "
                        + _describe_choices(devs, kind)
                    )
                return d
        raise DeviceError(f"there is no device number {spec}; " + _describe_choices(devs, kind))
    want = spec.lower()
    hits = [d for d in devs if getattr(d, channels) > 0 and want in f"{d.name} {d.hostapi}".lower()]
    exact = [d for d in hits if d.name.lower() == want or d.key.lower() == want]
    if len(exact) == 1:
        return exact[0]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise DeviceError(f"no {kind} device matches {spec!r}; " + _describe_choices(devs, kind))
    raise DeviceError(
        f"{spec!r} matches several {kind} devices: "
        + ", ".join(f"{d.index}: {d.name!r} [{d.hostapi}]" for d in hits)
        + " — give the number or a longer name"
    )


def resolve_device(spec: DeviceSpec) -> tuple[DeviceInfo, DeviceInfo]:
    """The (input, output) devices named by ``spec``.

    Parameters
    ----------
    spec
        None (defaults), a device number, a case-insensitive part of a device name (also
        matched against the host API name), a numeric string, or an (input, output) pair of
        those.

    Raises
    ------
    DeviceError
        Nothing matches, several devices match, or the device lacks input/output channels.
    """
    devs = list_devices()
    if isinstance(spec, tuple | list):
        if len(spec) != 2:
            raise DeviceError(f"a device pair must be (input, output), got {spec!r}")
        return _resolve_one(spec[0], "input", devs), _resolve_one(spec[1], "output", devs)
    return _resolve_one(spec, "input", devs), _resolve_one(spec, "output", devs)


def device_key(inp: DeviceInfo, out: DeviceInfo) -> str:
    """Config key of a duplex device pair (one name when input and output are one device)."""
    return inp.key if inp.key == out.key else f"{inp.key} -> {out.key}"


def check_duplex(
    inp: DeviceInfo, out: DeviceInfo, *, rate: int, in_channels: int, out_channels: int
) -> None:
    """Raise :class:`DeviceError` unless the pair can run a duplex stream as asked.

    Parameters
    ----------
    rate
        Sample rate in Hz.
    in_channels, out_channels
        Channels wanted from the input and to the output device.
    """
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 192000:
        raise DeviceError(f"sample rate must be a whole number of Hz in 8000–192000, not {rate!r}")
    if in_channels > inp.max_input_channels:
        raise DeviceError(
            f"input device {inp.name!r} has {inp.max_input_channels} input channel(s), "
            f"{in_channels} asked for"
        )
    if out_channels > out.max_output_channels:
        raise DeviceError(
            f"output device {out.name!r} has {out.max_output_channels} output channel(s), "
            f"{out_channels} asked for"
        )
    for dev, kind, check in (
        (inp, "input", sd.check_input_settings),
        (out, "output", sd.check_output_settings),
    ):
        ch = in_channels if kind == "input" else out_channels
        try:
            check(device=dev.index, channels=ch, dtype="float32", samplerate=rate)
        except (sd.PortAudioError, ValueError) as exc:
            reason = str(exc)
            if "sample rate" in reason.lower():
                raise DeviceError(
                    f"{kind} device {dev.name!r} [{dev.hostapi}] does not support {rate} Hz "
                    f"(its default rate is {dev.default_samplerate:g} Hz); choose "
                    f"--rate {dev.default_samplerate:g} or another device (`tutti devices`)"
                ) from exc
            raise DeviceError(
                f"{kind} device {dev.name!r} [{dev.hostapi}] cannot run {ch} channel(s) of "
                f"float32 at {rate} Hz: {reason}"
            ) from exc


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tutti devices``."""
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def run(args: argparse.Namespace) -> int:
    """``tutti devices``: print the device table (or JSON); exit 1 if there are none."""
    try:
        devs = list_devices()
    except sd.PortAudioError as exc:
        print(f"tutti devices: cannot query audio devices: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([d.to_dict() for d in devs], indent=2))
        return 0 if devs else 1
    if not devs:
        print(
            "tutti devices: no audio devices found (no sound card, or the JACK server is not "
            "running)",
            file=sys.stderr,
        )
        return 1
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Audio devices (latency as reported, not measured)")
    for col in ("#", "device", "host API", "in", "out", "rate Hz", "in ms", "out ms", "default"):
        table.add_column(col)
    for d in devs:
        default = " ".join(x for x, y in (("in", d.default_input), ("out", d.default_output)) if y)
        table.add_row(
            str(d.index),
            d.name,
            d.hostapi,
            str(d.max_input_channels),
            str(d.max_output_channels),
            f"{d.default_samplerate:g}",
            _ms(d.low_input_latency),
            _ms(d.low_output_latency),
            default,
        )
    Console(width=max(100, Console().width)).print(table)
    return 0
