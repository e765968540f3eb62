"""`tutti devices` and device choice on the JACK dummy server; clear errors."""

from __future__ import annotations

import json

import pytest

from tests.support.jack import JackServer
from tutti import cli
from tutti.client.devices import (
    DeviceError,
    check_duplex,
    list_devices,
    resolve_device,
    set_jack_client_name,
)
from tutti.client.engine import DuplexEngine

pytestmark = pytest.mark.jack
JACK = "JACK Audio Connection Kit"


def test_devices_json_lists_the_jack_system_device(
    jack: JackServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["devices", "--json"]) == 0
    devs = json.loads(capsys.readouterr().out)
    (system,) = [d for d in devs if d["hostapi"] == JACK and d["name"] == "system"]
    assert system["max_input_channels"] == jack.ports
    assert system["max_output_channels"] == jack.ports
    assert system["default_samplerate"] == 48000.0
    assert system["key"] == f"{JACK}:system"
    assert system["default_input"] and system["default_output"]


def test_devices_table(jack: JackServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "system" in out and "JACK Audio" in out and "48000" in out
    assert "reported, not measured" in out


def test_resolve_by_number_name_and_default(jack: JackServer) -> None:
    system = next(d for d in list_devices() if d.name == "system" and d.hostapi == JACK)
    for spec in (system.index, str(system.index), "system", "SYST", None, (None, "system")):
        inp, out = resolve_device(spec)
        assert inp.index == out.index == system.index, spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such-card", "no input device matches 'no-such-card'; input devices are"),
        (42, "there is no device number 42"),
        (("system", "x", "y"), "a device pair must be (input, output)"),
        (3.5, "device must be a number or a name"),
    ],
)
def test_bad_device_names_say_what_exists(jack: JackServer, spec: object, message: str) -> None:
    with pytest.raises(DeviceError) as err:
        resolve_device(spec)  # type: ignore[arg-type,unused-ignore]
    assert message in str(err.value)
    if "input devices are" in message:
        assert "'system' [JACK Audio Connection Kit]" in str(err.value)


def test_unsupported_rate_and_channels(jack: JackServer) -> None:
    inp, out = resolve_device("system")
    with pytest.raises(DeviceError, match=r"does not support 44100 Hz \(its default rate is 48000"):
        check_duplex(inp, out, rate=44100, in_channels=1, out_channels=2)
    with pytest.raises(DeviceError, match="has 16 output channel"):
        check_duplex(inp, out, rate=48000, in_channels=1, out_channels=17)
    with pytest.raises(DeviceError, match="whole number of Hz"):
        check_duplex(inp, out, rate=0, in_channels=1, out_channels=2)
    with pytest.raises(DeviceError, match="does not support 96000 Hz"):
        DuplexEngine(rate=96000, device="system")


def test_jack_client_name_is_checked() -> None:
    with pytest.raises(DeviceError, match="without ':'"):
        set_jack_client_name("a:b")
