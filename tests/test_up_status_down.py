"""`up`, `status` and `down` against the Kubernetes API emulator and the CLI stand-ins."""

from __future__ import annotations

import base64

import pytest



def outcome_lines(output: str, word: str) -> list[str]:
    return [line for line in output.splitlines() if f" {word} " in f" {line} "]


def test_up_four_run_idempotency(world):
    # 1. dry run: reports changes, touches nothing
    code, out = world.run("up", dry_run=True, only="platform")
    assert code == 0, out
    assert "would-change" in out
    assert world.emu.write_requests() == []
    assert not world.mutating_calls()

    # 2. run: changes
    world.reset_calls()
    code, out = world.run("up", only="platform")
    assert code == 0, out
    assert "changed" in out
    assert world.emu.get("Deployment", "minio", "argo-etl") is not None
    assert world.emu.get("EventBus", "default", "argo-etl")["spec"]["jetstream"]["version"] == "2.10.10"
    assert any(argv[:1] == ["start"] for argv in world.calls("minikube"))

    # 3. dry run again: nothing would change
    world.reset_calls()
    code, out = world.run("up", dry_run=True, only="platform")
    assert code == 0, out
    assert "would-change" not in out, out

    # 4. run again: every step ok, no write request at all
    world.reset_calls()
    code, out = world.run("up", only="platform")
    assert code == 0, out
    assert "changed" not in out and "would-change" not in out, out
    assert world.emu.write_requests() == []
    assert world.mutating_calls() == []


def test_status_reports_every_step_and_fails_on_missing(world):
    code, out = world.run("up", only="platform")
    assert code == 0, out
    code, out = world.run("status", only="platform")
    assert code == 0, out
    assert "minio/deployment/minio" in out and "argo-events/eventbus/default" in out
    # someone deletes MinIO's Service and edits the artifact repository
    world.emu.delete_object("Service", "minio", "argo-etl")
    cm = world.emu.get("ConfigMap", "artifact-repositories", "argo-etl")
    cm["data"]["default-minio-repository"] = "s3: {}"
    world.emu.put_object(cm)
    world.emu.clear_log()
    code, out = world.run("status", only="platform")
    assert code == 1
    assert "missing" in out and "drifted" in out and ".data.default-minio-repository" in out
    assert world.emu.write_requests() == []


def test_down_removes_only_managed_objects_and_twice_is_fine(world):
    assert world.run("up", only="platform")[0] == 0
    world.emu.put_object({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "users-own", "namespace": "argo-etl"}, "data": {"a": "b"}})
    # an object with the name of one of ours but not carrying our label is left alone
    world.emu.put_object({"apiVersion": "v1", "kind": "ServiceAccount",
                          "metadata": {"name": "argo-workflow", "namespace": "argo-etl",
                                       "labels": {"app.kubernetes.io/managed-by": "someone-else"}}})
    code, out = world.run("down", yes=True)
    assert code == 0, out
    assert world.emu.get("ConfigMap", "users-own", "argo-etl") is not None
    assert world.emu.get("ServiceAccount", "argo-workflow", "argo-etl") is not None
    assert world.emu.get("Deployment", "minio", "argo-etl") is None
    assert world.emu.get("EventBus", "default", "argo-etl") is None
    # data is kept without --purge
    assert world.emu.get("PersistentVolumeClaim", "minio-data", "argo-etl") is not None
    assert world.emu.get("Namespace", "argo-etl") is not None
    assert any("uninstall" in argv for argv in world.calls("helm"))
    world.reset_calls()
    code, out = world.run("down", yes=True)
    assert code == 0, out
    assert world.emu.write_requests() == []
    assert world.mutating_calls() == []


def test_down_purge_removes_data_crds_and_minikube(world):
    assert world.run("up", only="platform")[0] == 0
    code, out = world.run("down", yes=True, purge=True, minikube=True)
    assert code == 0, out
    assert world.emu.get("PersistentVolumeClaim", "minio-data", "argo-etl") is None
    assert world.emu.get("CustomResourceDefinition", "eventbus.argoproj.io") is None
    assert any(argv[:1] == ["delete"] for argv in world.calls("minikube"))


def test_down_without_yes_and_without_terminal_refuses(world):
    assert world.run("up", only="platform")[0] == 0
    world.reset_calls()
    code, out = world.run("down")
    assert code != 0 and "--yes" in out
    assert world.emu.write_requests() == []


def test_api_500_mid_up_is_a_clear_failure_and_next_up_converges(world):
    world.emu.fail_next(status=500, method="PATCH", path_contains="/deployments/minio")
    code, out = world.run("up", only="platform")
    assert code == 1
    failed = outcome_lines(out, "failed")
    assert failed and "minio/deployment/minio" in failed[0] and "500" in failed[0]
    assert "Traceback" not in out
    code, out = world.run("up", only="platform")
    assert code == 0, out
    assert world.emu.get("Deployment", "minio", "argo-etl") is not None


def test_api_timeout_mid_up_is_a_clear_failure(world):
    world.emu.delay_next(8, method="PATCH", path_contains="/services/minio", count=1)
    code, out = world.run("up", only="platform")
    assert code == 1
    failed = outcome_lines(out, "failed")
    assert failed and "minio/service/minio" in failed[0] and "timed out" in failed[0]
    code, out = world.run("up", only="platform")
    assert code == 0, out


def test_helm_failure_is_one_line_with_the_cause(world, monkeypatch):
    monkeypatch.setenv("STANDIN_FAIL_HELM", "upgrade")
    code, out = world.run("up", only="platform")
    assert code == 1
    failed = outcome_lines(out, "failed")
    assert failed and "argo-events/release" in failed[0] and "helm" in failed[0]


def test_no_secret_in_any_output(world):
    outputs = []
    for task, kwargs in (("up", {"only": "platform"}), ("up", {"only": "platform", "debug": True}),
                         ("status", {"only": "platform"}), ("down", {"yes": True, "debug": True})):
        outputs.append(world.run(task, **kwargs)[1])
    # a failing run with --debug prints a traceback: still nothing secret
    world.emu.fail_next(status=500, method="GET", path_contains="/secrets/")
    outputs.append(world.run("status", only="platform", debug=True)[1])
    text = "\n".join(outputs)
    secrets = world.settings_secrets()
    token = world.emu.get("Secret", "argo-ui.service-account-token", "argo-etl")
    assert secrets and all(len(s) >= 24 for s in secrets)
    for secret in secrets:
        assert secret not in text
        assert base64.b64encode(secret.encode()).decode() not in text
    assert "MINIO_ROOT_PASSWORD" not in text or "generated MINIO_ROOT_PASSWORD" in text


def test_wrong_kube_context_refuses_before_touching_anything(world, monkeypatch):
    assert world.run("up", only="platform")[0] == 0
    world.reset_calls()
    monkeypatch.setenv("KUBE_CONTEXT", "production")
    code, out = world.run("up", only="platform")
    assert code == 1
    assert "production" in out and "does not exist" in out
    assert world.emu.write_requests() == [] and world.mutating_calls() == []


def test_current_context_differs_refuses(world, monkeypatch):
    assert world.run("up", only="platform")[0] == 0
    import yaml

    config = yaml.safe_load(world.kubeconfig.read_text())
    other = dict(config["contexts"][0], name="other")
    config["contexts"].append(other)
    config["current-context"] = "other"
    world.kubeconfig.write_text(yaml.safe_dump(config))
    world.reset_calls()
    code, out = world.run("up", only="platform")
    assert code == 1 and "refusing" in out
    assert world.emu.write_requests() == []


def test_missing_executable_is_named(world, monkeypatch, tmp_path):
    import os
    import shutil

    partial = tmp_path / "partial-bin"
    partial.mkdir()
    for tool in ("kubectl", "minikube", "docker"):
        os.symlink(world.bin / tool, partial / tool)
    python_dir = os.path.dirname(shutil.which("python3"))
    monkeypatch.setenv("PATH", f"{partial}{os.pathsep}{python_dir}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setenv("TOOLS_AUTO_INSTALL", "false")
    code, out = world.run("up", only="platform")
    assert code == 1
    assert "helm" in out and "tools.install" in out
    assert world.emu.write_requests() == []


def test_bad_setting_is_one_line_and_changes_nothing(world):
    world.env_file.write_text("MINIKUBE_CPUS=many\n")
    code, out = world.run("up")
    assert code == 2
    assert "MINIKUBE_CPUS" in out and len(out.strip().splitlines()) == 1
    assert world.calls() == [] and world.emu.requests == []


def test_nats_version_not_offered_by_the_controller_is_refused(world, monkeypatch):
    monkeypatch.setenv("EVENTBUS_NATS_VERSION", "2.10.29")
    code, out = world.run("up", only="platform")
    assert code == 1
    assert "2.10.29" in out and "2.10.10" in out
    assert world.emu.get("EventBus", "default", "argo-etl") is None


def test_ui_prints_addresses_and_only_with_show_token_the_token(world, monkeypatch):
    from types import SimpleNamespace

    from etlboot.tasks import core

    assert world.run("up", only="platform")[0] == 0
    monkeypatch.setenv("STANDIN_FORWARD_ARGO_WORKFLOWS_SERVER", world.emu.url.split("//")[1])

    def interrupt(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "time", SimpleNamespace(sleep=interrupt))  # Ctrl-C at the first wait
    token_b64 = world.emu.get("Secret", "argo-ui.service-account-token", "argo-etl")["data"]["token"]
    token = base64.b64decode(token_b64).decode()
    code, out = world.run("ui", argo_port=0, minio_port=0)
    assert code == 0, out
    assert "Argo UI:       http://localhost:" in out and "MinIO console: http://localhost:" in out
    assert token not in out
    code, out = world.run("ui", show_token=True, argo_port=0, minio_port=0)
    assert code == 0, out
    assert f"Bearer {token}" in out
