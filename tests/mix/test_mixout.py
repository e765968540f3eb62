"""The mix's workspace: outputs moved into place all or none, folders it made removed after a
failure, signals turned into an exception that is held while files move."""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.memory import shm_folder
from tutti.mix.outputs import SCRATCH_PREFIX, Interrupted, SignalGuard, Workspace


def _entries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_commit_moves_everything_and_the_mix_last(tmp_path: Path) -> None:
    main = tmp_path / "out" / "mix.flac"
    with SignalGuard() as guard, Workspace(main, guard) as ws:
        assert ws.scratch.parent == main.parent and ws.scratch.name.startswith(SCRATCH_PREFIX)
        ws.temp_for(main).write_text("mix")
        ws.temp_for(main.parent / "mix-stems" / "a.flac").write_text("a")
        ws.commit()
    assert _entries(tmp_path) == ["out", "out/mix-stems", "out/mix-stems/a.flac", "out/mix.flac"]
    assert main.read_text() == "mix"


def test_a_failure_removes_the_scratch_and_the_folders_made(tmp_path: Path) -> None:
    main = tmp_path / "a" / "b" / "mix.flac"
    with pytest.raises(ValueError), SignalGuard() as guard, Workspace(main, guard) as ws:
        ws.temp_for(main).write_text("half")
        raise ValueError("decoding failed")
    assert _entries(tmp_path) == []


def test_a_commit_that_fails_halfway_puts_back_what_it_replaced(tmp_path: Path) -> None:
    _fail_halfway(tmp_path, None)


def _fail_halfway(tmp_path: Path, scratch_in: Path | None) -> None:
    """A commit whose second move fails: the first output is taken back, the file it
    replaced restored (a scratch folder elsewhere: copied there, then put back)."""
    main = tmp_path / "mix.flac"
    main.write_text("old mix")
    (tmp_path / "mix.rpp").write_text("old project")
    with pytest.raises(OSError), SignalGuard() as guard, Workspace(main, guard, scratch_in) as ws:
        ws.temp_for(tmp_path / "mix.rpp").write_text("new project")
        ws.temp_for(tmp_path / "blocked" / "stem.flac").write_text("new stem")
        ws.temp_for(main).write_text("new mix")
        (tmp_path / "blocked").write_text("a file where the stem folder goes")
        ws.commit()
    assert main.read_text() == "old mix"
    assert (tmp_path / "mix.rpp").read_text() == "old project"
    assert _entries(tmp_path) == ["blocked", "mix.flac", "mix.rpp"]


def test_a_signal_becomes_interrupted_and_the_handler_comes_back(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info, SignalGuard():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**6):  # the handler runs between two bytecodes of this thread
            pass
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    # a server's mix worker hands it to the server's process as it is
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, Interrupted) and again.signum == signal.SIGTERM
    assert str(again) == "SIGTERM"


def test_a_signal_while_files_move_is_raised_after(tmp_path: Path) -> None:
    done = []
    with pytest.raises(Interrupted), SignalGuard() as guard:
        with guard.hold():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10**5):
                pass
            done.append("moved")  # not interrupted
        done.append("after")  # the signal is raised when the hold ends
    assert done == ["moved"]


def test_a_second_signal_does_not_interrupt_the_cleanup(tmp_path: Path) -> None:
    with pytest.raises(Interrupted) as info, SignalGuard():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10**6):
                pass
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: the cleanup goes on
            for _ in range(10**5):
                pass
    assert info.value.signum == signal.SIGINT


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Path]:
    """A fresh folder on a tmpfs, on another file system than ``tmp_path`` (as the server's
    mixes work in memory: tutti.server.mixwork)."""
    with shm_folder() as folder:
        if os.stat(folder).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("needs /dev/shm on a file system of its own")
        yield folder


def test_outputs_made_on_another_file_system_land_whole(tmp_path: Path, memory: Path) -> None:
    main = tmp_path / "out" / "mix.flac"
    main.parent.mkdir()
    main.write_text("old mix")
    with SignalGuard() as guard, Workspace(main, guard, memory / "work") as ws:
        assert ws.scratch.parent == memory / "work"
        ws.temp_for(main).write_text("mix")
        ws.temp_for(main.parent / "mix.opus").write_text("opus")
        ws.commit()
    assert _entries(tmp_path) == ["out", "out/mix.flac", "out/mix.opus"]  # no copy left over
    assert main.read_text() == "mix" and _entries(memory) == ["work"]


def test_a_failed_commit_from_another_file_system_puts_back_the_old(
    tmp_path: Path, memory: Path
) -> None:
    _fail_halfway(tmp_path, memory)
    assert _entries(memory) == []
