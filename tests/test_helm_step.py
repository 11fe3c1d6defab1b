"""HelmReleaseStep with the helm stand-in (which prints what real helm prints): state read the way real helm
reports it, and releases left failed or pending by an earlier run repaired by the next `up`.

test_helm_real.py runs the interrupted cases (SIGINT, SIGKILL during an install and during an upgrade) with
the real helm binary; these need no npm registry (test_standins.py checks the stand-in's pending states)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from helm_real import helm_verbs, make_deployments_ready, run_steps

NS = "argo-etl"


def releases(world) -> dict[str, list[dict]]:
    """The stand-in's record: release name -> its revisions, oldest first."""
    path = world.state / "helm.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    return {key.split("/", 1)[1]: entry["revisions"] for key, entry in state.get("releases", {}).items()}


def assert_second_up_writes_nothing(world) -> None:
    world.reset_calls()
    code, out, results = run_steps("up")
    assert code == 0, out
    assert [r.outcome.value for r in results if "/release" in r.step] == ["ok", "ok"], out
    assert world.emu.write_requests() == []
    assert "upgrade" not in helm_verbs(world) and "uninstall" not in helm_verbs(world)
    assert world.mutating_calls() == []


def test_converged_release_is_read_like_real_helm_and_not_upgraded(world):
    code, out, _ = run_steps("up")
    assert code == 0, out
    assert [r["status"] for r in releases(world)["argo-events"]] == ["deployed"]
    world.reset_calls()
    code, out, results = run_steps("up", gates=False)
    assert code == 0, out
    helm = dict(zip(("argo-events/release", "argo-workflows/release"),
                    [r for r in results if r.step.endswith("/release")]))
    assert helm["argo-events/release"].outcome.value == "ok", out
    assert "deployed, chart 2.4.22" in helm["argo-events/release"].detail
    assert "deployed, chart 1.0.18" in helm["argo-workflows/release"].detail
    # read through `get metadata` + `get values` (real `helm status -o json` has no chart): no upgrade, no write
    assert helm_verbs(world).count("upgrade") == 0
    assert helm_verbs(world).count("get") == 4
    assert world.emu.write_requests() == []
    assert [r["revision"] for r in releases(world)["argo-workflows"]] == [1]


def test_values_changed_by_hand_are_put_back(world):
    assert run_steps("up")[0] == 0
    world.reset_calls()
    import subprocess

    subprocess.run(["helm", "upgrade", "argo-events", "argo-events", "--repo", "https://example.invalid",
                    "--version", "2.4.22", "-n", NS, "--reuse-values", "--set", "controller.replicas=2"],
                   check=True, capture_output=True)
    code, out, results = run_steps("up", gates=False, dry_run=True)
    assert code == 0, out
    assert "would update: values.controller" in out, out
    code, out, _ = run_steps("up", gates=False)
    assert code == 0, out
    assert "replicas" not in releases(world)["argo-events"][-1]["values"].get("controller", {})  # -f, not --reuse
    assert_second_up_writes_nothing(world)


def test_failed_upgrade_is_repaired_by_the_next_up(world, monkeypatch):
    assert run_steps("up")[0] == 0
    # a new chart version whose rollout never becomes ready within HELM_TIMEOUT: helm marks the release failed
    monkeypatch.setenv("ARGO_EVENTS_CHART_VERSION", "2.4.23")
    monkeypatch.setenv("HELM_TIMEOUT", "1s")
    world.emu.auto_ready = False
    world.emu.put_object(dict(world.emu.get("Deployment", "argo-events-controller-manager", NS),
                              status={}))  # the controller restarts: not ready any more
    code, out, results = run_steps("up", gates=False)
    assert code == 1
    failed = next(r for r in results if r.step == "argo-events/release")
    assert failed.detail == "helm upgrade argo-events failed: Error: UPGRADE FAILED: context deadline exceeded"
    assert "next `invoke up` repairs it" in failed.hint
    assert [r["status"] for r in releases(world)["argo-events"]] == ["deployed", "failed"]
    # status says what is wrong and what up will do; it writes nothing
    world.reset_calls()
    code, out, _ = run_steps("status", gates=False)
    assert code == 1 and "release failed: reinstall" in out
    assert world.emu.write_requests() == [] and world.mutating_calls() == []

    make_deployments_ready(world)
    world.reset_calls()
    code, out, results = run_steps("up", gates=False)
    assert code == 0, out
    repaired = next(r for r in results if r.step == "argo-events/release")
    assert repaired.outcome.value == "changed"
    assert "repaired: was failed, upgraded again" in repaired.detail
    assert helm_verbs(world).count("upgrade") == 1
    assert [r["status"] for r in releases(world)["argo-events"]] == ["superseded", "failed", "deployed"]
    assert releases(world)["argo-events"][-1]["version"] == "2.4.23"
    assert_second_up_writes_nothing(world)


def test_a_pending_release_of_a_helm_still_running_is_waited_for_not_uninstalled(world, monkeypatch):
    """pending-install younger than HELM_TIMEOUT may be another helm at work: up waits for it to finish."""
    monkeypatch.setenv("HELM_TIMEOUT", "30s")
    import subprocess

    world.emu.auto_ready = False
    world.emu.put_object({"apiVersion": "v1", "kind": "Namespace",  # as our namespace step makes it
                          "metadata": {"name": NS, "labels": {"app.kubernetes.io/managed-by": "argo-etl-bootstrap"}}})
    from etlboot.stack import argo_events_values

    values = world.tmp / "v.yaml"
    values.write_text(json.dumps(argo_events_values(None)))  # what up wants: nothing left to change after it
    other = subprocess.Popen(["helm", "upgrade", "--install", "argo-events", "argo-events", "--repo", "r",
                              "--version", "2.4.22", "-n", NS, "--create-namespace", "-f", str(values),
                              "--wait", "--timeout", "30s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not (releases(world).get("argo-events") and world.emu.objects("Deployment", NS)):
        time.sleep(0.05)
    # the other helm's Deployments become ready a moment later; up meanwhile must not uninstall its release
    threading.Timer(1.5, make_deployments_ready, args=(world,)).start()
    world.reset_calls()
    code, out, _ = run_steps("up")
    assert other.wait() == 0
    assert code == 0, out
    assert "uninstall" not in helm_verbs(world)
    assert [r["status"] for r in releases(world)["argo-events"]] == ["deployed"]
