"""The tutorial's walkthrough examples: a catalog, a follower that draws the workflow tree as it runs, and one
expectation per example that says whether the example really showed what it teaches.

`invoke examples.run NAME` renders manifests/examples/NAME.yaml, creates the Workflow through the Kubernetes
API (POST with generateName), polls it about once a second until it ends (bounded), gathers the pods and
their `main` logs where the check needs them, and judges the result. Checks read only recorded facts —
node phases, times, inputs/outputs, pod specs and logs — so they can be tested on recorded status objects.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from . import manifests as m
from .engine import Context, StepError, WaitTimeout
from .kube import with_identity

WORKFLOW_API = "argoproj.io/v1alpha1"
EXAMPLES_DIR = m.MANIFESTS / "examples"
WEBHOOK_DIR = m.MANIFESTS / "webhook"
EXAMPLE_LABEL = "argo-etl-bootstrap/example"
TERMINAL = ("Succeeded", "Failed", "Error")
POLL_SECONDS = 1.0  # how often a followed workflow is read again
POD_WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
POD_NODE_ID = "workflows.argoproj.io/node-id"
POD_NODE_NAME = "workflows.argoproj.io/node-name"
ARGO_CRDS = {"Workflow": "workflows.argoproj.io", "WorkflowTemplate": "workflowtemplates.argoproj.io",
             "CronWorkflow": "cronworkflows.argoproj.io"}


class CheckFailed(Exception):
    """An expectation did not hold; the message says what was seen."""


# -- what a run observed ---------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class WorkflowView:
    """Read-only helpers over one Workflow object (spec as submitted, status as the controller wrote it)."""

    def __init__(self, workflow: dict):
        self.obj = workflow
        self.name: str = workflow["metadata"]["name"]
        self.spec: dict = workflow.get("spec") or {}
        self.status: dict = workflow.get("status") or {}
        self.nodes: dict[str, dict] = self.status.get("nodes") or {}
        self._by_name = {n.get("name"): n for n in self.nodes.values()}

    @property
    def phase(self) -> str:
        return self.status.get("phase") or "Pending"

    @property
    def message(self) -> str:
        return self.status.get("message") or ""

    def parameters(self) -> dict[str, str]:
        """The workflow's arguments as submitted (after any -p override)."""
        return {p["name"]: str(p.get("value", "")) for p in (self.spec.get("arguments") or {}).get("parameters") or []}

    def root(self) -> dict:
        node = self.nodes.get(self.name) or self._by_name.get(self.name)
        if node is None:
            raise CheckFailed(f"{self.name} has no root node (phase {self.phase})")
        return node

    def node(self, display_name: str) -> dict:
        found = [n for n in self.nodes.values() if n.get("displayName") == display_name]
        if not found:
            raise CheckFailed(f"{self.name} has no node {display_name!r}")
        if len(found) > 1:
            raise CheckFailed(f"{self.name} has {len(found)} nodes named {display_name!r}")
        return found[0]

    def parent(self, node: dict) -> dict | None:
        """The node this one sits under in the tree, found from Argo's node naming.

        Argo names a node after its parent: `wf[0]` (step group of `wf`), `wf[0].step`, `wf.task`,
        `wf.task(0:item)` (loop item), `wf(0)` (retry attempt). The longest proper prefix, cut at one of
        `[`, `.`, `(`, that names a node is the parent. Children lists would attach DAG dependents to
        their dependencies instead.
        """
        name = node.get("name") or ""
        for cut in range(len(name) - 1, 0, -1):
            if name[cut] in "[.(" and name[:cut] in self._by_name:
                return self._by_name[name[:cut]]
        return None

    def expanded(self, step: str) -> list[tuple[int, str, dict]]:
        """The nodes a loop expanded `step` into: (index, item label, node), by index."""
        # Argo drops parentheses from item labels, so a retry attempt `step(0:a)(1)` does not match
        pattern = re.compile(rf"(?:^|[.\]]){re.escape(step)}\((\d+):([^()]*)\)$")
        out = []
        for node in self.nodes.values():
            match = pattern.search(node.get("name") or "")
            if match:
                out.append((int(match.group(1)), match.group(2), node))
        return sorted(out, key=lambda entry: entry[0])

    def rows(self) -> list[tuple[int, dict]]:
        """(depth, node) in display order: depth-first, siblings by start time."""
        children: dict[str | None, list[dict]] = {}
        for node in self.nodes.values():
            parent = self.parent(node)
            children.setdefault(parent["id"] if parent else None, []).append(node)
        for kids in children.values():
            kids.sort(key=lambda n: (n.get("startedAt") or "~", n.get("name") or ""))
        rows: list[tuple[int, dict]] = []
        seen: set[str] = set()

        def walk(parent_id: str | None, depth: int) -> None:
            for node in children.get(parent_id, []):
                if node["id"] in seen:
                    continue
                seen.add(node["id"])
                rows.append((depth, node))
                walk(node["id"], depth + 1)

        walk(None, 0)
        return rows

    def pod_nodes(self) -> list[dict]:
        return [n for _, n in self.rows() if n.get("type") == "Pod"]


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


# -- the catalog -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    name: str
    teaches: str
    section: str  # the tutorial's Korean heading (path)
    gist: str  # the section in English
    check: Callable[[Observed], str]
    needs_logs: bool = False
    needs_pods: bool = False
    submissions: int = 1

    @property
    def path(self) -> Path:
        return EXAMPLES_DIR / f"{self.name}.yaml"

    def judge(self, observed: Observed) -> Verdict:
        try:
            return Verdict(True, self.check(observed))
        except CheckFailed as exc:
            return Verdict(False, str(exc))


CATALOG: tuple[Example, ...] = (
    Example("hello-world", "a container template run as the entrypoint", "Argo Workflows 소개 › 단순한 워크플로우 예제",
            "A simple workflow", check_hello_world, needs_logs=True),
    Example("global-parameters", "workflow arguments read as {{workflow.parameters.X}}; -p overrides them",
            "매개변수와 인자 › 글로벌 매개변수", "Parameters and arguments › global parameters",
            check_global_parameters, needs_logs=True),
    Example("arguments-parameters", "a template's input parameters fed by the workflow's arguments",
            "매개변수와 인자 › 템플릿 로컬 입력/출력 매개변수", "Parameters and arguments › template input/output parameters",
            check_arguments_parameters, needs_logs=True),
    Example("steps", "step groups run in order; steps inside a group run in parallel",
            "멀티 스텝 워크플로우 예제", "A multi-step workflow", check_steps),
    Example("output-parameter", "a step's output parameter (from a file) passed to the next step",
            "멀티 스텝 워크플로우 예제 › 출력 매개변수를 사용하는 멀티 스텝 예제", "Multi-step with an output parameter",
            check_output_parameter),
    Example("dag-diamond", "DAG tasks ordered by `depends` (A → B, C → D)",
            "DAG 워크플로우 예제", "A DAG workflow", check_dag_diamond),
    Example("loops", "withItems (one node per item) and withSequence (counted repeats)",
            "루프 예제", "Loops", check_loops),
    Example("loops-param-argument", "withParam over a JSON list argument; each item picks the image",
            "루프 예제 › JSON 객체 형태의 인자로 루프 이용", "Looping over a JSON list argument",
            check_loops_param_argument),
    Example("loops-dag", "a loop inside a DAG; the dependent task waits for every item",
            "루프 예제 › DAG 에서 루프 이용", "Loops in a DAG", check_loops_dag),
    Example("artifact-passing", "an output artifact stored in MinIO and handed to the next step",
            "아티팩트 워크플로우 예제", "An artifact workflow", check_artifact_passing, needs_logs=True),
    Example("retry-script", "retryStrategy.limit re-runs a failing script",
            "기타 › 재시도 설정", "Misc › retries", check_retry_script),
    Example("synchronization-mutex", "a workflow-level mutex serialises two submissions",
            "기타 › 뮤텍스", "Misc › mutex", check_mutex, submissions=2),
    Example("pod-spec-from-previous-step", "podSpecPatch sets a pod's resources from a previous step's output",
            "기타 › 동적인 파드 스펙 지정", "Misc › a pod spec decided at run time", check_pod_spec_patch,
            needs_pods=True),
    Example("cron-backfill", "a WorkflowTemplate run nightly by a CronWorkflow and backfilled with withSequence",
            "기타 › 특정 기간에 대한 재작업", "Misc › re-running a past period (backfill)", check_cron_backfill),
)

BY_NAME = {example.name: example for example in CATALOG}


def get(name: str) -> Example:
    try:
        return BY_NAME[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, BY_NAME, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise StepError(f"no example named {name!r}{hint}", hint="`invoke examples.list` shows them") from None


# -- manifests and parameters ----------------------------------------------------------------------


def load(example: Example, settings) -> list[dict]:
    return m.render(example.path, m.variables(settings))


def parse_parameters(pairs: Iterable[str]) -> dict[str, str]:
    """`-p key=value` pairs (the value may itself contain '=')."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise StepError(f"-p {pair!r} is not key=value", hint='e.g. -p message="goodbye world"')
        out[key] = value
    return out


def with_parameters(workflow: dict, overrides: dict[str, str], example: str) -> dict:
    """A copy of `workflow` whose spec.arguments.parameters take the overrides; unknown names are refused."""
    workflow = json.loads(json.dumps(workflow))
    parameters = ((workflow.setdefault("spec", {}).setdefault("arguments", {})).setdefault("parameters", []))
    known = {p["name"]: p for p in parameters}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        have = ", ".join(known) or "none"
        raise StepError(f"{example} has no parameter {', '.join(unknown)} (it has: {have})",
                        hint="`invoke examples.list` shows each example; see its manifest for the parameters")
    for name, value in overrides.items():
        known[name]["value"] = value
    if not parameters:
        workflow["spec"]["arguments"].pop("parameters")
        if not workflow["spec"]["arguments"]:
            workflow["spec"].pop("arguments")
    return workflow


# -- drawing the tree ------------------------------------------------------------------------------

MARKS = {"Succeeded": ("✔", "green"), "Failed": ("✖", "red"), "Error": ("⚠", "red"), "Running": ("●", "cyan"),
         "Pending": ("◷", "yellow"), "Skipped": ("○", "dim"), "Omitted": ("○", "dim")}


def duration(node: dict, now: datetime | None = None) -> str:
    start = parse_time(node.get("startedAt"))
    if start is None:
        return ""
    end = parse_time(node.get("finishedAt")) or now or datetime.now(timezone.utc)
    seconds = max(0, int((end - start).total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def template_of(node: dict) -> str:
    return node.get("templateName") or (node.get("templateRef") or {}).get("template") or ""


def node_line(node: dict, now: datetime | None = None) -> str:
    phase = node.get("phase") or "Pending"
    mark = MARKS.get(phase, ("?", ""))[0]
    parts = [f"{mark} {node.get('displayName') or node.get('name')}", template_of(node), phase, duration(node, now)]
    if node.get("message"):
        parts.append(node["message"])
    return "  ".join(p for p in parts if p)


def header_line(view: WorkflowView, now: datetime | None = None) -> str:
    phase = view.phase
    text = f"{MARKS.get(phase, ('?', ''))[0]} {view.name}  {phase}"
    if view.status.get("startedAt"):
        text += f"  {duration(view.status, now)}"
    if view.status.get("progress"):
        text += f"  ({view.status['progress']})"
    if view.message:
        text += f"  {view.message}"
    return text


def tree_lines(view: WorkflowView, now: datetime | None = None) -> list[str]:
    lines = [header_line(view, now)]
    for depth, node in view.rows():
        if node["id"] == view.name:  # the root repeats the header
            continue
        lines.append("  " * depth + node_line(node, now))
    return lines


def rich_tree(view: WorkflowView, redact: Callable[[str], str], now: datetime | None = None):
    from rich.text import Text
    from rich.tree import Tree

    def label(text: str, phase: str) -> Text:
        return Text(redact(text), style=MARKS.get(phase, ("", ""))[1])

    tree = Tree(label(header_line(view, now), view.phase))
    branches = {None: tree}
    for depth, node in view.rows():
        if node["id"] == view.name:
            continue
        parent = view.parent(node)
        anchor = branches.get(parent["id"] if parent and parent["id"] != view.name else None, tree)
        branches[node["id"]] = anchor.add(label(node_line(node, now), node.get("phase") or "Pending"))
    return tree


class _PlainFollow:
    """Without a terminal: one line per change of a workflow's or a pod node's phase, the tree at the end."""

    def __init__(self, reporter):
        self.reporter = reporter
        self.seen: dict[str, str] = {}

    def __enter__(self):
        return self

    def update(self, workflows: list[dict]) -> None:
        for workflow in workflows:
            view = WorkflowView(workflow)
            key = f"wf:{view.name}"
            state = f"{view.phase}|{view.message}"
            if self.seen.get(key) != state:
                self.seen[key] = state
                self.reporter.say(f"{view.name}: {view.phase}" + (f"  {view.message}" if view.message else ""))
            for node in view.nodes.values():
                if node.get("type") not in ("Pod", "Retry", "Suspend"):
                    continue
                key = f"node:{view.name}:{node['id']}"
                if self.seen.get(key) != node.get("phase"):
                    self.seen[key] = node.get("phase")
                    self.reporter.say(f"  {node_line(node)}")
        self.last = workflows

    def __exit__(self, *exc):
        for workflow in getattr(self, "last", []):
            for line in tree_lines(WorkflowView(workflow)):
                self.reporter.say(line)
        return False


class _LiveFollow:
    """On a terminal: the trees redrawn in place, like `argo submit --watch`."""

    def __init__(self, reporter):
        from rich.live import Live

        self.reporter = reporter
        self.live = Live(console=reporter.console, refresh_per_second=4, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def update(self, workflows: list[dict]) -> None:
        from rich.console import Group

        self.live.update(Group(*(rich_tree(WorkflowView(w), self.reporter.redact) for w in workflows)))

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)


def workflow_display(reporter):
    """A live tree of workflows on a terminal, one line per change otherwise; `.update(workflows)` redraws."""
    return _LiveFollow(reporter) if reporter.console.is_terminal else _PlainFollow(reporter)


def follow(kube, namespace: str, names: list[str], *, timeout: float, reporter, interval: float | None = None,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """Poll the workflows until each has ended; bounded by `timeout` (raises WaitTimeout with the last state)."""
    interval = POLL_SECONDS if interval is None else interval
    deadline = clock() + timeout
    latest: dict[str, dict] = {}
    with workflow_display(reporter) as display:
        while True:
            for name in names:
                if name in latest and WorkflowView(latest[name]).phase in TERMINAL:
                    continue
                obj = kube.get(WORKFLOW_API, "Workflow", name, namespace)
                if obj is None:
                    raise StepError(f"workflow {name} disappeared while it was followed",
                                    hint="was it deleted? `kubectl get wf -n " + namespace + "`")
                latest[name] = obj
            display.update([latest[n] for n in names])
            if all(WorkflowView(latest[n]).phase in TERMINAL for n in names):
                return [latest[n] for n in names]
            remaining = deadline - clock()
            if remaining <= 0:
                state = "; ".join(f"{n} {WorkflowView(latest[n]).phase}"
                                  + (f" ({latest[n]['status']['progress']})"
                                     if (latest[n].get("status") or {}).get("progress") else "")
                                  for n in names)
                raise WaitTimeout(f"timed out after {timeout:.0f}s following {', '.join(names)}; last state: {state}",
                                  hint="raise --timeout; the workflow keeps running: "
                                       f"`kubectl -n {namespace} get wf`")
            sleep(min(interval, remaining))


# -- pods and logs ---------------------------------------------------------------------------------


def pods_by_node(kube, namespace: str, view: WorkflowView) -> dict[str, dict]:
    """The workflow's pods keyed by the node id they ran (annotation node-id, else node-name, else pod name)."""
    out: dict[str, dict] = {}
    ids_by_name = {n.get("name"): n["id"] for n in view.nodes.values()}
    for pod in kube.list("v1", "Pod", namespace, label_selector=f"{POD_WORKFLOW_LABEL}={view.name}"):
        meta = pod.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        node_id = annotations.get(POD_NODE_ID) or ids_by_name.get(annotations.get(POD_NODE_NAME)) or meta.get("name")
        out[node_id] = pod
    return out


def logs_by_node(kube, namespace: str, pods: dict[str, dict]) -> dict[str, str]:
    from kubernetes.client.exceptions import ApiException

    out = {}
    for node_id, pod in pods.items():
        try:
            out[node_id] = kube.pod_log(namespace, pod["metadata"]["name"], container="main")
        except ApiException as exc:
            if exc.status not in (400, 404):  # gone, or the container never started
                raise
    return out


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    example: str
    workflows: list[str]
    phases: list[str]
    verdict: Verdict
    seconds: float = 0.0


def preflight(ctx: Context, kinds: Iterable[str]) -> None:
    """The configured context, Argo's CRDs and the workflow ServiceAccount are there (else: `invoke up`)."""
    from .steps import KubeContextStep, kube

    KubeContextStep().check(ctx)
    k = kube(ctx)
    for kind in sorted(set(kinds)):
        crd = ARGO_CRDS.get(kind)
        if crd and k.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd) is None:
            raise StepError(f"Argo Workflows is not installed on {ctx.settings.kube_context} (no CRD {crd})",
                            hint="run `invoke up` first")
    namespace = ctx.settings.namespace
    if k.get("v1", "ServiceAccount", m.WORKFLOW_SA, namespace) is None:
        raise StepError(f"ServiceAccount {m.WORKFLOW_SA} is missing in namespace {namespace}",
                        hint="run `invoke up` first (it makes the workflow ServiceAccount and its executor Role)")


def submit(ctx: Context, example: Example, overrides: dict[str, str]) -> list[str]:
    """Apply the example's side objects (templates, cron) and create its Workflow(s); returns their names."""
    from .steps import kube

    docs = load(example, ctx.settings)
    workflows = [d for d in docs if d.get("kind") == "Workflow"]
    if len(workflows) != 1:
        raise StepError(f"{example.path.name} must hold exactly one Workflow (has {len(workflows)})")
    workflow = with_parameters(workflows[0], overrides, example.name)
    preflight(ctx, [d.get("kind") for d in docs])
    k = kube(ctx)
    namespace = ctx.settings.namespace
    labels = {EXAMPLE_LABEL: example.name}
    for doc in docs:
        if doc.get("kind") == "Workflow":
            continue
        applied = k.apply(with_identity(doc, namespace, labels))
        ctx.reporter.say(f"applied {applied['kind']}/{applied['metadata']['name']}")
    names = []
    for _ in range(example.submissions):
        created = k.create(with_identity(workflow, namespace, labels))
        names.append(created["metadata"]["name"])
        ctx.reporter.say(f"created Workflow/{created['metadata']['name']} in {namespace}")
    return names


def observe(ctx: Context, example: Example, finals: list[dict], want_logs: bool) -> Observed:
    from .steps import kube

    observed = Observed(finals)
    if not (want_logs or example.needs_logs or example.needs_pods):
        return observed
    for final in finals:
        view = WorkflowView(final)
        pods = pods_by_node(kube(ctx), ctx.settings.namespace, view)
        observed.pods[view.name] = pods
        if want_logs or example.needs_logs:
            observed.logs[view.name] = logs_by_node(kube(ctx), ctx.settings.namespace, pods)
    return observed


def print_logs(ctx: Context, observed: Observed) -> None:
    for view in observed.views():
        logs = observed.logs.get(view.name, {})
        for node in view.pod_nodes():
            if node["id"] not in logs:
                continue
            pod = observed.pods.get(view.name, {}).get(node["id"], {})
            ctx.reporter.say(f"── {node.get('displayName')} ({(pod.get('metadata') or {}).get('name', node['id'])})",
                             style="bold")
            for line in log_lines(logs[node["id"]]):
                ctx.reporter.say(f"   {line}")


def run(ctx: Context, example: Example, overrides: dict[str, str], *, timeout: float, interval: float | None = None,
        show_logs: bool = False, sleep: Callable[[float], None] = time.sleep) -> RunResult:
    """Submit, follow, observe and judge one example. Raises StepError/WaitTimeout for a run that could not end."""
    from .steps import kube

    began = time.monotonic()
    names = submit(ctx, example, overrides)
    finals = follow(kube(ctx), ctx.settings.namespace, names, timeout=timeout, interval=interval,
                    reporter=ctx.reporter, sleep=sleep)
    observed = observe(ctx, example, finals, show_logs)
    if show_logs:
        print_logs(ctx, observed)
    verdict = example.judge(observed)
    mark, style = ("✓", "green") if verdict.ok else ("✗", "bold red")
    ctx.reporter.say(f"{mark} {example.name}: {verdict.detail}", style=style)
    return RunResult(example.name, names, [WorkflowView(f).phase for f in finals], verdict,
                     time.monotonic() - began)


def cleanup(ctx: Context, dry_run: bool = False) -> list[str]:
    """Delete what the examples made (Workflows, the CronWorkflow, the WorkflowTemplate): ours only, by label.

    Returns what was deleted (with dry_run: what would be)."""
    from . import MANAGED_BY_LABEL, MANAGER
    from .steps import kube

    k = kube(ctx)
    namespace = ctx.settings.namespace
    selector = f"{EXAMPLE_LABEL},{MANAGED_BY_LABEL}={MANAGER}"
    deleted = []
    for kind in ("Workflow", "CronWorkflow", "WorkflowTemplate"):
        for obj in k.list(WORKFLOW_API, kind, namespace, label_selector=selector):
            if dry_run or k.delete(WORKFLOW_API, kind, obj["metadata"]["name"], namespace):
                deleted.append(f"{kind}/{obj['metadata']['name']}")
    return deleted


# -- the webhook walkthrough -----------------------------------------------------------------------

WEBHOOK_SERVICE = "webhook-eventsource-svc"
WEBHOOK_PORT = 12000
WEBHOOK_PATH = "/example"
WEBHOOK_REPOST_SECONDS = 5.0  # an accepted message not logged by then is posted again


def pod_ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return status.get("phase") == "Running" and conditions.get("Ready") == "True" \
        and not (pod.get("metadata") or {}).get("deletionTimestamp")


def pods_ready_health(selector: str):
    """An ObjectStep extra_health: the controller's Deployment has a ready pod (its conditions say only 'deployed')."""
    def health(ctx: Context, live: dict) -> tuple[bool, str]:
        from .steps import kube

        pods = kube(ctx).list("v1", "Pod", ctx.settings.namespace, label_selector=selector)
        ready = [p for p in pods if pod_ready(p)]
        return bool(ready), f"{len(ready)}/{len(pods)} pod(s) ready"

    return health


def webhook_steps(ctx: Context) -> list:
    from .steps import ObjectStep

    docs = [d for path in sorted(WEBHOOK_DIR.glob("*.yaml")) for d in m.render(path, m.variables(ctx.settings))]
    order = {"EventSource": 0, "Sensor": 1}
    steps = []
    for doc in sorted(docs, key=lambda d: order.get(d["kind"], 2)):
        name = doc["metadata"]["name"]
        label = "eventsource-name" if doc["kind"] == "EventSource" else "sensor-name"
        steps.append(ObjectStep(f"webhook/{doc['kind'].lower()}/{name}", lambda c, d=doc: d,
                                title=f"{doc['kind']} {name} from the tutorial",
                                extra_health=pods_ready_health(f"{label}={name}")))
    return steps


def post_json(url: str, body: dict, timeout: float) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(200).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(200).decode("utf-8", "replace")


def sensor_log_line(kube, namespace: str, sensor: str, needle: str) -> str | None:
    """The first line of the Sensor's pod log(s) holding `needle`, or None."""
    from kubernetes.client.exceptions import ApiException

    for pod in kube.list("v1", "Pod", namespace, label_selector=f"sensor-name={sensor}"):
        try:
            text = kube.pod_log(namespace, pod["metadata"]["name"], tail=2000)
        except ApiException as exc:
            if exc.status in (400, 404):  # starting or gone: look again on the next round
                continue
            raise
        for line in text.splitlines():
            if needle in line:
                return line
    return None


def webhook_roundtrip(ctx: Context, endpoint: str, message: str, *, timeout: float, sensor: str = "log",
                      interval: float | None = None, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> tuple[int, str]:
    """POST {"message": ...} to the webhook until accepted, then until the Sensor logged it (bounded).

    A Sensor only sees events published after it subscribed, so a message that was accepted but never
    logged is posted again (each post is one event; the log trigger prints at most one per second).
    Returns (posts made, the Sensor's log line).
    """
    from .steps import kube

    interval = POLL_SECONDS if interval is None else interval
    url = f"http://{endpoint}{WEBHOOK_PATH}"
    deadline = clock() + timeout
    posts = 0
    last = "nothing posted yet"
    next_post = clock()
    while True:
        now = clock()
        if now >= next_post:
            try:
                code, text = post_json(url, {"message": message}, timeout=min(10.0, max(1.0, deadline - now)))
                if 200 <= code < 300:
                    posts += 1
                    last = f"posted {posts} time(s); not in the Sensor's log yet"
                    next_post = now + WEBHOOK_REPOST_SECONDS
                else:
                    last = f"the webhook answered {code}: {text.strip()[:120]}"
                    next_post = now + interval
            except OSError as exc:
                last = f"POST {url} failed: {exc}"
                next_post = now + interval
        if posts:
            line = sensor_log_line(kube(ctx), ctx.settings.namespace, sensor, message)
            if line is not None:
                return posts, line
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for the Sensor {sensor} to log the message; "
                              f"last state: {last}",
                              hint=f"`kubectl -n {ctx.settings.namespace} logs -l sensor-name={sensor}`; is the "
                                   "EventBus `default` ready (`invoke status`)?")
        sleep(min(interval, remaining))
