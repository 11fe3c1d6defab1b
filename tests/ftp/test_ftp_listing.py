"""ftp_listing.py: LIST/MLSD lines, the tree walk, names kept exactly, impossible names and
unreadable folders warned about once, and MDTM/SIZE where LIST gives only minutes."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time

import pytest

import ftp_config
import ftp_listing
from ftp_config import ListFields
from ftp_support import FtpServerThread, NoMlsdHandler, wait_baseline, write_file

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
    assert ftp_listing.parse_list_line(line, ListFields(), now) == expected


def test_parse_list_line_skips_what_is_not_an_entry():
    assert ftp_listing.parse_list_line("total 12", ListFields()) is None
    assert ftp_listing.parse_list_line("-rw-r--r-- 1 a b notanumber Mar 23 00:41 x", ListFields()) is None


def test_parse_list_line_with_other_field_positions():
    # a server without the group column: perms links owner size month day time name
    fields = ListFields(size=3, mtime=(4, 5, 6), name=7)
    name, kind, size, _ = ftp_listing.parse_list_line("-rw-r--r-- 1 ftp 55 Jan 02 03:04 x y.csv", fields)
    assert (name, kind, size) == ("x y.csv", "file", 55)


def test_list_time_picks_last_year_for_a_date_in_the_future():
    now = dt.datetime(2024, 1, 2, 10, 0)
    assert ftp_listing.list_time("Dec 31 23:59", now) == "2023-12-31T23:59"
    assert ftp_listing.list_time("Jan 02 09:00", now) == "2024-01-02T09:00"
    assert ftp_listing.list_time("not a date at all", now) == "not a date at all"


def test_parse_mlsd_line():
    assert ftp_listing.parse_mlsd_line("type=file;size=42;modify=20230323004112; name  with spaces.csv") == (
        "name  with spaces.csv", "file", 42, "2023-03-23T00:41:12Z")
    assert ftp_listing.parse_mlsd_line("Type=dir;Modify=20230323004112.123; 폴더") == (
        "폴더", "dir", -1, "2023-03-23T00:41:12.123Z")
    assert ftp_listing.parse_mlsd_line("type=cdir;modify=20230323004112; .") is None
    assert ftp_listing.parse_mlsd_line("type=OS.unix=slink:/x;size=3; l")[1] == "other"
    assert ftp_listing.parse_mlsd_line("garbage") is None


def test_same_mtime_tolerates_the_six_month_switch_only():
    assert ftp_listing.same_mtime("2023-03-23T00:41", "2023-03-23")
    assert ftp_listing.same_mtime("2023-03-23", "2023-03-23T00:41")
    assert not ftp_listing.same_mtime("2023-03-23T00:41", "2023-03-24")
    assert not ftp_listing.same_mtime("2023-03-23T00:41", "2023-03-23T00:42")


def test_parse_list_line_keeps_leading_spaces_of_a_name():
    now = dt.datetime(2023, 12, 1, 12, 0)
    line = "-rw-r--r--    1 0        0               6 Dec 01 21:14  leading space.csv"
    assert ftp_listing.parse_list_line(line, ListFields(), now)[0] == " leading space.csv"
    line = "-rw-r--r--   1 owner    group        7045 Sep 02  2021   three.csv"
    assert ftp_listing.parse_list_line(line, ListFields(), now)[0] == "  three.csv"
    assert ftp_listing.parse_list_line("-rw-r--r-- 1 a b 6 Dec 01 21:14 ", ListFields(), now) is None


def test_mlsd_line_needs_facts_so_a_name_fragment_is_not_an_entry():
    assert ftp_listing.parse_mlsd_line("type=file;size=6;   two.csv")[0] == "  two.csv"
    assert ftp_listing.parse_mlsd_line("line.csv") is None
    assert ftp_listing.parse_mlsd_line("rest of name.csv") is None


def test_lines_split_on_crlf_only():
    data = b"a\r\nnew\nline.csv\r\ncr\rx\r\n"
    assert ftp_listing.split_lines(data) == [b"a", b"new\nline.csv", b"cr\rx"]
    assert ftp_listing.split_lines(b"a\nb\n") == [b"a", b"b"]


def test_same_mtime_tolerates_coarser_forms_only():
    assert ftp_listing.same_mtime("2023-03-23T00:41", "2023-03-23")
    assert ftp_listing.same_mtime("2023-03-23", "2023-03-23T00:41")
    assert ftp_listing.same_mtime("2023-03-23T00:41:12Z", "2023-03-23T00:41")
    assert not ftp_listing.same_mtime("2023-03-23T00:41", "2023-03-24")
    assert not ftp_listing.same_mtime("2023-03-23T00:41", "2023-03-23T00:42")
    assert not ftp_listing.same_mtime("2023-03-23T00:41:12Z", "2023-03-23T00:41:13Z")


def test_mtime_bounds():
    assert ftp_listing.mtime_bounds("2023-03-23T00:41:12Z") == (1679532072, 1679532072 + 1 - 1e-3)
    start, end = ftp_listing.mtime_bounds("2023-03-23T00:41")
    assert (start, round(end - start)) == (1679532060, 60)
    assert round(ftp_listing.mtime_bounds("2023-03-23")[1] - ftp_listing.mtime_bounds("2023-03-23")[0]) == 86400
    assert ftp_listing.mtime_bounds("Tue 4pm") is None


# ------------------------------------------------------------------ the walk


class FakeFtp:
    """Answers MLSD like a server whose folder "loop" is a link to its own parent, listed as
    a plain folder (so a naive walk never ends), and 550 for a vanished folder."""

    def retrbinary(self, command, callback, blocksize=8192):
        path = command.split(" ", 1)[1]
        if path.endswith("/gone"):
            raise ftp_listing.ftplib.error_perm("550 No such file or directory.")
        callback(b"type=file;size=1;modify=20240101000000; f.csv\r\n"
                 b"type=dir;modify=20240101000000; loop\r\n"
                 b"type=dir;modify=20240101000000; gone\r\n")


def test_walk_is_bounded_and_keeps_vanished_folders_out_of_the_deletions():
    cfg = ftp_config.parse_config("host: h\n", ENV)
    result = ftp_listing.TreeLister(cfg).list_tree(FakeFtp())
    depth = ftp_listing.MAX_DEPTH
    assert len(result.files) == depth + 1  # "/f.csv", "/loop/f.csv", ... down to the bound
    assert "/" + "loop/" * depth + "f.csv" in result.files
    assert "/gone" in result.unreadable and any(p.endswith("/loop") for p in result.unreadable)


# ------------------------------------------------------------------ names end to end

NAMES_OK = ["/ leading space.csv", "/  two leading.csv", "/trailing .csv", "/in/ sub/ x.csv"]


def write_awkward_names(root, bad_utf8=False):
    for name in NAMES_OK:
        write_file(root / name[1:], "1,a,1\n")
    write_file(root / "new\nline.csv", "1,a,1\n")
    write_file(root / "cr\rname.csv", "1,a,1\n")
    if not bad_utf8:  # pyftpdlib lists such a name with "?" in place of the byte: not testable there
        return
    fd = os.open(os.path.join(os.fsencode(root), b"bad \xff.csv"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"1,a,1\n")
    os.close(fd)


@pytest.mark.parametrize("handler", ["mlsd", "list"])
def test_names_are_kept_exactly_and_impossible_ones_warned_once(handler, ftp_root, ftp_credentials, event_servers,
                                                               watch_config, caplog):
    caplog.set_level(logging.INFO, logger="ftp_event_server")
    server = FtpServerThread(ftp_root, *ftp_credentials,
                             handler=NoMlsdHandler if handler == "list" else ftp_listing_handler()).start()
    try:
        srv = event_servers.start()
        cfg = watch_config(server.port)
        stream = event_servers.stream(srv, cfg)
        wait_baseline(cfg)
        write_awkward_names(ftp_root)
        events = stream.take(len(NAMES_OK))
        assert sorted(e["name"] for e in events) == sorted(NAMES_OK)
        assert stream.quiet_for(0.6) == []  # six more polls
    finally:
        server.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("line break or NUL" in w and "new\\nline.csv" in w for w in warnings) == 1
    assert sum("line break or NUL" in w and "cr\\rname.csv" in w for w in warnings) == 1


def ftp_listing_handler():
    from pyftpdlib.handlers import FTPHandler
    return FTPHandler


def test_vsftpd_names_and_an_unreadable_folder_warned_once(vsftpd, event_servers, watch_config, caplog):
    caplog.set_level(logging.INFO, logger="ftp_event_server")
    srv = event_servers.start(env={"FTP_PASSWORD": "x"})
    locked = vsftpd.data / "locked"
    write_file(locked / "inside.csv", "1,a,1\n")
    cfg = watch_config(vsftpd.port, user="anonymous", dir="/data")
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    write_awkward_names(vsftpd.data, bad_utf8=True)
    os.chmod(locked, 0)
    events = stream.take(len(NAMES_OK))
    assert sorted(e["name"] for e in events) == sorted("/data" + n for n in NAMES_OK)
    assert stream.quiet_for(0.6) == []
    os.chmod(locked, 0o755)
    stream.quiet_for(0.3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("cannot list folder '/data/locked'" in w for w in warnings) == 1
    assert sum("line break or NUL" in w for w in warnings) == 2
    assert sum("not valid utf-8" in w for w in warnings) == 1
    assert "folder '/data/locked' can be listed again" in caplog.text


# ------------------------------------------------------------------ MDTM/SIZE where LIST has minutes


def test_vsftpd_same_size_rewrite_within_the_minute_is_reported(vsftpd, event_servers, watch_config):
    srv = event_servers.start(env={"FTP_PASSWORD": "x"})
    cfg = watch_config(vsftpd.port, user="anonymous", dir="/data")
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    path = write_file(vsftpd.data / "a.csv", "1,a,1\n")
    [first] = stream.take(1)
    t1 = int(os.stat(path).st_mtime)
    # other seconds of the same minute (LIST shows the same "HH:MM" for all three versions)
    t2 = t1 + 1 if t1 % 60 < 59 else t1 - 1
    write_file(path, "2,b,2\n")  # same size
    os.utime(path, (t2, t2))
    [second] = stream.take(1)
    assert (second["name"], second["event"], second["size"]) == ("/data/a.csv", "mod", 6)
    assert second["mtime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t2))

    # deleted and uploaded again with the same size, within the same minute
    path.unlink()
    write_file(path, "3,c,3\n")
    os.utime(path, (t1, t1))
    [third] = stream.take(1)
    assert (third["name"], third["size"]) == ("/data/a.csv", 6)
    assert third["mtime"] == first["mtime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t1))
    assert stream.quiet_for(0.5) == []


def test_vsftpd_rewrite_with_a_time_in_the_future_is_reported(vsftpd, event_servers, watch_config):
    """vsftpd lists a future time as a date only; without MDTM it looks like the same day."""
    srv = event_servers.start(env={"FTP_PASSWORD": "x"})
    cfg = watch_config(vsftpd.port, user="anonymous", dir="/data")
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    path = write_file(vsftpd.data / "f.csv", "1,a,1\n")
    stream.take(1)
    now = time.time()
    end_of_day = (now // 86400 + 1) * 86400
    future = now + max(90, min(1800, end_of_day - now - 30))  # later today (UTC) where possible
    write_file(path, "2,b,2\n")
    os.utime(path, (future, future))
    [event] = stream.take(1)
    assert (event["event"], event["size"]) == ("mod", 6)
    assert event["mtime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(future)))


def test_mdtm_only_for_recent_files(fast_tmp, ftp_credentials):
    root = fast_tmp / "root"
    root.mkdir()
    old = time.time() - 86400 * 3
    for i in range(2000):
        p = root / f"old {i}.csv"
        p.write_bytes(b"x")
        os.utime(p, (old, old))
    for i in range(3):
        (root / f"new {i}.csv").write_bytes(b"x")
    server = FtpServerThread(root, *ftp_credentials, handler=NoMlsdHandler).start()
    try:
        user, password = ftp_credentials
        cfg = ftp_config.parse_config(f"host: 127.0.0.1\nport: {server.port}\nminAgeSeconds: 0\n",
                                      {"FTP_USER": user, "FTP_PASSWORD": password})
        poller = ftp_listing.FtpPoller(cfg)
        listing = poller.poll()
        poller.close()
    finally:
        server.stop()
    assert len(listing.files) == 2003
    assert poller.confirmed == 3
    assert listing.files["/new 0.csv"].mtime.endswith("Z")
    assert len(listing.files["/old 0.csv"].mtime) == 16  # LIST's minute, no MDTM
