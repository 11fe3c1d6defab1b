"""The one workflow follower: poll the workflows of interest, draw them as they run, stop when done (bounded).

`follow_workflows(read, done, ...)` is the loop every caller shares -- `examples.run` (workflows by name),
`demo.upload` for MinIO, FTP and AWS (workflows a Sensor created for our inputs) -- and the drawing
(`tree_lines`, `rich_tree`) is what `trace` prints too. On a terminal the trees are redrawn in place, like
`argo submit --watch`; otherwise one line per change of a workflow's or a pod node's phase, and the
trees at the end.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

from .engine import StepError, WaitTimeout
from .workflows import TERMINAL, WORKFLOW_API, WorkflowView, parse_time

POLL_SECONDS = 1.0  # how often the followed workflows are read again

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



def last_state(workflows: list[dict]) -> str:
    """`name Phase (progress)` of each workflow, for a timeout's message."""
    return "; ".join(f"{w['metadata']['name']} {WorkflowView(w).phase}"
                     + (f" ({w['status']['progress']})" if (w.get("status") or {}).get("progress") else "")
                     for w in workflows) or "none seen"


def follow_workflows(read: Callable[[], list[dict]], done: Callable[[list[dict]], bool], *, timeout: float,
                     reporter, what: str, hint: str, interval: float | None = None,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """Call `read()` (the workflows of interest as the API has them now), draw them, until `done(them)`.

    Returns the last reading. Bounded by `timeout`: then WaitTimeout says what it was doing (`what`, e.g. "waiting for X") and the last
    state of each workflow seen, with `hint`.
    """
    interval = POLL_SECONDS if interval is None else interval
    deadline = clock() + timeout
    with workflow_display(reporter) as display:
        while True:
            workflows = read()
            display.update(workflows)
            if done(workflows):
                return workflows
            remaining = deadline - clock()
            if remaining <= 0:
                raise WaitTimeout(f"timed out after {timeout:.0f}s {what}; last state: "
                                  f"{last_state(workflows)}", hint=hint)
            sleep(min(interval, remaining))


def follow(kube, namespace: str, names: list[str], *, timeout: float, reporter, interval: float | None = None,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """Follow the named workflows until each has ended (an ended one is not read again)."""
    latest: dict[str, dict] = {}

    def read() -> list[dict]:
        for name in names:
            if name in latest and WorkflowView(latest[name]).phase in TERMINAL:
                continue
            obj = kube.get(WORKFLOW_API, "Workflow", name, namespace)
            if obj is None:
                raise StepError(f"workflow {name} disappeared while it was followed",
                                hint="was it deleted? `kubectl get wf -n " + namespace + "`")
            latest[name] = obj
        return [latest[n] for n in names]

    return follow_workflows(read, lambda workflows: all(WorkflowView(w).phase in TERMINAL for w in workflows),
                            timeout=timeout, reporter=reporter, what=f"following {', '.join(names)}",
                            hint=f"raise --timeout; the workflow keeps running: `kubectl -n {namespace} get wf`",
                            interval=interval, clock=clock, sleep=sleep)
