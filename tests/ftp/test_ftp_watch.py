"""The event server's pieces on their own: listing parsers, config checks, the change
tracker and the state store."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading

import pytest

import ftp_watch
from ftp_watch import Change, ChangeTracker, FileInfo, ListFields, Listing, StateStore

ENV = {"FTP_USER": "someone", "FTP_PASSWORD": "s3cret-value"}


# ------------------------------------------------------------------ listing lines


@pytest.mark.parametrize(
    "line,expected",
    [
        # vsftpd
        ("-rw-r--r--    1 ftp      ftp             123 Mar 23 00:41 test.csv",
         ("test.csv", "file", 123, "2023-03-23T00:41")),
        # spaces inside and at the end of a name survive
        ("-rw-r--r--    1 0        0               6 Nov 27 02:03 a  b 한 .csv",
         ("a  b 한 .csv", "file", 6, "2023-11-27T02:03")),
        # older than six months: year instead of time
        ("-rw-r--r--   1 owner    group        7045 Sep 02  2021 old file.csv",
         ("old file.csv", "file", 7045, "2021-09-02")),
        ("drwxr-xr-x    2 ftp      ftp          4096 Mar 23 00:41 sub dir",
         ("sub dir", "dir", 4096, "2023-03-23T00:41")),
        ("lrwxrwxrwx    1 ftp      ftp             8 Mar 23 00:41 link -> target",
         ("link -> target", "other", 8, "2023-03-23T00:41")),
    ],
)
def test_parse_list_line(line, expected):
    now = dt.datetime(2023, 12, 1, 12, 0)
    assert ftp_watch.parse_list_line(line, ListFields(), now) == expected


def test_parse_list_line_skips_what_is_not_an_entry():
    assert ftp_watch.parse_list_line("total 12", ListFields()) is None
    assert ftp_watch.parse_list_line("-rw-r--r-- 1 a b notanumber Mar 23 00:41 x", ListFields()) is None


def test_parse_list_line_with_other_field_positions():
    # a server without the group column: perms links owner size month day time name
    fields = ListFields(size=3, mtime=(4, 5, 6), name=7)
    name, kind, size, _ = ftp_watch.parse_list_line("-rw-r--r-- 1 ftp 55 Jan 02 03:04 x y.csv", fields)
    assert (name, kind, size) == ("x y.csv", "file", 55)


def test_list_time_picks_last_year_for_a_date_in_the_future():
    now = dt.datetime(2024, 1, 2, 10, 0)
    assert ftp_watch.list_time("Dec 31 23:59", now) == "2023-12-31T23:59"
    assert ftp_watch.list_time("Jan 02 09:00", now) == "2024-01-02T09:00"
    assert ftp_watch.list_time("not a date at all", now) == "not a date at all"


def test_parse_mlsd_line():
    assert ftp_watch.parse_mlsd_line("type=file;size=42;modify=20230323004112; name  with spaces.csv") == (
        "name  with spaces.csv", "file", 42, "2023-03-23T00:41:12Z")
    assert ftp_watch.parse_mlsd_line("Type=dir;Modify=20230323004112.123; 폴더") == (
        "폴더", "dir", -1, "2023-03-23T00:41:12.123Z")
    assert ftp_watch.parse_mlsd_line("type=cdir;modify=20230323004112; .") is None
    assert ftp_watch.parse_mlsd_line("type=OS.unix=slink:/x;size=3; l")[1] == "other"
    assert ftp_watch.parse_mlsd_line("garbage") is None


def test_same_mtime_tolerates_the_six_month_switch_only():
    assert ftp_watch.same_mtime("2023-03-23T00:41", "2023-03-23")
    assert ftp_watch.same_mtime("2023-03-23", "2023-03-23T00:41")
    assert not ftp_watch.same_mtime("2023-03-23T00:41", "2023-03-24")
    assert not ftp_watch.same_mtime("2023-03-23T00:41", "2023-03-23T00:42")


# ------------------------------------------------------------------ config


def test_config_defaults_and_credentials_from_env():
    cfg = ftp_watch.parse_config(b"host: vsftpd\n", ENV, event_name="ftp")
    assert (cfg.host, cfg.port, cfg.dir, cfg.passive, cfg.recursive, cfg.listing) == (
        "vsftpd", 21, "/", True, True, "auto")
    assert (cfg.user, cfg.password) == ("someone", "s3cret-value")
    assert cfg.settle_seconds == cfg.poll_seconds == 10.0
    assert re.fullmatch(r"/var/lib/ftp-event-server/ftp-[0-9a-f]{10}\.json", cfg.state_file)
    # another tree gets another state file, the same tree the same one
    assert ftp_watch.parse_config(b"host: other\n", ENV).state_file != cfg.state_file
    assert ftp_watch.parse_config(b"host: vsftpd\nport: 21\n", ENV).state_file == cfg.state_file
    assert "s3cret-value" not in repr(cfg) and "s3cret-value" not in cfg.describe()


def test_config_json_and_env_defaults():
    env = dict(ENV, FTP_POLL_SECONDS="2.5", FTP_STATE_DIR="/state", MY_PW="other")
    cfg = ftp_watch.parse_config(
        json.dumps({"host": "h", "port": 2121, "user": "bob", "passwordEnv": "MY_PW", "dir": "/in/../data/"}),
        env, event_name="ftp events/1")
    assert (cfg.port, cfg.user, cfg.password, cfg.dir, cfg.poll_seconds) == (2121, "bob", "other", "/data", 2.5)
    assert cfg.state_file.startswith("/state/ftp_events_1-") and cfg.state_file.endswith(".json")


def test_config_password_file(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    cfg = ftp_watch.parse_config(f"host: h\npasswordFile: {pw}\n", ENV)
    assert cfg.password == "from-file"
    with pytest.raises(ftp_watch.ConfigError, match="cannot read"):
        ftp_watch.parse_config(f"host: h\npasswordFile: {tmp_path / 'missing'}\n", ENV)


def test_config_error_never_contains_the_password():
    with pytest.raises(ftp_watch.ConfigError) as info:
        ftp_watch.parse_config(b"host: h\nport: 0\nuser: x\nuserEnv: Y\n", ENV)
    assert "s3cret-value" not in str(info.value)
    assert "either 'user' or 'userEnv'" in str(info.value)


def test_config_list_fields_must_precede_the_name():
    with pytest.raises(ftp_watch.ConfigError, match="before the name position"):
        ftp_watch.parse_config("host: h\nlistFields: {size: 4, mtime: [5, 6, 9], name: 8}\n", ENV)
    cfg = ftp_watch.parse_config("host: h\nlistFields: {size: 3, mtime: [4, 5, 6], name: 7}\n", ENV)
    assert cfg.list_fields == ListFields(3, (4, 5, 6), 7)


# ------------------------------------------------------------------ change tracking


def listing(**files) -> Listing:
    return Listing(files={"/" + k: FileInfo(*v) for k, v in files.items()})


def test_tracker_reports_only_after_two_identical_listings():
    t = ChangeTracker()
    assert t.observe(listing(a=(1, "t1"))) == ([], [])
    assert t.observe(listing(a=(5, "t2"))) == ([], [])  # still growing
    ready, _ = t.observe(listing(a=(5, "t2")))
    assert ready == [Change("/a", 5, "t2", "new")]
    t.mark_reported(ready[0])
    assert t.observe(listing(a=(5, "t2"))) == ([], [])
    assert t.observe(listing(a=(5, "t3"))) == ([], [])
    ready, _ = t.observe(listing(a=(5, "t3")))
    assert ready == [Change("/a", 5, "t3", "mod")]


def test_tracker_forgets_deleted_files_but_not_unreadable_folders():
    t = ChangeTracker({"/a": FileInfo(1, "t"), "/d/b": FileInfo(1, "t")})
    ready, gone = t.observe(Listing(files={}, unreadable=["/d"]))
    assert (ready, gone) == ([], ["/a"])
    assert "/d/b" in t.reported
    # a re-created file is new again
    t.observe(listing(a=(1, "t")))
    assert t.observe(listing(a=(1, "t")))[0] == [Change("/a", 1, "t", "new")]


def test_tracker_change_reverted_before_it_settled_is_not_reported():
    t = ChangeTracker({"/a": FileInfo(1, "t")})
    t.observe(listing(a=(9, "t2")))
    assert t.observe(listing(a=(1, "t"))) == ([], [])
    assert t.pending == {}


# ------------------------------------------------------------------ state store


def test_state_store_snapshot_and_journal(tmp_path):
    identity = {"host": "h", "port": 21, "dir": "/"}
    store = StateStore(tmp_path / "s.json", identity)
    assert store.load() is None
    store.save({"/a": FileInfo(1, "t")})
    store.record(Change("/b c", 2, "t2", "new"))
    store.record(Change("/a", 3, "t3", "mod"))
    # a crash now: snapshot + journal replay give both events
    again = StateStore(tmp_path / "s.json", identity)
    assert again.load() == {"/a": FileInfo(3, "t3"), "/b c": FileInfo(2, "t2")}
    # saving folds the journal in and empties it
    store.save(again.load())
    assert (tmp_path / "s.json.journal").read_text() == ""
    assert StateStore(tmp_path / "s.json", identity).load() == {"/a": FileInfo(3, "t3"), "/b c": FileInfo(2, "t2")}
    assert not list(tmp_path.glob("*.tmp-*"))


def test_state_store_ignores_a_torn_journal_line(tmp_path):
    identity = {"host": "h", "port": 21, "dir": "/"}
    store = StateStore(tmp_path / "s.json", identity)
    store.save({})
    store.record(Change("/a", 1, "t", "new"))
    with open(tmp_path / "s.json.journal", "a") as fh:
        fh.write('{"path": "/b", "si')
    assert StateStore(tmp_path / "s.json", identity).load() == {"/a": FileInfo(1, "t")}


def test_state_store_for_another_tree_is_not_used(tmp_path):
    StateStore(tmp_path / "s.json", {"host": "h", "port": 21, "dir": "/"}).save({"/a": FileInfo(1, "t")})
    assert StateStore(tmp_path / "s.json", {"host": "other", "port": 21, "dir": "/"}).load() is None


def test_state_store_damaged_snapshot_is_moved_aside(tmp_path):
    (tmp_path / "s.json").write_text("{not json")
    assert StateStore(tmp_path / "s.json", {}).load() is None
    assert len(list(tmp_path.glob("s.json.unreadable-*"))) == 1


def test_state_store_claim_is_exclusive_and_asks_the_holder_to_stop(tmp_path):
    first_stop, second_stop = threading.Event(), threading.Event()
    first = StateStore(tmp_path / "s.json", {})
    first.claim(first_stop, timeout=1)
    second = StateStore(tmp_path / "s.json", {})
    with pytest.raises(ftp_watch.StateBusy):
        second.claim(second_stop, timeout=0.2)
    assert first_stop.is_set()  # the holder was asked to stop
    first.release()
    second.claim(second_stop, timeout=1)
    second.release()


def test_backoff_grows_and_is_capped():
    delays = ftp_watch.backoff_delays(1.0, 8.0)
    got = [next(delays) for _ in range(6)]
    assert all(0.8 * b <= d <= b for d, b in zip(got, [1, 2, 4, 8, 8, 8]))


class FakeFtp:
    """Answers MLSD like a server whose folder "loop" is a link to its own parent, listed as
    a plain folder (so a naive walk never ends), and 550 for a vanished folder."""

    def retrbinary(self, command, callback, blocksize=8192):
        path = command.split(" ", 1)[1]
        if path.endswith("/gone"):
            raise ftp_watch.ftplib.error_perm("550 No such file or directory.")
        callback(b"type=file;size=1;modify=20240101000000; f.csv\r\n"
                 b"type=dir;modify=20240101000000; loop\r\n"
                 b"type=dir;modify=20240101000000; gone\r\n")


def test_walk_is_bounded_and_keeps_vanished_folders_out_of_the_deletions():
    cfg = ftp_watch.parse_config("host: h\n", ENV)
    result = ftp_watch.TreeLister(cfg).list_tree(FakeFtp())
    depth = ftp_watch.MAX_DEPTH
    assert len(result.files) == depth + 1  # "/f.csv", "/loop/f.csv", ... down to the bound
    assert "/" + "loop/" * depth + "f.csv" in result.files
    assert "/gone" in result.unreadable and any(p.endswith("/loop") for p in result.unreadable)
