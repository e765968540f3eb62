"""The watch view's pure parts: RosterState applying leader events, the meter, the screen."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from tutti import wire
from tutti.client.leadview import RosterState, level_meter, render
from tutti.wire import Ev

SETTINGS = wire.SessionSettings(title="Sofa", rate=48000)


def _p(pid: str, name: str, part: str, **kw: Any) -> dict[str, Any]:
    return wire.RosterEntry(pid, name, part, connected=True).to_dict() | kw


def _level(**kw: Any) -> dict[str, Any]:
    return wire.LevelReport(**({"rms_db": -30.0, "peak_db": -10.0} | kw)).to_dict()


def test_level_meter_fills_to_rms_and_marks_peak() -> None:
    assert level_meter(None, None, width=10).plain == " " * 10
    assert level_meter(0.0, 0.0, width=10).plain == "█" * 10
    m = level_meter(-30.0, -12.0, width=10)  # rms half-way, peak at 80 %
    assert m.plain == "█████  |  "
    assert level_meter(-90.0, None, width=10).plain == " " * 10  # below the floor
    assert str(level_meter(-1.0, -0.5).style) == "red"


def test_roster_events_tell_what_changed() -> None:
    st = RosterState(code="K7PX2M")
    view = wire.SessionView("s1", SETTINGS, "open")
    lines = st.apply(Ev.WELCOME, wire.Welcome("leader", view, 1.0).to_dict())
    assert st.rate == 48000 and st.title == "Sofa" and "K7PX2M" in lines[0]
    lines = st.apply(Ev.ROSTER, {"participants": [_p("p1", "Ann", "S"), _p("p2", "Bo", "B")]})
    assert lines == ["Ann (S) joined, connected", "Bo (B) joined, connected"]
    assert st.apply(Ev.PARTICIPANT, _p("p1", "Ann", "S", connected=False)) == [
        "Ann (S) disconnected"
    ]
    assert st.apply(
        Ev.PARTICIPANT, _p("p1", "Ann", "S", latency_frames=512, latency_source="measured")
    ) == ["Ann (S) reconnected", "Ann (S) calibrated: 512 frames (measured)"]
    # the host's xrun flags (server-wide on JACK) warn of nothing, a singer's own dropout
    # is a warning line
    lv = _level(rms_db=-20.0, peak_db=-6.0, overflows=7, underflows=3)
    assert st.apply(Ev.LEVELS, {"levels": {"p1": lv}}) == []
    lines = st.apply(Ev.LEVELS, {"levels": {"p2": _level(dropouts=1, lost_frames=2304)}}, now=0.0)
    assert lines == [
        "WARNING Bo (B): audio dropout on their computer, 48 ms lost (their take stays in time)"
    ]
    # an ongoing condition is summed up every 30 s, not repeated with every report
    for k in range(2, 12):
        more = _level(dropouts=k, lost_frames=2304 + 256 * (k - 1))
        assert st.apply(Ev.LEVELS, {"levels": {"p2": more}}, now=k) == []
    more = _level(dropouts=12, lost_frames=2304 + 256 * 11)
    lines = st.apply(Ev.LEVELS, {"levels": {"p2": more}}, now=31.0)
    assert lines == ["WARNING Bo (B): 11 more dropouts, 59 ms lost (12 in all)"]
    assert st.participants["p1"].level == wire.LiveLevel(-20.0, -6.0)
    assert st.level_line() == "levels: Ann -20 dB, Bo -30 dB"
    # levels for someone unknown are ignored
    assert st.apply(Ev.LEVELS, {"levels": {"zz": _level()}}) == []
    # a payload off the contract is told once and changes nothing
    (line,) = st.apply(Ev.ROSTER, "garbage")
    assert "does not read" in line and "expected a JSON object" in line
    (line,) = st.apply(Ev.LEVELS, {"levels": {"p1": {"rms_db": "loud"}}})
    assert "rms_db" in line and st.participants["p1"].level == wire.LiveLevel(-20.0, -6.0)
    assert len(st.participants) == 2
    # a clock batch changes only those singers' clocks, silently
    clock = wire.LiveClock(0.5, 0.0004, 0.0009)
    assert st.apply(Ev.CLOCKS, {"clocks": {"p1": clock.to_dict(), "zz": clock.to_dict()}}) == []
    assert st.participants["p1"].clock == clock and st.participants["p2"].clock is None
    assert st.participants["p1"].level == wire.LiveLevel(-20.0, -6.0)


def test_take_events_and_countdown() -> None:
    st = RosterState()
    st.apply(Ev.PARTICIPANT, _p("p1", "Ann", "S"))
    st.apply(Ev.TAKE_ARMED, wire.TakeArmed("t1", 1, SETTINGS).to_dict())
    assert st.take_state == "armed"
    start = wire.TakeStart("t1", 102.0, SETTINGS, 100.0)
    st.apply(Ev.TAKE_START, start.to_dict(), now=50.0)
    assert st.take_state == "running" and st.take_t0_local == 52.0
    st.apply(Ev.TAKE_STOP, wire.TakeStop("t1", 110.0).to_dict())
    assert st.take_state == "stopped"
    lines = st.apply(Ev.TAKE_UPDATES, wire.TakeUpdates("t1", "uploaded", ("p1",)).to_dict())
    assert lines == ["take t1: Ann uploaded"]
    for pid, name in (("p2", "Ben"), ("p3", "Cleo"), ("p4", "Dee")):
        st.apply(Ev.PARTICIPANT, _p(pid, name, "A"))
    two = wire.TakeUpdates("t1", "recorded", ("p2", "p1"))
    assert st.apply(Ev.TAKE_UPDATES, two.to_dict()) == ["take t1: Ben and Ann recorded"]
    five = wire.TakeUpdates("t1", "failed", ("p1", "p2", "p3", "p4", "p9"), "no space")
    lines = st.apply(Ev.TAKE_UPDATES, five.to_dict())
    assert lines == ["take t1: Ann, Ben, Cleo and 2 others failed"]
    st.apply(Ev.SESSION_CLOSED, wire.SessionClosed("s1").to_dict())
    assert st.closed


def test_render_shows_every_column() -> None:
    st = RosterState(rate=48000, title="Sofa", code="K7PX2M", connected=True)
    st.apply(
        Ev.ROSTER,
        {
            "participants": [
                _p(
                    "p1",
                    "Ann",
                    "S",
                    latency_frames=480,
                    latency_source="measured",
                    clock={"offset": 0.1, "error_bound": 0.0004, "rtt_min": 0.001},
                    level={"rms_db": -18.0, "peak_db": -3.0, "clipped": True},
                    overflows=5,
                    dropouts=1,
                ),
                _p("p2", "Bo [x]", "B", connected=False),
            ]
        },
    )
    st.apply(Ev.TAKE_START, wire.TakeStart("t9", 5.0, SETTINGS, 3.0).to_dict(), now=10.0)
    con = Console(width=140, record=True, file=io.StringIO())
    con.print(render(st, now=11.0))
    text = con.export_text()
    assert "Sofa" in text and "K7PX2M" in text
    assert "count-in in 1.0 s" in text
    assert "480 fr 10.0 ms (measured)" in text and "±0.40 ms" in text
    assert "CLIP" in text and "1 ⚠" in text
    assert "Bo [x]" in text  # names are shown literally, not as markup
    assert "not calibrated" in text and "not synced" in text
