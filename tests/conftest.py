"""Shared test set-up: the opt-in `cluster` tier, and sys.path for the in-cluster programs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A whole fake world for up/status/down (tests/stack_harness.py), closed after the test."""
    from stack_harness import World

    w = World(tmp_path, monkeypatch)
    yield w
    w.close()


@pytest.fixture(scope="module")
def stack_after_up(tmp_path_factory):
    """One whole fake world after a full `up`, shared by a module's tests (an `up` costs seconds); each test
    puts back what it breaks. moto keeps its buckets per process, not per server: it starts empty here."""
    import urllib.request

    from stack_harness import World

    patch = pytest.MonkeyPatch()
    patch.delenv("ETLBOOT_LAUNCHER", raising=False)
    world = World(tmp_path_factory.mktemp("stack"), patch)
    try:
        host, port = world.moto.get_host_and_port()
        urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")).close()
        code, out = world.run("up")
        assert code == 0, out
        yield world
    finally:
        world.close()
        patch.undo()


@pytest.fixture(autouse=True)
def _hints_as_invoke_prints_them(monkeypatch):
    """`./etl test` exports ETLBOOT_LAUNCHER=./etl; tests see the tool as `invoke` runs it unless they say."""
    monkeypatch.delenv("ETLBOOT_LAUNCHER", raising=False)


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("-m") or ""
    selected = "cluster" in markexpr and "not cluster" not in markexpr
    if selected:
        return
    skip = pytest.mark.skip(reason="real-cluster tier: opt in with `pytest -m cluster` "
                                   "(needs a running cluster with internet and KUBE_CONTEXT set)")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto server (S3, SNS, IAM on real HTTP) for the whole run: `host:port`."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


@pytest.fixture
def env_file(tmp_path, monkeypatch):
    """Settings come from a throw-away .env; the developer's own is never read or written."""
    path = tmp_path / ".env"
    monkeypatch.setenv("ETLBOOT_ENV_FILE", str(path))
    return path


@pytest.fixture(scope="session")
def real_cluster():
    """The configured cluster, reachable; otherwise the test is skipped with the reason."""
    import os
    import shutil

    from etlboot import config

    settings = config.load(generate=False)
    for tool in ("kubectl", "helm") + (("minikube", "docker") if settings.uses_minikube else ()):
        if not shutil.which(tool) and not (ROOT / settings.values["TOOLS_DIR"] / tool).exists():
            pytest.skip(f"no real cluster here: `{tool}` is not installed")
    if settings.uses_minikube and not shutil.which("docker"):
        pytest.skip("no real cluster here: minikube needs Docker")
    if not settings.uses_minikube:
        try:
            from etlboot.kube import Kube

            Kube.from_context(settings.kube_context, 10).list("v1", "Namespace")
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"no real cluster here: context {settings.kube_context!r} is not reachable ({exc})")
    os.environ.setdefault("WAIT_TIMEOUT_SECONDS", "600")
    return settings

