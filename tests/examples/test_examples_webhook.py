"""`invoke examples.webhook` end to end on loopback: the EventSource and Sensor are server-side applied to the
Kubernetes API emulator, the port-forward is the kubectl stand-in (a real TCP proxy), and behind it a small
HTTP server plays the webhook EventSource: each accepted POST becomes a line in the Sensor pod's log, in the
shape Argo Events' log trigger writes it."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from invoke import Context, Exit

from argo_recordings import by_example
from argo_standin import NAMESPACE
from etlboot import examples as ex
from etlboot import webhook
from etlboot.tasks import examples as tasks
from helpers.counting_proxy import Served

STANDINS = Path(__file__).resolve().parents[1] / "standins"
SENSOR_POD = "log-sensor-rp56d-f8b5b694-bs99c"
SOURCE_POD = "webhook-eventsource-cfkdt-7fc944c598-mxlb9"


class WebhookSource(Served):
    """The webhook EventSource's HTTP server, delivering straight into the Sensor's log.

    `drop_first` accepted events are lost (a Sensor that has not subscribed yet); `refuse_first` POSTs are
    answered 503 (the server not ready yet); `deliver=False` loses every event."""

    def __init__(self, emulator, drop_first=0, refuse_first=0, deliver=True):
        self.emulator = emulator
        self.drop_first, self.refuse_first, self.deliver = drop_first, refuse_first, deliver
        self.received: list[tuple[str, str, dict]] = []
        self.log = ""
        source = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                source.received.append((self.path, self.headers.get("Content-Type"), json.loads(body)))
                if len(source.received) <= source.refuse_first:
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"eventbus not connected")
                    return
                if self.path != "/example":
                    self.send_response(404)
                    self.end_headers()
                    return
                accepted = len(source.received) - source.refuse_first
                if source.deliver and accepted > source.drop_first:
                    source.sensor_logs({"Content-Type": [self.headers.get("Content-Type")]}, json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"success")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def sensor_logs(self, header: dict, body: dict) -> None:
        event = json.dumps({"header": header, "body": body}, separators=(",", ":"))
        line = json.dumps({"level": "info", "ts": time.time(), "logger": "argo-events.sensor",
                           "caller": "log/log.go:45", "msg": event, "sensorName": "log",
                           "triggerName": "log-trigger", "triggerType": "Log", "dependencyName": "test-dep"})
        self.log += line + "\n"
        self.emulator.set_pod_log(NAMESPACE, SENSOR_POD, self.log)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"



def _ready_status(obj: dict) -> None:
    kinds = {"EventSource": ("SourcesProvided", "Deployed"),
             "Sensor": ("DependenciesProvided", "TriggersProvided", "Deployed")}
    obj["status"] = {"conditions": [{"type": t, "status": "True"} for t in kinds[obj["kind"]]]}


@pytest.fixture
def webhook_cluster(cluster, tmp_path, monkeypatch):
    """The emulator as Argo Events would leave it: controllers mark the objects deployed, their pods run."""
    cluster.on_write("EventSource", _ready_status)
    cluster.on_write("Sensor", _ready_status)
    for name, label in ((SOURCE_POD, {"eventsource-name": "webhook"}), (SENSOR_POD, {"sensor-name": "log"})):
        cluster.put_object({"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": name, "namespace": NAMESPACE, "labels": label},
                            "spec": {"containers": [{"name": "main", "image": "quay.io/argoproj/argo-events:v1.9.10"}]}},
                           run_controllers=True)
    monkeypatch.setenv("TOOLS_DIR", str(STANDINS))
    monkeypatch.setenv("STANDIN_STATE_DIR", str(tmp_path / "standins"))
    monkeypatch.setattr(webhook, "WEBHOOK_REPOST_SECONDS", 0.3)
    return cluster


def forward_to(monkeypatch, source: WebhookSource) -> None:
    monkeypatch.setenv("STANDIN_FORWARD_WEBHOOK_EVENTSOURCE_SVC", source.address)


def forwards(tmp_path) -> list[list[str]]:
    calls = (tmp_path / "standins" / "calls.jsonl").read_text().splitlines()
    return [json.loads(c)["argv"] for c in calls if "port-forward" in json.loads(c)["argv"]]


def test_webhook_applies_posts_and_finds_the_message_in_the_sensor_log(webhook_cluster, monkeypatch, tmp_path,
                                                                      capsys):
    with WebhookSource(webhook_cluster) as source:
        forward_to(monkeypatch, source)
        tasks.webhook(Context(), message="this is my first webhook")
    applied = {(r["path"].rsplit("/", 2)[-2], r["query"].get("fieldManager")) for r in webhook_cluster.requests
               if r["method"] == "PATCH"}
    assert applied == {("eventsources", "argo-etl-bootstrap"), ("sensors", "argo-etl-bootstrap")}
    eventsource = webhook_cluster.get("EventSource", "webhook", NAMESPACE)
    assert eventsource["spec"]["webhook"]["example"] == {"port": "12000", "endpoint": "/example", "method": "POST",
                                                         "url": "http://webhook-eventsource-svc:12000"}
    sensor = webhook_cluster.get("Sensor", "log", NAMESPACE)
    assert sensor["spec"]["dependencies"] == [{"name": "test-dep", "eventSourceName": "webhook",
                                               "eventName": "example"}]
    assert source.received == [("/example", "application/json", {"message": "this is my first webhook"})]
    [argv] = forwards(tmp_path)
    assert argv[argv.index("port-forward") + 1:] == ["--address", "127.0.0.1", "svc/webhook-eventsource-svc",
                                                     ":12000"]
    assert argv[argv.index("-n") + 1] == NAMESPACE
    out = capsys.readouterr().out
    assert "Sensor log: " in out and "this is my first webhook" in out and '"triggerType": "Log"' in out
    assert "the Sensor logged the message (posted 1×)" in out


def test_a_second_run_changes_nothing_and_posts_a_fresh_message(webhook_cluster, monkeypatch):
    with WebhookSource(webhook_cluster) as source:
        forward_to(monkeypatch, source)
        tasks.webhook(Context())
        webhook_cluster.clear_log()
        tasks.webhook(Context())
    writes = [r for r in webhook_cluster.write_requests()]
    assert writes == []  # both objects were already as wanted
    first, second = (body["message"] for _, _, body in source.received)
    assert first != second and first.startswith("this is my first webhook ")


def test_refused_and_lost_events_are_posted_again(webhook_cluster, monkeypatch, capsys):
    with WebhookSource(webhook_cluster, refuse_first=2, drop_first=1) as source:
        forward_to(monkeypatch, source)
        tasks.webhook(Context(), message="late subscriber")
    assert len(source.received) == 4  # two refused, one lost, one logged
    assert "(posted 2×)" in capsys.readouterr().out


def test_a_message_never_logged_fails_within_the_timeout(webhook_cluster, monkeypatch, capsys):
    with WebhookSource(webhook_cluster, deliver=False) as source:
        forward_to(monkeypatch, source)
        began = time.monotonic()
        with pytest.raises(Exit) as exit_info:
            tasks.webhook(Context(), message="lost in the bus", timeout=1)
    assert exit_info.value.code == 1
    assert time.monotonic() - began < 15
    out = capsys.readouterr().out
    assert "timed out after 1s waiting for the Sensor log to log the message" in out
    assert "posted" in out and "sensor-name=log" in out


def test_dry_run_applies_nothing_and_posts_nothing(webhook_cluster, monkeypatch, capsys):
    with WebhookSource(webhook_cluster) as source:
        forward_to(monkeypatch, source)
        tasks.webhook(Context(), dry_run=True)
    assert webhook_cluster.write_requests() == []
    assert source.received == []
    assert "would create" in capsys.readouterr().out


def test_clean_deletes_only_what_the_examples_made(webhook_cluster, monkeypatch, argo):
    argo(by_example())
    with WebhookSource(webhook_cluster) as source:
        forward_to(monkeypatch, source)
        tasks.webhook(Context())
    tasks.run_example(Context(), "hello-world")
    tasks.run_example(Context(), "cron-backfill")
    assert {o["kind"] for o in webhook_cluster.objects(namespace=NAMESPACE)} >= {"CronWorkflow", "WorkflowTemplate"}
    someone_elses = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                     "metadata": {"name": "not-ours", "namespace": NAMESPACE,
                                  "labels": {ex.EXAMPLE_LABEL: "hello-world"}}, "spec": {}}
    webhook_cluster.put_object(someone_elses)
    tasks.clean(Context(), yes=True)
    remaining = {o["kind"] + "/" + o["metadata"]["name"] for o in webhook_cluster.objects(namespace=NAMESPACE)
                 if o["kind"] in ("Workflow", "CronWorkflow", "WorkflowTemplate", "EventSource", "Sensor")}
    assert remaining == {"Workflow/not-ours"}
