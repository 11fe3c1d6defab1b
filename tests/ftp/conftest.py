"""Fixtures for the FTP event source tests (helpers in ftp_support.py).

- ``ftp_server``: pyftpdlib in a thread on 127.0.0.1 (port 0), serving ``ftp_root`` to a
  random user/password; it can be stopped and started again on the same port.
- ``vsftpd``: Debian's vsftpd as a subprocess, when it is installed and we are root.
- ``event_servers``: starts gRPC event servers on 127.0.0.1 (port 0) and streams from them.
- ``s3``: moto's ThreadedMotoServer (port 0) with random credentials, as S3_* variables.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ftp_support import WAIT, EventServer, EventStream, FtpServerThread, NoMlsdHandler, free_port

@pytest.fixture
def fast_tmp(tmp_path):
    """A scratch folder on tmpfs when there is one: creating 10,000 files on the disk of a
    small VM takes seconds, on tmpfs a fraction of one."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="ftp-test-", dir=shm))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


@pytest.fixture
def ftp_credentials():
    return "u" + secrets.token_hex(4), secrets.token_urlsafe(16)


@pytest.fixture
def ftp_root(tmp_path):
    root = tmp_path / "ftproot"
    root.mkdir()
    return root


@pytest.fixture
def ftp_server(ftp_root, ftp_credentials):
    server = FtpServerThread(ftp_root, *ftp_credentials).start()
    yield server
    server.stop()


@pytest.fixture
def ftp_server_no_mlsd(ftp_root, ftp_credentials):
    server = FtpServerThread(ftp_root, *ftp_credentials, handler=NoMlsdHandler).start()
    yield server
    server.stop()


@dataclass
class Vsftpd:
    port: int
    root: Path      # what the FTP client sees as "/"
    data: Path      # a folder under it (anonymous users cannot own the root itself)
    user: str = "anonymous"


@pytest.fixture
def vsftpd(tmp_path):
    """Debian's vsftpd on loopback (anonymous, read-only: the test writes files directly)."""
    binary = shutil.which("vsftpd") or ("/usr/sbin/vsftpd" if os.path.exists("/usr/sbin/vsftpd") else None)
    if binary is None or os.geteuid() != 0:
        pytest.skip("vsftpd is not installed or we are not root (apt-get install -y vsftpd; run as root)")
    base = tmp_path / "vsftpd"
    root = base / "anon"
    data = root / "data"
    empty = base / "empty"
    for d in (data, empty):
        d.mkdir(parents=True)
    # vsftpd refuses an anonymous root the anonymous user could write to
    os.chmod(root, 0o555)
    os.chmod(base, 0o755)
    os.chmod(tmp_path, 0o755)
    port = free_port()
    conf = base / "vsftpd.conf"
    conf.write_text(
        "\n".join([
            "listen=YES", "listen_ipv6=NO", "listen_address=127.0.0.1", f"listen_port={port}",
            "background=NO", "anonymous_enable=YES", "no_anon_password=YES", f"anon_root={root}",
            "local_enable=NO", "write_enable=NO", "pasv_enable=YES", "seccomp_sandbox=NO",
            f"secure_chroot_dir={empty}", f"vsftpd_log_file={base / 'log'}", "xferlog_enable=NO",
            "use_localtime=NO",
        ]) + "\n"
    )
    proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + WAIT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vsftpd exited with {proc.returncode}: {proc.stdout.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("vsftpd did not start listening")
            time.sleep(0.05)
    yield Vsftpd(port=port, root=root, data=data)
    proc.terminate()
    try:
        proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(WAIT)


@pytest.fixture
def server_env(ftp_credentials):
    user, password = ftp_credentials
    return {"FTP_USER": user, "FTP_PASSWORD": password}


@pytest.fixture
def event_servers(server_env):
    """Factory: start an event server (several may run, e.g. across a restart)."""
    started: list[EventServer] = []
    streams: list[EventStream] = []

    class Factory:
        def start(self, env: dict | None = None) -> EventServer:
            srv = EventServer(server_env if env is None else env).start()
            started.append(srv)
            return srv

        def stream(self, srv: EventServer, config, name: str = "ftp") -> EventStream:
            s = srv.stream(config, name)
            streams.append(s)
            return s

    yield Factory()
    for s in streams:
        s.close()
    for srv in started:
        srv.stop()


@pytest.fixture
def watch_config(tmp_path):
    """Config for the event server pointing at a loopback FTP server; short intervals."""

    def make(port: int, **overrides) -> dict:
        cfg = {
            "host": "127.0.0.1",
            "port": port,
            "dir": "/",
            "pollSeconds": 0.1,
            "retryMinSeconds": 0.05,
            "retryMaxSeconds": 0.2,
            "timeoutSeconds": 5,
            # the completeness rules and delivery confirmation have their own tests; here they
            # are short so the other tests stay fast
            "minAgeSeconds": 0,
            "confirmSeconds": 0.3,
            "stateFile": str(tmp_path / "state" / "ftp.json"),
        }
        cfg.update(overrides)
        return cfg

    return make


# ------------------------------------------------------------------ S3 (moto)


@pytest.fixture(scope="session")
def moto_server(moto_endpoint):
    return moto_endpoint


@pytest.fixture
def s3(moto_server, monkeypatch):
    """S3_* variables for moto with random credentials, and a fresh random bucket."""
    from minio import Minio

    env = {
        "S3_ENDPOINT": moto_server,
        "S3_ACCESS_KEY": "AK" + secrets.token_hex(8).upper(),
        "S3_SECRET_KEY": secrets.token_urlsafe(30),
        "S3_SECURE": "false",
        "S3_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = Minio(moto_server, access_key=env["S3_ACCESS_KEY"], secret_key=env["S3_SECRET_KEY"],
                   secure=False, region="us-east-1")
    bucket = "etl-" + secrets.token_hex(6)
    client.make_bucket(bucket)
    return {"env": env, "client": client, "bucket": bucket}
