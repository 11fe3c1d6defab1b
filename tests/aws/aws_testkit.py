"""Shared helpers of the AWS tests (a uniquely named module: every test folder has a conftest.py)."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import requests

from helpers.counting_proxy import CountingProxy, Served  # noqa: F401 - the AWS tests import CountingProxy from here

REGION = "eu-west-1"
NAMESPACE = "argo-etl"
WEBHOOK_URL = "https://sns-hook.example.com:12000"


def crd(plural: str, kind: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.argoproj.io"},
        "spec": {"group": "argoproj.io", "scope": "Namespaced",
                 "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": kind + "List"},
                 "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


class Cluster:
    """The emulator plus what the tests need to know about it."""

    def __init__(self, emulator, moto_url: str):
        self.emulator = emulator
        self.moto_url = moto_url
        self.subscribe_on_eventsource = True

    def secret(self, name: str) -> dict[str, str] | None:
        obj = self.emulator.get("Secret", name, NAMESPACE)
        if obj is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}

    def _eventsource_written(self, obj: dict) -> None:
        # what the Argo Events controller and the source's pod do: report ready, subscribe the webhook
        obj["status"] = {"conditions": [{"type": "Deployed", "status": "True"},
                                        {"type": "SourcesProvided", "status": "True"}]}
        if not self.subscribe_on_eventsource:
            return
        for source in (obj.get("spec") or {}).get("sns", {}).values():
            webhook = source["webhook"]
            endpoint = webhook["url"].rstrip("/") + "/" + webhook["endpoint"].lstrip("/")
            sns = boto3.client("sns", region_name=source["region"], endpoint_url=self.moto_url)
            sns.subscribe(TopicArn=source["topicArn"], Protocol="https", Endpoint=endpoint)

    @staticmethod
    def _sensor_written(obj: dict) -> None:
        obj["status"] = {"conditions": [{"type": "Deployed", "status": "True"},
                                        {"type": "DependenciesProvided", "status": "True"},
                                        {"type": "TriggersProvided", "status": "True"}]}


class Webhook(Served):
    """A local HTTP endpoint standing in for the EventSource's webhook: records what SNS POSTs."""

    def __init__(self):
        self.received: list[dict] = []
        self.event = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                hook.event.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"



class PublicAddress:
    """Plays the internet between SNS and the cluster for moto's HTTP deliveries: what SNS sends to
    SNS_WEBHOOK_URL reaches the local stand-in webhook when one is attached (as a port-forward or load
    balancer would), and is dropped otherwise (no test waits on a DNS lookup of the example host)."""

    def __init__(self):
        self.target: str | None = None
        self.dropped: list[str] = []

    def post(self, url: str, **kwargs):
        if url.startswith(WEBHOOK_URL):
            if self.target is None:
                self.dropped.append(url)
                return None
            url = self.target + url[len(WEBHOOK_URL):]
        return requests.post(url, timeout=10, **kwargs)


def run_steps(mode: str, *steps, **options):
    """Run some of the aws steps (not the whole task) with the engine; (exit code, results)."""
    from invoke import Exit

    from etlboot.cli import run_mode

    captured = {}

    def steps_for(ctx):
        captured["ctx"] = ctx
        return list(steps)

    try:
        return 0, run_mode(mode, steps_for, title=f"test {mode}", **options)
    except Exit as exc:
        return exc.code, None


# -- what reaches the AWS endpoint, counted on the wire ---------------------------------------------

def as_other_account(client, account: str = "111111111111"):
    """A boto3 client of moto acting as another AWS account (moto's `x-moto-account-id` header)."""
    client.meta.events.register("before-sign", lambda request, **_: request.headers.__setitem__(
        "x-moto-account-id", account))
    return client


def assert_no_secret(text: str, fake_credentials: dict, secrets_seen: list[dict], expected: int) -> None:
    """Neither the caller's credentials nor any key a Secret held (`secrets_seen`) is in `text`; `expected`
    distinct values were looked for (so that a run that made no keys cannot pass by accident)."""
    secrets = [fake_credentials["AWS_ACCESS_KEY_ID"], fake_credentials["AWS_SECRET_ACCESS_KEY"]]
    for data in secrets_seen:
        secrets += [data["accessKey"], data["secretKey"]]
    assert len(set(secrets)) == expected
    for value in secrets:
        assert value not in text
    assert not re.search(r"AKIA[A-Z0-9]{16}", text)
