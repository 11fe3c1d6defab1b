"""ftp_changes.py: what is reported when: settled, minimum age, done marker, ignored names."""

from __future__ import annotations

import calendar
import os
import time

from ftp_changes import Change, ChangeTracker, Rules, ServerClock
from ftp_listing import FileInfo, Listing
from ftp_support import wait_baseline, write_file
from ftp_stream import backoff_delays


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


def test_backoff_grows_and_is_capped():
    delays = backoff_delays(1.0, 8.0)
    got = [next(delays) for _ in range(6)]
    assert all(0.8 * b <= d <= b for d, b in zip(got, [1, 2, 4, 8, 8, 8]))


# ------------------------------------------------------------------ minimum age, marker, ignored names


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def at(files: dict, when: float) -> Listing:
    return Listing(files={"/" + k: FileInfo(*v) for k, v in files.items()}, finished_at=when)


def test_min_age_by_the_files_time_or_by_what_we_saw():
    t0 = 1_700_000_000.0
    t = ChangeTracker(rules=Rules(min_age_seconds=30))
    # written 5 s before we first saw it: settled at t0+1 but only 6 s old
    assert t.observe(at({"a": (5, iso(t0 - 5))}, t0)) == ([], [])
    assert t.observe(at({"a": (5, iso(t0 - 5))}, t0 + 1)) == ([], [])
    assert t.observe(at({"a": (5, iso(t0 - 5))}, t0 + 20)) == ([], [])
    ready, _ = t.observe(at({"a": (5, iso(t0 - 5))}, t0 + 26))  # 31 s by its time
    assert [c.path for c in ready] == ["/a"]
    # a time in the future (clock or touch): released once we saw it unchanged for 30 s
    t = ChangeTracker(rules=Rules(min_age_seconds=30))
    future = iso(t0 + 3600)
    assert t.observe(at({"f": (1, future)}, t0)) == ([], [])
    assert t.observe(at({"f": (1, future)}, t0 + 29)) == ([], [])
    assert [c.path for c in t.observe(at({"f": (1, future)}, t0 + 30))[0]] == ["/f"]


def test_min_age_on_a_minute_precision_time_counts_from_the_end_of_the_minute():
    t0 = float(calendar.timegm((2024, 1, 1, 10, 0, 0)))
    t = ChangeTracker(rules=Rules(min_age_seconds=30))
    t.observe(at({"a": (1, "2024-01-01T10:00")}, t0 + 50))
    assert t.observe(at({"a": (1, "2024-01-01T10:00")}, t0 + 51)) == ([], [])  # could be 10:00:59
    assert t.observe(at({"a": (1, "2024-01-01T10:00")}, t0 + 89))[0] != []


def test_server_clock_offset_from_files_seen_changing():
    c = ServerClock()
    assert c.offset(1000.0) == 0.0
    for i in range(5):  # the server is 300 s ahead: files written just before our listings
        c.observe(iso(1000 + i + 300 - 0.2), 1000 + i)
    assert 299 <= c.offset(1005.0) <= 300
    c.observe(iso(1000 + 86400 * 30), 1006)  # one file touched far into the future moves nothing
    assert 299 <= c.offset(1006.0) <= 300


def test_done_marker_and_ignored_names():
    rules = Rules(done_file="{name}.done", ignore=("*.part", "*.tmp", ".*"))
    t = ChangeTracker(rules=rules)
    files = {"data.csv": (5, "t"), "up.csv.part": (3, "t"), ".hidden": (1, "t"), "x.tmp": (1, "t")}
    t.observe(at(files, 1.0))
    assert t.observe(at(files, 2.0)) == ([], [])  # no marker yet
    files["data.csv.done"] = (0, "t")
    t.observe(at(files, 3.0))
    ready, _ = t.observe(at(files, 4.0))
    assert ready == [Change("/data.csv", 5, "t", "new")]  # the marker itself is never reported
    assert Rules(done_file="{stem}.ok").marker_for("/in/a.b.csv") == "/in/a.b.ok"
    assert Rules(done_file="{stem}.ok").marker_for("/in/.rc") == "/in/.rc.ok"


# ------------------------------------------------------------------ end to end


def test_upload_that_stalls_longer_than_the_settle_time_is_not_reported_half_done(
        ftp_server, ftp_root, event_servers, watch_config):
    srv = event_servers.start()
    cfg = watch_config(ftp_server.port, pollSeconds=0.1, minAgeSeconds=1.0)
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    path = ftp_root / "stalled.csv"
    with open(path, "wb") as fh:
        fh.write(b"1,a,1\n" * 100)
        fh.flush()
        assert stream.quiet_for(0.8) == []  # the upload stalls for 8 poll intervals
        fh.write(b"2,b,2\n" * 100)
    done = time.monotonic()
    [(received, _, event)] = stream.take_raw(1)
    assert (event["name"], event["size"]) == ("/stalled.csv", 1200)
    assert received - done >= 0.5  # its time had to be 1 s old (whole seconds on the wire)
    assert stream.quiet_for(0.5) == []


def test_done_marker_end_to_end(ftp_server, ftp_root, event_servers, watch_config):
    srv = event_servers.start()
    cfg = watch_config(ftp_server.port, doneFile="{name}.done")
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    write_file(ftp_root / "in" / "a.csv", "1,a,1\n")
    assert stream.quiet_for(0.5) == []
    write_file(ftp_root / "in" / "a.csv.done", "")
    assert [e["name"] for e in stream.take(1)] == ["/in/a.csv"]
    assert stream.quiet_for(0.5) == []


def test_temporary_names_are_not_reported_the_renamed_file_is(ftp_server, ftp_root, event_servers, watch_config):
    srv = event_servers.start()
    cfg = watch_config(ftp_server.port)
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    write_file(ftp_root / "a.csv.part", "1,a,1\n")
    write_file(ftp_root / "b.tmp", "1,a,1\n")
    write_file(ftp_root / ".c.csv", "1,a,1\n")
    assert stream.quiet_for(0.6) == []
    os.rename(ftp_root / "a.csv.part", ftp_root / "a.csv")
    assert [e["name"] for e in stream.take(1)] == ["/a.csv"]
    assert stream.quiet_for(0.5) == []
