"""Touches only what it made: no silent adoption, CRDs kept while others use them, the context guard on every
task, no orphaned child process, a least-privilege UI token, and read-only commands that write nothing."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest
import yaml
from invoke import Context as InvokeContext
from invoke import Exit

from kube_emulator import KubeEmulator

NS = "argo-etl"
OURS = {"app.kubernetes.io/managed-by": "argo-etl-bootstrap"}


def run_task(module: str, task_name: str, **kwargs) -> tuple[int, str]:
    import importlib

    task = getattr(importlib.import_module(f"etlboot.tasks.{module}"), task_name)
    out = io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(out):
        try:
            task(InvokeContext(), **kwargs)
        except Exit as exc:
            code = exc.code
            if exc.message:
                out.write(str(exc.message))
    return code, out.getvalue()


# -- 1. no silent adoption ---------------------------------------------------------------------------------------


def test_an_object_we_did_not_make_is_refused_not_overwritten(world):
    assert world.run("up", only="platform")[0] == 0
    world.run("down", yes=True)
    users = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "artifact-repositories", "namespace": NS, "labels": {"team": "data"}},
             "data": {"theirs": "keep me"}}
    world.emu.put_object(users)
    world.emu.clear_log()
    code, out = world.run("up", only="platform")
    assert code == 1
    line = next(l for l in out.splitlines() if "argo-workflows/configmap/artifact-repositories" in l)
    assert "not made by this tool" in line and "--adopt" in out
    live = world.emu.get("ConfigMap", "artifact-repositories", NS)
    assert live["data"] == {"theirs": "keep me"} and live["metadata"]["labels"] == {"team": "data"}
    assert not [r for r in world.emu.write_requests() if "artifact-repositories" in r["path"]]
    # down and down --purge leave it as it is
    assert world.run("down", yes=True)[0] == 0
    assert world.run("down", yes=True, purge=True)[0] in (0, 1)
    assert world.emu.get("ConfigMap", "artifact-repositories", NS)["data"] == {"theirs": "keep me"}


def test_up_adopt_takes_it_over_and_says_so_per_object(world):
    world.emu.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    code, out = world.run("up", only="platform")
    assert code == 1 and "Namespace argo-etl exists and was not made by this tool" in out
    code, out = world.run("up", only="platform", adopt=True)
    assert code == 0, out
    line = next(l for l in out.splitlines() if "platform/namespace" in l)
    assert "changed" in line and "adopted with --adopt" in line
    ns = world.emu.get("Namespace", NS)
    assert ns["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "argo-etl-bootstrap"
    world.emu.clear_log()
    assert world.run("up", only="platform")[0] == 0
    assert world.emu.write_requests() == []
    # a namespace we did not create is never deleted, not even by --purge
    assert world.run("down", yes=True, purge=True)[0] == 0
    assert world.emu.get("Namespace", NS) is not None


# -- 2. CRDs: refused while others use them ----------------------------------------------------------------------


def test_purge_keeps_the_crds_while_custom_resources_live_elsewhere(world):
    assert world.run("up", only="platform")[0] == 0
    world.emu.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}})
    world.emu.put_object({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                          "metadata": {"name": "nightly", "namespace": "team-b"}, "spec": {}})
    code, out = world.run("down", yes=True, purge=True)
    assert code == 1
    assert "Workflow team-b/nightly" in out and "refusing to delete the CRDs" in out
    assert world.emu.get("CustomResourceDefinition", "workflows.argoproj.io") is not None
    assert world.emu.get("Workflow", "nightly", "team-b") is not None


def test_purge_deletes_every_crd_the_charts_installed_and_names_them(world):
    assert world.run("up", only="platform")[0] == 0
    code, out = world.run("down", yes=True, purge=True)
    assert code == 0, out
    left = [c["metadata"]["name"] for c in world.emu.objects("CustomResourceDefinition")
            if c["metadata"]["name"].endswith(".argoproj.io")]
    assert left == []
    for name in ("workflowartifactgctasks", "workfloweventbindings", "workflowtasksets"):
        assert f"{name}.argoproj.io" in out


# -- 3. the context guard on every task --------------------------------------------------------------------------


@pytest.fixture
def prod(world):
    """kubectl's current context is `prod`, a second cluster that counts every request it gets."""
    emu = KubeEmulator().start()
    assert world.run("up", only="platform")[0] == 0
    config = yaml.safe_load(world.kubeconfig.read_text())
    config["clusters"].append({"name": "prod", "cluster": {"server": emu.url}})
    config["users"].append({"name": "prod", "user": {"token": "kube-emulator-token"}})
    config["contexts"].append({"name": "prod", "context": {"cluster": "prod", "user": "prod"}})
    config["current-context"] = "prod"
    world.kubeconfig.write_text(yaml.safe_dump(config))
    world.reset_calls()
    emu.clear_log()
    yield emu
    emu.stop()


@pytest.mark.parametrize("module, task, kwargs", [
    ("core", "up", {}), ("core", "up", {"only": "pipeline"}), ("core", "status", {"only": "ftp"}),
    ("core", "down", {"yes": True}), ("core", "ui", {"show_token": True}), ("core", "ui", {}),
    ("demo", "upload", {"no_follow": True}), ("demo", "verify", {}),
    ("examples", "run_example", {"name": "hello-world"}), ("examples", "clean", {"yes": True}),
    ("examples", "run_all", {}), ("examples", "webhook", {}),
])
def test_every_task_refuses_another_current_context_and_sends_it_nothing(world, prod, module, task, kwargs):
    code, out = run_task(module, task, **kwargs)
    assert code not in (0, None), out
    assert "refusing" in out and "'prod'" in out
    assert "Traceback" not in out
    assert prod.requests == []
    assert world.emu.write_requests() == []
    assert world.mutating_calls() == []


def test_minikube_start_keeps_the_users_current_context(world):
    config = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "mine", "cluster": {"server": "https://x"}}],
              "users": [{"name": "mine", "user": {}}],
              "contexts": [{"name": "mine", "context": {"cluster": "mine", "user": "mine"}}],
              "current-context": "mine"}
    world.kubeconfig.write_text(yaml.safe_dump(config))
    code, out = world.run("up", only="platform")
    # another cluster is current: refused before a minikube profile is even started
    assert code == 1 and "current kube context is 'mine'" in out
    assert [argv for argv in world.calls("minikube") if argv[:1] == ["start"]] == []
    # with no current context, minikube starts without taking the user's kubectl over
    del config["current-context"]
    world.kubeconfig.write_text(yaml.safe_dump(config))
    code, out = world.run("up", only="platform")
    assert code == 0, out
    starts = [argv for argv in world.calls("minikube") if argv[:1] == ["start"]]
    assert starts and all("--keep-context" in argv for argv in starts)
    assert not yaml.safe_load(world.kubeconfig.read_text()).get("current-context")


# -- 4. no orphans -----------------------------------------------------------------------------------------------


CHILD_OF_KILLED_PARENT = """
import sys, time
sys.path.insert(0, sys.argv[1])
from etlboot import children
child = children.popen(["sleep", "60"])
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_child_process_dies_with_the_tool_on_sigkill():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parent = subprocess.Popen([sys.executable, "-c", CHILD_OF_KILLED_PARENT, root], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(5)
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_port_forward_starts_kubectl_as_a_child_that_dies_with_the_tool(world, monkeypatch):
    from etlboot import children, config
    from etlboot.portforward import PortForward

    assert world.run("up", only="platform")[0] == 0
    started = []
    real = children.popen
    monkeypatch.setattr(children, "popen", lambda argv, **kw: started.append(argv) or real(argv, **kw))
    with PortForward(config.load(world.env_file), "svc/minio", 9000):
        pass
    assert started and started[0][1:3] == ["--context", "argo-etl"]


def test_ctrl_c_says_interrupted_and_exits_130(world, monkeypatch):
    from etlboot import engine

    def interrupt(self, steps):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.Runner, "up", interrupt)
    code, out = world.run("up", only="platform")
    assert code == 130
    assert "interrupted" in out and "Traceback" not in out


# -- 5. least privilege for the UI token -------------------------------------------------------------------------


def test_the_ui_token_belongs_to_a_namespaced_role_that_reads_and_submits_workflows(world):
    assert world.run("up", only="platform")[0] == 0
    token = world.emu.get("Secret", "argo-ui.service-account-token", NS)
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "argo-ui"
    binding = world.emu.get("RoleBinding", "argo-ui", NS)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "argo-ui"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "argo-ui"}]
    rules = world.emu.get("Role", "argo-ui", NS)["rules"]
    granted = {(group, resource, verb) for r in rules for group in r["apiGroups"] for resource in r["resources"]
               for verb in r["verbs"]}
    assert ("argoproj.io", "workflows", "create") in granted and ("argoproj.io", "workflows", "list") in granted
    assert not any(resource == "secrets" for _, resource, _ in granted)
    assert not any("*" in (g, r, v) for g, r, v in granted)


# -- 6. commands that only look write nothing --------------------------------------------------------------------


@pytest.mark.parametrize("task, kwargs", [("up", {"dry_run": True}), ("status", {}), ("render", {"out": "OUT"}),
                                          ("down", {})])
def test_read_only_commands_do_not_create_the_env_file(world, task, kwargs, tmp_path):
    assert not world.env_file.exists()
    if task == "render":
        kwargs = {"out": str(tmp_path / "rendered")}
    world.run(task, **kwargs)
    assert not world.env_file.exists()


def test_planted_foreign_objects_of_every_kind_survive_up_down_and_purge(world):
    """Someone else's objects under every name the platform part uses (but the namespace): none is
    overwritten, relabelled or deleted; `status` names each one."""
    from etlboot import config, stack
    from etlboot.cli import make_context
    from etlboot.steps import ObjectStep

    ctx = make_context(config.load(world.env_file))
    planted = []
    for step in stack.platform_steps(ctx) + stack.pipeline_steps(ctx):
        if not isinstance(step, ObjectStep) or step.desired(ctx)["kind"] == "Namespace":
            continue
        desired = step.desired(ctx)
        foreign = {"apiVersion": desired["apiVersion"], "kind": desired["kind"],
                   "metadata": {"name": desired["metadata"]["name"], "namespace": NS,
                                "labels": {"owner": "team-b"}, "annotations": {"note": "theirs"}}}
        if desired["kind"] in ("ConfigMap", "Secret"):
            foreign["data"] = {"theirs": "dGhlaXJz"}
        planted.append((step.name, foreign))
    assert world.run("up", only="platform")[0] == 0
    assert world.run("down", yes=True)[0] == 0  # what stays: our namespace, the CRDs, the data volume
    world.emu.delete_object("PersistentVolumeClaim", "minio-data", NS)
    for _, obj in planted:
        world.emu.put_object(obj)
    kinds = {obj["kind"] for _, obj in planted}
    assert {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "Deployment", "Service",
            "PersistentVolumeClaim", "EventBus", "EventSource", "Sensor", "WorkflowTemplate"} <= kinds

    def unchanged():
        for _, obj in planted:
            live = world.emu.get(obj["kind"], obj["metadata"]["name"], NS)
            assert live is not None, obj["metadata"]["name"]
            assert live["metadata"]["labels"] == {"owner": "team-b"}
            assert live["metadata"]["annotations"] == {"note": "theirs"}
            if "data" in obj:
                assert live["data"] == obj["data"]

    assert world.run("up")[0] == 1
    unchanged()
    code, out = world.run("status")
    assert code == 1
    for name, _ in planted:
        line = next(l for l in out.splitlines() if f" {name} " in f" {l} ")
        assert "not made by this tool" in line, line
    assert world.run("down", yes=True)[0] in (0, 1)
    unchanged()
    world.run("down", yes=True, purge=True)
    unchanged()
