"""The emulator's RBAC authorizer: SubjectAccessReview and SelfSubjectAccessReview answered from the
Roles, ClusterRoles and their bindings in the emulator's store, worded as a kube-apiserver v1.34
answers (../shared/kube-recordings/rbac.json).

Rules as Kubernetes' RBAC authorizer applies them: a RoleBinding grants in its own namespace (its
roleRef a Role there, or a ClusterRole), a ClusterRoleBinding everywhere; a rule matches when its
apiGroups, resources (`resource/subresource`, `*`), verbs and resourceNames (empty: any) all match.
`system:masters` is allowed everything, with no reason text (the superuser short-circuit comes
before RBAC). Not emulated: nonResourceURLs, aggregated ClusterRoles, Node and Webhook authorizers.
"""
from __future__ import annotations

from typing import Callable

Objects = Callable[[str], list]   # kind -> every stored object of that kind

SA_PREFIX = "system:serviceaccount:"


def _subject_matches(subject: dict, user: str, groups: list[str], namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":   # in a RoleBinding, a ServiceAccount without namespace is the binding's
        return user == f"{SA_PREFIX}{subject.get('namespace') or namespace}:{name}"
    return False


def _describe_subject(subject: dict, namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("name")}/{subject.get("namespace") or namespace}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


def _rule_matches(rule: dict, attrs: dict) -> bool:
    def within(values, wanted):
        return "*" in (values or []) or wanted in (values or [])

    resource = attrs.get("resource", "")
    if attrs.get("subresource"):
        resource += "/" + attrs["subresource"]
    names = rule.get("resourceNames") or []
    return (within(rule.get("apiGroups"), attrs.get("group", ""))
            and within(rule.get("resources"), resource)
            and within(rule.get("verbs"), attrs.get("verb", ""))
            and (not names or attrs.get("name") in names))


def _role(objects: Objects, ref: dict, namespace: str) -> dict | None:
    kind = ref.get("kind")
    for obj in objects(kind):
        meta = obj.get("metadata") or {}
        if meta.get("name") == ref.get("name") and (kind == "ClusterRole"
                                                    or meta.get("namespace") == namespace):
            return obj
    return None


def authorize(objects: Objects, user: str, groups: list[str], attrs: dict) -> tuple[bool, str]:
    """(allowed, reason) for one request's attributes, as the RBAC authorizer decides it."""
    if "system:masters" in groups:
        return True, ""
    namespace = attrs.get("namespace") or ""
    bindings = [("ClusterRoleBinding", b) for b in objects("ClusterRoleBinding")]
    if namespace:
        bindings += [("RoleBinding", b) for b in objects("RoleBinding")
                     if (b.get("metadata") or {}).get("namespace") == namespace]
    for binding_kind, binding in bindings:
        meta = binding.get("metadata") or {}
        subject = next((s for s in binding.get("subjects") or []
                        if _subject_matches(s, user, groups, meta.get("namespace", ""))), None)
        if subject is None:
            continue
        ref = binding.get("roleRef") or {}
        role = _role(objects, ref, meta.get("namespace", ""))
        if role is None or not any(_rule_matches(r, attrs) for r in role.get("rules") or []):
            continue
        where = f'{meta.get("name")}/{meta["namespace"]}' if binding_kind == "RoleBinding" \
            else meta.get("name")
        return True, (f'RBAC: allowed by {binding_kind} "{where}" of {ref.get("kind")} '
                      f'"{ref.get("name")}" to {_describe_subject(subject, meta.get("namespace", ""))}')
    return False, ""


def review(objects: Objects, body: dict, *, self_review: bool, caller_groups: list[str]) -> tuple[int, dict]:
    """The answer to a POSTed (Self)SubjectAccessReview: (HTTP status, body)."""
    kind = "SelfSubjectAccessReview" if self_review else "SubjectAccessReview"
    spec = dict(body.get("spec") or {})
    attrs = spec.get("resourceAttributes") or {}
    if self_review:
        user, groups = "", caller_groups
    else:
        user, groups = spec.get("user") or "", list(spec.get("groups") or [])
        if not user and not groups:
            message = "at least one of user or group must be specified"
            return 422, {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": f'.authorization.k8s.io "" is invalid: spec.user: Invalid value: "": {message}',
                "reason": "Invalid",
                "details": {"group": "authorization.k8s.io", "causes": [
                    {"reason": "FieldValueInvalid", "message": f'Invalid value: "": {message}',
                     "field": "spec.user"}]},
                "code": 422}
    allowed, reason = authorize(objects, user, groups, attrs)
    status = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return 201, {"kind": kind, "apiVersion": "authorization.k8s.io/v1", "metadata": {},
                 "spec": spec, "status": status}
