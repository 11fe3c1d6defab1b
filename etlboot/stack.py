"""The stack: every step `invoke up` runs, in order. `status` checks them; `down` undoes them in reverse."""

from __future__ import annotations

from typing import Callable

import yaml

from . import charts
from . import manifests as m
from .engine import Context, StepError, Step
from .kube import sort_for_apply
from .helm import HelmReleaseStep
from .cluster_steps import ImageBuildStep, KubeContextStep, MinikubeStep, ToolsStep
from .steps import (BucketStep, CrdsStep, MinioEventSourceStep, NamespaceStep, ObjectStep, configmap_from_files, kube,
                    secret_object)

ARGO_EVENTS_CRDS = ["eventbus.argoproj.io", "eventsources.argoproj.io", "sensors.argoproj.io"]
# every CRD the pinned chart installs (../shared/upstream/argo-workflows-chart-1.0.18-rendered.yaml)
ARGO_WORKFLOWS_CRDS = ["workflows.argoproj.io", "workflowtemplates.argoproj.io", "cronworkflows.argoproj.io",
                       "clusterworkflowtemplates.argoproj.io", "workflowtaskresults.argoproj.io",
                       "workflowtasksets.argoproj.io", "workflowartifactgctasks.argoproj.io",
                       "workfloweventbindings.argoproj.io"]


def argo_events_values(ctx: Context) -> dict:
    return {
        "crds": {"install": True, "keep": True},
        # the controller watches only our namespace (Role, not ClusterRole; `--namespaced`), so it never
        # reconciles EventSources, Sensors or EventBuses of another Argo Events on the same cluster
        "controller": {"rbac": {"namespaced": True}},
    }


def argo_workflows_values(ctx: Context) -> dict:
    return {
        # Full CRDs are applied by a hook Job that downloads them from GitHub; the inline minimal CRDs
        # need no egress from the cluster.
        "crds": {"install": True, "keep": True, "full": False},
        # Roles instead of ClusterRoles and `--namespaced` for the controller and the server: at chart
        # 1.0.18 `controller.workflowNamespaces` alone only adds RoleBindings, the controller still
        # watches every namespace and would fight an Argo Workflows that is already on the cluster.
        "singleNamespace": True,
        # the workflow ServiceAccount and its executor Role are ours (manifests/platform/rbac.yaml)
        "workflow": {"serviceAccount": {"create": False}, "rbac": {"create": False}},
        # the UI takes a bearer token (`invoke ui --show-token`), as in the tutorial
        "server": {"authModes": ["client"]},
    }


def _tools(ctx: Context) -> list[str]:
    tools = ["kubectl", "helm"]
    if ctx.settings.uses_minikube:
        tools.append("minikube")
        if ctx.settings.minikube_driver == "docker":
            tools.append("docker")
    return tools


def _doc_step(group: str, doc: dict, **kwargs) -> ObjectStep:
    name = f"{group}/{doc['kind'].lower()}/{doc['metadata']['name']}"
    cls = MinioEventSourceStep if doc["kind"] == "EventSource" and "minio" in (doc.get("spec") or {}) else ObjectStep
    return cls(name, lambda ctx, d=doc: d, **kwargs)


def _group_steps(ctx: Context, group: str, **kwargs) -> list[Step]:
    docs = sort_for_apply(m.render_group(group, m.variables(ctx.settings)))
    return [_doc_step(group, doc, keep_unless_purge=doc["kind"] == "PersistentVolumeClaim", **kwargs) for doc in docs]


def check_nats_version(ctx: Context, eventbus: dict) -> None:
    """The EventBus version must be one the installed controller lists, or the bus never comes up."""
    name = charts.events_controller(ctx.settings)
    cm = kube(ctx).get("v1", "ConfigMap", name, ctx.settings.namespace)
    if cm is None:
        raise StepError(f"ConfigMap {name} not found; is Argo Events installed?")
    config = yaml.safe_load((cm.get("data") or {}).get("controller-config.yaml") or "{}") or {}
    versions = [str(v.get("version")) for v in ((config.get("eventBus") or {}).get("jetstream") or {}).get("versions") or []]
    wanted = str(eventbus["spec"]["jetstream"]["version"])
    if wanted not in versions:
        raise StepError(f"EVENTBUS_NATS_VERSION={wanted} is not offered by the Argo Events controller "
                        f"(it lists: {', '.join(versions) or 'none'})", hint="pick one of those versions in .env")


def gate_steps(ctx: Context) -> list[Step]:
    """The tools, the cluster and the context guard: first in every run, whatever `--only` says."""
    return [ToolsStep(_tools), MinikubeStep(), KubeContextStep()]


def platform_steps(ctx: Context) -> list[Step]:
    s = ctx.settings
    variables = m.variables(s)
    steps: list[Step] = [
        NamespaceStep("platform/namespace", lambda c: {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": c.settings.namespace}},
                   keep_unless_purge=True),
        HelmReleaseStep("argo-events/release", lambda c: c.settings.argo_events_release, "argo-events",
                        lambda c: c.settings.argo_events_chart_version, argo_events_values,
                        title="argo-helm argo-events chart, pinned"),
        CrdsStep("argo-events/crds", ARGO_EVENTS_CRDS, title="EventBus/EventSource/Sensor CRDs established"),
        HelmReleaseStep("argo-workflows/release", lambda c: c.settings.argo_workflows_release, "argo-workflows",
                        lambda c: c.settings.argo_workflows_chart_version, argo_workflows_values,
                        title="argo-helm argo-workflows chart, pinned"),
        CrdsStep("argo-workflows/crds", ARGO_WORKFLOWS_CRDS, title="Workflow CRDs established"),
    ]
    docs = {(d["kind"], d["metadata"]["name"]): d for d in m.render_group("platform", variables)}

    def doc(kind: str, name: str) -> dict:
        return docs[(kind, name)]

    for (kind, name), d in docs.items():
        if kind in ("ServiceAccount", "Role", "RoleBinding"):
            steps.append(_doc_step("rbac", d))
    steps.append(_doc_step("argo-events", doc("EventBus", "default"), before_apply=check_nats_version))
    steps.append(_doc_step("argo-workflows", doc("Secret", f"{m.ARGO_UI_SA}.service-account-token")))
    steps.append(ObjectStep(f"minio/secret/{m.MINIO_SECRET}",
                            lambda c: secret_object(m.MINIO_SECRET, {"root-user": c.settings.minio_root_user,
                                                                      "root-password": c.settings.minio_root_password})))
    for kind, name in (("PersistentVolumeClaim", "minio-data"), ("Deployment", "minio"), ("Service", "minio")):
        steps.append(_doc_step("minio", doc(kind, name), keep_unless_purge=kind == "PersistentVolumeClaim"))
    steps.append(BucketStep(lambda c: c.settings.artifact_bucket, "minio/bucket/artifact"))
    steps.append(BucketStep(lambda c: c.settings.etl_bucket, "minio/bucket/etl"))
    steps.append(_doc_step("argo-workflows", doc("ConfigMap", "artifact-repositories")))
    return steps


def pipeline_steps(ctx: Context) -> list[Step]:
    steps: list[Step] = [
        ImageBuildStep(),
        ObjectStep(f"pipeline/configmap/{m.CODE_CONFIGMAP}",
                   lambda c: configmap_from_files(m.CODE_CONFIGMAP, sorted(m.CODE.glob("*.py")))),
    ]
    steps += _group_steps(ctx, "pipeline")
    return steps


def ftp_steps(ctx: Context) -> list[Step]:
    if not ctx.settings.ftp_enabled:
        return []
    steps: list[Step] = [
        ObjectStep(f"ftp/secret/{m.FTP_SECRET}",
                   lambda c: secret_object(m.FTP_SECRET, {"username": c.settings.ftp_user,
                                                          "password": c.settings.ftp_password})),
        ObjectStep(f"ftp/configmap/{m.FTP_EVENT_SERVER_CONFIGMAP}",
                   lambda c: configmap_from_files(m.FTP_EVENT_SERVER_CONFIGMAP, m.ftp_event_server_files())),
    ]
    steps += _group_steps(ctx, "ftp")
    return steps


def up_steps(ctx: Context) -> list[Step]:
    return gate_steps(ctx) + platform_steps(ctx) + pipeline_steps(ctx) + ftp_steps(ctx)


def part_steps(parts: list[str]) -> Callable[[Context], list[Step]]:
    """`--only`: the gates, then the named parts in the order given."""
    return lambda ctx: gate_steps(ctx) + [step for part in parts for step in STACKS[part](ctx)]


def down_steps(ctx: Context) -> list[Step]:
    """`up`'s steps and, deleted first, whatever an earlier `up` made that they no longer describe."""
    from .leftovers import LeftoversStep, claimed_by

    steps = up_steps(ctx)
    return steps + [LeftoversStep(claimed_by(steps))]


STACKS: dict[str, Callable[[Context], list[Step]]] = {
    "platform": platform_steps,
    "pipeline": pipeline_steps,
    "ftp": ftp_steps,
}
