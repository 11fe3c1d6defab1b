"""ftp_state.py: the snapshot, the journal of pending events, and who may write."""

from __future__ import annotations

import json
import logging
import threading
import time
import types

import pytest

import ftp_state
from ftp_changes import Change
from ftp_listing import FileInfo
from ftp_state import Displaced, State, StateStore

IDENTITY = {"host": "h", "port": 21, "dir": "/"}


def test_state_store_snapshot_and_journal_of_pending_events(tmp_path):
    store = StateStore(tmp_path / "s.json", IDENTITY)
    assert store.load() is None
    store.save({"/a": FileInfo(1, "t")})
    store.record_sent(Change("/b c", 2, "t2", "new"))
    store.record_sent(Change("/a", 3, "t3", "mod"))
    # a crash now: both events were handed over, neither confirmed: both pending
    again = StateStore(tmp_path / "s.json", IDENTITY).load()
    assert again.files == {"/a": FileInfo(3, "t3"), "/b c": FileInfo(2, "t2")}
    assert again.pending == {"/a": Change("/a", 3, "t3", "mod"), "/b c": Change("/b c", 2, "t2", "new")}
    # confirming /a: the snapshot keeps /b c pending, the journal is folded in
    store.save(again.files, {"/b c": again.pending["/b c"]})
    assert (tmp_path / "s.json.journal").read_text() == ""
    loaded = StateStore(tmp_path / "s.json", IDENTITY).load()
    assert loaded == State(again.files, {"/b c": Change("/b c", 2, "t2", "new")})
    assert not list(tmp_path.glob("*.tmp-*"))


def test_a_version_1_journal_line_counts_as_delivered(tmp_path):
    store = StateStore(tmp_path / "s.json", IDENTITY)
    store.save({})
    (tmp_path / "s.json.journal").write_text(json.dumps({"path": "/old", "size": 1, "mtime": "t"}) + "\n")
    assert StateStore(tmp_path / "s.json", IDENTITY).load() == State({"/old": FileInfo(1, "t")}, {})


def test_state_store_ignores_a_torn_journal_line(tmp_path):
    store = StateStore(tmp_path / "s.json", IDENTITY)
    store.save({})
    store.record_sent(Change("/a", 1, "t", "new"))
    with open(tmp_path / "s.json.journal", "a") as fh:
        fh.write('{"path": "/b", "si')
    assert StateStore(tmp_path / "s.json", IDENTITY).load().files == {"/a": FileInfo(1, "t")}


def test_state_store_for_another_tree_is_not_used(tmp_path):
    StateStore(tmp_path / "s.json", IDENTITY).save({"/a": FileInfo(1, "t")})
    assert StateStore(tmp_path / "s.json", {"host": "other", "port": 21, "dir": "/"}).load() is None


def test_state_store_damaged_snapshot_is_moved_aside(tmp_path):
    (tmp_path / "s.json").write_text("{not json")
    assert StateStore(tmp_path / "s.json", {}).load() is None
    assert len(list(tmp_path.glob("s.json.unreadable-*"))) == 1


class Owner:
    def __init__(self):
        self.stop = threading.Event()
        self.displaced_by = None

    def displace(self, by):
        self.displaced_by = by
        self.stop.set()


def test_the_newest_claim_takes_over_at_once_and_the_old_owner_cannot_write(tmp_path):
    first, second = Owner(), Owner()
    old = StateStore(tmp_path / "s.json", IDENTITY)
    assert old.claim(first, timeout=1) is None
    old.save({"/a": FileInfo(1, "t")})
    new = StateStore(tmp_path / "s.json", IDENTITY)
    assert new.claim(second, timeout=1) is first  # no waiting for the old one
    assert first.displaced_by is second and first.stop.is_set()
    with pytest.raises(Displaced):
        old.record_sent(Change("/x", 1, "t", "new"))
    with pytest.raises(Displaced):
        old.save({})
    old.release()  # the old owner's release leaves the new owner's claim alone
    assert new.owns()
    new.record_sent(Change("/b", 2, "t", "new"))
    assert set(StateStore(tmp_path / "s.json", IDENTITY).load().files) == {"/a", "/b"}
    new.release()
    assert ftp_state.stop_all_streams() == 0


def test_takers_in_turn_are_named_once_even_on_a_node_booted_minutes_ago(tmp_path, monkeypatch, caplog):
    """The monotonic clock counts from boot: 200 s after boot, "never warned" must not read as
    "warned 200 s ago" (the warning was then withheld for the node's first ten minutes)."""
    clock = [200.0]
    monkeypatch.setattr(ftp_state, "time", types.SimpleNamespace(
        monotonic=lambda: clock[0], sleep=time.sleep, time=time.time))
    caplog.set_level(logging.ERROR, logger="ftp_event_server")
    stores = [StateStore(tmp_path / "s.json", IDENTITY) for _ in range(6)]
    for store in stores:
        store.claim(Owner(), timeout=1)
        clock[0] += 1
    warnings = [r for r in caplog.records if "two receivers are taking turns" in r.getMessage()]
    assert len(warnings) == 1                     # at the third takeover, and only once
    stores[-1].release()


def test_another_process_holding_the_state_is_waited_for_then_refused(tmp_path):
    import fcntl
    import os
    (tmp_path / "s.json.lock").touch()
    fd = os.open(tmp_path / "s.json.lock", os.O_RDWR)
    # flock is per open file description: a second description stands for another process
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(ftp_state.StateBusy, match="held by another process"):
            StateStore(tmp_path / "s.json", IDENTITY).claim(Owner(), timeout=0.2)
    finally:
        os.close(fd)
    store = StateStore(tmp_path / "s.json", IDENTITY)
    store.claim(Owner(), timeout=1)
    store.release()
