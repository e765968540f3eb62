"""The upload store on its own: durable state round trip and repair of what crashes leave."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tutti.server.uploads import UploadState, UploadStatus, UploadStore, new_upload_id


def make(store: UploadStore, length: int = 100) -> UploadState:
    state = UploadState(new_upload_id(), length, 0, {"k": "v"}, "owner", 1.0, 2.0)
    store.create(state)
    return state


def test_state_round_trip_and_writer(tmp_path: Path) -> None:
    store = UploadStore(tmp_path)
    st = make(store)
    w = store.writer(st, hashlib.sha256(), hashlib.md5())
    w.write([b"abc", b"defg"])
    w.sync()
    w.close()
    st.offset = w.start + w.written
    store.save(st)
    (loaded,) = UploadStore(tmp_path).load_all()
    assert loaded == st and loaded.offset == 7
    assert w.sha256.hexdigest() == hashlib.sha256(b"abcdefg").hexdigest()
    assert store.hash_prefix(st.upload_id, 7).hexdigest() == w.sha256.hexdigest()
    assert store.data_path(st.upload_id).read_bytes() == b"abcdefg"


def test_rollback_cuts_back(tmp_path: Path) -> None:
    store = UploadStore(tmp_path)
    st = make(store)
    w = store.writer(st, hashlib.sha256(), None)
    w.write([b"x" * 50])
    w.rollback()
    w.close()
    assert store.data_path(st.upload_id).stat().st_size == 0


def test_load_repairs_crash_leftovers(tmp_path: Path) -> None:
    store = UploadStore(tmp_path)
    ok = make(store)
    store.data_path(ok.upload_id).write_bytes(b"uncommitted")  # offset is still 0
    (tmp_path / f"{ok.upload_id}.json.tmp").write_text("{half a state")
    broken = make(store)
    store.state_path(broken.upload_id).write_text("{not json")
    short = make(store)
    short.offset = 10
    store.save(short)  # claims 10 bytes, file has 0
    (tmp_path / "notes.json").write_text("{}")  # not an upload: ignored
    loaded = UploadStore(tmp_path).load_all()
    assert [s.upload_id for s in loaded] == [ok.upload_id]
    assert store.data_path(ok.upload_id).stat().st_size == 0
    assert not (tmp_path / f"{ok.upload_id}.json.tmp").exists()
    assert (tmp_path / f"{broken.upload_id}.json.corrupt").exists()
    assert (tmp_path / f"{short.upload_id}.json.corrupt").exists()


def test_fully_received_with_data_gone_counts_as_completed(tmp_path: Path) -> None:
    store = UploadStore(tmp_path)
    st = make(store, length=3)
    st.offset, st.sha256 = 3, "0" * 64
    store.save(st)
    store.data_path(st.upload_id).unlink()  # the completion hook had moved it
    (loaded,) = UploadStore(tmp_path).load_all()
    assert loaded.status is UploadStatus.COMPLETED
    assert json.loads(store.state_path(st.upload_id).read_text())["status"] == "completed"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABCDEF" * 6, "", "a" * 31])
def test_ids_are_checked(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid upload id"):
        UploadStore(tmp_path).data_path(bad)
