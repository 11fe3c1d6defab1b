"""AWS tests: a real local AWS (moto's server over HTTP), the Kubernetes API emulator, fake credentials.

Every test gets: a moto server reset to empty, a fresh Kubernetes emulator holding what `invoke up`
leaves behind (namespace, Argo CRDs, the etl-code ConfigMap), random AWS credentials, and settings
from a throw-away .env. The emulator plays the Argo Events controller for the EventSource: when the
EventSource is written it is marked ready and its webhook is subscribed to the topic, as the real
source does when its pod starts (moto confirms http(s) subscriptions at once).
"""

from __future__ import annotations

import logging
import secrets

import boto3
import pytest
import requests

from aws_testkit import NAMESPACE, REGION, WEBHOOK_URL, Cluster, CountingProxy, PublicAddress, Webhook, crd
from kube_emulator import KubeEmulator

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request


@pytest.fixture(scope="session")
def moto_server(moto_endpoint):
    return f"http://{moto_endpoint}"


@pytest.fixture
def moto(moto_server):
    """The moto endpoint, emptied for this test."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    return moto_server


@pytest.fixture
def fake_credentials(monkeypatch):
    """Random credentials (moto accepts any): tests can look for them in output."""
    creds = {"AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
             "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)}
    for key, value in creds.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    return creds


@pytest.fixture
def cluster(moto, tmp_path, monkeypatch):
    emulator = KubeEmulator().start()
    try:
        for plural, kind in (("eventsources", "EventSource"), ("sensors", "Sensor"),
                             ("workflowtemplates", "WorkflowTemplate"), ("workflows", "Workflow")):
            emulator.put_object(crd(plural, kind), run_controllers=True)
        emulator.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                            run_controllers=True)
        emulator.put_object({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "etl-code", "namespace": NAMESPACE},
                             "data": {"s3_etl.py": "# code", "csv2parquet.py": "# code"}})
        handle = Cluster(emulator, moto)
        emulator.on_write("EventSource", handle._eventsource_written)
        emulator.on_write("Sensor", handle._sensor_written)
        kubeconfig = tmp_path / "kubeconfig"
        emulator.write_kubeconfig(kubeconfig, context="minikube")
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        # the kubernetes client reads KUBECONFIG once, at import
        import kubernetes.config.kube_config as kube_config
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        yield handle
    finally:
        emulator.stop()


@pytest.fixture
def aws_env(env_file, moto, cluster, fake_credentials, monkeypatch):
    """Settings for the aws tasks: moto as AWS, the emulator as the cluster, a fresh .env."""
    bucket = "etl-" + secrets.token_hex(6)
    values = {
        "CLUSTER": "existing", "KUBE_CONTEXT": "minikube", "ETL_IMAGE": "argo-etl:test",
        "NAMESPACE": NAMESPACE, "AWS_REGION": REGION, "AWS_ENDPOINT_URL": moto, "AWS_BUCKET": bucket,
        "SNS_WEBHOOK_URL": WEBHOOK_URL, "WAIT_TIMEOUT_SECONDS": "5", "REQUEST_TIMEOUT_SECONDS": "10",
        "AWS_MAX_ATTEMPTS": "3",
        # these tests are of the tutorial's delivery; tests/aws/test_sqs_delivery.py sets AWS_DELIVERY=sqs
        "AWS_DELIVERY": "sns-webhook",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def aws_calls():
    """Every AWS API call the tool makes during the test: (service, operation, writes)."""
    from aws import clients

    calls: list[tuple[str, str, bool]] = []
    recorder = lambda service, operation, writes: calls.append((service, operation, writes))  # noqa: E731
    clients.observers.append(recorder)
    yield calls
    clients.observers.remove(recorder)


@pytest.fixture
def admin(moto, fake_credentials):
    """boto3 clients as the administrator (the test's own view of "AWS")."""

    class Admin:
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto)
        sns = boto3.client("sns", region_name=REGION, endpoint_url=moto)
        iam = boto3.client("iam", region_name=REGION, endpoint_url=moto)

    return Admin


@pytest.fixture(autouse=True)
def public_address(monkeypatch):
    import moto.sns.models

    address = PublicAddress()
    monkeypatch.setattr(moto.sns.models, "requests", address)
    return address


@pytest.fixture
def webhook(public_address):
    """The EventSource's webhook stand-in, reachable at SNS_WEBHOOK_URL."""
    with Webhook() as hook:
        public_address.target = hook.url
        yield hook
        public_address.target = None




@pytest.fixture
def aws_server(aws_env, moto, monkeypatch):
    """The tool's AWS endpoint becomes a counting proxy in front of moto: `aws_server.writes()` lists
    every write request that reached the server (the test's own `admin` clients go to moto directly)."""
    with CountingProxy(moto) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy


@pytest.fixture
def sqs_env(aws_env, monkeypatch):
    """The aws settings with the sqs delivery, and no webhook address at all (sqs needs none)."""
    monkeypatch.setenv("AWS_DELIVERY", "sqs")
    monkeypatch.delenv("SNS_WEBHOOK_URL", raising=False)
    return {**aws_env, "AWS_DELIVERY": "sqs"}


@pytest.fixture
def sqs(moto, fake_credentials):
    return boto3.client("sqs", region_name=REGION, endpoint_url=moto)
