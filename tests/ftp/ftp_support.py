"""Helpers for the FTP event source tests: real servers on loopback.

- ``FtpServerThread``: pyftpdlib in a thread on 127.0.0.1 (port 0); stoppable and restartable
  on the same port. ``NoMlsdHandler``: the same server without MLSD, like vsftpd.
- ``EventServer`` / ``EventStream``: the gRPC event server (code/ftp_event_server) on 127.0.0.1
  (port 0), read through a real channel as Argo's generic event source does.

Kept out of conftest.py so tests import it by a name no other test folder uses.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CODE = ROOT / "code"
SERVER_DIR = CODE / "ftp_event_server"
# FTP_EVENT_SERVER_DIR: run the end-to-end tests against another copy of the server (e.g. an
# older commit's, to see a new test fail there); its modules shadow these
OTHER_SERVER_DIR = os.environ.get("FTP_EVENT_SERVER_DIR")
if OTHER_SERVER_DIR:
    SERVER_DIR = Path(OTHER_SERVER_DIR)
# The event server's files sit flat in /code in the pod (a ConfigMap), so they import each
# other by bare name: the same here.
for extra in (CODE / "ftp_event_server", SERVER_DIR, CODE):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import grpc  # noqa: E402
from pyftpdlib.authorizers import DummyAuthorizer  # noqa: E402
from pyftpdlib.handlers import FTPHandler  # noqa: E402
from pyftpdlib.servers import FTPServer  # noqa: E402

import event_server  # noqa: E402
import generic_pb2  # noqa: E402
import generic_pb2_grpc  # noqa: E402

logging.getLogger("pyftpdlib").setLevel(logging.WARNING)

WAIT = 15.0  # upper bound for any single wait in these tests


class NoMlsdHandler(FTPHandler):
    """An FTP server that does not know MLSD/MLST, like vsftpd: answers 500."""

    proto_cmds = {k: v for k, v in FTPHandler.proto_cmds.items() if k not in ("MLSD", "MLST")}


class FtpServerThread:
    """pyftpdlib on loopback in a background thread; restartable on the same port."""

    def __init__(self, root: Path, user: str, password: str, handler: type[FTPHandler] = FTPHandler):
        self.root, self.user, self.password, self.handler = root, user, password, handler
        self.port = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> "FtpServerThread":
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.user, self.password, str(self.root), perm="elradfmwMT")
        handler = type("TestHandler", (self.handler,),
                       {"authorizer": authorizer, "timeout": 60, "auth_failed_timeout": 0.1})
        deadline = time.monotonic() + WAIT
        while True:
            try:
                server = FTPServer(("127.0.0.1", self.port), handler)
                break
            except OSError:  # the old socket on this port is still closing
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.port = server.address[1]
        self._stop = threading.Event()
        stop = self._stop

        def loop():
            try:
                while not stop.is_set():
                    server.serve_forever(timeout=0.02, blocking=False)
            finally:
                server.close_all()

        self._thread = threading.Thread(target=loop, name=f"ftpd-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(WAIT)
            assert not self._thread.is_alive(), "FTP server thread did not stop"
            self._thread = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EventServer:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.server = None
        self.port = 0

    def start(self) -> "EventServer":
        self.server, self.port = event_server.build_server("127.0.0.1:0", env=self.env)
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None).wait(WAIT)
            self.server = None

    def stream(self, config: dict | str | bytes, name: str = "ftp") -> "EventStream":
        return EventStream(self.port, config, name)


class EventStream:
    """StartEventSource over a real channel; events are collected by a reader thread."""

    def __init__(self, port: int, config, name: str):
        if isinstance(config, dict):
            config = yaml.safe_dump(config, allow_unicode=True)
        if isinstance(config, str):
            config = config.encode("utf-8")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = generic_pb2_grpc.EventingStub(self.channel)
        self.call = stub.StartEventSource(generic_pb2.EventSource(name=name, config=config))
        self.events: "queue.Queue[tuple[float, str, dict]]" = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        try:
            for ev in self.call:
                self.events.put((time.monotonic(), ev.name, json.loads(ev.payload.decode("utf-8"))))
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()

    def take(self, count: int, timeout: float = WAIT) -> list[dict]:
        """Exactly ``count`` more events (payloads), waiting at most ``timeout`` in total."""
        return [p for _, _, p in self.take_raw(count, timeout)]

    def take_raw(self, count: int, timeout: float = WAIT) -> list[tuple[float, str, dict]]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < count:
            remaining = deadline - time.monotonic()
            try:
                out.append(self.events.get(timeout=max(0.0, remaining)))
            except queue.Empty:
                raise AssertionError(
                    f"got {len(out)} of {count} events in {timeout}s: {[p for _, _, p in out]!r}"
                    f" (stream error: {self.error!r})"
                ) from None
        return out

    def quiet_for(self, seconds: float) -> list[dict]:
        """Whatever arrives in the next ``seconds`` (used to prove nothing else comes)."""
        deadline = time.monotonic() + seconds
        out = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            try:
                out.append(self.events.get(timeout=remaining)[2])
            except queue.Empty:
                return out

    def wait_error(self, timeout: float = WAIT) -> grpc.RpcError:
        assert self.done.wait(timeout), "the stream did not end"
        assert self.error is not None, "the stream ended without an error"
        return self.error

    def close(self) -> None:
        self.call.cancel()
        self.done.wait(WAIT)
        self.channel.close()


def wait_baseline(cfg: dict, timeout: float = WAIT) -> None:
    """Until the event server has recorded its first listing (it writes the state file), so a
    file created after this is a change, not part of the baseline."""
    path = Path(cfg["stateFile"])
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no baseline recorded in {timeout}s ({path})"
        time.sleep(0.02)


def wait_confirmed(cfg: dict, timeout: float = WAIT) -> None:
    """Until every event handed to the stream is confirmed delivered (the state has no
    pending events and no journal lines), so a stream ended after this repeats nothing."""
    path = Path(cfg["stateFile"])
    journal = path.with_name(path.name + ".journal")
    deadline = time.monotonic() + timeout
    while True:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not doc.get("pending") and (not journal.exists() or journal.stat().st_size == 0):
                return
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, f"events still unconfirmed after {timeout}s ({path})"
        time.sleep(0.02)


def write_file(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------ processes for kill tests

import re  # noqa: E402
import subprocess  # noqa: E402

HERE = Path(__file__).resolve().parent


def received_names(path: Path) -> list[str]:
    """The names a stream_client.py wrote (a line cut by SIGKILL is not counted)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n")[:-1] if line]


class ClientProcess:
    """tests/ftp/stream_client.py in its own process, reading one stream."""

    def __init__(self, port: int, config: dict, out: Path, delay: float = 0.0):
        self.out = out
        cfg_file = out.with_suffix(".config.json")
        cfg_file.write_text(json.dumps(config))
        self.proc = subprocess.Popen([sys.executable, str(HERE / "stream_client.py"), str(port), str(cfg_file),
                                      str(out), str(delay)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def names(self) -> list[str]:
        return received_names(self.out)

    def wait_count(self, count: int, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while len(self.names()) < count:
            assert self.proc.poll() is None, f"client exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, f"client got {len(self.names())} of {count} events in {timeout}s"
            time.sleep(0.01)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)


class ServerProcess:
    """code/ftp_event_server/event_server.py in its own process, as in the pod."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        full = {"PATH": os.environ.get("PATH", ""), "FTP_EVENT_SERVER_LISTEN": "127.0.0.1",
                "FTP_EVENT_SERVER_PORT": "0", "PYTHONUNBUFFERED": "1", **env}
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(SERVER_DIR / "event_server.py")], env=full,
                                     cwd=str(log_path.parent), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WAIT
        self.port = 0
        while not self.port:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", log_path.read_text())
            if m:
                self.port = int(m.group(1))
                break
            assert self.proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "event server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        self.log.close()

