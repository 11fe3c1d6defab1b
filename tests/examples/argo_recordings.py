"""Workflow objects as Argo Workflows v4's controller records them, for each example: a passing run and runs
that break the example's expectation in one specific way.

The shapes follow the controller's bookkeeping (workflow/controller in argo-workflows v4.0):
- node ids: the workflow's name for the root, else `<workflow>-<fnv32a(node name)>`;
- node names: `wf[0]` step group, `wf[0].step`, `wf.task`, `wf.task(0:item)` loop item, `wf(0)` retry attempt;
- displayName: the node name minus its boundary node's name and a leading `[n].` or `.`;
- DAG tasks list their dependents in `children`; step groups their steps; a step the next group;
- pods (pod name v2: `<wf>-<template>-<fnv>`, the root pod is named after the workflow) carry the
  label workflows.argoproj.io/workflow and the annotations node-name / node-id; `main` holds the log.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

EXAMPLE_LABEL = "argo-etl-bootstrap/example"  # what `examples.run` labels its workflows with
T0 = datetime(2026, 3, 6, 9, 43, 10, tzinfo=timezone.utc)
NAMESPACE = "argo-etl"
SEPARATOR = re.compile(r"^(\[\d+\])?\.")


def fnv32a(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode():
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


def stamp(seconds: float, t0: datetime = T0) -> str:
    return (t0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Recording:
    workflow: dict  # the final Workflow object
    snapshots: list[dict]  # status objects seen while it ran, in order, ending with the final one
    pods: list[dict] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)  # pod name -> main log

    @property
    def name(self) -> str:
        return self.workflow["metadata"]["name"]

    def logs_by_node(self) -> dict[str, str]:
        ids = {p["metadata"]["name"]: p["metadata"]["annotations"]["workflows.argoproj.io/node-id"] for p in self.pods}
        return {ids[pod]: text for pod, text in self.logs.items()}

    def pods_by_node(self) -> dict[str, dict]:
        return {p["metadata"]["annotations"]["workflows.argoproj.io/node-id"]: p for p in self.pods}


class Recorder:
    """Collects nodes (with times in seconds after T0), then writes the Workflow as the controller would."""

    def __init__(self, name: str, spec: dict, namespace: str = NAMESPACE):
        self.name = name
        self.spec = copy.deepcopy(spec)
        self.namespace = namespace
        self.nodes: dict[str, dict] = {}
        self.times: dict[str, tuple[float, float | None]] = {}
        self.pods: list[dict] = []
        self.logs: dict[str, str] = {}

    def node_id(self, node_name: str) -> str:
        return self.name if node_name == self.name else f"{self.name}-{fnv32a(node_name)}"

    def add(self, node_name: str, node_type: str, *, template: str | None = None, template_ref: dict | None = None,
            phase: str = "Succeeded", start: float = 0.0, end: float | None = None, boundary: str | None = None,
            parent: str | None = None, inputs: dict | None = None, outputs: dict | None = None,
            message: str | None = None, log: str | None = None, resources: dict | None = None,
            retried: bool = False) -> dict:
        node_id = self.node_id(node_name)
        boundary_id = self.node_id(boundary) if boundary else None
        display = node_name
        if boundary:
            display = SEPARATOR.sub("", node_name[len(boundary):]) if node_name.startswith(boundary) else node_name
        node = {"id": node_id, "name": node_name, "displayName": display, "type": node_type, "phase": phase,
                "startedAt": stamp(start), "templateScope": f"local/{self.name}"}
        if template:
            node["templateName"] = template
        if template_ref:
            node["templateRef"] = template_ref
        if boundary_id:
            node["boundaryID"] = boundary_id
        if end is not None:
            node["finishedAt"] = stamp(end)
        if inputs:
            node["inputs"] = inputs
        if node_type == "Pod":
            outputs = dict(outputs or {})
            if phase in ("Succeeded", "Failed"):
                outputs.setdefault("exitCode", "0" if phase == "Succeeded" else "1")
            node["hostNodeName"] = "minikube"
            node["taskResultSynced"] = True
            if end is not None:
                node["resourcesDuration"] = {"cpu": 0, "memory": max(1, int(end - start))}
                node["progress"] = "1/1" if phase == "Succeeded" else "0/1"
        if outputs:
            node["outputs"] = outputs
        if message:
            node["message"] = message
        if retried:
            node["nodeFlag"] = {"retried": True}
        self.nodes[node_id] = node
        self.times[node_id] = (start, end)
        if parent:
            self.link(parent, node_name)
        if node_type == "Pod":
            self._pod(node, template or (template_ref or {}).get("template", ""), log, resources)
        return node

    def link(self, parent: str, child: str) -> None:
        self.nodes[self.node_id(parent)].setdefault("children", []).append(self.node_id(child))

    def _pod(self, node: dict, template: str, log: str | None, resources: dict | None) -> None:
        pod_name = self.name if node["name"] == self.name else f"{self.name}-{template}-{fnv32a(node['name'])}"
        main = {"name": "main", "image": "busybox:1.37", "resources": resources or {}}
        self.pods.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": self.namespace,
                         "labels": {"workflows.argoproj.io/workflow": self.name,
                                    "workflows.argoproj.io/completed": "true"},
                         "annotations": {"workflows.argoproj.io/node-name": node["name"],
                                         "workflows.argoproj.io/node-id": node["id"]}},
            "spec": {"serviceAccountName": "argo-workflow",
                     "containers": [{"name": "wait", "image": "quay.io/argoproj/argoexec:v4.0.6"}, main]},
            "status": {"phase": "Succeeded" if node["phase"] == "Succeeded" else "Failed"},
        })
        if log is not None:
            self.logs[pod_name] = log

    def _status(self, phase: str, nodes: dict, end: float | None, message: str | None) -> dict:
        pods = [n for n in nodes.values() if n["type"] == "Pod"]
        done = [n for n in pods if n["phase"] == "Succeeded"]
        status = {"phase": phase, "startedAt": stamp(0), "progress": f"{len(done)}/{len(pods)}", "nodes": nodes,
                  "conditions": [{"type": "PodRunning", "status": "False" if end is not None else "True"}],
                  "artifactRepositoryRef": {"configMap": "artifact-repositories", "key": "default-minio-repository",
                                            "namespace": self.namespace}}
        if end is not None:
            status["finishedAt"] = stamp(end)
            status["conditions"].append({"type": "Completed", "status": "True"})
            status["resourcesDuration"] = {"cpu": 0, "memory": len(pods) * 4}
            status["taskResultsCompletionStatus"] = {n["id"]: True for n in pods}
        if message:
            status["message"] = message
        return status

    def snapshot(self, at: float) -> dict:
        """The status as a poll at `at` seconds would have seen it: later nodes absent, unfinished ones Running."""
        nodes = {}
        for node_id, node in self.nodes.items():
            start, end = self.times[node_id]
            if start > at:
                continue
            seen = copy.deepcopy(node)
            if end is None or end > at:
                seen["phase"] = "Running" if node["type"] != "Pod" or start < at else "Pending"
                for key in ("finishedAt", "outputs", "resourcesDuration", "progress", "message"):
                    seen.pop(key, None)
            seen["children"] = [c for c in node.get("children", []) if self.times[c][0] <= at]
            if not seen["children"]:
                seen.pop("children")
            nodes[node_id] = seen
        return self._status("Running", nodes, None, None)

    def finish(self, phase: str = "Succeeded", end: float | None = None, message: str | None = None,
               steps_at: tuple[float, ...] = ()) -> Recording:
        end = end if end is not None else max((e or s) for s, e in self.times.values())
        final = self._status(phase, copy.deepcopy(self.nodes), end, message)
        workflow = {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "labels": {"workflows.argoproj.io/completed": "true",
                                    "workflows.argoproj.io/phase": phase,
                                    "app.kubernetes.io/managed-by": "argo-etl-bootstrap"}},
            "spec": self.spec, "status": final,
        }
        snapshots = [self.snapshot(t) for t in steps_at] + [final]
        return Recording(workflow, snapshots, self.pods, self.logs)


def params(*pairs: tuple[str, str]) -> dict:
    return {"parameters": [{"name": k, "value": v} for k, v in pairs]}


def spec_parameters(spec: dict) -> dict[str, str]:
    return {p["name"]: p.get("value", "") for p in (spec.get("arguments") or {}).get("parameters") or []}


# -- one function per example; `fault` breaks one expectation ---------------------------------------


def hello_world(spec, name="hello-world-x7k2p", fault=None) -> Recording:
    r = Recorder(name, spec)
    if fault == "failed":
        r.add(name, "Pod", template="hello-world", phase="Failed", end=6, message="Error (exit code 1)", log="")
        return r.finish("Failed", message="Error (exit code 1)", steps_at=(2,))
    r.add(name, "Pod", template="hello-world", end=6, log="hullo world\n" if fault == "wrong-log" else "hello world\n")
    return r.finish(steps_at=(0, 3))


def global_parameters(spec, name="global-parameters-q2m8d", fault=None) -> Recording:
    message = spec_parameters(spec)["message"]
    printed = "hello world" if fault == "default-used" else message
    r = Recorder(name, spec)
    r.add(name, "Pod", template="print-message", end=5, log=printed + "\n")
    return r.finish(steps_at=(2,))


def arguments_parameters(spec, name="arguments-parameters-b7v4n", fault=None) -> Recording:
    message = spec_parameters(spec)["message"]
    received = "hello world" if fault == "input-mismatch" else message
    r = Recorder(name, spec)
    r.add(name, "Pod", template="print-message", end=5, inputs=params(("message", received)), log=received + "\n")
    return r.finish(steps_at=(2,))


def steps(spec, name="steps-wk5m5", fault=None) -> Recording:
    r = Recorder(name, spec)
    r.add(name, "Steps", template="hello-hello-hello", end=30)
    r.add(f"{name}[0]", "StepGroup", boundary=name, parent=name, end=8)
    r.add(f"{name}[0].hello1", "Pod", template="print-message", boundary=name, parent=f"{name}[0]", end=8,
          inputs=params(("message", "hello1")), log="hello1\n")
    second_start = 5 if fault == "overlap" else 9
    r.add(f"{name}[1]", "StepGroup", boundary=name, parent=f"{name}[0].hello1", start=second_start, end=20)
    r.add(f"{name}[1].hello2a", "Pod", template="print-message", boundary=name, parent=f"{name}[1]",
          start=second_start, end=18, inputs=params(("message", "hello2a")), log="hello2a\n")
    if fault == "split-group":
        r.add(f"{name}[2]", "StepGroup", boundary=name, parent=f"{name}[1].hello2a", start=19, end=30)
        r.add(f"{name}[2].hello2b", "Pod", template="print-message", boundary=name, parent=f"{name}[2]",
              start=19, end=30, inputs=params(("message", "hello2b")), log="hello2b\n")
    else:
        r.add(f"{name}[1].hello2b", "Pod", template="print-message", boundary=name, parent=f"{name}[1]",
              start=second_start, end=20, inputs=params(("message", "hello2b")), log="hello2b\n")
    return r.finish(end=30, steps_at=(3, 12))


def output_parameter(spec, name="output-parameter-m4xz9", fault=None) -> Recording:
    produced = "Foobar" if fault == "default" else "hello world"
    received = "goodbye" if fault == "mismatch" else produced
    r = Recorder(name, spec)
    r.add(name, "Steps", template="output-parameter", end=20)
    r.add(f"{name}[0]", "StepGroup", boundary=name, parent=name, end=7)
    r.add(f"{name}[0].generate-parameter", "Pod", template="generate", boundary=name, parent=f"{name}[0]", end=7,
          outputs={"parameters": [{"name": "hello-param", "value": produced,
                                   "valueFrom": {"path": "/tmp/hello_world.txt", "default": "Foobar"}}]})
    r.add(f"{name}[1]", "StepGroup", boundary=name, parent=f"{name}[0].generate-parameter", start=8, end=20)
    r.add(f"{name}[1].consume-parameter", "Pod", template="print-message", boundary=name, parent=f"{name}[1]",
          start=8, end=20, inputs=params(("message", received)), log=received + "\n")
    return r.finish(steps_at=(4,))


def dag_diamond(spec, name="dag-diamond-d6xfs", fault=None) -> Recording:
    r = Recorder(name, spec)
    r.add(name, "DAG", template="diamond", end=40)
    r.add(f"{name}.A", "Pod", template="echo", boundary=name, parent=name, end=8, inputs=params(("message", "A")))
    r.add(f"{name}.B", "Pod", template="echo", boundary=name, parent=f"{name}.A", start=9, end=14,
          inputs=params(("message", "B")))
    r.add(f"{name}.C", "Pod", template="echo", boundary=name, parent=f"{name}.A", start=9, end=22,
          inputs=params(("message", "C")))
    d_start = 18 if fault == "D-early" else 23
    r.add(f"{name}.D", "Pod", template="echo", boundary=name, start=d_start, end=40, inputs=params(("message", "D")))
    r.link(f"{name}.B", f"{name}.D")
    r.link(f"{name}.C", f"{name}.D")
    r.nodes[name]["outboundNodes"] = [r.node_id(f"{name}.D")]
    return r.finish(steps_at=(5, 12, 30))


def loops(spec, name="loops-8pl2c", fault=None) -> Recording:
    r = Recorder(name, spec)
    r.add(name, "Steps", template="loop-example", end=30)
    r.add(f"{name}[0]", "StepGroup", boundary=name, parent=name, end=12)
    items = ["hello world", "goodbye world"][: 1 if fault == "missing-item" else 2]
    for i, item in enumerate(items):
        r.add(f"{name}[0].print-message({i}:{item})", "Pod", template="print-message", boundary=name,
              parent=f"{name}[0]", start=1, end=10 + i, inputs=params(("message", item)), log=item + "\n")
    # every outbound node of group [0] leads to group [1]
    r.add(f"{name}[1]", "StepGroup", boundary=name, parent=f"{name}[0].print-message(0:hello world)", start=13, end=30)
    if len(items) > 1:
        r.link(f"{name}[0].print-message(1:goodbye world)", f"{name}[1]")
    for i in range(3):
        r.add(f"{name}[1].repeat({i}:{i})", "Pod", template="print-message", boundary=name, parent=f"{name}[1]",
              start=13, end=25 + i, inputs=params(("message", f"repeat {i}")), log=f"repeat {i}\n")
    return r.finish(steps_at=(5, 20))


def loops_param_argument(spec, name="loops-param-arg-z9k4w", fault=None) -> Recording:
    items = json.loads(spec_parameters(spec)["os-list"])
    if fault == "missing":
        items = items[:-1]
    r = Recorder(name, spec)
    r.add(name, "Steps", template="loop-param-arg-example", end=40,
          inputs=params(("os-list", spec_parameters(spec)["os-list"])))
    r.add(f"{name}[0]", "StepGroup", boundary=name, parent=name, end=40)
    for i, item in enumerate(items):
        label = ",".join(sorted(f"{k}:{v}" for k, v in item.items()))
        r.add(f"{name}[0].test-linux({i}:{label})", "Pod", template="cat-os-release", boundary=name,
              parent=f"{name}[0]", start=1, end=20 + i,
              inputs=params(("image", item["image"]), ("tag", item["tag"])),
              log=f'PRETTY_NAME="{item["image"]} {item["tag"]}"\n')
    return r.finish(steps_at=(10,))


def loops_dag(spec, name="loops-dag-7vx2q", fault=None) -> Recording:
    r = Recorder(name, spec)
    r.add(name, "DAG", template="loops-dag", end=40)
    r.add(f"{name}.A", "Pod", template="print-message", boundary=name, parent=name, end=8,
          inputs=params(("message", "A")))
    r.add(f"{name}.B", "TaskGroup", boundary=name, parent=f"{name}.A", start=9, end=22)
    ends = {"bar": 15, "baz": 22}
    for i, item in enumerate(("bar", "baz")):
        r.add(f"{name}.B({i}:{item})", "Pod", template="print-message", boundary=name, parent=f"{name}.B", start=9,
              end=ends[item], inputs=params(("message", item)))
    c_start = 16 if fault == "C-early" else 23
    r.add(f"{name}.C", "Pod", template="print-message", boundary=name, start=c_start, end=40,
          inputs=params(("message", "C")))
    r.link(f"{name}.B(0:bar)", f"{name}.C")
    r.link(f"{name}.B(1:baz)", f"{name}.C")
    return r.finish(steps_at=(12,))


def artifact_passing(spec, name="artifact-passing-j4rfp", fault=None) -> Recording:
    text = f"hello world from {name}"
    r = Recorder(name, spec)
    r.add(name, "Steps", template="artifact-example", end=31)
    r.add(f"{name}[0]", "StepGroup", boundary=name, parent=name, end=10)
    pod = f"{name}-generate-{fnv32a(f'{name}[0].generate-artifact')}"
    artifact = {"name": "hello-art", "path": "/tmp/hello_world.txt"}
    if fault != "no-artifact":
        artifact["s3"] = {"key": f"{name}/{pod}/hello-art.tgz"}
    r.add(f"{name}[0].generate-artifact", "Pod", template="generate", boundary=name, parent=f"{name}[0]", end=10,
          outputs={"artifacts": [artifact]}, log=text + "\n")
    r.add(f"{name}[1]", "StepGroup", boundary=name, parent=f"{name}[0].generate-artifact", start=11, end=31)
    consumed = "hello world from artifact-passing-old01" if fault == "wrong-text" else text
    r.add(f"{name}[1].consume-artifact", "Pod", template="print-message", boundary=name, parent=f"{name}[1]",
          start=11, end=31, inputs={"artifacts": [{"name": "message", "path": "/tmp/message",
                                                   "s3": artifact.get("s3", {})}]},
          log=consumed + "\n")
    return r.finish(steps_at=(5,))


def retry_script(spec, outcome="succeeded", attempts=3, name="retry-script-6xq8c") -> Recording:
    """outcome: succeeded (last attempt passes) or failed (every attempt fails)."""
    r = Recorder(name, spec)
    last_ok = outcome == "succeeded"
    end = attempts * 6
    r.add(name, "Retry", template="retry-script", phase="Succeeded" if last_ok else "Failed", end=end,
          message=None if last_ok else "No more retries left")
    for i in range(attempts):
        ok = last_ok and i == attempts - 1
        r.add(f"{name}({i})", "Pod", template="retry-script", phase="Succeeded" if ok else "Failed",
              start=i * 6, end=i * 6 + 5, parent=name, message=None if ok else "Error (exit code 1)",
              log=f"attempt {i}: exit code {0 if ok else 1}\n", retried=i > 0)
    return r.finish("Succeeded" if last_ok else "Failed", end=end,
                    message=None if last_ok else "No more retries left", steps_at=(3,))


def synchronization_mutex(spec, names=("synchronization-wf-level-4k2jd", "synchronization-wf-level-9xq7b"),
                          fault=None) -> list[Recording]:
    recordings = []
    second_start = 5 if fault == "overlap" else 12
    for name, (start, end) in zip(names, ((0, 11), (second_start, second_start + 11))):
        r = Recorder(name, spec)
        r.add(name, "Pod", template="hold-the-lock", start=start, end=end,
              log="holding example-mutex\nreleasing example-mutex\n")
        rec = r.finish(end=end, steps_at=(start + 1,))
        rec.workflow["status"]["startedAt"] = stamp(start)
        if start:
            # while the first holds the lock, the second waits in Pending with the controller's message
            waiting = {"phase": "Pending", "message": f"Waiting for {NAMESPACE}/Mutex/example-mutex lock. "
                                                       "Lock status: 0/1", "nodes": {}}
            rec.snapshots.insert(0, waiting)
        recordings.append(rec)
    return recordings


def pod_spec_from_previous_step(spec, name="pod-spec-from-previous-step-2xk9v", fault=None) -> Recording:
    # what parse-resources prints: the JSON its script echoes (so the recording follows the manifest)
    parse = next(t for t in spec["templates"] if t["name"] == "parse-resources-tmpl")
    resources = re.search(r"echo '(\{.*?\})'", parse["script"]["source"]).group(1)
    asked = json.loads(resources)
    r = Recorder(name, spec)
    r.add(name, "DAG", template="workflow", end=25)
    r.add(f"{name}.parse-resources", "Pod", template="parse-resources-tmpl", boundary=name, parent=name, end=9,
          outputs={"parameters": [{"name": "resources", "value": resources,
                                   "valueFrom": {"path": "/tmp/resources.json"}}],
                   "result": resources})
    patched = {} if fault == "not-patched" else {"limits": dict(asked), "requests": dict(asked)}
    r.add(f"{name}.setup-resources", "Pod", template="setup-resources-tmpl", boundary=name,
          parent=f"{name}.parse-resources", start=10, end=25, inputs=params(("resources", resources)),
          resources=patched, log=resources + "\n")
    return r.finish(steps_at=(12,))


def cron_backfill(spec, name="example-daily-job-backfill-h8c2x", fault=None) -> Recording:
    p = spec_parameters(spec)
    first, last = int(p["first-day"]), int(p["last-day"])
    days = [f"{p['month']}-{d:02d}" for d in range(first, last + 1)]
    if fault == "short":
        days = days[:-1]
    r = Recorder(name, spec)
    r.add(name, "Steps", template="backfill", end=10 * len(days) + 1)
    r.add(f"{name}[0]", "StepGroup", boundary=name, parent=name, end=10 * len(days) + 1)
    for i, day in enumerate(days):
        r.add(f"{name}[0].day({i}:{day})", "Pod", template_ref={"name": "example-daily-job", "template": "main"},
              boundary=name, parent=f"{name}[0]", start=10 * i + 1, end=10 * i + 9,
              inputs=params(("date", day)), log=f"daily job for {day}\n")
    return r.finish(steps_at=(5,))


def by_example(faults: dict[str, str] | None = None):
    """A script that records each created Workflow as its example's passing run (or the given fault)."""
    faults = faults or {}
    mutex_index = []

    def script(index, obj):
        example = obj["metadata"]["labels"][EXAMPLE_LABEL]
        name, spec = obj["metadata"]["name"], obj["spec"]
        if example == "synchronization-mutex":
            mutex_index.append(name)
            return synchronization_mutex(spec, names=(name, name), fault=faults.get(example))[len(mutex_index) - 1]
        if example == "retry-script":
            return retry_script(spec, "succeeded", 3, name=name)
        return globals()[example.replace("-", "_")](spec, name=name, fault=faults.get(example))

    return script
