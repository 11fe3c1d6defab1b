"""`up` with the pipeline steps: idempotent, a code change touches only the code ConfigMap, and a MinIO
EventSource whose listener stopped shows in `status` and is repaired by `up`."""

from __future__ import annotations

import pytest

from stack_harness import World


@pytest.fixture
def world(tmp_path, monkeypatch):
    w = World(tmp_path, monkeypatch)
    monkeypatch.setenv("ETL_IMAGE", "registry.example/argo-etl:1.0")  # no image build in these tests
    yield w
    w.close()


def test_pipeline_up_is_idempotent_and_ordered(world):
    code, out = world.run("up", only="platform,pipeline")
    assert code == 0, out
    names = [line.split()[2] for line in out.splitlines() if line[:1] in "●✓"]
    # the MinIO EventSources start only after their bucket exists and MinIO runs
    assert names.index("minio/bucket/etl") < names.index("pipeline/eventsource/etlproj")
    assert names.index("minio/deployment/minio") < names.index("pipeline/eventsource/agg")
    for kind, name in (("WorkflowTemplate", "etl"), ("WorkflowTemplate", "agg"), ("EventSource", "etlproj"),
                       ("EventSource", "agg"), ("Sensor", "etlproj"), ("ConfigMap", "etl-code")):
        obj = world.emu.get(kind, name, "argo-etl")
        assert obj is not None, (kind, name)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "argo-etl-bootstrap"
    code_cm = world.emu.get("ConfigMap", "etl-code", "argo-etl")
    assert "etl.py" in code_cm["data"] and "agg.py" in code_cm["data"]
    world.reset_calls()
    code, out = world.run("up", only="platform,pipeline")
    assert code == 0, out
    assert " changed " not in out
    assert world.emu.write_requests() == []


def test_code_change_changes_only_the_code_configmap(world, monkeypatch, tmp_path):
    from etlboot import manifests

    assert world.run("up", only="platform,pipeline")[0] == 0
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    for path in manifests.CODE.glob("*.py"):
        (code_dir / path.name).write_text(path.read_text())
    (code_dir / "etl.py").write_text((code_dir / "etl.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(manifests, "CODE", code_dir)
    world.reset_calls()
    code, out = world.run("status", only="pipeline")
    assert code == 1 and "pipeline/configmap/etl-code" in out and "drifted" in out
    code, out = world.run("up", only="pipeline")
    assert code == 0, out
    assert "doctor" not in out   # nothing unhealthy: no pointer
    changed = [line for line in out.splitlines() if line.startswith("● changed")]
    assert len(changed) == 1 and "pipeline/configmap/etl-code" in changed[0]
    writes = world.emu.write_requests()
    assert writes and all("/configmaps/etl-code" in r["path"] for r in writes)


def test_stopped_minio_listener_shows_in_status_and_up_restarts_it(world):
    assert world.run("up", only="platform,pipeline")[0] == 0
    world.set_listener("argo-etl", "etlproj", "stopped")
    code, out = world.run("status", only="pipeline")
    assert code == 1
    line = next(l for l in out.splitlines() if "pipeline/eventsource/etlproj" in l)
    assert "listener stopped" in line
    agg_line = next(l for l in out.splitlines() if "pipeline/eventsource/agg" in l)
    assert "listening" in agg_line and "✓" in agg_line
    assert "next: `invoke doctor` checks the known failure modes" in out   # status points to doctor
    # up deletes the pod; the (stand-in) Deployment controller starts a new one, which listens
    world.listener = "listening"
    world.reset_calls()
    code, out = world.run("up", only="pipeline")
    assert code == 0, out
    assert any(r["method"] == "DELETE" and "/pods/etlproj-eventsource-pod" in r["path"]
               for r in world.emu.write_requests())
    code, out = world.run("status", only="pipeline")
    assert code == 0, out


def test_image_is_built_once_and_rebuilt_only_when_its_inputs_change(tmp_path, monkeypatch):
    from etlboot import manifests

    world = World(tmp_path, monkeypatch)  # ETL_IMAGE empty: build inside minikube
    try:
        assert world.run("up", only="platform,pipeline")[0] == 0
        builds = [argv for argv in world.calls("minikube") if argv[:2] == ["image", "build"]]
        assert len(builds) == 1
        tag = builds[0][builds[0].index("-t") + 1]
        assert tag.startswith("argo-etl:") and len(tag.split(":")[1]) == 12
        wt = world.emu.get("WorkflowTemplate", "etl", "argo-etl")
        assert tag in str(wt["spec"])
        world.reset_calls()
        assert world.run("up", only="pipeline")[0] == 0
        assert not [argv for argv in world.calls("minikube") if "build" in argv]
        # a new dependency: a new tag, a rebuild, and the templates follow the new image
        code_dir = tmp_path / "code"
        code_dir.mkdir()
        for path in manifests.CODE.iterdir():
            if path.is_file():
                (code_dir / path.name).write_bytes(path.read_bytes())
        (code_dir / "requirements.txt").write_text((code_dir / "requirements.txt").read_text() + "six==1.16.0\n")
        monkeypatch.setattr(manifests, "CODE", code_dir)
        world.reset_calls()
        code, out = world.run("up", only="pipeline")
        assert code == 0, out
        builds = [argv for argv in world.calls("minikube") if argv[:2] == ["image", "build"]]
        assert len(builds) == 1 and builds[0][builds[0].index("-t") + 1] != tag
        assert "pipeline/workflowtemplate/etl" in out
    finally:
        world.close()


def test_whole_up_with_the_ftp_steps_is_idempotent(world, monkeypatch):
    monkeypatch.setenv("FTP_ENABLED", "true")
    code, out = world.run("up")
    assert code == 0, out
    for kind, name in (("Secret", "ftp-secret"), ("ConfigMap", "ftp-event-server-code"), ("Deployment", "vsftpd"),
                       ("Deployment", "ftp-event-server"), ("EventSource", "ftp"), ("Sensor", "ftp"),
                       ("WorkflowTemplate", "ftp-etl")):
        assert world.emu.get(kind, name, "argo-etl") is not None, (kind, name)
    server = world.emu.get("Deployment", "ftp-event-server", "argo-etl")
    code_hash = world.emu.get("ConfigMap", "ftp-event-server-code", "argo-etl")["metadata"]["annotations"][
        "argo-etl-bootstrap/content-hash"]
    assert server["spec"]["template"]["metadata"]["annotations"]["argo-etl-bootstrap/code-hash"] == code_hash
    world.reset_calls()
    code, out = world.run("up")
    assert code == 0, out
    assert world.emu.write_requests() == []
    code, out = world.run("down", yes=True)
    assert code == 0, out
    assert world.emu.get("Deployment", "vsftpd", "argo-etl") is None
