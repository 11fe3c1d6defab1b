"""Reading Argo Workflow objects: one Workflow's nodes as a tree, its parameters, its pods and their logs.

Shared by everything that looks at workflows: `examples.run`, the demos, `trace` and `doctor`. Read-only
helpers over the objects as the API returns them (spec as submitted, status as the controller wrote it).
"""

from __future__ import annotations

import re
from datetime import datetime

WORKFLOW_API = "argoproj.io/v1alpha1"
TERMINAL = ("Succeeded", "Failed", "Error")
POD_WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
POD_NODE_ID = "workflows.argoproj.io/node-id"
POD_NODE_NAME = "workflows.argoproj.io/node-name"


class CheckFailed(Exception):
    """An expectation did not hold (a node that is not there, a check that failed); the message says what was seen."""


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


def parameter(workflow: dict, name: str) -> str:
    """The value of the workflow's argument `name` as submitted ("" when it has none)."""
    for item in ((workflow.get("spec") or {}).get("arguments") or {}).get("parameters") or []:
        if item.get("name") == name:
            return str(item.get("value", ""))
    return ""


def created(workflow: dict) -> datetime:
    stamp = workflow["metadata"].get("creationTimestamp") or "1970-01-01T00:00:00Z"
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


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

