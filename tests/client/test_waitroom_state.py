"""The waiting room as the singer's client keeps it (:class:`RoomState`): the newest ``lobby``
wins over a late older one, the note is announced once per change, waves show for a while,
and the wave button waits out the server's limit."""

from __future__ import annotations

from tutti.client.waitroom import WAVE_SHOWN_S, RoomState
from tutti.wire import WAVE_EVERY_S, Lobby, LobbySinger, Waves


def _lobby(at: float, note: str = "", *names: str) -> Lobby:
    here = tuple(LobbySinger(n, "S") for n in names)
    return Lobby(here=here, count=len(here), parts={"S": len(here)}, note=note, at=at)


def test_the_newest_snapshot_wins_and_a_new_note_is_announced_once() -> None:
    room = RoomState()
    assert room.view(0.0)["here"] == [] and room.view(0.0)["wave_in"] == 0
    assert room.on_lobby(_lobby(10.0, "", "Ann")) is False  # no note yet: nothing to say
    assert room.on_lobby(_lobby(11.0, "Hum first", "Ann", "Bob")) is True
    assert room.on_lobby(_lobby(12.0, "Hum first", "Ann", "Bob", "Cy")) is False  # same note
    # another server process's snapshot, taken earlier, arriving late: kept out
    assert room.on_lobby(_lobby(10.5, "", "Ann")) is False
    view = room.view(0.0)
    assert [s["name"] for s in view["here"]] == ["Ann", "Bob", "Cy"]
    assert view["count"] == 3 and view["note"] == "Hum first"


def test_waves_show_for_a_while_and_the_button_waits_out_the_limit() -> None:
    room = RoomState()
    assert room.on_waves(Waves(("Ann", "Bob"), more=3), now=100.0) == [
        "Ann waved 👋",
        "Bob waved 👋",
        "and 3 more waved 👋",
    ]
    assert len(room.view(100.0 + WAVE_SHOWN_S - 0.1)["waves"]) == 3
    assert room.view(100.0 + WAVE_SHOWN_S)["waves"] == []
    room.refusal = "you waved a moment ago; wave again in 4 s"
    room.waved(200.0)
    assert room.refusal == ""
    assert room.view(200.0)["wave_in"] == WAVE_EVERY_S
    assert room.view(200.0 + WAVE_EVERY_S - 0.5)["wave_in"] == 1
    assert room.view(200.0 + WAVE_EVERY_S)["wave_in"] == 0
