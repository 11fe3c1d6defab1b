"""The Helm steps with the REAL helm (4.1.4; 3.18.0 for output shapes) against the Kubernetes API emulator,
installing the fixture charts of tests/charts/ from a loopback chart repository.

helm comes from the npm registry (tests/helm_real.py); without npm or the registry these tests skip."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from helm_real import (ChartRepo, helm_children, helm_env, helm_verbs, make_deployments_ready,  # noqa: F401
                       real_helm, real_helm3, run_steps, use_real_helm)
from kube_emulator import KubeEmulator
from stack_harness import World, standins_bin

NS = "argo-etl"
UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"


@pytest.fixture(scope="session")
def chart_repo(real_helm, tmp_path_factory):
    repo = ChartRepo(real_helm, tmp_path_factory.mktemp("chart-repo"), extra_versions={"argo-events": ["2.4.23"]})
    yield repo
    repo.close()


@pytest.fixture
def world(tmp_path, monkeypatch, real_helm, chart_repo):
    w = World(tmp_path, monkeypatch)
    use_real_helm(w, real_helm, monkeypatch, chart_repo.url)
    yield w
    w.close()


def release_states(world, name: str) -> list[tuple[int, str]]:
    """(revision, status) of every stored revision of release `name`, from helm's Secrets in the emulator."""
    rows = []
    for secret in world.emu.objects("Secret", NS):
        labels = secret["metadata"].get("labels") or {}
        if labels.get("owner") == "helm" and labels.get("name") == name:
            rows.append((int(labels["version"]), labels["status"]))
    return sorted(rows)


def assert_next_up_writes_nothing(world) -> None:
    world.reset_calls()
    code, out, results = run_steps("up")
    assert code == 0, out
    assert [r.outcome.value for r in results if r.step.endswith("/release")] == ["ok", "ok"], out
    assert world.emu.write_requests() == []
    assert "upgrade" not in helm_verbs(world) and "uninstall" not in helm_verbs(world)
    assert world.mutating_calls() == []


# -- the fixture charts are the real charts where the tool looks ------------------------------------


def _names(docs) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for doc in docs:
        if doc:
            out.setdefault(doc["kind"], set()).add(doc["metadata"]["name"])
    return out


def test_fixture_charts_create_the_real_charts_objects(real_helm, tmp_path):
    env = helm_env(tmp_path)
    charts = Path(__file__).parent / "charts"

    def template(release, chart, *extra):
        ran = subprocess.run([str(real_helm), "template", release, str(charts / chart), "-n", NS, *extra],
                             capture_output=True, text=True, env=env, check=True)
        return [d for d in yaml.safe_load_all(ran.stdout) if d]

    events, workflows = template("events", "argo-events"), template("wf", "argo-workflows")
    # the fullname rule of argo-helm's _helpers.tpl: the release name does not contain the chart's
    assert "events-argo-events-controller-manager" in _names(events)["Deployment"]
    assert "events-argo-events-controller-manager" in _names(events)["ConfigMap"]
    assert {"wf-argo-workflows-server", "wf-argo-workflows-workflow-controller"} <= _names(workflows)["Deployment"]
    assert "wf-argo-workflows-server" in _names(workflows)["ServiceAccount"]
    assert "wf-argo-workflows-server" in _names(workflows)["Service"]
    for doc in events + workflows:
        if doc["kind"] != "CustomResourceDefinition":
            assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] in ("events", "wf")
    # ... and the release name when it does, as the real charts render with the default release names
    own_events = template("argo-events", "argo-events", "--set", "crds.install=true")
    own_workflows = template("argo-workflows", "argo-workflows")
    if not UPSTREAM.is_dir():
        pytest.skip(f"no upstream renderings at {UPSTREAM} to compare the fixture charts with")
    for mine, upstream in ((own_events, "argo-events-chart-2.4.22-rendered.yaml"),
                           (own_workflows, "argo-workflows-chart-1.0.18-rendered.yaml")):
        real = [d for d in yaml.safe_load_all((UPSTREAM / upstream).read_text()) if d]
        real_by_name = {(d["kind"], d["metadata"]["name"]): d for d in real}
        for doc in mine:
            key = (doc["kind"], doc["metadata"]["name"])
            assert key in real_by_name, f"{upstream} has no {key}"
            want = real_by_name[key]
            if doc["kind"] == "CustomResourceDefinition":
                assert doc["spec"]["names"] == want["spec"]["names"] and doc["spec"]["scope"] == want["spec"]["scope"]
            else:
                assert doc["metadata"]["labels"].items() >= {
                    k: v for k, v in want["metadata"]["labels"].items() if k.startswith("app.kubernetes.io/")}.items()
            if doc["kind"] == "Deployment":
                assert doc["spec"]["selector"] == want["spec"]["selector"]
        wanted = {("Deployment", n) for k, n in real_by_name if k == "Deployment"} | {
            ("CustomResourceDefinition", n) for k, n in real_by_name if k == "CustomResourceDefinition"}
        assert wanted <= {(d["kind"], d["metadata"]["name"]) for d in mine}
    config = yaml.safe_load(next(d for d in own_events if d["kind"] == "ConfigMap")["data"]["controller-config.yaml"])
    assert "2.10.10" in [v["version"] for v in config["eventBus"]["jetstream"]["versions"]]


# -- the stand-in prints what real helm prints --------------------------------------------------------


def _shapes(helm_cmd, env, release):
    def run(*args):
        return subprocess.run([*helm_cmd, *args, "-n", NS], capture_output=True, text=True, env=env, timeout=60)

    out = {}
    status = json.loads(run("status", release, "-o", "json").stdout)
    out["status"] = sorted(status)
    out["status.info"] = sorted(k for k in status["info"] if k != "resources")
    meta = json.loads(run("get", "metadata", release, "-o", "json").stdout)
    out["metadata"] = sorted(meta)
    out["metadata.values"] = (meta["chart"], meta["version"], meta["status"], meta["revision"])
    listed = json.loads(run("list", "--filter", f"^{release}$", "-o", "json").stdout)
    out["list"] = [sorted(r) for r in listed]
    out["list.values"] = [(r["chart"], r["status"], r["revision"]) for r in listed]
    history = json.loads(run("history", release, "-o", "json").stdout)
    out["history"] = [sorted(h) for h in history]
    out["values"] = run("get", "values", release, "-o", "json").stdout.strip()
    missing = run("get", "metadata", "nope", "-o", "json")
    out["missing"] = (missing.returncode, missing.stderr.strip())
    return out, status


@pytest.mark.parametrize("version", ["3.18.0", "4.1.4"])
def test_standin_prints_what_real_helm_prints(version, request, tmp_path, chart_repo):
    helm = request.getfixturevalue("real_helm3" if version.startswith("3") else "real_helm")
    shapes = {}
    with KubeEmulator() as emu:
        emu.anonymous_admin = True  # real helm sends no token over http
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", context="argo-etl")
        emu.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        env = dict(helm_env(tmp_path / "helm-home"), KUBECONFIG=str(kubeconfig))
        installed = subprocess.run([str(helm), "--kube-context", "argo-etl", "upgrade", "--install", "events",
                                    "argo-events", "--repo", chart_repo.url, "--version", "2.4.22", "-n", NS],
                                   capture_output=True, text=True, env=env, timeout=120)
        assert installed.returncode == 0, installed.stderr
        shapes["real"], real_status = _shapes([str(helm), "--kube-context", "argo-etl"], env, "events")
    bin_dir = standins_bin(tmp_path / "bin")
    standin_env = dict(os.environ, STANDIN_STATE_DIR=str(tmp_path / "state"))
    subprocess.run([str(bin_dir / "helm"), "upgrade", "--install", "events", "argo-events", "--repo",
                    chart_repo.url, "--version", "2.4.22", "-n", NS], check=True, capture_output=True, env=standin_env)
    shapes["standin"], standin_status = _shapes([str(bin_dir / "helm")], standin_env, "events")

    real, standin = shapes["real"], shapes["standin"]
    assert "chart" not in real_status and "chart" not in standin_status  # helm strips the chart from status
    assert "config" not in real_status and "config" not in standin_status  # no values given: no config
    assert real["values"] == standin["values"] == "null"
    assert real["missing"] == standin["missing"] == (1, "Error: release: not found")
    assert real["metadata.values"] == standin["metadata.values"] == ("argo-events", "2.4.22", "deployed", 1)
    assert real["list.values"] == standin["list.values"] == [("argo-events-2.4.22", "deployed", "1")]
    for key in ("status", "status.info", "metadata", "list", "history"):
        if version.startswith("3"):  # the stand-in says it is helm 3: the same fields
            assert standin[key] == real[key], key
        else:  # helm 4 adds apply_method/applyMethod and labels, and drops info.deleted
            flat = lambda v: set(v) if not v or isinstance(v[0], str) else set(v[0])  # noqa: E731
            assert flat(standin[key]) - {"deleted"} <= flat(real[key]), key


# -- up / up / status / down ----------------------------------------------------------------------


def test_up_again_status_and_down_with_real_helm(world):
    code, out, _ = run_steps("up")
    assert code == 0, out
    assert release_states(world, "argo-events") == [(1, "deployed")]
    assert release_states(world, "argo-workflows") == [(1, "deployed")]
    # what the next steps of `up` look for (EventBus versions, the server token's ServiceAccount, CRDs)
    assert world.emu.get("ConfigMap", "argo-events-controller-manager", NS) is not None
    assert world.emu.get("ServiceAccount", "argo-workflows-server", NS) is not None
    assert world.emu.get("Service", "argo-workflows-server", NS) is not None
    assert len([c for c in world.emu.objects("CustomResourceDefinition")
                if c["metadata"]["name"].endswith(".argoproj.io")]) == 11
    assert helm_verbs(world).count("upgrade") == 2
    assert_next_up_writes_nothing(world)

    world.reset_calls()
    code, out, _ = run_steps("status", gates=False)
    assert code == 0, out
    assert "deployed, chart 2.4.22" in out and "deployed, chart 1.0.18" in out
    assert world.emu.write_requests() == []

    code, out, _ = run_steps("down", gates=False)
    assert code == 0, out
    assert helm_verbs(world).count("uninstall") == 2
    assert release_states(world, "argo-events") == [] and release_states(world, "argo-workflows") == []
    assert world.emu.objects("Deployment", NS) == []
    assert world.emu.get("ConfigMap", "argo-events-controller-manager", NS) is None
    assert world.emu.get("CustomResourceDefinition", "eventbus.argoproj.io") is not None  # crds.keep


# -- a release left failed or pending is repaired by the next up ---------------------------------------


def interrupt_helm(world, sig: int, release: str = "argo-events", gates: bool = True) -> dict:
    """Run `up` in a thread; once helm has stored the release as pending and applied its Deployments (it is in
    its --wait then), send helm `sig`."""
    world.emu.auto_ready = False
    before = len(release_states(world, release))
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(zip(("code", "out", "results"),
                                                                run_steps("up", gates=gates))))
    thread.start()
    sent = None
    while thread.is_alive() and sent is None:
        states = release_states(world, release)
        deps = [d for d in world.emu.objects("Deployment", NS)
                if d["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == release]
        pids = helm_children("upgrade")
        if len(states) > before and states[-1][1].startswith("pending-") and deps and pids:
            time.sleep(0.3)  # helm is in its --wait now
            os.kill(pids[0], sig)
            sent = pids[0]
        time.sleep(0.05)
    thread.join()
    assert sent is not None, outcome.get("out")
    return outcome


@pytest.mark.parametrize("how", ["wait-timeout", "SIGINT", "SIGKILL"])
def test_interrupted_first_install_is_repaired_by_the_next_up(world, monkeypatch, how):
    monkeypatch.setenv("HELM_TIMEOUT", "2s")
    if how == "wait-timeout":
        world.emu.auto_ready = False
        code, out, results = run_steps("up")
        failed = next(r for r in results if r.step == "argo-events/release")
        assert failed.detail == "helm upgrade argo-events failed: context deadline exceeded", out
        assert "the next `invoke up` repairs it" in failed.hint
        expected, repair = "failed", "repaired: was failed, upgraded again"
    else:
        monkeypatch.setenv("HELM_TIMEOUT", "30s" if how == "SIGINT" else "2s")
        outcome = interrupt_helm(world, getattr(signal, how))
        code, out = outcome["code"], outcome["out"]
        expected, repair = {"SIGINT": ("failed", "repaired: was failed, upgraded again"),
                            "SIGKILL": ("pending-install", "repaired: was pending-install, uninstalled and "
                                                           "installed again")}[how]
    assert code == 1, out
    assert release_states(world, "argo-events") == [(1, expected)]
    monkeypatch.setenv("HELM_TIMEOUT", "2s")
    code, out, _ = run_steps("status", gates=False)
    assert code == 1 and ("release failed: reinstall" in out or "release stuck in pending-install" in out), out

    make_deployments_ready(world)
    world.reset_calls()
    code, out, results = run_steps("up", gates=False)
    assert code == 0, out
    step = next(r for r in results if r.step == "argo-events/release")
    assert step.outcome.value == "changed" and repair in step.detail, out
    if how == "SIGKILL":
        assert helm_verbs(world).index("uninstall") < helm_verbs(world).index("upgrade")
        assert release_states(world, "argo-events") == [(1, "deployed")]
    else:
        assert "uninstall" not in helm_verbs(world)
        assert release_states(world, "argo-events") == [(1, "superseded"), (2, "deployed")]
    assert_next_up_writes_nothing(world)


def test_sigkill_during_upgrade_is_rolled_back_then_upgraded(world, monkeypatch):
    assert run_steps("up")[0] == 0
    monkeypatch.setenv("ARGO_EVENTS_CHART_VERSION", "2.4.23")
    monkeypatch.setenv("HELM_TIMEOUT", "2s")
    world.emu.put_object(dict(world.emu.get("Deployment", "argo-events-controller-manager", NS), status={}))
    interrupt_helm(world, signal.SIGKILL, gates=False)
    assert release_states(world, "argo-events") == [(1, "deployed"), (2, "pending-upgrade")]
    make_deployments_ready(world)
    world.reset_calls()
    code, out, results = run_steps("up", gates=False)
    assert code == 0, out
    step = next(r for r in results if r.step == "argo-events/release")
    assert "repaired: was pending-upgrade, rolled back to revision 1 and upgraded" in step.detail, out
    rollback = next(argv for argv in world.calls("helm") if "rollback" in argv)
    assert rollback[rollback.index("rollback") + 1:][:2] == ["argo-events", "1"]
    # as helm leaves them: the rollback supersedes the deployed revision 1, not the stuck revision 2
    assert release_states(world, "argo-events") == [(1, "superseded"), (2, "pending-upgrade"), (3, "superseded"),
                                                    (4, "deployed")]
    chart = world.emu.get("Deployment", "argo-events-controller-manager", NS)["metadata"]["labels"]["helm.sh/chart"]
    assert chart == "argo-events-2.4.23"
    assert_next_up_writes_nothing(world)
