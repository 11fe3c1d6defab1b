"""The stream loop (ftp_stream.py) end to end: at-least-once delivery across SIGKILLs of the
receiving client and of the event server, and one receiver per event source (the newest)."""

from __future__ import annotations

import logging
import threading
import time

import grpc
import pytest
from pyftpdlib.handlers import FTPHandler

from ftp_support import (
    WAIT, ClientProcess, FtpServerThread, ServerProcess, wait_baseline, wait_confirmed, write_file,
)

BURST = 3000


def make_burst(folder, count=BURST):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f {i:04d}.csv").write_bytes(b"1,a,1\n")
    return {f"/burst/f {i:04d}.csv" for i in range(count)}


def outcome(expected: set[str], *received: list[str]) -> tuple[int, int]:
    """(lost, duplicated) over everything the receivers got."""
    got = [n for r in received for n in r]
    assert set(got) <= expected, sorted(set(got) - expected)[:5]  # names exact, nothing invented
    return len(expected - set(got)), len(got) - len(set(got))


def collect_until(stream, have: set[str], expected: set[str], timeout: float = 30) -> list[str]:
    """Events of ``stream`` until ``have`` plus them cover ``expected``, then a quiet moment."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not expected <= (have | set(got)) and time.monotonic() < deadline:
        got += [e["name"] for e in stream.quiet_for(0.2)]
    got += [e["name"] for e in stream.quiet_for(0.3)]
    return got


@pytest.mark.parametrize("run", [1, 2])
def test_receiving_client_killed_mid_burst_loses_nothing(run, fast_tmp, ftp_credentials, event_servers,
                                                         watch_config, record_property):
    ftp = FtpServerThread(fast_tmp / "root", *ftp_credentials)
    (fast_tmp / "root").mkdir()
    ftp.start()
    try:
        srv = event_servers.start()
        cfg = watch_config(ftp.port, confirmSeconds=2, stateFile=str(fast_tmp / "state" / "ftp.json"))
        client = ClientProcess(srv.port, cfg, fast_tmp / "a.jsonl", delay=0.0005)
        wait_baseline(cfg)
        expected = make_burst(fast_tmp / "root" / "burst")
        client.wait_count(BURST // 5)
        client.kill()  # SIGKILL mid-burst: whatever sat in the buffers never reached it
        first = client.names()
        assert len(first) < BURST, "the burst was over before the kill"
        second = event_servers.stream(srv, cfg)
        rest = collect_until(second, set(first), expected)
        lost, duplicated = outcome(expected, first, rest)
        record_property("lost", lost)
        record_property("duplicated", duplicated)
        print(f"client kill run {run}: first client got {len(first)}, lost {lost}, duplicated {duplicated}")
        assert lost == 0
    finally:
        ftp.stop()


@pytest.mark.parametrize("run", [1, 2])
def test_event_server_killed_mid_burst_loses_nothing(run, fast_tmp, ftp_credentials, server_env, event_servers,
                                                     watch_config, record_property):
    ftp = FtpServerThread(fast_tmp / "root", *ftp_credentials)
    (fast_tmp / "root").mkdir()
    ftp.start()
    servers = []
    try:
        cfg = watch_config(ftp.port, confirmSeconds=2, stateFile=str(fast_tmp / "state" / "ftp.json"))
        servers.append(ServerProcess(dict(server_env), fast_tmp / "server1.log"))
        from ftp_support import EventStream
        stream = EventStream(servers[0].port, cfg, "ftp")
        wait_baseline(cfg)
        expected = make_burst(fast_tmp / "root" / "burst")
        first = [e["name"] for e in stream.take(BURST // 5, timeout=WAIT)]
        servers[0].kill()  # SIGKILL mid-burst
        first += [e["name"] for e in stream.quiet_for(0.3)]
        stream.close()
        assert len(first) < BURST, "the burst was over before the kill"
        servers.append(ServerProcess(dict(server_env), fast_tmp / "server2.log"))
        stream2 = EventStream(servers[1].port, cfg, "ftp")
        rest = collect_until(stream2, set(first), expected)
        stream2.close()
        lost, duplicated = outcome(expected, first, rest)
        record_property("lost", lost)
        record_property("duplicated", duplicated)
        print(f"server kill run {run}: before the kill {len(first)}, lost {lost}, duplicated {duplicated}")
        assert lost == 0
    finally:
        for s in servers:
            s.kill()
        ftp.stop()


def test_unconfirmed_events_go_to_the_next_stream_confirmed_ones_do_not(ftp_server, ftp_root, event_servers,
                                                                      watch_config):
    cfg = watch_config(ftp_server.port, confirmSeconds=60)
    srv = event_servers.start()
    first = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    write_file(ftp_root / "a.csv", "1,a,1\n")
    assert [e["name"] for e in first.take(1)] == ["/a.csv"]
    first.close()  # ended long before confirmSeconds: a.csv may not have been processed
    srv.stop()

    srv2 = event_servers.start()  # a restart: pending comes from the state store
    cfg2 = dict(cfg, confirmSeconds=0.3)
    second = event_servers.stream(srv2, cfg2)
    [again] = second.take(1)
    assert (again["name"], again["event"]) == ("/a.csv", "new")
    wait_confirmed(cfg2)
    second.close()
    third = event_servers.stream(srv2, cfg2)
    assert third.quiet_for(0.5) == []  # confirmed: never again


def test_pending_event_of_a_deleted_file_is_dropped(ftp_server, ftp_root, event_servers, watch_config):
    cfg = watch_config(ftp_server.port, confirmSeconds=60)
    srv = event_servers.start()
    first = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    path = write_file(ftp_root / "a.csv", "1,a,1\n")
    assert [e["name"] for e in first.take(1)] == ["/a.csv"]
    first.close()
    path.unlink()
    write_file(ftp_root / "b.csv", "1,b,1\n")
    second = event_servers.stream(srv, cfg)
    assert [e["name"] for e in second.take(1)] == ["/b.csv"]
    assert second.quiet_for(0.6) == []


# ------------------------------------------------------------------ one receiver: the newest


def test_two_receivers_the_newest_wins_and_the_old_one_is_told_once(ftp_server, ftp_root, event_servers,
                                                                     watch_config, caplog):
    caplog.set_level(logging.INFO, logger="ftp_event_server")
    cfg = watch_config(ftp_server.port)
    srv = event_servers.start()
    old = event_servers.stream(srv, cfg)
    wait_baseline(cfg)
    new = event_servers.stream(srv, cfg)
    err = old.wait_error()
    assert err.code() == grpc.StatusCode.ABORTED
    assert "replaced by a newer stream for event 'ftp'" in err.details()
    assert "one receiver per event source, the newest" in err.details()
    write_file(ftp_root / "a.csv", "1,a,1\n")
    assert [e["name"] for e in new.take(1)] == ["/a.csv"]
    assert new.quiet_for(0.5) == [] and not new.done.is_set()  # the newest one stays
    replaced = [r for r in caplog.records if "replaces the one from peer" in r.getMessage()]
    assert len(replaced) == 1 and replaced[0].levelno == logging.WARNING


def test_receivers_taking_turns_are_named_in_one_error(ftp_server, event_servers, watch_config, caplog):
    """Two receivers that reconnect whenever they are replaced (Argo does) take turns for
    ever; the server says so once."""
    caplog.set_level(logging.INFO, logger="ftp_event_server")
    cfg = watch_config(ftp_server.port)
    srv = event_servers.start()
    for _ in range(5):
        event_servers.stream(srv, cfg)
        time.sleep(0.1)
    deadline = time.monotonic() + WAIT
    while "two receivers are taking turns" not in caplog.text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert caplog.text.count("two receivers are taking turns") == 1


class StuckHandler(FTPHandler):
    """MLSD never answers while ``stuck`` is set: a poll hangs until the FTP timeout."""

    stuck = threading.Event()
    hung = threading.Event()

    def ftp_MLSD(self, path):
        if StuckHandler.stuck.is_set():
            StuckHandler.hung.set()
            return None
        return super().ftp_MLSD(path)


def test_new_stream_while_the_old_poll_hangs_takes_over_at_once(ftp_root, ftp_credentials, event_servers,
                                                                watch_config, caplog):
    caplog.set_level(logging.INFO, logger="ftp_event_server")
    StuckHandler.stuck.clear()
    StuckHandler.hung.clear()
    server = FtpServerThread(ftp_root, *ftp_credentials, handler=StuckHandler).start()
    try:
        cfg = watch_config(server.port, timeoutSeconds=20)
        srv = event_servers.start()
        old = event_servers.stream(srv, cfg)
        wait_baseline(cfg)
        StuckHandler.stuck.set()
        assert StuckHandler.hung.wait(WAIT), "the poll did not hang"
        StuckHandler.stuck.clear()
        started = time.monotonic()
        new = event_servers.stream(srv, cfg)
        err = old.wait_error(timeout=WAIT)
        assert err.code() == grpc.StatusCode.ABORTED and "replaced by a newer stream" in err.details()
        write_file(ftp_root / "a.csv", "1,a,1\n")
        assert [e["name"] for e in new.take(1, timeout=WAIT)] == ["/a.csv"]
        assert time.monotonic() - started < 10  # not timeoutSeconds (20) + 5
        assert "replaces the one from peer" in caplog.text
    finally:
        server.stop()
