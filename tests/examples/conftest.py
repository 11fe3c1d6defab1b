"""Fixtures for the examples tests.

- ``rendered``: every example manifest rendered with the settings' values (as `invoke examples.run` does).
- ``cluster``: the Kubernetes API emulator with Argo's CRDs, the namespace and the workflow ServiceAccount,
  a kubeconfig pointing at it and settings (fresh .env) that target it.
- ``argo``: a stand-in for Argo's workflow controller on that emulator: for every Workflow the tool creates it
  writes the pods (with logs) and PATCHes in the status snapshots of a scripted recording over HTTP.
"""

from __future__ import annotations

import copy
from typing import Callable

import pytest

from argo_standin import CONTEXT, NAMESPACE, ArgoStandIn, crd
from etlboot import config
from etlboot import examples as ex
from etlboot import follow
from etlboot import manifests as m
from kube_emulator import KubeEmulator


@pytest.fixture(scope="session")
def values(tmp_path_factory) -> dict[str, str]:
    settings = config.load(env_file=tmp_path_factory.mktemp("env") / ".env", environ={})
    return m.variables(settings)


@pytest.fixture(scope="session")
def rendered(values) -> dict[str, list[dict]]:
    return {example.name: m.render(example.path, values) for example in ex.CATALOG}


@pytest.fixture
def workflow_spec(rendered) -> Callable[..., dict]:
    """The spec of an example's Workflow as submitted, with -p style overrides."""

    def spec(name: str, **overrides: str) -> dict:
        workflow = next(d for d in rendered[name] if d["kind"] == "Workflow")
        return copy.deepcopy(ex.with_parameters(workflow, overrides, name)["spec"])

    return spec


@pytest.fixture
def cluster(env_file, tmp_path, monkeypatch):
    emulator = KubeEmulator().start()
    try:
        for plural, kind in (("workflows", "Workflow"), ("workflowtemplates", "WorkflowTemplate"),
                             ("cronworkflows", "CronWorkflow"), ("eventsources", "EventSource"),
                             ("sensors", "Sensor")):
            emulator.put_object(crd(plural, kind), run_controllers=True)
        emulator.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                            run_controllers=True)
        emulator.put_object({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": m.WORKFLOW_SA, "namespace": NAMESPACE}})
        kubeconfig = tmp_path / "kubeconfig"
        emulator.write_kubeconfig(kubeconfig, context=CONTEXT)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        # the client reads KUBECONFIG once, when kubernetes.config is first imported
        monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        for key, value in {"CLUSTER": "existing", "KUBE_CONTEXT": CONTEXT, "ETL_IMAGE": "argo-etl:test",
                           "NAMESPACE": NAMESPACE, "WAIT_TIMEOUT_SECONDS": "20",
                           "REQUEST_TIMEOUT_SECONDS": "10"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(follow, "POLL_SECONDS", 0.02)
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def argo(cluster):
    players: list[ArgoStandIn] = []

    def play(script: Callable, step_seconds: float = 0.01) -> ArgoStandIn:
        player = ArgoStandIn(cluster, script, step_seconds).start()
        players.append(player)
        return player

    yield play
    for player in players:
        player.stop()
    errors = [e for p in players for e in p.errors]
    assert not errors, f"the Argo stand-in failed: {errors!r}"
