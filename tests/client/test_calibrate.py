"""`tutti calibrate` on a JACK digital loopback: exact, repeatable, stored; clear failures."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.support.jack import JackServer, isolate_ports, jack_connect, jack_ports
from tutti import cli
from tutti.client import calibrate, config
from tutti.client.engine import DuplexEngine

pytestmark = pytest.mark.jack


class LoopbackWirer:
    """Wires the next stream that appears (its first out port to its first in port)."""

    def __init__(self) -> None:
        self.before = set(jack_ports())
        self.wired: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            new = sorted(set(jack_ports()) - self.before)
            ins = [p for p in new if ":in_" in p]
            outs = [p for p in new if ":out_" in p]
            if ins and len(outs) >= 2:
                isolate_ports(new)
                jack_connect(outs[0], ins[0])
                self.wired = [outs[0], ins[0]]
                return

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)


@pytest.fixture
def cfgdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUTTI_CONFIG_DIR", str(tmp_path / "cfg"))
    return tmp_path / "cfg"


def _entries(cfgdir: Path) -> dict[str, dict[str, object]]:
    data = json.loads((cfgdir / "config.json").read_text())
    return data["calibration"]  # type: ignore[no-any-return]


@pytest.mark.slow
def test_cli_measures_exact_jack_round_trip_and_repeats_identically(
    jack: JackServer, cfgdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = []
    for _ in range(2):  # two separate `tutti calibrate` runs
        wirer = LoopbackWirer()
        try:
            rc = cli.main(["calibrate", "--device", "system", "--blocksize", "256"])
        finally:
            wirer.stop()
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert wirer.wired, "the loopback was never wired"
        assert "512 frames = 10.667 ms at 48000 Hz" in out.out
        ((key, entry),) = _entries(cfgdir).items()
        results.append(entry)
    for entry in results:
        assert entry["frames"] == 512
        assert entry["latency_source"] == "measured"
        assert entry["rate"] == 48000 and entry["blocksize"] == 256
        runs = entry["runs"]
        assert isinstance(runs, list) and len(runs) >= 3
        assert all(abs(r - 512) < 0.05 for r in runs[-3:]), runs
        if len(runs) > 3:  # more runs are only made when one was disturbed by an xrun
            assert isinstance(entry["xruns"], int) and entry["xruns"] > 0, entry
    assert key == "JACK Audio Connection Kit:system|48000|256"
    runs = [r["runs"] for r in results]
    print(f"\nJACK loopback round trip, blocksize 256: runs {runs[0]} / {runs[1]}")


def test_round_trip_depends_on_blocksize_and_lookup_uses_it(jack: JackServer, cfgdir: Path) -> None:
    # blocksize 0: PortAudio hands JACK's buffer straight through -> one period (256 frames)
    eng = DuplexEngine(rate=48000, device="system", blocksize=0)
    wirer = LoopbackWirer()
    eng.start()
    try:
        deadline = time.monotonic() + 10
        while not wirer.wired and time.monotonic() < deadline:
            time.sleep(0.02)
        assert wirer.wired
        choice = calibrate.latency_for(eng)
        assert choice.source == "reported" and choice.warning and "WARNING" in choice.warning
        cal = calibrate.measure(eng, repeats=2)
        calibrate.store(cal)
        assert cal.frames == 256 and [round(r) for r in cal.runs[-2:]] == [256, 256]
        assert len(cal.runs) == 2 or cal.xruns > 0
        assert calibrate.latency_for(eng) == calibrate.LatencyChoice(256, "measured")
    finally:
        wirer.stop()
        eng.close()
    assert calibrate.stored(eng.device_key, 48000, 256) is None  # other blocksize: not reused


def test_no_loopback_falls_back_to_reported_with_warning(
    jack: JackServer, cfgdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing wired: the input hears the dummy driver's silence.
    rc = cli.main(["calibrate", "--device", "system", "--blocksize", "256", "--wait", "0.3"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "WARNING" in err and "REPORTS" in err and "no sound came back" in err
    (entry,) = _entries(cfgdir).values()
    assert entry["latency_source"] == "reported"
    assert entry["frames"] == 512  # PortAudio's JACK report for this stream


def test_fallback_keeps_an_earlier_measurement(
    jack: JackServer, cfgdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = calibrate.calibration_key("JACK Audio Connection Kit:system", 48000, 256)
    config.update_section("calibration", key, {"frames": 500, "latency_source": "measured"})
    rc = cli.main(["calibrate", "--device", "system", "--blocksize", "256", "--wait", "0"])
    assert rc == 1
    assert "keeping the earlier measurement (500 frames)" in capsys.readouterr().err
    assert _entries(cfgdir)[key]["frames"] == 500


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "no-such-card"], "no input device matches 'no-such-card'"),
        (["--device", "system", "--rate", "44100"], "does not support 44100 Hz"),
        (["--device", "99"], "there is no device number 99"),
        (["--repeats", "0"], "--repeats must be 1–20"),
    ],
)
def test_bad_input_gives_clear_error(
    jack: JackServer,
    cfgdir: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    rc = cli.main(["calibrate", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (cfgdir / "config.json").exists()
