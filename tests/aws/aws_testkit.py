"""Shared helpers of the AWS tests (a uniquely named module: every test folder has a conftest.py)."""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import boto3
import requests

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


class _Served:
    """A loopback HTTP server (`self.server`) run by `self.thread` while the `with` block lasts."""

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class Webhook(_Served):
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

READ_PREFIXES = ("Get", "List", "Head", "Describe")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect",
               "proxy-authorization", "proxy-authenticate", "content-length"}


@dataclass(frozen=True)
class ServerCall:
    """One HTTP request as it reached the endpoint: which service, which operation, whether it changes."""

    service: str
    operation: str
    method: str
    path: str

    @property
    def writes(self) -> bool:
        if self.service == "s3":  # REST: reads are GET and HEAD; everything else creates, changes or deletes
            return self.method not in ("GET", "HEAD")
        return not self.operation.startswith(READ_PREFIXES)

    def __str__(self) -> str:
        return f"{self.service}:{self.operation}"


def _service_of(headers) -> str:
    # SigV4: "AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/<service>/aws4_request, ..."
    match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request", headers.get("Authorization") or "")
    return match.group(1) if match else "?"


def _operation_of(service: str, method: str, target: str, headers, body: bytes) -> str:
    if headers.get("X-Amz-Target"):  # JSON protocols
        return headers["X-Amz-Target"].rsplit(".", 1)[-1]
    if service != "s3":  # query protocol (IAM, SNS, STS): the form field Action
        form = parse_qs(body.decode("utf-8", "replace"))
        action = form.get("Action") or parse_qs(urlsplit(target).query).get("Action")
        return action[0] if action else "?"
    sub = sorted(k for k in parse_qs(urlsplit(target).query, keep_blank_values=True) if not k.startswith("x-"))
    return f"{method} {urlsplit(target).path}" + (f"?{'&'.join(sub)}" if sub else "")


class CountingProxy(_Served):
    """An HTTP proxy on loopback in front of moto's server that records every request it forwards.

    Point AWS_ENDPOINT_URL at it and the tool's traffic is counted where it arrives, independently of
    the tool's own bookkeeping (its call record, botocore hooks)."""

    def __init__(self, target: str):
        self.target = urlsplit(target)
        self.calls: list[ServerCall] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers `Expect: 100-continue` as S3 clients expect

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self):
                body = self._body()
                service = _service_of(self.headers)
                call = ServerCall(service, _operation_of(service, self.command, self.path, self.headers, body),
                                  self.command, urlsplit(self.path).path)
                with proxy._lock:
                    proxy.calls.append(call)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    self.send_response(answer.status, answer.reason)
                    for key, value in answer.getheaders():
                        if key.lower() not in _HOP_BY_HOP:
                            self.send_header(key, value)
                    if self.command == "HEAD":
                        self.send_header("Content-Length", answer.getheader("Content-Length") or "0")
                    else:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # noqa: N815 - http.server's naming

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def writes(self) -> list[str]:
        with self._lock:
            return [str(c) for c in self.calls if c.writes]

    def reads(self) -> list[str]:
        with self._lock:
            return [str(c) for c in self.calls if not c.writes]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()



def as_other_account(client, account: str = "111111111111"):
    """A boto3 client of moto acting as another AWS account (moto's `x-moto-account-id` header)."""
    client.meta.events.register("before-sign", lambda request, **_: request.headers.__setitem__(
        "x-moto-account-id", account))
    return client
