"""`invoke examples.run NAME`: submit one of the tutorial's examples, follow it, and judge it.

Renders manifests/examples/NAME.yaml (the catalog: example_catalog.py), creates the Workflow through the
Kubernetes API (POST with generateName), follows it with the shared follower until it ends (bounded),
gathers the pods and their `main` logs where the check needs them, and judges the result (the checks:
example_checks.py). `cleanup` deletes what the examples made, by label.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

from . import manifests as m
from .engine import Context, StepError
from .example_catalog import CATALOG, EXAMPLE_LABEL, EXAMPLES_DIR, Example, get, load, parse_parameters, \
    with_parameters
from .example_checks import Observed, Verdict, log_lines
from .follow import follow
from .kube import with_identity
from .workflows import WORKFLOW_API, WorkflowView, logs_by_node, pods_by_node

__all__ = ["CATALOG", "EXAMPLE_LABEL", "EXAMPLES_DIR", "Example", "get", "load", "parse_parameters",
           "with_parameters", "RunResult", "preflight", "submit", "observe", "run", "cleanup"]

ARGO_CRDS = {"Workflow": "workflows.argoproj.io", "WorkflowTemplate": "workflowtemplates.argoproj.io",
             "CronWorkflow": "cronworkflows.argoproj.io"}


@dataclass
class RunResult:
    example: str
    workflows: list[str]
    phases: list[str]
    verdict: Verdict
    seconds: float = 0.0


def preflight(ctx: Context, kinds: Iterable[str]) -> None:
    """The configured context, Argo's CRDs and the workflow ServiceAccount are there (else: `invoke up`)."""
    from .cluster_steps import KubeContextStep
    from .steps import kube

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

