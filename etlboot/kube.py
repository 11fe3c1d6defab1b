"""Kubernetes access: server-side apply with one field manager, plain GET/LIST/DELETE, no surprises.

The official client's `ApiClient.call_api` is used directly with a small table of the kinds the
project touches, so one code path serves core, RBAC, apps, CRDs and Argo's custom resources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from . import MANAGED_BY_LABEL, MANAGER


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def base(self, namespace: str | None) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.kind} needs a namespace")
            return f"{prefix}/namespaces/{namespace}/{self.plural}"
        return f"{prefix}/{self.plural}"


KINDS = {
    (k.api_version, k.kind): k
    for k in (
        Kind("v1", "Namespace", "namespaces", False),
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "Secret", "secrets"),
        Kind("v1", "ServiceAccount", "serviceaccounts"),
        Kind("v1", "Service", "services"),
        Kind("v1", "Pod", "pods"),
        Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("apps/v1", "StatefulSet", "statefulsets"),
        Kind("batch/v1", "Job", "jobs"),
        Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
        Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
        Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
        Kind("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
        Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
        Kind("argoproj.io/v1alpha1", "EventBus", "eventbus"),
        Kind("argoproj.io/v1alpha1", "EventSource", "eventsources"),
        Kind("argoproj.io/v1alpha1", "Sensor", "sensors"),
        Kind("argoproj.io/v1alpha1", "Workflow", "workflows"),
        Kind("argoproj.io/v1alpha1", "WorkflowTemplate", "workflowtemplates"),
        Kind("argoproj.io/v1alpha1", "CronWorkflow", "cronworkflows"),
    )
}


def with_kind(item: dict, k: Kind) -> dict:
    """A LIST item as a GET would return it.

    A real API server leaves `kind`/`apiVersion` off the items of built-in lists (only the list itself
    carries them; custom-resource lists do carry them), so every reader that decides by kind needs them
    put back here, once.
    """
    if item.get("kind") and item.get("apiVersion"):
        return item
    return {"apiVersion": k.api_version, "kind": k.kind, **item}


def kind_of(api_version: str, kind: str) -> Kind:
    try:
        return KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"unsupported kind {api_version}/{kind}") from None


def ref(obj: dict) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def is_managed(obj: dict | None) -> bool:
    return bool(obj) and (obj.get("metadata", {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGER


def kubeconfig_path() -> str:
    """KUBECONFIG as it is now (the client reads it once at import), else ~/.kube/config."""
    import os

    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


class Kube:
    """Thin, explicit access to one cluster (one kube context)."""

    def __init__(self, api_client, request_timeout: float = 30.0, field_manager: str = MANAGER):
        self.api = api_client
        self.timeout = request_timeout
        self.field_manager = field_manager

    @classmethod
    def from_context(cls, context: str, request_timeout: float = 30.0) -> "Kube":
        from kubernetes import config

        return cls(config.new_client_from_config(config_file=kubeconfig_path(), context=context), request_timeout)

    # -- raw ----------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
              body: Any = None, content_type: str = "application/json", raw: bool = False) -> Any:
        response = self.api.call_api(
            path, method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        data = response.data
        if raw:
            return data.decode("utf-8", "replace")
        return json.loads(data) if data else None

    @staticmethod
    def _missing(exc: Exception) -> bool:
        from kubernetes.client.exceptions import ApiException

        return isinstance(exc, ApiException) and exc.status == 404

    # -- reads --------------------------------------------------------------------------------
    def version(self) -> dict:
        """GET /version: the cheapest request every cluster answers."""
        return self._call("GET", "/version") or {}

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        k = kind_of(api_version, kind)
        try:
            return self._call("GET", f"{k.base(namespace)}/{name}")
        except Exception as exc:
            if self._missing(exc):
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict]:
        k = kind_of(api_version, kind)
        query = [("labelSelector", label_selector)] if label_selector else []
        try:
            result = self._call("GET", k.base(namespace), query=query)
        except Exception as exc:
            if self._missing(exc):  # the kind is not installed (CRD missing)
                return []
            raise
        return [with_kind(item, k) for item in result.get("items") or []]

    def list_all(self, group: str, version: str, plural: str) -> list[dict]:
        """Every object of a custom resource in every namespace (its CRD gives the path); [] if not served."""
        try:
            result = self._call("GET", f"/apis/{group}/{version}/{plural}")
        except Exception as exc:
            if self._missing(exc):
                return []
            raise
        return list(result.get("items") or [])

    def pod_log(self, namespace: str, pod: str, container: str | None = None, tail: int | None = None) -> str:
        query = []
        if container:
            query.append(("container", container))
        if tail:
            query.append(("tailLines", str(tail)))
        return self._call("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log", query=query, raw=True)

    def allowed(self, user: str, verb: str, group: str, resource: str, namespace: str) -> tuple[bool, str]:
        """Whether `user` may `verb` the resource in the namespace, as the cluster's authorizer decides
        (a SubjectAccessReview: the API answers, nothing is guessed from manifests)."""
        parts = user.split(":")
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{parts[2]}", "system:authenticated"] \
            if user.startswith("system:serviceaccount:") and len(parts) == 4 else ["system:authenticated"]
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": user, "groups": groups,
                           "resourceAttributes": {"namespace": namespace, "verb": verb, "group": group,
                                                  "resource": resource}}}
        answer = self._call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review) or {}
        status = answer.get("status") or {}
        return bool(status.get("allowed")), status.get("reason") or status.get("evaluationError") or ""

    # -- writes -------------------------------------------------------------------------------
    def apply(self, obj: dict, dry_run: bool = False) -> dict:
        """Server-side apply (upsert) with our field manager; conflicts are forced, we own our fields."""
        k = kind_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        query = [("fieldManager", self.field_manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        return self._call("PATCH", f"{k.base(meta.get('namespace'))}/{meta['name']}", query=query,
                          body=obj, content_type="application/apply-patch+yaml")

    def merge_patch(self, api_version: str, kind: str, name: str, namespace: str | None, patch: dict) -> dict:
        """A JSON merge patch (RFC 7386): a `null` removes a key, whoever owned it."""
        k = kind_of(api_version, kind)
        return self._call("PATCH", f"{k.base(namespace)}/{name}", query=[("fieldManager", self.field_manager)],
                          body=patch, content_type="application/merge-patch+json")

    def create(self, obj: dict) -> dict:
        k = kind_of(obj["apiVersion"], obj["kind"])
        return self._call("POST", k.base(obj["metadata"].get("namespace")), body=obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete; True if it was there. 'Not found' counts as done."""
        k = kind_of(api_version, kind)
        try:
            self._call("DELETE", f"{k.base(namespace)}/{name}",
                       body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
            return True
        except Exception as exc:
            if self._missing(exc):
                return False
            raise


# -- comparison -------------------------------------------------------------------------------
IGNORED_META = {"resourceVersion", "generation", "managedFields", "uid", "creationTimestamp", "selfLink"}


def subset_diff(desired: Any, live: Any, path: str = "") -> list[str]:
    """Where `live` does not contain `desired` (fields the server adds are fine). Paths, never values."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [path or "."]
        out: list[str] = []
        for key, value in desired.items():
            if path == ".metadata" and key in IGNORED_META:
                continue
            out.extend(subset_diff(value, live.get(key), f"{path}.{key}"))
        return out
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        out = []
        for index, (d, l) in enumerate(zip(desired, live)):
            out.extend(subset_diff(d, l, f"{path}[{index}]"))
        return out
    if desired != live and not _equivalent(desired, live):
        return [path]
    return []


#: maps of objects we own that are compared whole: a key someone added is drift, not "a field the server adds"
WHOLE_MAPS = {"ConfigMap": ("data", "binaryData"), "Secret": ("data",)}


def extra_keys(desired: dict, live: dict) -> dict[str, list[str]]:
    """Keys of the whole-compared maps (WHOLE_MAPS) that live has and desired does not: {field: [keys]}.

    Only maps we set are ours: a service-account-token Secret's `data` is filled by the controller.
    """
    out = {}
    for field in WHOLE_MAPS.get(desired.get("kind"), ()):
        if field not in desired:
            continue
        extra = sorted(set(live.get(field) or {}) - set(desired.get(field) or {}))
        if extra:
            out[field] = extra
    return out


def is_terminating(obj: dict | None) -> bool:
    """Being deleted: a real API server keeps the object, with deletionTimestamp, until its finalizers are gone."""
    return bool(obj) and bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _equivalent(desired: Any, live: Any) -> bool:
    # the API server may render numbers and booleans given as strings differently (and vice versa)
    if isinstance(desired, (int, float, bool)) or isinstance(live, (int, float, bool)):
        return str(desired).lower() == str(live).lower()
    return False


def with_identity(obj: dict, namespace: str | None, extra_labels: dict | None = None) -> dict:
    """Set our namespace and managed-by label on a manifest (returns a new dict)."""
    obj = json.loads(json.dumps(obj))
    meta = obj.setdefault("metadata", {})
    k = kind_of(obj["apiVersion"], obj["kind"])
    if k.namespaced:
        meta["namespace"] = namespace
    labels = meta.setdefault("labels", {})
    labels[MANAGED_BY_LABEL] = MANAGER
    labels.setdefault("app.kubernetes.io/part-of", MANAGER)
    if extra_labels:
        labels.update(extra_labels)
    return obj


def sort_for_apply(objects: Iterable[dict]) -> list[dict]:
    order = ["CustomResourceDefinition", "Namespace", "ServiceAccount", "Secret", "ConfigMap",
             "PersistentVolumeClaim", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "Service",
             "Deployment", "StatefulSet", "Job", "EventBus", "WorkflowTemplate", "CronWorkflow",
             # a Sensor before its EventSource: nothing an EventSource emits finds no consumer
             "Sensor", "EventSource"]
    rank = {kind: i for i, kind in enumerate(order)}
    return sorted(objects, key=lambda o: rank.get(o["kind"], len(order)))
