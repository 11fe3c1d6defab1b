"""What each tutorial example must show, checked on what a run recorded (the examples' catalog uses these).

Checks read only recorded facts -- node phases, times, inputs/outputs, pod specs and logs -- so they are
tested on recorded status objects. Each returns a one-line detail or raises CheckFailed saying what was seen.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .workflows import CheckFailed, WorkflowView, parse_time

__all__ = ["CheckFailed", "Observed", "Verdict"]


def output_parameter(node: dict, name: str) -> str:
    for param in (node.get("outputs") or {}).get("parameters") or []:
        if param.get("name") == name:
            return str(param.get("value", ""))
    raise CheckFailed(f"node {node.get('displayName')} has no output parameter {name!r}")


def input_parameter(node: dict, name: str) -> str:
    for param in (node.get("inputs") or {}).get("parameters") or []:
        if param.get("name") == name:
            return str(param.get("value", ""))
    raise CheckFailed(f"node {node.get('displayName')} has no input parameter {name!r}")


@dataclass
class Observed:
    """Everything a check may look at: the final Workflow objects, their pods and `main` logs by node id."""

    workflows: list[dict]
    logs: dict[str, dict[str, str]] = field(default_factory=dict)
    pods: dict[str, dict[str, dict]] = field(default_factory=dict)

    def views(self) -> list[WorkflowView]:
        return [WorkflowView(w) for w in self.workflows]

    def view(self) -> WorkflowView:
        if len(self.workflows) != 1:
            raise CheckFailed(f"expected one workflow, got {len(self.workflows)}")
        return WorkflowView(self.workflows[0])

    def log(self, view: WorkflowView, node: dict) -> str:
        text = self.logs.get(view.name, {}).get(node["id"])
        if text is None:
            raise CheckFailed(f"no log of {node.get('displayName')} in {view.name} (pod gone?)")
        return text

    def pod(self, view: WorkflowView, node: dict) -> dict:
        pod = self.pods.get(view.name, {}).get(node["id"])
        if pod is None:
            raise CheckFailed(f"no pod of {node.get('displayName')} in {view.name}")
        return pod


@dataclass
class Verdict:
    ok: bool
    detail: str


# -- expectations ----------------------------------------------------------------------------------


def started(node: dict) -> datetime:
    value = parse_time(node.get("startedAt"))
    if value is None:
        raise CheckFailed(f"node {node.get('displayName')} has no start time")
    return value


def finished(node: dict) -> datetime:
    value = parse_time(node.get("finishedAt"))
    if value is None:
        raise CheckFailed(f"node {node.get('displayName')} has not finished")
    return value


def require_succeeded(view: WorkflowView, *nodes: dict) -> None:
    if view.phase != "Succeeded":
        raise CheckFailed(f"{view.name} ended {view.phase}" + (f": {view.message}" if view.message else ""))
    for node in nodes:
        if node.get("phase") != "Succeeded":
            raise CheckFailed(f"node {node.get('displayName')} is {node.get('phase')}"
                              + (f": {node['message']}" if node.get("message") else ""))


def require_after(later: dict, *earlier: dict) -> float:
    """`later` started no sooner than every `earlier` node finished; returns the gap in seconds."""
    start = started(later)
    gaps = []
    for node in earlier:
        end = finished(node)
        if start < end:
            raise CheckFailed(f"{later.get('displayName')} started at {later.get('startedAt')}, before "
                              f"{node.get('displayName')} finished at {node.get('finishedAt')}")
        gaps.append((start - end).total_seconds())
    return min(gaps) if gaps else 0.0


def log_lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.splitlines()]


def substitute(text: str, parameters: dict[str, str]) -> str:
    """Resolve {{workflow.parameters.X}} and the entrypoint's {{inputs.parameters.X}} (fed by the arguments)."""
    def value(match: re.Match) -> str:
        name = match.group(2)
        if name not in parameters:
            raise CheckFailed(f"parameter {name!r} is not among the workflow's arguments")
        return parameters[name]

    return re.sub(r"\{\{\s*(workflow|inputs)\.parameters\.([\w-]+)\s*\}\}", value, text)


def sequence_items(sequence: dict, parameters: dict[str, str]) -> list[str]:
    """The items Argo expands a withSequence into (start, end or count, printf-style format)."""
    def number(key: str) -> int | None:
        raw = sequence.get(key)
        if raw is None:
            return None
        text = substitute(str(raw), parameters)
        try:
            return int(text)
        except ValueError:
            raise CheckFailed(f"withSequence {key}={text!r} is not a whole number") from None

    start = number("start") or 0
    end = number("end")
    if end is None:
        count = number("count")
        if count is None:
            raise CheckFailed("withSequence has neither end nor count")
        if count == 0:
            return []
        end = start + count - 1
    fmt = substitute(sequence.get("format") or "%d", parameters)
    numbers = range(start, end + 1) if start <= end else range(start, end - 1, -1)
    return [fmt % n for n in numbers]


def item_label(item: Any) -> str:
    """How Argo writes a loop item into the node name (parentheses dropped, maps as sorted key:value)."""
    if isinstance(item, bool):
        text = "true" if item else "false"
    elif isinstance(item, dict):
        text = ",".join(sorted(f"{k}:{v}" for k, v in item.items()))
    else:
        text = str(item)
    return text.replace("(", "").replace(")", "")


def find_step(view: WorkflowView, step_name: str) -> dict:
    """The step or DAG task called `step_name` in the submitted spec."""
    for template in view.spec.get("templates") or []:
        for group in (template.get("steps") or []):
            for step in group:
                if step.get("name") == step_name:
                    return step
        for task in ((template.get("dag") or {}).get("tasks") or []):
            if task.get("name") == step_name:
                return task
    raise CheckFailed(f"the submitted spec has no step or task {step_name!r}")


def expected_items(view: WorkflowView, step_name: str) -> list[str]:
    step = find_step(view, step_name)
    parameters = view.parameters()
    if "withItems" in step:
        return [item_label(i) for i in step["withItems"]]
    if "withSequence" in step:
        return sequence_items(step["withSequence"], parameters)
    if "withParam" in step:
        raw = substitute(str(step["withParam"]), parameters)
        try:
            items = json.loads(raw)
        except ValueError:
            raise CheckFailed(f"withParam of {step_name} is not a JSON list") from None
        if not isinstance(items, list):
            raise CheckFailed(f"withParam of {step_name} is not a JSON list")
        return [item_label(i) for i in items]
    raise CheckFailed(f"{step_name} is not a loop")


def check_loop(view: WorkflowView, step_name: str) -> list[dict]:
    """Exactly one succeeded child node per loop item, labelled with that item."""
    want = expected_items(view, step_name)
    got = view.expanded(step_name)
    labels = [label for _, label, _ in got]
    if len(got) != len(want):
        raise CheckFailed(f"{step_name} expanded into {len(got)} nodes for {len(want)} items")
    if labels != want:
        raise CheckFailed(f"{step_name} items {labels} differ from {want}")
    nodes = [node for _, _, node in got]
    require_succeeded(view, *nodes)
    return nodes


def check_hello_world(obs: Observed) -> str:
    view = obs.view()
    root = view.root()
    require_succeeded(view, root)
    if "hello world" not in log_lines(obs.log(view, root)):
        raise CheckFailed("the log does not have the line 'hello world'")
    return "Succeeded; the log says 'hello world'"


def check_global_parameters(obs: Observed) -> str:
    view = obs.view()
    root = view.root()
    require_succeeded(view, root)
    message = view.parameters().get("message")
    if message is None:
        raise CheckFailed("the workflow has no argument 'message'")
    lines = log_lines(obs.log(view, root))
    if message not in lines:
        raise CheckFailed(f"the log {lines[:3]} does not have the message {message!r}")
    return f"the global parameter reached the container: {message!r}"


def check_arguments_parameters(obs: Observed) -> str:
    view = obs.view()
    root = view.root()
    require_succeeded(view, root)
    message = view.parameters().get("message")
    got = input_parameter(root, "message")
    if got != message:
        raise CheckFailed(f"the template's input 'message' is {got!r}, the argument was {message!r}")
    if message not in log_lines(obs.log(view, root)):
        raise CheckFailed(f"the log does not have the message {message!r}")
    return f"argument -> template input -> container: {message!r}"


def check_steps(obs: Observed) -> str:
    view = obs.view()
    first, second_a, second_b = view.node("hello1"), view.node("hello2a"), view.node("hello2b")
    require_succeeded(view, first, second_a, second_b)
    group_a, group_b, group_1 = view.parent(second_a), view.parent(second_b), view.parent(first)
    if group_a is None or group_a is not group_b or group_a.get("type") != "StepGroup":
        raise CheckFailed("hello2a and hello2b are not in the same step group")
    if group_1 is group_a:
        raise CheckFailed("hello1 is in the same step group as hello2a/hello2b")
    require_after(second_a, first)
    require_after(second_b, first)
    return "hello1 ran first, then hello2a and hello2b in one parallel group"


def check_output_parameter(obs: Observed) -> str:
    view = obs.view()
    producer, consumer = view.node("generate-parameter"), view.node("consume-parameter")
    require_succeeded(view, producer, consumer)
    produced = output_parameter(producer, "hello-param")
    if produced == "Foobar":
        raise CheckFailed("hello-param fell back to its default 'Foobar': the file was not read")
    received = input_parameter(consumer, "message")
    if received != produced:
        raise CheckFailed(f"the consumer got {received!r}, the producer output {produced!r}")
    return f"the consumer got the producer's output {produced!r}"


def check_dag_diamond(obs: Observed) -> str:
    view = obs.view()
    a, b, c, d = (view.node(n) for n in "ABCD")
    require_succeeded(view, a, b, c, d)
    require_after(b, a)
    require_after(c, a)
    require_after(d, b, c)
    return "B and C started after A finished; D started after B and C finished"


def check_loops(obs: Observed) -> str:
    view = obs.view()
    items = check_loop(view, "print-message")
    repeats = check_loop(view, "repeat")
    require_succeeded(view)
    return f"withItems ran {len(items)} nodes, withSequence ran {len(repeats)}"


def check_loops_param_argument(obs: Observed) -> str:
    view = obs.view()
    nodes = check_loop(view, "test-linux")
    require_succeeded(view)
    return f"withParam ran {len(nodes)} nodes, one per item of os-list"


def check_loops_dag(obs: Observed) -> str:
    view = obs.view()
    a, c = view.node("A"), view.node("C")
    items = check_loop(view, "B")
    require_succeeded(view, a, c)
    for item in items:
        require_after(item, a)
    require_after(c, *items)
    return f"B ran {len(items)} items after A; C started after all of them finished"


def check_artifact_passing(obs: Observed) -> str:
    view = obs.view()
    producer, consumer = view.node("generate-artifact"), view.node("consume-artifact")
    require_succeeded(view, producer, consumer)
    artifacts = {a.get("name"): a for a in (producer.get("outputs") or {}).get("artifacts") or []}
    stored = artifacts.get("hello-art")
    if not stored or not (stored.get("s3") or {}).get("key"):
        raise CheckFailed("the producer recorded no hello-art artifact in the S3 (MinIO) repository")
    written = obs.log(view, producer).strip()
    if not written:
        raise CheckFailed("the producer printed nothing")
    printed = obs.log(view, consumer).strip()
    if printed != written:
        raise CheckFailed(f"the consumer printed {printed[:80]!r}, the producer wrote {written[:80]!r}")
    return f"the consumer printed the producer's text via artifact {stored['s3']['key']}"


def check_retry_script(obs: Observed) -> str:
    view = obs.view()
    retry = view.root()
    if retry.get("type") != "Retry":
        raise CheckFailed(f"the root node is {retry.get('type')}, not Retry: no retryStrategy applied")
    template = next((t for t in view.spec.get("templates") or [] if t.get("name") == retry.get("templateName")), {})
    limit = int(str((template.get("retryStrategy") or {}).get("limit", 0)))
    def attempt_number(node: dict) -> int:
        match = re.search(r"\((\d+)\)$", node.get("name") or "")
        return int(match.group(1)) if match else -1

    attempts = sorted((view.nodes[c] for c in retry.get("children") or [] if c in view.nodes), key=attempt_number)
    phases = [a.get("phase") for a in attempts]
    if view.phase == "Succeeded":
        if phases[-1:] != ["Succeeded"]:
            raise CheckFailed(f"the workflow succeeded but its last attempt is {phases[-1:]}")
        if len(attempts) < 2:
            raise CheckFailed("succeeded on the first attempt: no retry happened (the first attempt should fail)")
        if any(p != "Failed" for p in phases[:-1]):
            raise CheckFailed(f"attempts before the last should have failed: {phases}")
        return f"succeeded on attempt {len(attempts)} after {len(attempts) - 1} retries"
    if view.phase == "Failed":
        if len(attempts) != limit + 1 or any(p != "Failed" for p in phases):
            raise CheckFailed(f"failed after {len(attempts)} attempts ({phases}); the limit allows {limit + 1}")
        return f"failed after the limit: {len(attempts)} attempts"
    raise CheckFailed(f"{view.name} ended {view.phase}" + (f": {view.message}" if view.message else ""))


def check_mutex(obs: Observed) -> str:
    views = obs.views()
    if len(views) != 2:
        raise CheckFailed(f"expected two workflows holding the mutex, got {len(views)}")
    roots = []
    for view in views:
        root = view.root()
        require_succeeded(view, root)
        roots.append((started(root), finished(root), view.name, root))
    roots.sort(key=lambda r: r[0])
    (_, first_end, first_name, _), (second_start, _, second_name, _) = roots
    if second_start < first_end:
        overlap = (first_end - second_start).total_seconds()
        raise CheckFailed(f"{second_name} started {overlap:.0f}s before {first_name} finished: they overlapped")
    gap = (second_start - first_end).total_seconds()
    return f"{second_name} started {gap:.0f}s after {first_name} finished: no overlap"


def check_pod_spec_patch(obs: Observed) -> str:
    view = obs.view()
    parse, setup = view.node("parse-resources"), view.node("setup-resources")
    require_succeeded(view, parse, setup)
    produced = output_parameter(parse, "resources")
    if input_parameter(setup, "resources") != produced:
        raise CheckFailed("setup-resources did not receive parse-resources' output")
    try:
        wanted = {k: str(v) for k, v in json.loads(produced).items()}
    except (ValueError, AttributeError):
        raise CheckFailed(f"parse-resources printed {produced[:80]!r}, not a JSON object") from None
    pod = obs.pod(view, setup)
    main = next((c for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") == "main"), None)
    if main is None:
        raise CheckFailed("the setup-resources pod has no container 'main'")
    resources = main.get("resources") or {}
    for kind in ("limits", "requests"):
        got = {k: str(v) for k, v in (resources.get(kind) or {}).items()}
        if got != wanted:
            raise CheckFailed(f"the pod's main {kind} are {got}, the previous step asked for {wanted}")
    return f"the second pod runs with limits = requests = {wanted}"


def check_cron_backfill(obs: Observed) -> str:
    view = obs.view()
    days = check_loop(view, "day")
    require_succeeded(view)
    if not days:
        raise CheckFailed("the backfill period is empty: no day ran")
    first, last = view.expanded("day")[0][1], view.expanded("day")[-1][1]
    return f"the backfill ran the daily job once per day: {len(days)} days, {first} … {last}"

