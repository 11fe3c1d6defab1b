"""tools.install against a real HTTP server on loopback serving fake release artifacts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from etlboot import toolinstall
from etlboot.toolinstall import PINS, PLATFORMS, Artifact, Pin, detect_platform, find_tool, install

FAKE_KUBECTL = b"#!/bin/sh\necho \"fake kubectl $*\"\n"
FAKE_MINIKUBE = b"#!/bin/sh\necho \"fake minikube $*\"\n"
FAKE_HELM = b"#!/bin/sh\necho \"fake helm $*\"\n"

KUBECTL_PATH = "/release/v1.34.1/bin/linux/amd64/kubectl"
HELM_PATH = "/helm-v3.19.0-linux-amd64.tar.gz"
MINIKUBE_PATH = "/kubernetes/minikube/releases/download/v1.37.0/minikube-linux-amd64"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tarball(members: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


HELM_TGZ = tarball({"linux-amd64/helm": FAKE_HELM, "linux-amd64/LICENSE": b"Apache-2.0\n"})


class ReleaseServer:
    """Serves {path: bytes}; {path: ("redirect", location)}; {path: ("stall", seconds)}; else 404."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                route = server.routes.get(self.path)
                if isinstance(route, bytes):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(route)))
                    self.end_headers()
                    self.wfile.write(route)
                elif isinstance(route, tuple) and route[0] == "redirect":
                    self.send_response(302)
                    self.send_header("Location", route[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif isinstance(route, tuple) and route[0] == "stall":
                    time.sleep(route[1])
                else:
                    self.send_error(404, "Not Found")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with ReleaseServer() as running:
        running.routes.update({KUBECTL_PATH: FAKE_KUBECTL, HELM_PATH: HELM_TGZ, MINIKUBE_PATH: FAKE_MINIKUBE})
        yield running


def fake_pins(**sha_overrides: str | None) -> dict[str, Pin]:
    """Pins shaped like the real ones (same upstream URLs), with the fakes' real digests."""
    shas = {"kubectl": sha256(FAKE_KUBECTL), "helm": sha256(HELM_TGZ), "minikube": sha256(FAKE_MINIKUBE)}
    shas.update(sha_overrides)
    real = {name: PINS[name].artifacts["linux-amd64"] for name in ("kubectl", "helm", "minikube")}
    return {
        name: Pin(PINS[name].version, {
            "linux-amd64": Artifact(real[name].url, shas[name], real[name].member),
            "linux-arm64": Artifact(real[name].url.replace("amd64", "arm64"), None, real[name].member),
        })
        for name in real
    }


def run_install(server, dest, names=("kubectl", "helm", "minikube"), **kwargs):
    lines: list[str] = []
    kwargs.setdefault("pins", fake_pins())
    kwargs.setdefault("platform", "linux-amd64")
    results = install(list(names), dest, base_urls={"*": server.url}, reporter=lines.append, **kwargs)
    return results, lines


def by_name(results):
    return {result.name: result for result in results}


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


# --- install ------------------------------------------------------------------------------

def test_install_puts_verified_executables_in_dest(server, tmp_path):
    dest = tmp_path / ".bin"
    results, lines = run_install(server, dest)

    assert [(r.name, r.outcome) for r in results] == [("kubectl", "installed"), ("helm", "installed"),
                                                      ("minikube", "installed")], results
    assert (dest / "kubectl").read_bytes() == FAKE_KUBECTL
    assert (dest / "helm").read_bytes() == FAKE_HELM  # the binary, unpacked from the archive
    assert (dest / "minikube").read_bytes() == FAKE_MINIKUBE
    for name in ("kubectl", "helm", "minikube"):
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o755
        assert by_name(results)[name].path == dest / name
    # the pinned upstream paths were asked for, once each
    assert sorted(server.requests) == sorted([KUBECTL_PATH, HELM_PATH, MINIKUBE_PATH])
    # manifests record the installed binary (for helm it differs from the archive digest)
    helm_manifest = json.loads((dest / ".helm.sha256").read_text())
    assert helm_manifest["binary_sha256"] == sha256(FAKE_HELM)
    assert helm_manifest["artifact_sha256"] == sha256(HELM_TGZ)
    assert helm_manifest["version"] == "3.19.0"
    # nothing else (no temp files) is left behind
    assert files_in(dest) == [".helm.sha256", ".kubectl.sha256", ".minikube.sha256", "helm", "kubectl", "minikube"]
    assert any("downloading" in line and "kubectl" in line for line in lines)


def test_second_install_downloads_nothing_and_reports_already(server, tmp_path):
    dest = tmp_path / ".bin"
    run_install(server, dest)
    server.requests.clear()
    before = {name: (dest / name).stat().st_mtime_ns for name in ("kubectl", "helm", "minikube")}

    results, _ = run_install(server, dest)

    assert [r.outcome for r in results] == ["already", "already", "already"], results
    assert server.requests == []
    assert before == {name: (dest / name).stat().st_mtime_ns for name in ("kubectl", "helm", "minikube")}


def test_force_downloads_again(server, tmp_path):
    dest = tmp_path / ".bin"
    run_install(server, dest)
    server.requests.clear()

    results, _ = run_install(server, dest, names=("helm",), force=True)

    assert results[0].outcome == "installed"
    assert server.requests == [HELM_PATH]


def test_tampered_binary_is_replaced(server, tmp_path):
    dest = tmp_path / ".bin"
    run_install(server, dest, names=("kubectl",))
    (dest / "kubectl").write_bytes(b"#!/bin/sh\necho tampered\n")
    server.requests.clear()

    results, _ = run_install(server, dest, names=("kubectl",))

    assert results[0].outcome == "installed"
    assert "replacing" in results[0].detail
    assert (dest / "kubectl").read_bytes() == FAKE_KUBECTL
    assert server.requests == [KUBECTL_PATH]


def test_wrong_checksum_refuses_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / ".bin"
    wrong = "0" * 64
    results, _ = run_install(server, dest, names=("kubectl",), pins=fake_pins(kubectl=wrong))

    result = results[0]
    assert result.outcome == "failed"
    assert "kubectl" in result.detail
    assert wrong in result.detail and sha256(FAKE_KUBECTL) in result.detail
    assert files_in(dest) == []  # no binary, no manifest, no temp file
    assert server.requests == [KUBECTL_PATH]


def test_wrong_checksum_keeps_the_previous_binary(server, tmp_path):
    dest = tmp_path / ".bin"
    dest.mkdir()
    (dest / "helm").write_bytes(b"old helm")

    results, _ = run_install(server, dest, names=("helm",), pins=fake_pins(helm="f" * 64))

    assert results[0].outcome == "failed"
    assert (dest / "helm").read_bytes() == b"old helm"
    assert files_in(dest) == ["helm"]


def test_tarball_with_path_traversal_is_refused(server, tmp_path):
    evil = tarball({"linux-amd64/helm": FAKE_HELM, "../../escaped": b"#!/bin/sh\necho pwned\n"})
    server.routes[HELM_PATH] = evil
    dest = tmp_path / "project" / ".bin"

    # the digest matches (as if the pinned archive itself were hostile): unpacking must still refuse
    results, _ = run_install(server, dest, names=("helm",), pins=fake_pins(helm=sha256(evil)))

    assert results[0].outcome == "failed"
    assert "unsafe" in results[0].detail and "../../escaped" in results[0].detail
    assert files_in(dest) == []
    assert not list(tmp_path.rglob("escaped"))


def test_tarball_with_escaping_symlink_is_refused(server, tmp_path):
    evil = tarball({"linux-amd64/helm": FAKE_HELM}, symlinks={"linux-amd64/link": "../../../etc/passwd"})
    server.routes[HELM_PATH] = evil
    dest = tmp_path / ".bin"

    results, _ = run_install(server, dest, names=("helm",), pins=fake_pins(helm=sha256(evil)))

    assert results[0].outcome == "failed"
    assert "points outside" in results[0].detail
    assert files_in(dest) == []


def test_tarball_without_the_binary_fails_clearly(server, tmp_path):
    empty = tarball({"linux-amd64/README.md": b"no binary here"})
    server.routes[HELM_PATH] = empty
    dest = tmp_path / ".bin"

    results, _ = run_install(server, dest, names=("helm",), pins=fake_pins(helm=sha256(empty)))

    assert results[0].outcome == "failed"
    assert "linux-amd64/helm" in results[0].detail
    assert files_in(dest) == []


def test_platform_without_pinned_checksum_is_refused(server, tmp_path):
    dest = tmp_path / ".bin"
    results, _ = run_install(server, dest, names=("kubectl",), platform="linux-arm64")

    assert results[0].outcome == "failed"
    assert "no verified SHA-256" in results[0].detail
    assert "linux-arm64" in results[0].detail and "kubectl" in results[0].detail
    assert server.requests == [] and files_in(dest) == []


def test_real_pins_refuse_minikube_on_linux_arm64_without_downloading(server, tmp_path):
    dest = tmp_path / ".bin"
    # the real PINS, every URL pointed at loopback: nothing may reach the network
    results = install(["minikube"], dest, platform="linux-arm64", base_urls={"*": server.url},
                      reporter=lambda line: None)

    assert results[0].outcome == "failed"
    assert "refusing to install an unverified binary" in results[0].detail
    assert server.requests == []


def test_unknown_platform_and_tool_fail_clearly(server, tmp_path):
    results, _ = run_install(server, tmp_path / ".bin", names=("kubectl", "kustomize"), platform="windows-amd64")

    kubectl, kustomize = results
    assert kubectl.outcome == "failed" and "windows-amd64" in kubectl.detail
    assert kustomize.outcome == "failed" and "unknown tool 'kustomize'" in kustomize.detail
    assert server.requests == []


def test_http_404_is_a_clear_failure(server, tmp_path):
    del server.routes[MINIKUBE_PATH]
    dest = tmp_path / ".bin"

    results, _ = run_install(server, dest)

    outcome = {r.name: r.outcome for r in results}
    assert outcome == {"kubectl": "installed", "helm": "installed", "minikube": "failed"}
    detail = by_name(results)["minikube"].detail
    assert "minikube" in detail and "HTTP 404" in detail and MINIKUBE_PATH in detail
    assert "minikube" not in files_in(dest) and ".minikube.sha256" not in files_in(dest)
    assert not [name for name in files_in(dest) if name.endswith((".download", ".unpacked"))]


def test_redirects_are_followed(server, tmp_path):
    server.routes["/cdn/kubectl-blob"] = FAKE_KUBECTL
    server.routes[KUBECTL_PATH] = ("redirect", f"{server.url}/cdn/kubectl-blob")
    dest = tmp_path / ".bin"

    results, _ = run_install(server, dest, names=("kubectl",))

    assert results[0].outcome == "installed", results[0].detail
    assert server.requests == [KUBECTL_PATH, "/cdn/kubectl-blob"]


def test_a_stalled_server_times_out(server, tmp_path):
    server.routes[KUBECTL_PATH] = ("stall", 3)
    dest = tmp_path / ".bin"
    started = time.monotonic()

    results, _ = run_install(server, dest, names=("kubectl",), timeout=0.3)

    assert time.monotonic() - started < 2.5
    assert results[0].outcome == "failed"
    assert "timed out" in results[0].detail
    assert files_in(dest) == []


def test_stale_temp_files_from_a_killed_install_are_removed(server, tmp_path):
    dest = tmp_path / ".bin"
    dest.mkdir()
    stale, fresh = dest / ".kubectl.abc123.download", dest / ".kubectl.def456.download"
    stale.write_bytes(b"half a download")
    fresh.write_bytes(b"another install, still running")
    old = time.time() - toolinstall.DOWNLOAD_DEADLINE_SECONDS - 60
    os.utime(stale, (old, old))

    results, _ = run_install(server, dest, names=("kubectl",))

    assert results[0].outcome == "installed"
    assert not stale.exists() and fresh.exists()


def test_unwritable_target_is_a_clear_failure(server, tmp_path):
    dest = tmp_path / ".bin"
    (dest / "kubectl").mkdir(parents=True)  # a directory where the binary should go

    results, _ = run_install(server, dest, names=("kubectl",))

    assert results[0].outcome == "failed"
    assert "kubectl" in results[0].detail and "could not install into" in results[0].detail
    assert files_in(dest) == ["kubectl"] and (dest / "kubectl").is_dir()


def test_installed_fake_binaries_run(server, tmp_path):
    dest = tmp_path / ".bin"
    run_install(server, dest)

    for name in ("kubectl", "helm", "minikube"):
        done = subprocess.run([str(dest / name), "version"], capture_output=True, text=True, timeout=10)
        assert done.returncode == 0
        assert done.stdout.strip() == f"fake {name} version"


# --- platform, lookup, pins -----------------------------------------------------------------

@pytest.mark.parametrize("system, machine, expected", [
    ("Linux", "x86_64", "linux-amd64"),
    ("Linux", "aarch64", "linux-arm64"),
    ("Darwin", "arm64", "darwin-arm64"),
    ("Darwin", "x86_64", "darwin-amd64"),
])
def test_detect_platform(system, machine, expected):
    assert detect_platform(system, machine) == expected


@pytest.mark.parametrize("system, machine", [("Windows", "AMD64"), ("Linux", "armv7l"), ("FreeBSD", "amd64")])
def test_detect_platform_refuses_others(system, machine):
    with pytest.raises(toolinstall.ToolInstallError, match=f"unsupported platform {system}/{machine}"):
        detect_platform(system, machine)


def test_find_tool_prefers_tools_dir_then_path(tmp_path, monkeypatch):
    tools, elsewhere = tmp_path / "tools", tmp_path / "elsewhere"
    tools.mkdir(), elsewhere.mkdir()
    for directory in (tools, elsewhere):
        (directory / "helm").write_bytes(FAKE_HELM)
        (directory / "helm").chmod(0o755)
    (elsewhere / "minikube").write_bytes(FAKE_MINIKUBE)
    (elsewhere / "minikube").chmod(0o755)
    (tools / "kubectl").write_bytes(FAKE_KUBECTL)  # not executable: skipped
    monkeypatch.setenv("PATH", str(elsewhere))

    assert find_tool("helm", tools) == str(tools / "helm")
    assert find_tool("minikube", tools) == str(elsewhere / "minikube")
    assert find_tool("kubectl", tools) is None


def test_real_pins_are_well_formed():
    assert set(PINS) == {"kubectl", "helm", "minikube"}
    expected_url = {
        "kubectl": "https://dl.k8s.io/release/v{v}/bin/{os}/{arch}/kubectl",
        "helm": "https://get.helm.sh/helm-v{v}-{os}-{arch}.tar.gz",
        "minikube": "https://github.com/kubernetes/minikube/releases/download/v{v}/minikube-{os}-{arch}",
    }
    for name, pin in PINS.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", pin.version)
        assert set(pin.artifacts) == set(PLATFORMS)
        for platform, artifact in pin.artifacts.items():
            os_name, arch = platform.split("-")
            assert artifact.url == expected_url[name].format(v=pin.version, os=os_name, arch=arch)
            assert artifact.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", artifact.sha256)
            assert artifact.member == (f"{platform}/helm" if name == "helm" else None)
    shas = [a.sha256 for pin in PINS.values() for a in pin.artifacts.values() if a.sha256]
    assert len(shas) == len(set(shas)), "two artifacts share a digest: a copy-paste slip"
    # every tool is installable on the common developer platforms
    for name, pin in PINS.items():
        for platform in ("linux-amd64", "darwin-amd64", "darwin-arm64"):
            assert pin.artifacts[platform].sha256, (name, platform)
