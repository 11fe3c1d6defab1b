"""FTP event server vs the tutorial's server logic, side by side, on the same FTP trees.

    python bench/bench_ftp.py [--files 10000] [--polls 5] [--poll-seconds 0.5] [--uploads 6]

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


def upload(port, name: str, data: bytes, chunk_delay: float = 0.0, chunk: int = 4096) -> float:
    """STOR through FTP; returns time.monotonic() when the server acknowledged the upload."""

    class Reader(io.RawIOBase):
        pos = 0

        def readable(self):
            return True

        def readinto(self, buf):
            if self.pos >= len(data):
                return 0
            if self.pos and chunk_delay:
                time.sleep(chunk_delay)
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
    time.sleep(interval * 3)
    with cond:
        slow_events = [ev for _, ev in events if ev["name"].rsplit("/", 1)[-1] == slow]
    if ours:
        watcher.stop()
    else:
        watcher.stop_event.set()
        watcher.join(30)
    size_key = "size" if ours else "sz"
    first_size = int(slow_events[0][size_key]) if slow_events else None
    return {
        "latencies": [x for x in latencies if x is not None],
        "missed": sum(1 for x in latencies if x is None),
        "slow_events": len(slow_events),
        "slow_first_complete": first_size == len(data),
    }


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
    args = parser.parse_args(argv)
    n = args.files

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
        runs = [("ours", mlsd, {}), (f"ours-settle settleSeconds={settle:g}", mlsd, {"settleSeconds": settle}),
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
            "yes" if (tutorial_names if kind == "tutorial" else ours_names) == sorted(spaced_names) else
            f"NO: {tutorial_names if kind == 'tutorial' else ours_names}",
        ])
    print_table(
        f"2./3. watching the {n}-file folder, poll interval {args.poll_seconds}s, {args.uploads} uploads at random"
        f" moments; one slow upload over"
        f" ~{args.poll_seconds * 3:.1f}s",
        ["watcher", "latency median s", "max s", "median / interval", "missed", "events for slow upload",
         "first event = complete file", "names with spaces right"], rows)
    print("\nours reports a file once its size and time were the same in two listings in a row: the confirming"
          " listing comes settleSeconds\n(default: the poll interval) after the first, so latency is about"
          " U(0, interval) + settle + 2 listings. The tutorial's\nreports on first sight (<= 1 interval + 1 listing)"
          " and so reports files that are still being written.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
