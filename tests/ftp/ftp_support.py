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
# The event server's files sit flat in /code in the pod (a ConfigMap), so they import each
# other by bare name: the same here.
for extra in (SERVER_DIR, CODE):
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


def write_file(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path
