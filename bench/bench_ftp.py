"""FTP event server vs the tutorial's server logic, side by side, on the same FTP trees.

    python bench/bench_ftp.py [--files 10000] [--polls 5] [--poll-seconds 0.5] [--uploads 6]
                              [--burst 3000] [--kill-runs 10] [--only kill]

What is measured (FTP servers run on 127.0.0.1 in their own processes, so the CPU column is the
watcher's own):
  1. one poll over a tree of --files files: wall time and CPU time of the watching process
     (median of --polls polls on a kept connection). Ours with MLSD (pyftpdlib) and with LIST
     (pyftpdlib without MLSD, and Debian's vsftpd when installed and run as root), a nested tree
     (100 folders) walked by ours; the tutorial's logic (one LIST of one flat folder, whitespace
     split) on the same flat folder.
  2. latency from "upload complete" (STOR returned) to the event, for --uploads uploads at random
     moments, poll interval --poll-seconds; ours end to end through the real gRPC stream.
  3. behaviour: events for one file uploaded slowly over ~3 poll intervals, and whether names with
     spaces come out right.
  4. at-least-once delivery: a burst of --burst new files, and SIGKILL of the receiving client (a
     gRPC client process) or of the event server (its own process, restarted on the same state) in
     the middle of it; --kill-runs runs each, lost and duplicated events per run.

The tutorial's logic is re-implemented here from its description (LIST, fields split on whitespace,
name = last field, size = field 4, time = fields -4..-2; report on first sight), not copied.
"""

from __future__ import annotations

import argparse
import ftplib
import io
import json
import multiprocessing as mp
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "code" / "ftp_event_server"), str(ROOT / "code")]

import ftp_watch  # noqa: E402

USER = "bench"
PASSWORD = secrets.token_urlsafe(12)


# ----------------------------------------------------------------------------- FTP servers


def _pyftpd_main(root: str, user: str, password: str, no_mlsd: bool, conn) -> None:
    import logging

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    # configured logging keeps pyftpdlib from installing its own INFO handler
    logging.basicConfig(level=logging.WARNING)
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    attrs = {"authorizer": authorizer}
    if no_mlsd:
        attrs["proto_cmds"] = {k: v for k, v in FTPHandler.proto_cmds.items() if k not in ("MLSD", "MLST")}
    handler = type("BenchHandler", (FTPHandler,), attrs)
    server = FTPServer(("127.0.0.1", 0), handler)
    conn.send(server.address[1])
    server.serve_forever(timeout=0.5, handle_exit=False)


class PyFtpd:
    def __init__(self, root: Path, no_mlsd: bool = False):
        parent, child = mp.Pipe()
        self.proc = mp.Process(target=_pyftpd_main, args=(str(root), USER, PASSWORD, no_mlsd, child), daemon=True)
        self.proc.start()
        if not parent.poll(30):
            raise RuntimeError("pyftpdlib did not start")
        self.port = parent.recv()
        self.user, self.password = USER, PASSWORD

    def stop(self):
        self.proc.terminate()
        self.proc.join(10)


class Vsftpd:
    """Debian's vsftpd, anonymous read-only, over ``root/data``."""

    def __init__(self, base: Path):
        binary = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
        self.root = base / "anon"
        self.data = self.root / "data"
        (base / "empty").mkdir(parents=True)
        self.data.mkdir(parents=True)
        os.chmod(self.root, 0o555)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = base / "vsftpd.conf"
        conf.write_text("\n".join([
            "listen=YES", "listen_ipv6=NO", "listen_address=127.0.0.1", f"listen_port={self.port}",
            "background=NO", "anonymous_enable=YES", "no_anon_password=YES", f"anon_root={self.root}",
            "local_enable=NO", "write_enable=NO", "seccomp_sandbox=NO", f"secure_chroot_dir={base / 'empty'}",
            f"vsftpd_log_file={base / 'log'}", "xferlog_enable=NO", "use_localtime=NO"]) + "\n")
        self.proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("vsftpd did not start")
                time.sleep(0.05)
        self.user, self.password = "anonymous", "bench"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def vsftpd_usable() -> bool:
    return (shutil.which("vsftpd") or os.path.exists("/usr/sbin/vsftpd")) and os.geteuid() == 0


def login(port: int, user: str, password: str) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=30)
    ftp.connect("127.0.0.1", port)
    ftp.login(user, password)
    return ftp


# ----------------------------------------------------------------------------- the tutorial's logic


def tutorial_append_file(files: dict, line: str, szfield: int = 4) -> None:
    fields = line.split()
    if len(fields) >= 9:
        files[fields[-1]] = {"sz": fields[szfield], "dt": f"{fields[-4]} {fields[-3]} {fields[-2]}"}


def tutorial_poll(ftp: ftplib.FTP) -> dict:
    files: dict = {}
    ftp.retrlines("LIST", lambda line: tutorial_append_file(files, line))
    return files


class TutorialWatcher(threading.Thread):
    """Polls every interval; reports a file the first time it is new or different."""

    def __init__(self, port, user, password, directory, interval, on_event):
        super().__init__(daemon=True)
        self.args = (port, user, password)
        self.directory = directory
        self.interval, self.on_event = interval, on_event
        self.stop_event = threading.Event()

    def run(self):
        ftp = login(*self.args)
        ftp.cwd(self.directory)
        prev = tutorial_poll(ftp)
        while not self.stop_event.wait(self.interval):
            cur = tutorial_poll(ftp)
            for name, info in cur.items():
                old = prev.get(name)
                if old is None or old != info:
                    self.on_event({"name": name, "sz": info["sz"], "dt": info["dt"],
                                   "event": "new" if old is None else "mod"})
                    prev[name] = info
        ftp.close()


# ----------------------------------------------------------------------------- ours


def our_config(port, user, password, **extra) -> ftp_watch.WatchConfig:
    doc = {"host": "127.0.0.1", "port": port, "user": user, "passwordEnv": "BENCH_PW", **extra}
    return ftp_watch.parse_config(json.dumps(doc), {"BENCH_PW": password})


class OurWatcher:
    """The real event server on loopback and a gRPC client reading its stream."""

    def __init__(self, port, user, password, interval, state_dir, on_event, **extra):
        import grpc

        import event_server
        import generic_pb2
        import generic_pb2_grpc

        self.server, gport = event_server.build_server("127.0.0.1:0", env={"BENCH_PW": password})
        self.server.start()
        config = {"host": "127.0.0.1", "port": port, "user": user, "passwordEnv": "BENCH_PW",
                  "pollSeconds": interval, "stateFile": str(Path(state_dir) / "state.json"), **extra}
        self.channel = grpc.insecure_channel(f"127.0.0.1:{gport}")
        stub = generic_pb2_grpc.EventingStub(self.channel)
        self.call = stub.StartEventSource(generic_pb2.EventSource(name="ftp", config=json.dumps(config).encode()))

        def read():
            try:
                for ev in self.call:
                    on_event(json.loads(ev.payload))
            except grpc.RpcError:
                pass

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    def stop(self):
        self.call.cancel()
        self.reader.join(10)
        self.channel.close()
        self.server.stop(None).wait(10)


# ----------------------------------------------------------------------------- measurements


def measure_polls(poll_once, polls: int) -> tuple[float, float, int]:
    """(median wall ms, median CPU ms, files seen) over `polls` polls (after one warm-up)."""
    count = poll_once()
    walls, cpus = [], []
    for _ in range(polls):
        w0, c0 = time.perf_counter(), time.process_time()
        count = poll_once()
        walls.append((time.perf_counter() - w0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return statistics.median(walls), statistics.median(cpus), count


def ours_poller(server, directory: str, listing: str = "auto"):
    cfg = our_config(server.port, server.user, server.password, dir=directory, listing=listing)
    poller = ftp_watch.FtpPoller(cfg)
    return poller, lambda: len(poller.poll().files)


def tutorial_poller(server, directory: str):
    ftp = login(server.port, server.user, server.password)
    ftp.cwd(directory)
    return ftp, lambda: len(tutorial_poll(ftp))


def upload(port, name: str, data: bytes, chunk_delay: float = 0.0, chunk: int = 4096, stall: float = 0.0) -> float:
    """STOR through FTP; returns time.monotonic() when the server acknowledged the upload.
    ``stall``: one pause of that many seconds half way."""

    class Reader(io.RawIOBase):
        pos = 0
        stalled = False

        def readable(self):
            return True

        def readinto(self, buf):
            if self.pos >= len(data):
                return 0
            if self.pos and chunk_delay:
                time.sleep(chunk_delay)
            if stall and not self.stalled and self.pos >= len(data) // 2:
                self.stalled = True
                time.sleep(stall)
            piece = data[self.pos:self.pos + min(chunk, len(buf))]
            buf[:len(piece)] = piece
            self.pos += len(piece)
            return len(piece)

    ftp = login(port, USER, PASSWORD)
    ftp.storbinary(f"STOR {name}", Reader(), blocksize=chunk)
    done = time.monotonic()
    ftp.quit()
    return done


def watch_run(kind, server, upload_port, directory, interval, state_dir, uploads, slow_seconds, **extra):
    """Latency of `uploads` uploads into `directory` (which holds the big tree), then one slow
    upload; returns a dict of results. `extra`: more config for ours."""
    events: list[tuple[float, dict]] = []
    cond = threading.Condition()

    def on_event(ev):
        with cond:
            events.append((time.monotonic(), ev))
            cond.notify_all()

    ours = kind.startswith("ours")
    if ours:
        watcher = OurWatcher(server.port, USER, PASSWORD, interval, state_dir, on_event, dir=directory, **extra)
    else:
        watcher = TutorialWatcher(server.port, USER, PASSWORD, directory, interval, on_event)
        watcher.start()
    time.sleep(interval * 2.5)  # let the baseline be taken

    def wait_for(name, deadline):
        with cond:
            while True:
                for t, ev in events:
                    if ev["name"].rsplit("/", 1)[-1] == name:
                        return t
                if not cond.wait(max(0.0, deadline - time.monotonic())):
                    return None

    latencies = []
    rng = random.Random(7)
    for i in range(uploads):
        time.sleep(rng.uniform(0, interval))
        name = f"lat-{kind.split()[0]}-{i}.csv"
        done = upload(upload_port, f"{directory}/{name}", b"1,a,1\n")
        seen = wait_for(name, time.monotonic() + interval * 6)
        latencies.append(None if seen is None else seen - done)

    # one file written over ~3 poll intervals
    # big enough that the server's write buffer (8 KiB in pyftpdlib) flushes many times on the way
    chunks = 40
    data = b"1,slow upload row,50\n" * 20_000
    slow = f"slow-{kind.split()[0]}.csv"
    upload(upload_port, f"{directory}/{slow}", data, chunk_delay=slow_seconds / chunks, chunk=len(data) // chunks + 1)
    # one upload that pauses half way for 2.5 poll intervals (longer than the settle time)
    stalled = f"stalled-{kind.split()[0]}.csv"
    upload(upload_port, f"{directory}/{stalled}", data, chunk=len(data) // chunks + 1, stall=interval * 2.5)
    time.sleep(interval * 5)
    with cond:
        slow_events = [ev for _, ev in events if ev["name"].rsplit("/", 1)[-1] == slow]
        stalled_events = [ev for _, ev in events if ev["name"].rsplit("/", 1)[-1] == stalled]
    if ours:
        watcher.stop()
    else:
        watcher.stop_event.set()
        watcher.join(30)
    size_key = "size" if ours else "sz"
    first_size = int(slow_events[0][size_key]) if slow_events else None
    stalled_first = int(stalled_events[0][size_key]) if stalled_events else None
    return {
        "stalled_events": len(stalled_events),
        "stalled_first_complete": stalled_first == len(data),
        "latencies": [x for x in latencies if x is not None],
        "missed": sum(1 for x in latencies if x is None),
        "slow_events": len(slow_events),
        "slow_first_complete": first_size == len(data),
    }


# ----------------------------------------------------------------------------- kill during a burst

STREAM_CLIENT = ROOT / "tests" / "ftp" / "stream_client.py"
SERVER_SCRIPT = ROOT / "code" / "ftp_event_server" / "event_server.py"


class Reader:
    """An in-process gRPC reader of one stream (the receiver that survives)."""

    def __init__(self, port: int, config: dict):
        import grpc

        import generic_pb2
        import generic_pb2_grpc

        self.names: list[str] = []
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = generic_pb2_grpc.EventingStub(self.channel)
        self.call = stub.StartEventSource(generic_pb2.EventSource(name="ftp", config=json.dumps(config).encode()))

        def read():
            try:
                for ev in self.call:
                    self.names.append(json.loads(ev.payload)["name"])
            except grpc.RpcError:
                pass

        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()

    def close(self):
        self.call.cancel()
        self.thread.join(10)
        self.channel.close()


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _file_names(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n")[:-1] if line]


def _server_process(log: Path) -> tuple[subprocess.Popen, int]:
    env = {"PATH": os.environ.get("PATH", ""), "BENCH_PW": PASSWORD, "FTP_EVENT_SERVER_LISTEN": "127.0.0.1",
           "FTP_EVENT_SERVER_PORT": "0", "PYTHONUNBUFFERED": "1"}
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT)], env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    import re

    port = []
    _wait(lambda: bool(port.extend(int(m) for m in re.findall(r"listening on 127\.0\.0\.1:(\d+)", log.read_text()))
                       or port), 30, "the event server to listen")
    return proc, port[0]


def kill_run(kind: str, work: Path, burst: int, run: int) -> dict:
    """One burst with a SIGKILL of the client ("client") or of the event server ("server")."""
    base = work / f"kill-{kind}-{run}"
    root = base / "root"
    (root / "burst").mkdir(parents=True)
    ftpd = PyFtpd(root)
    config = {"host": "127.0.0.1", "port": ftpd.port, "user": USER, "passwordEnv": "BENCH_PW", "pollSeconds": 0.2,
              "minAgeSeconds": 0, "confirmSeconds": 2, "stateFile": str(base / "state" / "ftp.json")}
    expected = {f"/burst/f {i:05d}.csv" for i in range(burst)}
    state = Path(config["stateFile"])
    procs: list[subprocess.Popen] = []
    readers: list[Reader] = []
    server = None
    try:
        if kind == "client":
            import event_server

            server, gport = event_server.build_server("127.0.0.1:0", env={"BENCH_PW": PASSWORD})
            server.start()
            (base / "config.json").write_text(json.dumps(config))
            out = base / "client.jsonl"
            procs.append(subprocess.Popen([sys.executable, str(STREAM_CLIENT), str(gport), str(base / "config.json"),
                                           str(out), "0.0005"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            _wait(state.exists, 30, "the baseline")
            for name in expected:
                (root / name[1:]).write_bytes(b"1,a,1\n")
            _wait(lambda: len(_file_names(out)) >= burst // 5, 60, "the first events")
            procs[0].kill()
            procs[0].wait()
            first = _file_names(out)
            readers.append(Reader(gport, config))
        else:
            proc, gport = _server_process(base / "server1.log")
            procs.append(proc)
            readers.append(Reader(gport, config))
            _wait(state.exists, 30, "the baseline")
            for name in expected:
                (root / name[1:]).write_bytes(b"1,a,1\n")
            _wait(lambda: len(readers[0].names) >= burst // 5, 60, "the first events")
            proc.kill()
            proc.wait()
            readers[0].thread.join(10)
            first = list(readers[0].names)
            proc2, gport2 = _server_process(base / "server2.log")
            procs.append(proc2)
            readers.append(Reader(gport2, config))
        second = readers[-1]
        deadline = time.monotonic() + 60
        while not expected <= set(first) | set(second.names) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # anything more that comes is counted too
        got = first + list(second.names)
        return {"before_kill": len(first), "lost": len(expected - set(got)), "duplicated": len(got) - len(set(got)),
                "invented": len(set(got) - expected)}
    finally:
        for r in readers:
            r.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if server is not None:
            server.stop(None).wait(10)
        ftpd.stop()
        shutil.rmtree(base, ignore_errors=True)


def _scratch() -> Path:
    """A scratch folder on tmpfs when there is one (thousands of small files)."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="bench-ftp-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))


def kill_table(work: Path, burst: int, runs: int) -> None:
    rows = []
    for kind in ("client", "server"):
        for run in range(1, runs + 1):
            r = kill_run(kind, work, burst, run)
            rows.append([f"SIGKILL {kind}", run, r["before_kill"], r["lost"], r["duplicated"], r["invented"]])
    print_table(f"4. a burst of {burst} new files, SIGKILL in the middle of it (confirmSeconds 2, poll 0.2 s)",
                ["killed", "run", "received before the kill", "lost", "duplicated", "unknown names"], rows)
    for kind in ("client", "server"):
        mine = [r for r in rows if r[0] == f"SIGKILL {kind}"]
        print(f"   {kind}: lost {sum(r[3] for r in mine)} in {len(mine)} runs; duplicated"
              f" {min(r[4] for r in mine)}-{max(r[4] for r in mine)} per run")
    print("   a duplicate is an event handed over within confirmSeconds before the kill, sent again to the next"
          " stream;\n   downstream it rewrites the same object with the same content.")


def fmt_row(cols, widths):
    return "  ".join(str(c).ljust(w) for c, w in zip(cols, widths))


def print_table(title, header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print(f"\n{title}")
    print(fmt_row(header, widths))
    print(fmt_row(["-" * w for w in widths], widths))
    for r in rows:
        print(fmt_row(r, widths))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="files in the tree (default 10000)")
    parser.add_argument("--polls", type=int, default=5, help="timed polls per method (default 5)")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="poll interval for latency (default 1.0)")
    parser.add_argument("--uploads", type=int, default=6, help="uploads timed for latency (default 6)")
    parser.add_argument("--burst", type=int, default=3000, help="files in the kill-during-burst runs (default 3000)")
    parser.add_argument("--kill-runs", type=int, default=10, help="runs per kill kind (default 10)")
    parser.add_argument("--only", choices=["kill"], help="run only the kill-during-burst table")
    args = parser.parse_args(argv)
    n = args.files
    if args.only == "kill":
        work = _scratch()
        try:
            print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
            kill_table(work, args.burst, args.kill_runs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-ftp-"))
    servers = []
    try:
        tree = work / "tree"
        flat = tree / "flat"
        flat.mkdir(parents=True)
        for i in range(n):
            (flat / f"file{i:05d}.csv").write_bytes(b"1,a,1\n")
        per_dir = max(1, n // 100)
        for i in range(n):
            d = tree / "nested" / f"d{i // per_dir:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"file{i:05d}.csv").write_bytes(b"1,a,1\n")
        spaced = tree / "spaced"
        spaced.mkdir()
        spaced_names = ["sales report 2023.csv", "a  b.csv", "데이터 파일.csv"]
        for name in spaced_names:
            (spaced / name).write_bytes(b"1,a,1\n")

        # a steady-state tree: files written days ago (recent files cost LIST mode an MDTM+SIZE each)
        old = time.time() - 3 * 86400
        for folder in (flat, *(tree / "nested").iterdir()):
            for f in folder.iterdir():
                os.utime(f, (old, old))
        mlsd = PyFtpd(tree)
        nomlsd = PyFtpd(tree, no_mlsd=True)
        # uploads go through their own server process on the same folder: pyftpdlib serves one
        # connection at a time per loop, and a 10k-file listing would stall a concurrent upload
        uploads = PyFtpd(tree)
        servers += [mlsd, nomlsd, uploads]
        vs = None
        if vsftpd_usable():
            vs = Vsftpd(work / "vsftpd")
            servers.append(vs)
            shutil.copytree(flat, vs.data / "flat")
            # the same folder where 100 of the files were just written: LIST gives minutes, so
            # those get MDTM + SIZE (second precision); the old ones do not
            shutil.copytree(flat, vs.data / "recent")
            for i in range(100):
                os.utime(vs.data / "recent" / f"file{i:05d}.csv")  # now

        cost_rows = []
        cases = [
            ("ours", "pyftpdlib", "MLSD", "/flat", lambda s, d: ours_poller(s, d), mlsd),
            ("ours", "pyftpdlib", "LIST (no MLSD)", "/flat", lambda s, d: ours_poller(s, d), nomlsd),
            ("tutorial", "pyftpdlib", "LIST, split", "/flat", tutorial_poller, nomlsd),
            ("ours", "pyftpdlib", "MLSD, 100 folders", "/nested", lambda s, d: ours_poller(s, d), mlsd),
        ]
        if vs:
            cases += [
                ("ours", "vsftpd 3.0.3", "LIST (no MLSD)", "/data/flat", lambda s, d: ours_poller(s, d), vs),
                ("ours", "vsftpd 3.0.3", "LIST + MDTM/SIZE of 100 recent", "/data/recent",
                 lambda s, d: ours_poller(s, d), vs),
                ("tutorial", "vsftpd 3.0.3", "LIST, split", "/data/flat", tutorial_poller, vs),
            ]
        for who, server_name, listing, directory, make, server in cases:
            handle, poll_once = make(server, directory)
            wall, cpu, count = measure_polls(poll_once, args.polls)
            handle.close()
            cost_rows.append([who, server_name, listing, count, f"{wall:.0f}", f"{cpu:.0f}",
                              f"{cpu / max(count, 1) * 1000:.1f}"])

        # names with spaces: what each one reports for the spaced folder
        poller, _ = ours_poller(mlsd, "/spaced")
        ours_names = sorted(p.rsplit("/", 1)[1] for p in poller.poll().files)
        poller.close()
        ftp = login(nomlsd.port, USER, PASSWORD)
        ftp.cwd("/spaced")
        tutorial_names = sorted(tutorial_poll(ftp))
        ftp.close()

        results = {}
        settle = args.poll_seconds / 4
        min_age = 3 * args.poll_seconds  # the default's form (at least 30 s there)
        runs = [("ours minAgeSeconds=0", mlsd, {"minAgeSeconds": 0}),
                (f"ours-settle settleSeconds={settle:g} minAgeSeconds=0", mlsd,
                 {"settleSeconds": settle, "minAgeSeconds": 0}),
                (f"ours-age minAgeSeconds={min_age:g}", mlsd, {"minAgeSeconds": min_age}),
                ("tutorial", nomlsd, {})]
        for kind, server, extra in runs:
            results[kind] = watch_run(kind, server, uploads.port, "/flat", args.poll_seconds,
                                      work / f"state-{kind.split()[0]}", args.uploads,
                                      slow_seconds=args.poll_seconds * 3, **extra)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; FTP servers on 127.0.0.1 in their own processes")
    print_table(f"1. one poll over {n} files (median of {args.polls}; CPU = the watcher process only)",
                ["watcher", "server", "listing", "files seen", "wall ms", "CPU ms", "CPU us/file"], cost_rows)

    rows = []
    for kind, r in results.items():
        lat = r["latencies"]
        rows.append([
            kind,
            f"{statistics.median(lat):.2f}" if lat else "-",
            f"{max(lat):.2f}" if lat else "-",
            f"{statistics.median(lat) / args.poll_seconds:.1f}" if lat else "-",
            r["missed"],
            r["slow_events"],
            "yes" if r["slow_first_complete"] else "NO (partial file)",
            r["stalled_events"],
            "yes" if r["stalled_first_complete"] else "NO (partial file)",
            "yes" if (tutorial_names if kind == "tutorial" else ours_names) == sorted(spaced_names) else
            f"NO: {tutorial_names if kind == 'tutorial' else ours_names}",
        ])
    print_table(
        f"2./3. watching the {n}-file folder, poll interval {args.poll_seconds}s, {args.uploads} uploads at random"
        f" moments; one slow upload over"
        f" ~{args.poll_seconds * 3:.1f}s",
        ["watcher", "latency median s", "max s", "median / interval", "missed", "events for slow upload",
         "first event = complete file", f"events for upload stalled {args.poll_seconds * 2.5:g}s",
         "first event = complete file", "names with spaces right"], rows)
    print("\nours reports a file once its size and time were the same in two listings in a row (the confirming"
          " listing comes settleSeconds,\ndefault the poll interval, after the first) AND its time is minAgeSeconds"
          " old (default max(30, 3 x pollSeconds));\nwith minAgeSeconds=0 an upload that stalls longer than the"
          " settle time is reported half done. The tutorial's reports on\nfirst sight (<= 1 interval + 1 listing)"
          " and so reports files that are still being written.")
    kill_work = _scratch()
    try:
        kill_table(kill_work, args.burst, args.kill_runs)
    finally:
        shutil.rmtree(kill_work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
