"""The upload store on its own: durable state round trip and repair of what crashes leave."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tutti.server.uploads import (
    UploadState,
    UploadStatus,
    UploadStore,
    committed_offset,
    new_upload_id,
)


def make(store: UploadStore, length: int = 100) -> UploadState:
    state = UploadState(new_upload_id(), length, 0, {"k": "v"}, "owner", 1.0, 2.0)
    store.create(state)
    return state


def test_state_round_trip_and_writer(tmp_path: Path) -> None:
    store = UploadStore(tmp_path)
    st = make(store)
    w = store.writer(st, hashlib.sha256(), hashlib.md5())
    assert store.pending_path(st.upload_id).read_text() == "0"  # a checksummed request runs
    w.write([b"abc", b"defg"])
    st.offset = w.commit()
    w.close()
    assert not store.pending_path(st.upload_id).exists()
    (loaded,) = UploadStore(tmp_path).load_all(expiry_s=100.0)
    mtime = store.data_path(st.upload_id).stat().st_mtime
    assert loaded.expires_at == mtime + 100.0  # a deadline slid by the last write
    loaded.expires_at = st.expires_at
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
    store.data_path(ok.upload_id).write_bytes(b"unverified")  # a checksummed PATCH cut by a crash
    store.pending_path(ok.upload_id).write_text("0")
    kept = make(store)
    store.data_path(kept.upload_id).write_bytes(b"received")  # a plain PATCH cut by a crash
    (tmp_path / f"{ok.upload_id}.json.tmp").write_text("{half a state")
    broken = make(store)
    store.state_path(broken.upload_id).write_text("{not json")
    short = make(store)
    short.offset = 10
    store.save(short)  # claims 10 bytes, file has 0
    (tmp_path / "notes.json").write_text("{}")  # not an upload: ignored
    loaded = {s.upload_id: s for s in UploadStore(tmp_path).load_all()}
    assert set(loaded) == {ok.upload_id, kept.upload_id}
    assert store.data_path(ok.upload_id).stat().st_size == loaded[ok.upload_id].offset == 0
    assert not store.pending_path(ok.upload_id).exists()
    assert loaded[kept.upload_id].offset == 8
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


def test_version_1_state_still_cuts_back_to_its_offset(tmp_path: Path) -> None:
    """A state file from before the data file's size was the offset (version 1, rewritten
    per PATCH) is still read, and bytes past its offset are dropped as it promised."""
    store = UploadStore(tmp_path)
    st = make(store)
    store.data_path(st.upload_id).write_bytes(b"committeduncommitted")
    old = {**st.to_dict(), "version": 1, "offset": 9}
    store.state_path(st.upload_id).write_text(json.dumps(old))
    (loaded,) = UploadStore(tmp_path).load_all()
    assert loaded.offset == 9
    assert store.data_path(st.upload_id).read_bytes() == b"committed"


def test_committed_offset_for_copies_taken_while_running(tmp_path: Path) -> None:
    """What ``tutti backup`` may copy of an unfinished upload: the data file's size, or the
    start of the checksummed PATCH being written."""
    store = UploadStore(tmp_path)
    st = make(store)
    store.data_path(st.upload_id).write_bytes(b"x" * 40)
    assert committed_offset(tmp_path, st.upload_id) == 40
    store.pending_path(st.upload_id).write_text("25")
    assert committed_offset(tmp_path, st.upload_id) == 25
    with pytest.raises(FileNotFoundError):
        committed_offset(tmp_path, new_upload_id())
