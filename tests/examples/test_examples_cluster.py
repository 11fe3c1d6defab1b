"""The real thing (opt in: `pytest -m cluster`): every example on a cluster that `invoke up` has stood up.

Settings come from the environment (KUBE_CONTEXT, CLUSTER, NAMESPACE ...); a throw-away .env keeps the
developer's own untouched. Skipped, with the reason, when the context cannot be reached or Argo Workflows
and the workflow ServiceAccount are not there yet."""

from __future__ import annotations

import pytest
from invoke import Context

from etlboot import config
from etlboot import manifests as m
from etlboot.kube import Kube
from etlboot.tasks import examples as tasks


@pytest.fixture
def real_cluster(env_file):
    settings = config.load()
    try:
        kube = Kube.from_context(settings.kube_context, request_timeout=5)
        crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "workflows.argoproj.io")
        account = kube.get("v1", "ServiceAccount", m.WORKFLOW_SA, settings.namespace)
    except Exception as exc:  # noqa: BLE001 - any reason the cluster cannot be used is a reason to skip
        pytest.skip(f"no reachable cluster on kube context {settings.kube_context!r}: {type(exc).__name__}: {exc}")
    if crd is None or account is None:
        pytest.skip(f"Argo Workflows or ServiceAccount {m.WORKFLOW_SA} missing in {settings.namespace} on "
                    f"{settings.kube_context!r}: run `invoke up` first")
    yield settings
    tasks.clean(Context(), yes=True)


@pytest.mark.cluster
def test_every_example_passes(real_cluster):
    # Exit (code 1) with the summary table if any example's expectation fails
    tasks.run_example(Context(), "all", timeout=600)


@pytest.mark.cluster
def test_the_webhook_reaches_the_log_sensor(real_cluster):
    tasks.webhook(Context(), timeout=300)
