"""The first run on a fresh machine: `up` installs the tools it needs itself, a dry run shows the plan, and
hints name the command the user typed."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile

import pytest

from test_toolinstall import ReleaseServer

from etlboot import toolinstall
from etlboot.toolinstall import Artifact, Pin


def _bare_path(world, tmp_path, monkeypatch, keep=("docker",)):
    """PATH with only `keep` of the stand-ins (and Python): kubectl, helm and minikube are not installed."""
    partial = tmp_path / "partial-bin"
    partial.mkdir()
    for tool in keep:
        os.symlink(world.bin / tool, partial / tool)
    for tool in ("python3", "sh", "env"):  # what the stand-ins' #! lines and the tool's shell calls need
        os.symlink(shutil.which(tool), partial / tool)
    monkeypatch.setenv("PATH", str(partial))  # not /usr/bin: this machine may have a real kubectl there


def _mirror_of_the_standins(world, server: ReleaseServer, monkeypatch) -> None:
    """A local mirror that serves the stand-ins as the pinned release files, with their real digests."""
    pins = {}
    for name, pin in toolinstall.PINS.items():
        real = pin.artifacts["linux-amd64"]
        body = (world.bin / name).read_bytes()
        if real.member:  # helm ships as a .tar.gz
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                info = tarfile.TarInfo(real.member)
                info.size, info.mode = len(body), 0o755
                tar.addfile(info, io.BytesIO(body))
            body = buffer.getvalue()
        path = "/" + real.url.split("/", 3)[3]
        server.routes[path] = body
        pins[name] = Pin(pin.version, {"linux-amd64": Artifact(real.url, hashlib.sha256(body).hexdigest(),
                                                                 real.member)})
    monkeypatch.setattr(toolinstall, "PINS", pins)
    monkeypatch.setattr(toolinstall, "detect_platform", lambda *a: "linux-amd64")


def test_up_installs_the_missing_tools_from_a_mirror_and_converges(world, tmp_path, monkeypatch):
    _bare_path(world, tmp_path, monkeypatch)
    with ReleaseServer() as server:
        _mirror_of_the_standins(world, server, monkeypatch)
        monkeypatch.setenv("TOOLS_MIRROR_URL", server.url)
        code, out = world.run("up", only="platform")
        assert code == 0, out
        assert sorted(p.name for p in (tmp_path / "no-bin").iterdir() if p.name in toolinstall.PINS) == [
            "helm", "kubectl", "minikube"]
        line = next(l for l in out.splitlines() if "preflight/tools" in l)
        assert "changed" in line
        fetched = len(server.requests)
        code, out = world.run("up", only="platform")
        assert code == 0, out
        assert len(server.requests) == fetched  # installed once


def test_without_a_way_to_fetch_them_up_says_so_in_one_line(world, tmp_path, monkeypatch):
    _bare_path(world, tmp_path, monkeypatch)
    with ReleaseServer() as server:  # serves nothing: as good as no internet
        monkeypatch.setenv("TOOLS_MIRROR_URL", server.url)
        code, out = world.run("up", only="platform")
    assert code == 1
    line = next(l for l in out.splitlines() if "preflight/tools" in l)
    assert "could not install kubectl, helm, minikube" in line
    assert "TOOLS_MIRROR_URL" in out and "Traceback" not in out


def test_a_dry_run_on_a_fresh_machine_shows_the_plan_and_exits_0(world, tmp_path, monkeypatch):
    _bare_path(world, tmp_path, monkeypatch)
    code, out = world.run("up", dry_run=True, only="platform")
    assert code == 0, out
    line = next(l for l in out.splitlines() if "preflight/tools" in l)
    assert "would create: install kubectl" in line and "install helm" in line and "install minikube" in line
    assert "argo-events/release" in out and "would be checked after preflight/tools" in out
    assert not (tmp_path / "no-bin").exists() or not any((tmp_path / "no-bin").iterdir())


def test_hints_name_the_command_the_user_typed(world, tmp_path, monkeypatch):
    _bare_path(world, tmp_path, monkeypatch)
    monkeypatch.setenv("TOOLS_AUTO_INSTALL", "false")
    monkeypatch.setenv("ETLBOOT_LAUNCHER", "./etl")
    code, out = world.run("up", only="platform")
    assert code == 1
    assert "`./etl tools.install`" in out and "`invoke " not in out
    monkeypatch.delenv("ETLBOOT_LAUNCHER")
    code, out = world.run("up", only="platform")
    assert "`invoke tools.install`" in out


def test_behind_a_failed_gate_the_steps_are_one_line(world, monkeypatch):
    assert world.run("up", only="platform")[0] == 0
    monkeypatch.setenv("KUBE_CONTEXT", "elsewhere")
    for task in ("up", "status"):
        code, out = world.run(task)
        assert code == 1
        words = "not run" if task == "up" else "not checked"
        summary = [l for l in out.splitlines() if l.startswith("- ") and words in l]
        assert len(summary) == 1 and "preflight/kube-context" in summary[0], out
        assert not any(f"{words}:" in l for l in out.splitlines() if not l.startswith("- ")), out
        assert len(out.splitlines()) < 20, out


def _program(*argv: str):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-m", "etlboot", *argv], cwd=root, capture_output=True, text=True,
                          timeout=60)


def test_version_is_this_tools_and_usage_errors_exit_2():
    ran = _program("--version")
    assert ran.returncode == 0 and ran.stdout.startswith("argo-etl-bootstrap 0.1.0")
    for argv in (("up", "--bogus"), ("no-such-task",)):
        ran = _program(*argv)
        assert ran.returncode == 2, ran
        assert ran.stderr.count("\n") == 1 and "./etl --list" in ran.stderr
    ran = _program("--list")
    assert ran.returncode == 0 and "demo.upload" in ran.stdout and "aws.setup" in ran.stdout


def test_no_task_offers_a_short_flag_that_means_something_else_elsewhere():
    ran = _program("up", "--help")
    assert ran.returncode == 0 and "--dry-run" in ran.stdout and "-d," not in ran.stdout
    ran = _program("status", "-o", "platform")
    assert ran.returncode == 2


def test_status_json_is_one_document_on_stdout(world):
    import json
    from contextlib import redirect_stdout
    import io as _io

    assert world.run("up", only="platform")[0] == 0
    out = _io.StringIO()
    from etlboot.tasks import core
    from invoke import Context as InvokeContext

    with redirect_stdout(out):
        core.status(InvokeContext(), only="platform", json=True)
    document = json.loads(out.getvalue())
    assert document["ok"] is True and document["command"] == "status"
    assert {"step": "argo-events/release", "outcome": "ok"}.items() <= next(
        s for s in document["steps"] if s["step"] == "argo-events/release").items()


# -- inputs checked where they enter -----------------------------------------------------------------------------


@pytest.mark.parametrize("value, ok", [("5Gi", True), ("500Mi", True), ("1.5Gi", True), ("10G", True),
                                       ("134217728", True), ("lots", False), ("5 Gi", False), ("-1Gi", False),
                                       ("", False)])
def test_minio_storage_size_is_a_quantity(env_file, value, ok):
    from etlboot import config

    env_file.write_text(f"MINIO_STORAGE_SIZE={value}\n")
    if ok:
        assert config.load(env_file, environ={}, generate=False).values["MINIO_STORAGE_SIZE"] == value
    else:
        with pytest.raises(config.ConfigError, match="MINIO_STORAGE_SIZE"):
            config.load(env_file, environ={}, generate=False)


def test_demo_file_upper_case_suffix_is_stored_as_the_eventsource_matches_it(tmp_path):
    from etlboot import demo

    path = tmp_path / "Scores.CSV"
    path.write_text("no,name,score\n1,a,2\n")
    (upload,) = demo.plan("single", str(path))
    assert upload.key == "input/Scores.csv"


def test_demo_file_that_is_binary_is_refused(tmp_path):
    from etlboot import demo
    from etlboot.engine import StepError

    path = tmp_path / "photo.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    with pytest.raises(StepError, match="not a text file"):
        demo.plan("single", str(path))


def test_kubeconfig_in_env_file_is_refused_with_the_reason(env_file):
    from etlboot import config

    env_file.write_text("KUBECONFIG=/somewhere/config\n")
    with pytest.raises(config.ConfigError, match="KUBECONFIG is not a setting of this tool.*export KUBECONFIG"):
        config.load(env_file, environ={}, generate=False)


def test_demo_upload_before_up_says_run_up_first(world):
    assert world.run("up", only="platform")[0] == 0
    world.emu.delete_object("Deployment", "minio", "argo-etl")
    from test_only_what_it_made import run_task

    code, out = run_task("demo", "upload", no_follow=True)
    assert code == 1
    assert "MinIO is not running" in out and "run `invoke up` first" in out and "Traceback" not in out
