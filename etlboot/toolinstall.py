"""`invoke tools.install`: pinned, checksum-verified kubectl, helm and minikube in a project-local bin dir.

A user with only Docker and Python gets the exact CLI versions the tasks were written against.
Rules this module keeps:

- every artifact is pinned by version *and* SHA-256 per platform; a platform without a published
  checksum we could confirm is refused, never installed unverified;
- the download is verified before anything is unpacked, made executable or moved into place;
- install is idempotent: a binary that matches its manifest (``dest/.<name>.sha256``) is left alone
  and nothing is downloaded;
- the final rename is atomic, so an interrupted install never leaves a half-written tool behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import posixpath
import shutil
import socket
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping

from .engine import StepError

PLATFORMS = ("linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64")

# Bounds for one download: per socket operation, whole transfer, and size (kubectl is ~60 MB,
# minikube ~140 MB; anything far larger is not what we pinned).
SOCKET_TIMEOUT_SECONDS = 60.0
DOWNLOAD_DEADLINE_SECONDS = 900.0
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
_CHUNK = 1024 * 1024
_USER_AGENT = "argo-etl-bootstrap-toolinstall/1"


class ToolInstallError(StepError):
    """One tool could not be installed; the message names the tool and the reason."""


@dataclass(frozen=True)
class Artifact:
    """One release file. ``member`` is the path of the binary inside a .tar.gz; None for a raw binary."""

    url: str
    sha256: str | None
    member: str | None = None


@dataclass(frozen=True)
class Pin:
    version: str
    artifacts: Mapping[str, Artifact]  # platform ("linux-amd64", …) -> Artifact


@dataclass(frozen=True)
class InstallResult:
    name: str
    version: str
    path: Path
    outcome: Literal["installed", "already", "failed"]
    detail: str


# --------------------------------------------------------------------------------------------
# The pins. Each SHA-256 is the upstream-published digest of the downloaded artifact (for helm:
# the .tar.gz, as in get.helm.sh/<file>.sha256sum; for kubectl/minikube: the raw binary).
# Where each value was read is noted beside it; "2 sources" means two unrelated public files
# agree. None = no checksum we could confirm: that platform is refused, not guessed.
# --------------------------------------------------------------------------------------------

_KUBECTL = "1.34.1"
_HELM = "3.19.0"
_MINIKUBE = "1.37.0"


def _kubectl(os_arch: str, sha256: str | None) -> Artifact:
    os_name, arch = os_arch.split("-")
    return Artifact(f"https://dl.k8s.io/release/v{_KUBECTL}/bin/{os_name}/{arch}/kubectl", sha256)


def _helm(os_arch: str, sha256: str | None) -> Artifact:
    return Artifact(f"https://get.helm.sh/helm-v{_HELM}-{os_arch}.tar.gz", sha256, member=f"{os_arch}/helm")


def _minikube(os_arch: str, sha256: str | None) -> Artifact:
    return Artifact(f"https://github.com/kubernetes/minikube/releases/download/v{_MINIKUBE}/minikube-{os_arch}",
                    sha256)


PINS: dict[str, Pin] = {
    # kubectl v1.34.1. Sources for all four: (a) cert-manager makefile-modules
    # make/_shared/tools/00_mod.mk (`tools += kubectl=v1.34.1`, kubectl_<os>_<arch>_SHA256SUM);
    # (b) a Bazel kubectl version table ("1.34.1": {"darwin_amd64": (url, sha), …}); (c) an
    # install script's `case "${PLATFORM}"` with the same four values. linux-amd64/arm64 also
    # appear in several Dockerfiles pinning KUBECTL_VERSION=v1.34.1.
    "kubectl": Pin(_KUBECTL, {
        "linux-amd64": _kubectl("linux-amd64", "7721f265e18709862655affba5343e85e1980639395d5754473dafaadcaa69e3"),  # a, b, c
        "linux-arm64": _kubectl("linux-arm64", "420e6110e3ba7ee5a3927b5af868d18df17aae36b720529ffa4e9e945aa95450"),  # a, b, c
        "darwin-amd64": _kubectl("darwin-amd64", "bb211f2b31f2b3bc60562b44cc1e3b712a16a98e9072968ba255beb04cefcfdf"),  # a, b, c
        "darwin-arm64": _kubectl("darwin-arm64", "d80e5fa36f2b14005e5bb35d3a72818acb1aea9a081af05340a000e5fbdb2f76"),  # a, b, c
    }),
    # helm v3.19.0 (archive digests). Sources for all four: (a) the Helm v3.19.0 release notes
    # ("Installation and Upgrading": "<platform> (checksum / <sha>)"); (b) cert-manager
    # makefile-modules 00_mod.mk (`tools += helm=v3.19.0`, helm_<os>_<arch>_SHA256SUM);
    # (c) another Makefile: "HELM_SHA256_<os>_<arch>", "Source: get.helm.sh/…tar.gz.sha256sum".
    "helm": Pin(_HELM, {
        "linux-amd64": _helm("linux-amd64", "a7f81ce08007091b86d8bd696eb4d86b8d0f2e1b9f6c714be62f82f96a594496"),  # a, b, c
        "linux-arm64": _helm("linux-arm64", "440cf7add0aee27ebc93fada965523c1dc2e0ab340d4348da2215737fc0d76ad"),  # b, c
        "darwin-amd64": _helm("darwin-amd64", "09a108c0abda42e45af172be65c49125354bf7cd178dbe10435e94540e49c7b9"),  # a, b, c
        "darwin-arm64": _helm("darwin-arm64", "31513e1193da4eb4ae042eb5f98ef9aca7890cfa136f4707c8d4f70e2115bef6"),  # a, b, c
    }),
    # minikube v1.37.0 (raw binaries). Sources: (a) a project's notes that record minikube v1.37.0
    # with the release's binary checksums for linux-amd64, darwin-amd64, darwin-arm64; (b) an
    # unrelated dotfiles installer whose MINIKUBE_CHECKSUMS table has the same three values (it
    # downloads "latest" and does not name the version, so (a) is what ties them to v1.37.0).
    # linux-arm64: no published value found in the sources searched -> refused until pinned.
    "minikube": Pin(_MINIKUBE, {
        "linux-amd64": _minikube("linux-amd64", "d5cf561c71171152ff67d799f041ac0f65c235c87a1e9fc02a6a17b8226214d0"),  # a, b
        "linux-arm64": _minikube("linux-arm64", None),
        "darwin-amd64": _minikube("darwin-amd64", "4c32b9e5fed64a311db9a40d6fdcc8fa794bc5bbc546545f4d187e9d416a74cb"),  # a, b
        "darwin-arm64": _minikube("darwin-arm64", "5e0914c3559f6713295119477a6f5dc29862596effbfc764a61757bb314901d2"),  # a, b
    }),
}


# --------------------------------------------------------------------------------------------
# Platform and lookup
# --------------------------------------------------------------------------------------------

_OS = {"linux": "linux", "darwin": "darwin"}
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def detect_platform(system: str | None = None, machine: str | None = None) -> str:
    """This machine as "<os>-<arch>" (linux|darwin, amd64|arm64); ToolInstallError for anything else."""
    system = system if system is not None else _platform.system()
    machine = machine if machine is not None else _platform.machine()
    os_name, arch = _OS.get(system.lower()), _ARCH.get(machine.lower())
    if os_name is None or arch is None:
        raise ToolInstallError(
            f"unsupported platform {system}/{machine}: tools.install knows linux and darwin on x86_64 or arm64",
            hint="install kubectl, helm and minikube yourself and put them on PATH")
    return f"{os_name}-{arch}"


def find_tool(name: str, tools_dir: Path | str) -> str | None:
    """The executable `name` in tools_dir if there is one, else on PATH, else None."""
    local = Path(tools_dir) / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


# --------------------------------------------------------------------------------------------
# Install
# --------------------------------------------------------------------------------------------

def install(
    names: list[str],
    dest: Path,
    *,
    platform: str | None = None,
    base_urls: Mapping[str, str] | None = None,
    force: bool = False,
    reporter: Callable[[str], object] = print,
    pins: Mapping[str, Pin] | None = None,
    timeout: float = SOCKET_TIMEOUT_SECONDS,
) -> list[InstallResult]:
    """Install each named tool into `dest`; one InstallResult per name, in order.

    A tool that fails does not stop the others: look for ``outcome == "failed"``.
    ``base_urls`` maps a tool name (or "*") to a mirror origin such as ``http://127.0.0.1:8080``: the
    pinned URL's scheme and host are replaced, its path kept, and its checksum still applies.
    ``pins`` replaces PINS (tests). Raises ToolInstallError only when the platform cannot be detected.
    """
    pins = PINS if pins is None else pins
    platform = platform or detect_platform()
    dest = Path(dest)
    results = []
    for name in names:
        pin = pins.get(name)
        if pin is None:
            results.append(InstallResult(name, "", dest / name, "failed",
                                         f"unknown tool {name!r}; known: {', '.join(sorted(pins))}"))
            reporter(f"{name}: failed: {results[-1].detail}")
            continue
        try:
            outcome, detail = _install_one(name, pin, dest, platform, _mirror(name, base_urls), force,
                                           reporter, timeout)
        except ToolInstallError as exc:
            outcome, detail = "failed", str(exc)
        result = InstallResult(name, pin.version, dest / name, outcome, detail)
        reporter(f"{name} v{pin.version}: {outcome}: {detail}")
        results.append(result)
    return results


def _mirror(name: str, base_urls: Mapping[str, str] | None) -> str | None:
    if not base_urls:
        return None
    return base_urls.get(name) or base_urls.get("*")


def _install_one(name: str, pin: Pin, dest: Path, platform: str, mirror: str | None, force: bool,
                 reporter: Callable[[str], object], timeout: float) -> tuple[str, str]:
    label = f"{name} v{pin.version}"
    if platform not in PLATFORMS and platform not in pin.artifacts:
        raise ToolInstallError(f"{label}: unsupported platform {platform!r} (supported: {', '.join(PLATFORMS)})")
    artifact = pin.artifacts.get(platform)
    if artifact is None or not artifact.sha256:
        raise ToolInstallError(
            f"{label}: no verified SHA-256 is pinned for {platform}; refusing to install an unverified binary"
            f" (install {name} yourself and put it on PATH, or add the published checksum to PINS)")
    expected = artifact.sha256.lower()
    target = dest / name
    manifest_path = dest / f".{name}.sha256"

    if not force:
        reason = _already(target, manifest_path, pin.version, artifact)
        if reason:
            return "already", reason

    replacing = target.exists()
    url = _with_mirror(artifact.url, mirror)
    temps: list[Path] = []
    try:
        dest.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(dest, name)
        reporter(f"{label}: downloading {url}")
        download = _temp_path(dest, name, ".download")
        temps.append(download)
        actual = _download(url, download, label, timeout)
        if actual != expected:
            raise ToolInstallError(
                f"{label}: checksum mismatch for {url}: expected sha256 {expected}, got {actual};"
                " nothing was installed")
        if artifact.member:
            binary = _temp_path(dest, name, ".unpacked")
            temps.append(binary)
            _extract_member(download, artifact.member, binary, label)
        else:
            binary = download
        binary.chmod(0o755)
        binary_sha = _sha256_file(binary)
        os.replace(binary, target)
        _write_manifest(manifest_path, {
            "name": name, "version": pin.version, "platform": platform, "url": artifact.url,
            "artifact_sha256": expected, "binary_sha256": binary_sha,
        })
    except OSError as exc:  # dest not writable, a directory in the way, disk full …
        raise ToolInstallError(f"{label}: could not install into {dest}: {exc}") from None
    finally:
        for path in temps:
            path.unlink(missing_ok=True)
    note = ", replacing a binary that did not match the pin" if replacing else ""
    return "installed", f"{target} (sha256 {binary_sha}){note}"


def _already(target: Path, manifest_path: Path, version: str, artifact: Artifact) -> str | None:
    """Why `target` already is the pinned binary, or None when it must be (re)installed."""
    if not target.is_file():
        return None
    actual = _sha256_file(target)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = None
    if (isinstance(manifest, dict) and manifest.get("version") == version
            and manifest.get("artifact_sha256") == artifact.sha256.lower()
            and manifest.get("binary_sha256") == actual):
        ok = True
    else:
        # A raw binary is its own artifact: one placed there by hand that matches the pin is fine too.
        ok = artifact.member is None and actual == artifact.sha256.lower()
    if not ok:
        return None
    if not os.access(target, os.X_OK):
        target.chmod(0o755)
    return f"{target} is the verified v{version} binary (sha256 {actual})"


_TEMP_SUFFIXES = (".download", ".unpacked", ".manifest")


def _remove_stale_temps(dest: Path, name: str) -> None:
    """Temp files left by an install that was killed; none can be in use after the download deadline."""
    cutoff = time.time() - DOWNLOAD_DEADLINE_SECONDS
    for path in dest.glob(f".{name}.*"):
        if path.suffix in _TEMP_SUFFIXES and path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


def _with_mirror(url: str, mirror: str | None) -> str:
    if not mirror:
        return url
    parts, base = urllib.parse.urlsplit(url), urllib.parse.urlsplit(mirror)
    path = base.path.rstrip("/") + parts.path
    return urllib.parse.urlunsplit((base.scheme, base.netloc, path, parts.query, ""))


def _temp_path(dest: Path, name: str, suffix: str) -> Path:
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=dest)
    os.close(fd)
    return Path(path)


def _download(url: str, out: Path, label: str, timeout: float) -> str:
    """Stream `url` into `out` (bounded in time and size); return the sha256 of what was written."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    deadline = time.monotonic() + DOWNLOAD_DEADLINE_SECONDS
    digest, size = hashlib.sha256(), 0
    try:
        # urlopen follows redirects (GitHub release assets redirect to their CDN).
        with urllib.request.urlopen(request, timeout=timeout) as response, out.open("wb") as sink:
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise ToolInstallError(f"{label}: {url} is larger than {MAX_DOWNLOAD_BYTES} bytes; refusing")
                if time.monotonic() > deadline:
                    raise ToolInstallError(f"{label}: download of {url} took longer than"
                                           f" {DOWNLOAD_DEADLINE_SECONDS:.0f}s; giving up")
                digest.update(chunk)
                sink.write(chunk)
    except urllib.error.HTTPError as exc:
        raise ToolInstallError(f"{label}: download failed: {url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ToolInstallError(f"{label}: could not download {url}: {exc.reason}") from None
    except (socket.timeout, TimeoutError):
        raise ToolInstallError(f"{label}: download of {url} timed out after {timeout:.0f}s without data") from None
    except OSError as exc:
        raise ToolInstallError(f"{label}: download of {url} failed: {exc}") from None
    return digest.hexdigest()


def _unsafe_member_name(name: str) -> bool:
    """An absolute path, a Windows drive, or any ".." component: it could land outside the target."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts


def _extract_member(archive: Path, member: str, out: Path, label: str) -> None:
    """Copy the one regular file `member` out of a verified .tar.gz; refuse archives with unsafe entries."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            entries = tar.getmembers()
            for entry in entries:
                if _unsafe_member_name(entry.name):
                    raise ToolInstallError(f"{label}: archive has an unsafe entry {entry.name!r}; refusing it")
                link_target = (posixpath.normpath(posixpath.join(posixpath.dirname(entry.name), entry.linkname))
                               if entry.issym() else entry.linkname)
                if (entry.issym() or entry.islnk()) and (
                        entry.linkname.startswith("/") or _unsafe_member_name(link_target)):
                    raise ToolInstallError(f"{label}: archive has a link {entry.name!r} -> {entry.linkname!r}"
                                           " that points outside it; refusing it")
            matches = [entry for entry in entries if posixpath.normpath(entry.name) == member]
            if len(matches) != 1:
                raise ToolInstallError(f"{label}: archive has {len(matches)} entries named {member!r}, expected 1")
            entry = matches[0]
            if not entry.isreg():
                raise ToolInstallError(f"{label}: {member!r} in the archive is not a regular file; refusing it")
            if entry.size > MAX_DOWNLOAD_BYTES:
                raise ToolInstallError(f"{label}: {member!r} is larger than {MAX_DOWNLOAD_BYTES} bytes; refusing")
            source = tar.extractfile(entry)
            assert source is not None  # a regular file always has data
            with source, out.open("wb") as sink:
                shutil.copyfileobj(source, sink, _CHUNK)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ToolInstallError(f"{label}: could not unpack {member!r}: {exc}") from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(path: Path, data: dict) -> None:
    temp = _temp_path(path.parent, path.name.lstrip("."), ".manifest")
    try:
        temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        temp.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
