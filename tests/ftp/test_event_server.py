"""The FTP event server end to end: a real FTP server on loopback, the real gRPC server,
and a real channel reading the stream the way Argo's generic event source does."""

from __future__ import annotations

import ftplib
import io
import logging
import os
import re
import signal
import subprocess
import sys
import time

import grpc
import pytest
import yaml
from pyftpdlib.handlers import FTPHandler

import ftp_watch
from ftp_support import (
    SERVER_DIR, WAIT, EventStream, FtpServerThread, NoMlsdHandler, wait_baseline, wait_confirmed, write_file,
)


def names(events):
    return sorted(e["name"] for e in events)


def test_new_file_is_reported_once_with_its_details(ftp_server, ftp_root, event_servers, watch_config):
    srv = event_servers.start()
    cfg = watch_config(ftp_server.port)
    stream = event_servers.stream(srv, cfg, name="my-ftp-event")
    wait_baseline(cfg)
    write_file(ftp_root / "test.csv", "1,aaa,80\n2,bbb,90\n")

    [(_, event_name, payload)] = stream.take_raw(1)
    assert event_name == "my-ftp-event"  # Event.name is the requested event name
    assert payload["name"] == "/test.csv"
    assert payload["event"] == "new"
    assert payload["size"] == len("1,aaa,80\n2,bbb,90\n")
    st = os.stat(ftp_root / "test.csv")
    assert payload["mtime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))
    assert set(payload) == {"name", "size", "mtime", "event"}
    assert stream.quiet_for(0.6) == []


def test_files_present_at_first_start_are_the_baseline(ftp_server, ftp_root, event_servers, watch_config):
    write_file(ftp_root / "old.csv", "1,a,1\n")
    srv = event_servers.start()
    cfg = watch_config(ftp_server.port)
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    assert stream.quiet_for(0.6) == []
    write_file(ftp_root / "fresh.csv", "1,a,1\n")
    assert names(stream.take(1)) == ["/fresh.csv"]


def test_report_existing_reports_the_files_already_there(ftp_server, ftp_root, event_servers, watch_config):
    write_file(ftp_root / "old.csv", "1,a,1\n")
    srv = event_servers.start()
    stream = event_servers.stream(srv, watch_config(ftp_server.port, reportExisting=True))
    [event] = stream.take(1)
    assert (event["name"], event["event"]) == ("/old.csv", "new")


def test_modified_file_is_reported_as_mod(ftp_server, ftp_root, event_servers, watch_config):
    srv = event_servers.start()
    cfg = watch_config(ftp_server.port)
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    path = write_file(ftp_root / "data.csv", "1,a,1\n")
    assert stream.take(1)[0]["event"] == "new"

    with open(path, "a") as fh:
        fh.write("2,b,2\n")
    [event] = stream.take(1)
    assert (event["name"], event["event"], event["size"]) == ("/data.csv", "mod", 12)

    # same size, new modification time: still a modification
    os.utime(path, (time.time() + 120, time.time() + 120))
    [event] = stream.take(1)
    assert (event["event"], event["size"]) == ("mod", 12)
    assert stream.quiet_for(0.5) == []


def test_slow_upload_is_reported_once_after_it_completes(ftp_server, ftp_root, event_servers, watch_config, ftp_credentials):
    """A file growing over several polls (uploaded in chunks through FTP) gives one event,
    with the final size, after the upload finished."""
    srv = event_servers.start()
    cfg = watch_config(ftp_server.port, pollSeconds=0.3)
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)

    # chunks larger than the server's 8 KiB write buffer: each one reaches the disk at once
    chunk = b"1,some name,99\n" * 1100
    chunks = 60

    class SlowReader(io.RawIOBase):
        def __init__(self):
            self.sent = 0

        def readable(self):
            return True

        def readinto(self, buf):
            if self.sent >= chunks:
                return 0
            if self.sent:
                time.sleep(0.025)
            buf[: len(chunk)] = chunk
            self.sent += 1
            return len(chunk)

    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", ftp_server.port, timeout=WAIT)
    ftp.login(*ftp_credentials)
    started = time.monotonic()
    ftp.storbinary("STOR big upload.csv", SlowReader(), blocksize=len(chunk))
    completed = time.monotonic()
    ftp.quit()
    assert completed - started > 1.0, "the upload must span several polls to mean anything"

    [(received, _, event)] = stream.take_raw(1)
    assert event["name"] == "/big upload.csv"
    assert event["size"] == len(chunk) * chunks
    assert received >= completed
    assert stream.quiet_for(0.8) == []


@pytest.mark.parametrize("handler", ["mlsd", "list-fallback"])
def test_names_with_spaces_non_ascii_and_nested_folders(handler, ftp_root, ftp_credentials, event_servers, watch_config, caplog):
    caplog.set_level(logging.INFO, logger="ftp_event_server")
    server = FtpServerThread(ftp_root, *ftp_credentials,
                             handler=NoMlsdHandler if handler == "list-fallback" else FTPHandler).start()
    try:
        srv = event_servers.start()
        cfg = watch_config(server.port)
        stream = event_servers.stream(srv, cfg)
        wait_baseline(cfg)
        wanted = [
            "/sales report  2023 (v2).csv",          # two spaces inside
            "/데이터 파일.csv",                        # non-ASCII with a space
            "/in/2023/04/deep file.csv",             # nested folders
            "/in/space dir/ümlaut ñ.csv",            # a folder with a space
            "/trailing space .csv",
        ]
        for name in wanted:
            write_file(ftp_root / name.lstrip("/"), "1,x,1\n")
        events = stream.take(len(wanted))
        assert names(events) == sorted(wanted)
        assert all(e["event"] == "new" and e["size"] == 6 for e in events)
        assert stream.quiet_for(0.5) == []
    finally:
        server.stop()
    fell_back = "does not support MLSD" in caplog.text
    assert fell_back == (handler == "list-fallback")


def test_list_fallback_confirms_recent_times_to_the_second(ftp_server_no_mlsd, ftp_root, event_servers, watch_config):
    """LIST gives minutes; a recent file's time comes from MDTM, to the second."""
    srv = event_servers.start()
    cfg = watch_config(ftp_server_no_mlsd.port)
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    path = write_file(ftp_root / "a.csv", "1,a,1\n")
    [event] = stream.take(1)
    st = os.stat(path)
    assert event["mtime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))


def test_listing_mlsd_without_server_support_keeps_retrying_and_says_why(
        ftp_server_no_mlsd, ftp_root, event_servers, watch_config, caplog):
    caplog.set_level(logging.INFO, logger="ftp_event_server")
    srv = event_servers.start()
    stream = event_servers.stream(srv, watch_config(ftp_server_no_mlsd.port, listing="mlsd"))
    write_file(ftp_root / "a.csv", "1,a,1\n")
    assert stream.quiet_for(0.6) == []
    assert not stream.done.is_set()
    assert "server refused MLSD" in caplog.text


def test_ten_thousand_files_one_poll_each_reported_once(fast_tmp, ftp_credentials, event_servers, watch_config):
    total = 10_000
    folder = fast_tmp / "root" / "bulk"
    folder.mkdir(parents=True)
    for i in range(total):
        (folder / f"file {i:05d}.csv").write_bytes(b"1,a,1\n")
    ftp_server = FtpServerThread(fast_tmp / "root", *ftp_credentials).start()
    # reportExisting: the files are there before the first poll, so nothing races the
    # listing while they are being created (this test is about volume, not timing)
    cfg = watch_config(ftp_server.port, pollSeconds=0.5, reportExisting=True,
                       stateFile=str(fast_tmp / "state" / "ftp.json"))

    # one listing of the tree sees every file
    user, password = ftp_credentials
    parsed = ftp_watch.parse_config(yaml.safe_dump(cfg), {"FTP_USER": user, "FTP_PASSWORD": password})
    poller = ftp_watch.FtpPoller(parsed)
    try:
        listing = poller.poll()
    finally:
        poller.close()
    assert len(listing.files) == total

    srv = event_servers.start()
    stream = event_servers.stream(srv, cfg)
    events = stream.take(total, timeout=60)
    got = [e["name"] for e in events]
    assert len(set(got)) == total
    assert set(got) == {f"/bulk/file {i:05d}.csv" for i in range(total)}
    assert stream.quiet_for(1.2) == []
    stream.close()
    ftp_server.stop()


def test_restart_loses_nothing_and_repeats_nothing(ftp_server, ftp_root, event_servers, watch_config):
    cfg = watch_config(ftp_server.port)
    srv = event_servers.start()
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    write_file(ftp_root / "a.csv", "1,a,1\n")
    write_file(ftp_root / "keep.csv", "1,a,1\n")
    assert names(stream.take(2)) == ["/a.csv", "/keep.csv"]
    wait_confirmed(cfg)  # a stream ended before that gets them again (see test_ftp_stream.py)
    stream.close()
    srv.stop()

    # while the server is down: one new file, one modified, one deleted and re-created
    write_file(ftp_root / "b.csv", "1,b,1\n")
    with open(ftp_root / "a.csv", "a") as fh:
        fh.write("2,a,2\n")

    srv2 = event_servers.start()
    stream2 = event_servers.stream(srv2, cfg)
    events = stream2.take(2)
    assert sorted((e["name"], e["event"]) for e in events) == [("/a.csv", "mod"), ("/b.csv", "new")]
    assert stream2.quiet_for(0.6) == []

    # a restart with no change in between reports nothing
    wait_confirmed(cfg)
    stream2.close()
    srv2.stop()
    srv3 = event_servers.start()
    stream3 = event_servers.stream(srv3, cfg)
    assert stream3.quiet_for(0.8) == []
    write_file(ftp_root / "c.csv", "1,c,1\n")
    assert names(stream3.take(1)) == ["/c.csv"]


def test_a_new_stream_on_the_same_state_takes_over_from_the_old_one(ftp_server, ftp_root, event_servers, watch_config):
    """Argo reconnects after a stream error; if the old call is still alive on our side it is
    ended with ABORTED, and the new one carries on without repeating what was confirmed."""
    cfg = watch_config(ftp_server.port)
    srv = event_servers.start()
    first = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    write_file(ftp_root / "a.csv", "1,a,1\n")
    assert names(first.take(1)) == ["/a.csv"]
    wait_confirmed(cfg)

    second = event_servers.stream(srv, cfg)
    err = first.wait_error()
    assert err.code() == grpc.StatusCode.ABORTED and "replaced by a newer stream" in err.details()
    write_file(ftp_root / "b.csv", "1,b,1\n")
    assert names(second.take(1)) == ["/b.csv"]
    assert second.quiet_for(0.4) == []


def test_ftp_server_down_and_back(ftp_server, ftp_root, event_servers, watch_config, caplog):
    caplog.set_level(logging.INFO, logger="ftp_event_server")
    srv = event_servers.start()
    cfg = watch_config(ftp_server.port)
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    write_file(ftp_root / "before.csv", "1,a,1\n")
    assert names(stream.take(1)) == ["/before.csv"]

    ftp_server.stop()
    deadline = time.monotonic() + WAIT
    while caplog.text.count("reconnecting in") < 3:
        assert time.monotonic() < deadline, "no reconnect attempts were logged"
        time.sleep(0.05)
    write_file(ftp_root / "while-down.csv", "1,a,1\n")
    ftp_server.start()  # same port

    assert names(stream.take(1)) == ["/while-down.csv"]
    assert not stream.done.is_set() and stream.error is None  # the stream survived
    assert "reachable again" in caplog.text
    write_file(ftp_root / "after.csv", "1,a,1\n")
    assert names(stream.take(1)) == ["/after.csv"]


def test_wrong_password_is_retried_and_logged_without_the_password(ftp_server, event_servers, watch_config, ftp_credentials, caplog):
    caplog.set_level(logging.DEBUG, logger="ftp_event_server")
    user, _ = ftp_credentials
    wrong = "wrong-" + os.urandom(6).hex()
    srv = event_servers.start(env={"FTP_USER": user, "FTP_PASSWORD": wrong})
    stream = event_servers.stream(srv, watch_config(ftp_server.port))
    deadline = time.monotonic() + WAIT
    while "530" not in caplog.text:
        assert time.monotonic() < deadline, "the refused login was not logged"
        time.sleep(0.05)
    assert not stream.done.is_set()
    assert wrong not in caplog.text


INVALID = [
    ("host: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "must be a mapping"),
    ({"port": 21}, "field 'host' is required"),
    ({"host": "h", "port": "abc"}, "field 'port' must be an integer"),
    ({"host": "h", "pasive": True}, "unknown field 'pasive'"),
    ({"host": "h", "password": "hunter2-in-clear"}, "clear-text password is not accepted"),
    ({"host": "h", "passwordEnv": "NO_SUCH_VAR_FOR_TEST"}, "'NO_SUCH_VAR_FOR_TEST' is not set"),
    ({"host": "h", "listFields": {"size": 4, "mtime": [-4, -3, -2], "name": 8}}, "negative positions break"),
    ({"host": "h", "pollSeconds": 0}, "field 'pollSeconds' must be a positive number"),
    ({"host": "h", "szfield": 4, "dtfields": [-4, -3, -2]}, "listFields.size"),
    ({"host": "h", "listing": "nlst"}, "field 'listing' must be one of"),
    ({"host": "h", "passive": "yes"}, "field 'passive' must be true or false"),
]


@pytest.mark.parametrize("config,message", INVALID, ids=[m for _, m in INVALID])
def test_invalid_config_ends_the_stream_with_invalid_argument(config, message, event_servers):
    srv = event_servers.start()
    stream = event_servers.stream(srv, config)
    err = stream.wait_error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.details()
    assert "hunter2-in-clear" not in err.details()


def test_invalid_config_lists_every_problem(event_servers):
    srv = event_servers.start()
    err = event_servers.stream(srv, {"port": 0, "recursive": "no", "bogus": 1}).wait_error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    for part in ("field 'host' is required", "field 'port'", "field 'recursive'", "unknown field 'bogus'"):
        assert part in err.details()


def test_vsftpd_list_fallback_and_walk(vsftpd, event_servers, watch_config):
    """Debian's vsftpd: no MLSD, LIST only (and LIST -R would not recurse): we walk ourselves."""
    password = os.urandom(8).hex()
    srv = event_servers.start(env={"FTP_PASSWORD": password})
    cfg = watch_config(vsftpd.port, user="anonymous", dir="/data")
    stream = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    write_file(vsftpd.data / "top level.csv", "1,a,1\n")
    write_file(vsftpd.data / "20230414" / "파일 1.csv", "1,a,1\n2,b,2\n")
    events = stream.take(2)
    assert sorted((e["name"], e["size"], e["event"]) for e in events) == [
        ("/data/20230414/파일 1.csv", 12, "new"),
        ("/data/top level.csv", 6, "new"),
    ]
    for e in events:  # LIST gives minutes; MDTM the second of these recent files
        assert len(e["mtime"]) == 20 and e["mtime"][10] == "T" and e["mtime"].endswith("Z")
    with open(vsftpd.data / "top level.csv", "a") as fh:
        fh.write("2,b,2\n")
    [event] = stream.take(1)
    assert (event["name"], event["event"], event["size"]) == ("/data/top level.csv", "mod", 12)
    assert stream.quiet_for(0.5) == []


def test_the_entry_script_serves_and_stops_on_sigterm(ftp_server, ftp_root, ftp_credentials, tmp_path):
    """`python /code/event_server.py` as in the pod: files imported flat from the script's
    folder, settings from the environment, SIGTERM ends it cleanly."""
    user, password = ftp_credentials
    env = {"PATH": os.environ.get("PATH", ""), "FTP_USER": user, "FTP_PASSWORD": password,
           "FTP_STATE_DIR": str(tmp_path / "state"), "FTP_EVENT_SERVER_LISTEN": "127.0.0.1",
           "FTP_EVENT_SERVER_PORT": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(SERVER_DIR / "event_server.py")], env=env,
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + WAIT
        port = None
        while port is None:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            line = proc.stdout.readline()
            lines.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        stream = EventStream(port, {"host": "127.0.0.1", "port": ftp_server.port, "pollSeconds": 0.1,
                                    "minAgeSeconds": 0}, "ftp")
        deadline = time.monotonic() + WAIT
        while not list((tmp_path / "state").glob("ftp-*.json")):
            assert time.monotonic() < deadline, "no state written under FTP_STATE_DIR"
            time.sleep(0.02)
        write_file(ftp_root / "via script.csv", "1,a,1\n")
        assert names(stream.take(1)) == ["/via script.csv"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
        stream.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    output = "".join(lines) + proc.stdout.read()
    assert "stopping" in output
    assert password not in output
