"""What a real cluster does that a kind emulator hid: kind-less list items, chart-derived names, Terminating
objects, finalizers that hold a delete, keys someone else added, and leftovers of an earlier `up`."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from etlboot import charts, config
from etlboot.kube import Kube
from etlboot.steps import readiness

NS = "argo-etl"


# -- list items carry no kind (kubernetes/kubernetes#3030) -------------------------------------------------------


class _ListAnswer(Kube):
    """A Kube whose LIST answers exactly what a real API server sends (list-shape.json): items without kind."""

    def __init__(self, body):
        super().__init__(api_client=None)
        self.body = body

    def _call(self, method, path, **kwargs):
        return self.body


def test_list_items_get_the_kind_of_their_list_and_readiness_sees_them():
    ready = {"metadata": {"name": "argo-events-controller-manager", "generation": 1},
             "spec": {"replicas": 1},
             "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}}
    k = _ListAnswer({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "7"},
                     "items": [ready]})
    items = k.list("apps/v1", "Deployment", NS)
    assert [(i["apiVersion"], i["kind"]) for i in items] == [("apps/v1", "Deployment")]
    assert readiness(items[0]) == (True, "1/1 ready")


def test_custom_resource_list_items_keep_what_the_server_sent():
    item = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"}}
    k = _ListAnswer({"kind": "WorkflowList", "apiVersion": "argoproj.io/v1alpha1", "items": [item]})
    assert k.list("argoproj.io/v1alpha1", "Workflow", NS) == [item]


# -- names derived the charts' way --------------------------------------------------------------------------------


@pytest.mark.parametrize("release, chart, expected", [
    ("argo-workflows", "argo-workflows", "argo-workflows"),
    ("wf", "argo-workflows", "wf-argo-workflows"),
    ("my-argo-events", "argo-events", "my-argo-events"),
    ("events", "argo-events", "events-argo-events"),
    ("x" * 60, "argo-events", ("x" * 60 + "-argo-events")[:63]),
])
def test_fullname_follows_the_charts_helpers(release, chart, expected):
    assert charts.fullname(release, chart) == expected


def test_custom_release_names_converge_and_the_tool_finds_the_charts_objects(world, monkeypatch):
    monkeypatch.setenv("ARGO_WORKFLOWS_RELEASE", "wf")
    monkeypatch.setenv("ARGO_EVENTS_RELEASE", "events")
    code, out = world.run("up", only="platform")
    assert code == 0, out
    # the EventBus check read the chart's ConfigMap, and `ui` forwards to the Service the chart made
    reads = [r for r in world.emu.requests if r["method"] == "GET" and "/configmaps/" in r["path"]]
    assert any(r["path"].endswith("/configmaps/events-argo-events-controller-manager") for r in reads)
    settings = config.load(world.env_file)
    assert charts.argo_server(settings) == "wf-argo-workflows-server"
    assert world.emu.get("Service", charts.argo_server(settings), NS) is not None
    world.reset_calls()
    code, out = world.run("up", only="platform")
    assert code == 0, out
    assert world.emu.write_requests() == [] and world.mutating_calls() == []


# -- data maps of objects we own are compared whole ----------------------------------------------------------------


def test_a_key_added_to_our_configmap_is_drift_and_up_removes_it(world):
    assert world.run("up", only="platform")[0] == 0
    cm = world.emu.get("ConfigMap", "artifact-repositories", NS)
    cm["data"]["extra.py"] = "import os"
    world.emu.put_object(cm)
    world.emu.clear_log()
    code, out = world.run("status", only="platform")
    assert code == 1 and ".data.extra.py (not ours)" in out
    assert world.run("up", only="platform")[0] == 0
    assert "extra.py" not in world.emu.get("ConfigMap", "artifact-repositories", NS)["data"]
    world.emu.clear_log()
    assert world.run("up", only="platform")[0] == 0
    assert world.emu.write_requests() == []


# -- Terminating objects -------------------------------------------------------------------------------------------


def _terminating(world, kind, name):
    obj = world.emu.get(kind, name, NS)
    obj["metadata"]["finalizers"] = ["example.com/hold"]
    world.emu.put_object(obj)
    plural = {"ConfigMap": "configmaps"}[kind]
    request = urllib.request.Request(f"{world.emu.url}/api/v1/namespaces/{NS}/{plural}/{name}", method="DELETE")
    urllib.request.urlopen(request, timeout=5).read()  # the finalizer keeps it, with deletionTimestamp
    held = world.emu.get(kind, name, NS)
    assert held is not None and held["metadata"].get("deletionTimestamp")
    return held


def _release_later(world, kind, name, seconds):
    def release():
        time.sleep(seconds)
        obj = world.emu.get(kind, name, NS)
        obj["metadata"]["finalizers"] = []
        world.emu.put_object(obj)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def test_a_terminating_object_is_not_ready_and_up_makes_it_again_once_gone(world):
    assert world.run("up", only="platform")[0] == 0
    _terminating(world, "ConfigMap", "artifact-repositories")
    code, out = world.run("status", only="platform")
    assert code == 1
    line = next(l for l in out.splitlines() if "argo-workflows/configmap/artifact-repositories" in l)
    assert "terminating" in line and "failed" in line
    thread = _release_later(world, "ConfigMap", "artifact-repositories", 1.0)
    code, out = world.run("up", only="platform")
    thread.join()
    assert code == 0, out
    again = world.emu.get("ConfigMap", "artifact-repositories", NS)
    assert again is not None and not again["metadata"].get("deletionTimestamp")


# -- down: finalizers cleared by a controller that must still be there ----------------------------------------------


class EventsController:
    """What the Argo Events v1.9.10 controller does on delete: the EventBus keeps its finalizer while any
    EventSource or Sensor of its namespace exists, and only a running controller removes it (here after
    a second: a real controller takes its time, and `down` must not uninstall it meanwhile)."""

    def __init__(self, world):
        self.world = world
        self.seen_terminating: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        emu = self.world.emu
        while not self.stop.wait(0.1):
            if emu.get("Deployment", "argo-events-controller-manager", NS) is None:
                continue  # uninstalled: nobody clears finalizers any more
            try:
                buses = emu.objects("EventBus", NS)
                users = emu.objects("EventSource", NS) + emu.objects("Sensor", NS)
            except KeyError:
                continue
            for bus in buses:
                meta = bus["metadata"]
                if not meta.get("finalizers") and not meta.get("deletionTimestamp"):
                    meta["finalizers"] = ["eventbus-controller"]
                    emu.put_object(bus)
                elif meta.get("deletionTimestamp") and not users:
                    since = self.seen_terminating.setdefault(meta["name"], time.monotonic())
                    if time.monotonic() - since > 1.0:
                        meta["finalizers"] = []
                        emu.put_object(bus)


def test_down_waits_for_the_eventbus_finalizer_before_uninstalling_its_controller(world):
    controller = EventsController(world)
    controller.thread.start()
    try:
        assert world.run("up", only="platform")[0] == 0
        deadline = time.monotonic() + 5
        while not world.emu.get("EventBus", "default", NS)["metadata"].get("finalizers"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        code, out = world.run("down", yes=True)
        assert code == 0, out
        assert world.emu.get("EventBus", "default", NS) is None
        assert any("uninstall" in argv for argv in world.calls("helm"))
    finally:
        controller.stop.set()
        controller.thread.join(2)


def test_down_removes_what_an_earlier_up_made_that_todays_settings_do_not(world, monkeypatch):
    assert world.run("up", only="platform")[0] == 0
    # what an earlier `up` with FTP enabled left behind: labelled ours, no step of today's settings makes it
    labels = {"app.kubernetes.io/managed-by": "argo-etl-bootstrap"}
    for kind, name, extra in (("Deployment", "ftp-event-server", {"spec": {"replicas": 1}}),
                              ("Service", "vsftpd", {"spec": {"ports": [{"port": 21}]}}),
                              ("PersistentVolumeClaim", "vsftpd-data", {"spec": {}}),
                              ("Sensor", "ftp-sensor", {"spec": {}})):
        world.emu.put_object({"apiVersion": {"Deployment": "apps/v1", "Sensor": "argoproj.io/v1alpha1"}.get(kind, "v1"),
                              "kind": kind, "metadata": {"name": name, "namespace": NS, "labels": labels}, **extra})
    world.emu.put_object({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "users-own", "namespace": NS}, "data": {"a": "b"}})
    code, out = world.run("down", yes=True)
    assert code == 0, out
    assert world.emu.get("Deployment", "ftp-event-server", NS) is None
    assert world.emu.get("Service", "vsftpd", NS) is None
    assert world.emu.get("Sensor", "ftp-sensor", NS) is None
    # data is kept without --purge, and what is not ours is never touched
    assert world.emu.get("PersistentVolumeClaim", "vsftpd-data", NS) is not None
    assert world.emu.get("ConfigMap", "users-own", NS) is not None
    code, out = world.run("down", yes=True, purge=True)
    assert code == 0, out
    assert world.emu.get("PersistentVolumeClaim", "vsftpd-data", NS) is None


# -- reads: CRDs once per run --------------------------------------------------------------------------------------


def _tools_requests(world) -> list[dict]:
    """What the tool's own kubernetes client sent (not the helm stand-in, which reads CRDs for --wait)."""
    return [r for r in world.emu.requests if r["user_agent"].startswith("OpenAPI-Generator")]


def test_crds_are_read_with_one_list_and_custom_resources_do_not_reread_them(world):
    world.emu.clear_log()
    assert world.run("up", only="platform")[0] == 0
    crd_gets = [r for r in _tools_requests(world)
                if r["method"] == "GET" and "/customresourcedefinitions/" in r["path"]]
    assert crd_gets == []  # the first up: the CRD steps' listing said established; no GET per custom resource
    world.emu.clear_log()
    assert world.run("up", only="platform")[0] == 0
    crd_reads = [r for r in _tools_requests(world) if "customresourcedefinitions" in r["path"]]
    assert [(r["method"], r["path"]) for r in crd_reads] == [
        ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")]


# -- helm values: controllers scoped to our namespace --------------------------------------------------------------


def test_controllers_watch_only_our_namespace():
    from etlboot.stack import argo_events_values, argo_workflows_values

    workflows, events = argo_workflows_values(None), argo_events_values(None)
    # chart 1.0.18 passes --namespaced to controller and server only with singleNamespace
    assert workflows["singleNamespace"] is True
    assert "workflowNamespaces" not in workflows.get("controller", {})  # "only valid when singleNamespace is false"
    # chart 2.4.22 passes --namespaced to the controller-manager with controller.rbac.namespaced
    assert events["controller"]["rbac"]["namespaced"] is True


# -- SNS webhook URL -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["https://etl.example.com/", "https://etl.example.com//", "https://etl.example.com"])
def test_sns_webhook_url_with_a_trailing_slash_subscribes_one_slash(env_file, given):
    from aws.steps import manifest_variables, webhook_endpoint
    from etlboot import manifests as m

    env_file.write_text(f"AWS_DELIVERY=sns-webhook\nSNS_WEBHOOK_URL={given}\nAWS_BUCKET=etl-bucket-test\n")
    settings = config.load(env_file, environ={})
    path = settings.values["SNS_WEBHOOK_PATH"]
    assert webhook_endpoint(settings) == f"https://etl.example.com/{path}"
    rendered = m.render_group("aws", {**m.variables(settings), **manifest_variables(settings)})
    webhook = next(d for d in rendered if d["kind"] == "EventSource" and "sns" in d["spec"])["spec"]["sns"]
    (entry,) = webhook.values()
    # Argo Events v1.9.10 FormattedURL: url + endpoint, untrimmed
    assert entry["webhook"]["url"] + entry["webhook"]["endpoint"] == f"https://etl.example.com/{path}"
