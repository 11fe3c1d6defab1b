#!/usr/bin/env python3
"""An in-process Kubernetes API server emulator for tests.

It speaks real HTTP (JSON) so the real ``kubernetes`` Python client, ``kubectl``
style tools and plain ``urllib`` can talk to it.  It keeps every object in
memory and follows the documented API behaviour for the parts that this
project needs:

* discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/{g}``, ``/apis/{g}/{v}``,
  ``/version``),
* get / list (label and field selectors, ``limit``/``continue``) / watch /
  create (``generateName``) / replace / patch (JSON merge, strategic merge
  treated as merge, JSON patch, server-side apply) / delete / deletecollection,
  ``dryRun=All``, the ``/status`` subresource and ``pods/{name}/log``,
* CustomResourceDefinitions registering their kinds,
* metadata bookkeeping (uid, creationTimestamp, resourceVersion, generation,
  managedFields for appliers) and ``Status`` error bodies,
* small simulated controllers (workloads ready, service-account tokens,
  CRDs established, namespaces active) plus user hooks.

Usage in tests::

    with KubeEmulator() as emu:
        emu.write_kubeconfig(tmp_path / "kubeconfig")
        ...

As a standalone process::

    python tests/kube_emulator.py --port 0 [--kubeconfig PATH]

prints the URL on its first line and serves until SIGTERM/SIGINT.

Only the standard library and PyYAML are used.
"""
from __future__ import annotations

import argparse
import base64
import copy
import json
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

try:  # imported both as `kube_emulator` (tests/ on sys.path) and as `tests.kube_emulator`
    import kube_emulator_defaults as _defaults
    import kube_emulator_rbac
except ImportError:  # pragma: no cover
    from tests import kube_emulator_defaults as _defaults
    from tests import kube_emulator_rbac

__all__ = ["KubeEmulator", "ApiError", "ResourceType"]

GIT_VERSION = "v1.34.0"

STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

# Characters the API server uses for generateName suffixes (no vowels).
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_MISSING = object()

_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
    "application/apply-patch+yaml": "apply",
}

# Paths that server-side apply never treats as owned fields.
_SSA_IGNORED = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "resourceVersion"),
    ("metadata", "uid"),
    ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"),
    ("metadata", "generation"),
    ("metadata", "deletionTimestamp"),
}

_FAKE_CA = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBemulatorFakeCertificateAuthorityForTestsOnly0000000000000000\n"
    "-----END CERTIFICATE-----\n"
)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, message: str, reason: str | None = None, details: dict | None = None) -> dict:
    """A ``Status`` object as the API server returns it for failures."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or STATUS_REASONS.get(code, "Unknown"),
        "details": details or {},
        "code": code,
    } if reason is not False else {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
        "details": details or {}, "code": code}


class ApiError(Exception):
    """Raised inside the emulator; turned into a Status response."""

    def __init__(self, code, message, reason=None, name=None, kind=None, group=None, causes=None):
        super().__init__(message)
        self.code = code
        self.message = message
        # reason=False: no reason at all (the real server's 500s from server-side apply have none)
        self.reason = reason if reason is False else (reason or STATUS_REASONS.get(code, "Unknown"))
        self.details = {}
        if name:
            self.details["name"] = name
        if group:
            self.details["group"] = group
        if kind:
            self.details["kind"] = kind
        if causes:
            self.details["causes"] = causes

    def body(self) -> dict:
        return status_body(self.code, self.message, self.reason, self.details)


class _PageNotFound(ApiError):
    """An unknown group, or a CRD whose routes are not up yet: the mux's plain-text 404."""

    def __init__(self):
        super().__init__(404, "404 page not found")


def _options_invalid(options_kind, field, reason, detail, code=422):
    """A 422 about the request options (CreateOptions, ListOptions, ...), as the real server words it."""
    return ApiError(code, f'{options_kind}.meta.k8s.io "" is invalid: {field}: {detail}', kind=options_kind,
                    group="meta.k8s.io", causes=[{"reason": reason, "message": detail, "field": field}])


class ResourceType:
    """One served resource (group/version/plural)."""

    def __init__(self, group, version, kind, plural, namespaced=True, singular=None,
                 short_names=(), status_subresource=False, list_kind=None, categories=(),
                 custom=False, return_deleted=False):
        self.group = group
        self.version = version
        self.kind = kind
        self.plural = plural
        self.namespaced = namespaced
        self.singular = singular or kind.lower()
        self.short_names = list(short_names or [])
        self.status_subresource = status_subresource
        self.list_kind = list_kind or kind + "List"
        self.categories = list(categories or [])
        self.custom = custom
        self.return_deleted = return_deleted or custom

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def skey(self):
        """Storage key: all versions of a group/resource share one store."""
        return (self.group, self.plural)

    def describe(self) -> str:
        return self.plural + (f".{self.group}" if self.group else "")

    def __repr__(self):
        return f"ResourceType({self.api_version} {self.kind} {self.plural})"


_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

# group, version, kind, plural, namespaced, short names, status subresource, return deleted object
_BUILTIN_TYPES = [
    ("", "v1", "Namespace", "namespaces", False, ["ns"], True, True),
    ("", "v1", "ConfigMap", "configmaps", True, ["cm"], False, False),
    ("", "v1", "Secret", "secrets", True, [], False, False),
    ("", "v1", "ServiceAccount", "serviceaccounts", True, ["sa"], False, False),
    ("", "v1", "Service", "services", True, ["svc"], True, False),
    ("", "v1", "Pod", "pods", True, ["po"], True, True),
    ("", "v1", "Endpoints", "endpoints", True, ["ep"], False, False),
    ("", "v1", "Event", "events", True, ["ev"], False, False),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ["pvc"], True, False),
    ("", "v1", "PersistentVolume", "persistentvolumes", False, ["pv"], True, False),
    ("", "v1", "Node", "nodes", False, ["no"], True, False),
    ("apps", "v1", "Deployment", "deployments", True, ["deploy"], True, False),
    ("apps", "v1", "StatefulSet", "statefulsets", True, ["sts"], True, False),
    ("apps", "v1", "ReplicaSet", "replicasets", True, ["rs"], True, False),
    ("apps", "v1", "DaemonSet", "daemonsets", True, ["ds"], True, False),
    ("batch", "v1", "Job", "jobs", True, [], True, False),
    ("batch", "v1", "CronJob", "cronjobs", True, ["cj"], True, False),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", True, [], False, False),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True, [], False, False),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False, [], False, False),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False, [], False, False),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False,
     ["crd", "crds"], True, True),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", True, ["ing"], True, False),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ["netpol"], False, False),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ["pdb"], True, False),
    ("coordination.k8s.io", "v1", "Lease", "leases", True, [], False, False),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ["sc"], False, False),
]

_INITIAL_NAMESPACES = ("default", "kube-system", "kube-public")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


# --------------------------------------------------------------------------
# selectors
# --------------------------------------------------------------------------

_LABEL_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"


def _split_top_level(s: str):
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(selector: str):
    """Parse a label selector string into a predicate over a labels dict."""
    reqs = []
    for term in _split_top_level(selector or ""):
        m = re.fullmatch(rf"({_LABEL_KEY})\s+(in|notin)\s*\((.*)\)", term)
        if m:
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            reqs.append((m.group(2), m.group(1), values))
            continue
        m = re.fullmatch(rf"!\s*({_LABEL_KEY})", term)
        if m:
            reqs.append(("!exists", m.group(1), None))
            continue
        m = re.fullmatch(rf"({_LABEL_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)", term)
        if m:
            op = {"=": "eq", "==": "eq", "!=": "ne"}[m.group(2)]
            reqs.append((op, m.group(1), m.group(3)))
            continue
        m = re.fullmatch(rf"({_LABEL_KEY})", term)
        if m:
            reqs.append(("exists", m.group(1), None))
            continue
        raise ApiError(400, f"unable to parse requirement: invalid label selector: {term!r}")

    def match(labels):
        labels = labels or {}
        for op, key, val in reqs:
            present = key in labels
            cur = labels.get(key)
            if op == "eq" and not (present and cur == val):
                return False
            if op == "ne" and present and cur == val:
                return False
            if op == "exists" and not present:
                return False
            if op == "!exists" and present:
                return False
            if op == "in" and not (present and cur in val):
                return False
            if op == "notin" and present and cur in val:
                return False
        return True

    return match


def parse_field_selector(selector: str):
    """Parse a field selector (``metadata.name=x,status.phase!=Running``)."""
    reqs = []
    for term in _split_top_level(selector or ""):
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(==|!=|=)\s*(.*)", term)
        if not m:
            raise ApiError(400, f"invalid field selector: {term!r}")
        reqs.append((m.group(1).split("."), m.group(2) == "!=", m.group(3)))

    def match(obj):
        for path, negate, val in reqs:
            cur = obj
            for p in path:
                cur = cur.get(p) if isinstance(cur, dict) else None
            cur = "" if cur is None else (json.dumps(cur) if isinstance(cur, bool) else str(cur))
            if (cur == val) == negate:
                return False
        return True

    return match


# --------------------------------------------------------------------------
# patches
# --------------------------------------------------------------------------

def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(patch):
    """Drop strategic-merge-patch directives ($patch, $setElementOrder/...)."""
    if isinstance(patch, dict):
        return {k: _strip_directives(v) for k, v in patch.items() if not str(k).startswith("$")}
    if isinstance(patch, list):
        return [_strip_directives(v) for v in patch]
    return patch


def _pointer(path: str):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _list_index(container, token, allow_end):
    if token == "-" and allow_end:
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise ApiError(422, f"invalid array index {token!r}")
    idx = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if idx > limit:
        raise ApiError(422, f"array index {idx} out of bounds")
    return idx


def _jp_parent(doc, tokens):
    cur = doc
    for tok in tokens[:-1]:
        if isinstance(cur, dict):
            if tok not in cur:
                raise ApiError(422, f"jsonpatch: missing path element {tok!r}")
            cur = cur[tok]
        elif isinstance(cur, list):
            cur = cur[_list_index(cur, tok, False)]
        else:
            raise ApiError(422, f"jsonpatch: cannot traverse into {tok!r}")
    return cur


def _jp_get(doc, tokens):
    if not tokens:
        return doc
    parent = _jp_parent(doc, tokens)
    tok = tokens[-1]
    if isinstance(parent, dict):
        if tok not in parent:
            raise ApiError(422, f"jsonpatch: path element {tok!r} does not exist")
        return parent[tok]
    if isinstance(parent, list):
        return parent[_list_index(parent, tok, False)]
    raise ApiError(422, "jsonpatch: invalid path")


def _jp_add(doc, tokens, value):
    if not tokens:
        return value
    parent = _jp_parent(doc, tokens)
    tok = tokens[-1]
    if isinstance(parent, dict):
        parent[tok] = value
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, tok, True), value)
    else:
        raise ApiError(422, "jsonpatch: invalid add target")
    return doc


def _jp_remove(doc, tokens):
    if not tokens:
        raise ApiError(422, "jsonpatch: cannot remove the whole document")
    parent = _jp_parent(doc, tokens)
    tok = tokens[-1]
    if isinstance(parent, dict):
        if tok not in parent:
            raise ApiError(422, f"jsonpatch: unable to remove nonexistent key {tok!r}")
        return parent.pop(tok)
    if isinstance(parent, list):
        return parent.pop(_list_index(parent, tok, False))
    raise ApiError(422, "jsonpatch: invalid remove target")


def json_patch(doc, ops):
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise ApiError(400, "json patch body must be a JSON array of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, f"invalid json patch operation: {op!r}")
        kind = op["op"]
        tokens = _pointer(op["path"])
        if kind == "add":
            doc = _jp_add(doc, tokens, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _jp_remove(doc, tokens)
        elif kind == "replace":
            _jp_get(doc, tokens)
            if tokens:
                parent = _jp_parent(doc, tokens)
                if isinstance(parent, list):
                    parent[_list_index(parent, tokens[-1], False)] = copy.deepcopy(op.get("value"))
                else:
                    parent[tokens[-1]] = copy.deepcopy(op.get("value"))
            else:
                doc = copy.deepcopy(op.get("value"))
        elif kind == "move":
            value = _jp_remove(doc, _pointer(op.get("from", "")))
            doc = _jp_add(doc, tokens, value)
        elif kind == "copy":
            value = copy.deepcopy(_jp_get(doc, _pointer(op.get("from", ""))))
            doc = _jp_add(doc, tokens, value)
        elif kind == "test":
            if _jp_get(doc, tokens) != op.get("value"):
                raise ApiError(422, f"jsonpatch test operation does not apply: path {op['path']!r}")
        else:
            raise ApiError(400, f"unsupported json patch operation {kind!r}")
    return doc


# --------------------------------------------------------------------------
# server-side apply helpers
# --------------------------------------------------------------------------

def _leaf_paths(d, prefix=()):
    for key, value in d.items():
        path = prefix + (key,)
        if isinstance(value, dict) and value:
            yield from _leaf_paths(value, path)
        else:
            yield path, value


def _get_path(d, path):
    cur = d
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return _MISSING
        cur = cur[key]
    return cur


def _covered(cfg, path) -> bool:
    """True if ``cfg`` sets ``path`` (or replaces one of its ancestors)."""
    cur = cfg
    for key in path:
        if not isinstance(cur, dict):
            return True
        if key not in cur:
            return False
        cur = cur[key]
    return True


def _remove_path(d, path):
    chain = []
    cur = d
    for key in path[:-1]:
        if not isinstance(cur, dict) or not isinstance(cur.get(key), dict):
            return
        chain.append((cur, key))
        cur = cur[key]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)
    # prune maps that became empty because of the removal
    for parent, key in reversed(chain):
        if parent[key] == {}:
            del parent[key]
        else:
            break


def _deep_merge(base, cfg):
    for key, value in cfg.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _drop_nulls(value):
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def _fields_v1(cfg, prefix=()):
    out = {}
    for key, value in cfg.items():
        path = prefix + (key,)
        if path in _SSA_IGNORED:
            continue
        out["f:" + str(key)] = _fields_v1(value, path) if isinstance(value, dict) and value else {}
    return out


def _paths_tree(paths):
    tree = {}
    for path in sorted(paths, key=lambda p: [str(x) for x in p]):
        cur = tree
        for key in path[:-1]:
            cur = cur.setdefault(key, {})
            if not isinstance(cur, dict):
                break
        else:
            cur.setdefault(path[-1], {})
    return tree


def _strip_for_compare(obj):
    o = copy.deepcopy(obj)
    meta = o.get("metadata") or {}
    meta.pop("resourceVersion", None)
    meta.pop("generation", None)
    for entry in meta.get("managedFields") or []:
        if isinstance(entry, dict):
            entry.pop("time", None)
    return o


# -- protobuf request bodies (application/vnd.kubernetes.protobuf) --------------------------------------
# client-go's typed clientset sends protobuf when asked to; helm's release storage (Secrets
# sh.helm.release.v1.*) does. Decoded here for the messages that need it: Secret, ConfigMap, DeleteOptions.
_PB_TIME = {1: ("seconds", "int"), 2: ("nanos", "int")}
_PB_OWNER = {1: ("kind", "str"), 3: ("name", "str"), 4: ("uid", "str"), 5: ("apiVersion", "str"),
             6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
_PB_META = {1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"), 4: ("selfLink", "str"),
            5: ("uid", "str"), 6: ("resourceVersion", "str"), 7: ("generation", "int"),
            8: ("creationTimestamp", _PB_TIME), 9: ("deletionTimestamp", _PB_TIME),
            10: ("deletionGracePeriodSeconds", "int"), 11: ("labels", "map:str"), 12: ("annotations", "map:str"),
            13: ("ownerReferences", ("list", _PB_OWNER)), 14: ("finalizers", "list:str")}
_PB_MESSAGES = {
    ("v1", "Secret"): {1: ("metadata", _PB_META), 2: ("data", "map:bytes"), 3: ("type", "str"),
                       4: ("stringData", "map:str"), 5: ("immutable", "bool")},
    ("v1", "ConfigMap"): {1: ("metadata", _PB_META), 2: ("data", "map:str"), 3: ("binaryData", "map:bytes"),
                          4: ("immutable", "bool")},
    ("v1", "DeleteOptions"): {1: ("gracePeriodSeconds", "int"),
                              2: ("preconditions", {1: ("uid", "str"), 2: ("resourceVersion", "str")}),
                              3: ("orphanDependents", "bool"), 4: ("propagationPolicy", "str"),
                              5: ("dryRun", "list:str")},
}


def _pb_fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message: varints as int, length-delimited as bytes."""
    i = 0

    def varint():
        nonlocal i
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while i < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 2:
            size = varint()
            yield number, wire, buf[i:i + size]
            i += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            yield number, wire, buf[i:i + width]
            i += width
        else:
            raise ApiError(415, f"unsupported protobuf wire type {wire}")


def _pb_decode(buf: bytes, schema: dict) -> dict:
    out: dict = {}
    for number, _wire, value in _pb_fields(buf):
        if number not in schema:
            continue
        name, kind = schema[number]
        if kind == "str":
            out[name] = value.decode("utf-8")
        elif kind == "int":
            out[name] = value
        elif kind == "bool":
            out[name] = bool(value)
        elif kind == "list:str":
            out.setdefault(name, []).append(value.decode("utf-8"))
        elif isinstance(kind, str) and kind.startswith("map:"):
            entry = {n: v for n, _w, v in _pb_fields(value)}
            raw_value = entry.get(2, b"")
            out.setdefault(name, {})[entry.get(1, b"").decode("utf-8")] = (
                base64.b64encode(raw_value).decode() if kind == "map:bytes" else raw_value.decode("utf-8"))
        elif isinstance(kind, tuple):
            out.setdefault(name, []).append(_pb_decode(value, kind[1]))
        elif kind is _PB_TIME:
            t = _pb_decode(value, kind)
            if t.get("seconds"):
                out[name] = datetime.fromtimestamp(t["seconds"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            out[name] = _pb_decode(value, kind)
    return out


def _protobuf_to_json(raw: bytes) -> bytes:
    """The JSON form of a `k8s\\x00`-enveloped protobuf body (runtime.Unknown around the typed message)."""
    if not raw:
        return raw
    if not raw.startswith(b"k8s\x00"):
        raise ApiError(415, "protobuf body without the k8s envelope")
    unknown = {n: v for n, _w, v in _pb_fields(raw[4:])}
    type_meta = {n: v.decode("utf-8") for n, _w, v in _pb_fields(unknown.get(1, b""))}
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    schema = _PB_MESSAGES.get((api_version, kind))
    if schema is None:
        raise ApiError(415, f"the emulator cannot decode protobuf {api_version}/{kind}; send JSON")
    obj = _pb_decode(unknown.get(2, b""), schema)
    return json.dumps(dict({"apiVersion": api_version, "kind": kind}, **obj)).encode("utf-8")


def _parse_body(raw: bytes, allow_yaml=True):
    """Decode a request body: JSON, a JSON-encoded string of YAML/JSON, or YAML."""
    if not raw:
        return None
    text = raw.decode("utf-8")
    try:
        value = json.loads(text)
    except ValueError:
        if not allow_yaml:
            raise ApiError(400, "the request body is not valid JSON")
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ApiError(400, f"the request body is neither JSON nor YAML: {exc}") from None
    if isinstance(value, str) and allow_yaml:
        # the python client json.dumps() a pre-serialised string body
        try:
            return json.loads(value)
        except ValueError:
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise ApiError(400, f"the request body is neither JSON nor YAML: {exc}") from None
    return value


class _Rule:
    def __init__(self, method, path_contains, count, **extra):
        self.method = method.upper() if method else None
        self.path_contains = path_contains
        self.count = count
        self.__dict__.update(extra)

    def matches(self, method, path):
        if self.method and self.method != method:
            return False
        if self.path_contains and self.path_contains not in path:
            return False
        return True


class _Watch:
    """Marker returned by dispatch for a streaming watch response."""

    def __init__(self, events):
        self.events = events


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-emulator/1.0"
    disable_nagle_algorithm = True  # headers and body are separate writes

    def log_message(self, format, *args):  # noqa: A002 - silence stderr logging
        pass

    def setup(self):
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self):
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _go(self):
        self.server.emulator._serve(self, self.command)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _go


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args, **kwargs):
        self.connections = set()
        self.conn_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def close_connections(self):
        """Drop open keep-alive connections (a stopped server must not answer)."""
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --------------------------------------------------------------------------
# the emulator
# --------------------------------------------------------------------------

class KubeEmulator:
    """An in-memory Kubernetes API server speaking HTTP on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server = None
        self._thread = None
        # flags for the simulated controllers
        self.auto_ready = True            # Deployments/StatefulSets/ReplicaSets/DaemonSets/Pods ready
        self.auto_token = True            # service-account-token Secrets get data.token/ca.crt/namespace
        self.auto_crd_established = True  # CRDs get Established/NamesAccepted conditions
        self.auto_namespace_active = True  # Namespaces get status.phase Active
        self.auto_complete_jobs = True    # Jobs get a Complete condition
        self.auto_namespace_defaults = True  # new Namespaces get the `default` SA and kube-root-ca.crt
        self.max_watch_seconds = 1800.0
        # like a real control plane, controllers act a moment after the write that triggers them
        self.controller_delay_seconds = 0.02
        self.crd_establish_seconds = 0.2      # real: 0.2 s (minimal CRD) to ~4 s (Argo's 2.4 MB CRD)
        self.token_fill_seconds = 0.1         # real: ~0.13 s for a service-account-token Secret
        self.namespace_finalize_seconds = 0.5  # real: ~5.6 s from DELETE until the namespace is gone
        self.future_rv_wait_seconds = 3.0     # a too-new resourceVersion: 504 after this long
        # bearer tokens that authenticate (as an admin). With reject_unknown_tokens, other tokens get 401 as on
        # a real server (even for /version); off by default because stand-ins (minikube) write their own
        self.tokens = {"kube-emulator-token"}
        self.reject_unknown_tokens = False
        # client-go (helm, kubectl) sends no credentials over plain http (clientcmd merges the kubeconfig user
        # only for TLS), and the in-process stand-ins (tests/examples/argo_standin.py) call without a token:
        # so by default anonymous acts as admin; set False for a real server's 403 (test_kube_recordings does)
        self.anonymous_admin = True
        self._local = threading.local()   # per request: user agent, warnings
        self._updaters = {}               # (skey, ns, name) -> {(manager, subresource): set of field paths}
        self._tasks = []                  # (due monotonic time, seq, fn) for the simulated controllers
        self._task_seq = 0
        self._controller_thread = None
        self._established = set()         # (group, plural) of CRDs whose routes are served
        self._hooks = []                  # (kind-or-plural lowercase | "*", fn)
        self._types = {}                  # (group, version, plural) -> ResourceType
        self._store = {}                  # skey -> {(ns, name): obj}
        self._managers = {}               # (skey, ns, name) -> {manager: applied config}
        self._pod_logs = {}               # (ns, name) -> text
        self._rv = 1000
        self._events = []                 # (rv, type, skey, ns, obj)
        self._events_floor = 0             # a young cluster's watch cache still holds every event
        self._requests = []
        self._faults = []
        self._delays = []
        for group, version, kind, plural, namespaced, short, status_sub, ret in _BUILTIN_TYPES:
            self.register_kind(ResourceType(group, version, kind, plural, namespaced=namespaced,
                                            short_names=short, status_subresource=status_sub,
                                            return_deleted=ret))
        for ns in _INITIAL_NAMESPACES:
            self.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                            run_controllers=True)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "KubeEmulator":
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), _Handler)
        self._server.emulator = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"kube-emulator-{self.port}", daemon=True)
        self._thread.start()
        self._controller_thread = threading.Thread(target=self._run_tasks, name=f"kube-emulator-kcm-{self.port}",
                                                   daemon=True)
        self._controller_thread.start()
        return self

    def _schedule(self, delay, fn):
        """Run ``fn()`` (with the store lock held) after ``delay`` seconds on the controller thread."""
        with self._cond:
            self._task_seq += 1
            self._tasks.append((time.monotonic() + max(delay, 0.0), self._task_seq, fn))
            self._cond.notify_all()

    def _run_tasks(self):
        while not self._stopping.is_set():
            with self._cond:
                now = time.monotonic()
                due = sorted(t for t in self._tasks if t[0] <= now)
                if not due:
                    nxt = min((t[0] for t in self._tasks), default=now + 0.5)
                    self._cond.wait(min(max(nxt - now, 0.005), 0.5))
                    continue
                self._tasks = [t for t in self._tasks if t[0] > now]
                for _when, _seq, fn in due:
                    try:
                        fn()
                    except Exception:  # noqa: BLE001 - a controller bug must not kill the thread
                        traceback.print_exc()

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the simulated controllers have nothing left to do (tests that need a quiet store)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._tasks:
                    return
            time.sleep(0.01)

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._controller_thread is not None:
            self._controller_thread.join(timeout=5)
            self._controller_thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def write_kubeconfig(self, path, context: str = "minikube", namespace: str | None = None):
        """Write a kubeconfig whose current context points at this emulator."""
        ctx = {"cluster": context, "user": context}
        if namespace:
            ctx["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "kube-emulator-token"}}],
            "contexts": [{"name": context, "context": ctx}],
            "current-context": context,
        }
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)
        return path

    # ------------------------------------------------------------ request log / faults
    @property
    def requests(self) -> list:
        with self._lock:
            return list(self._requests)

    def write_requests(self) -> list:
        return [r for r in self.requests if r["method"] in ("POST", "PUT", "PATCH", "DELETE")]

    def clear_log(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(self, status: int = 500, method: str | None = None, path_contains: str | None = None,
                  count: int = 1, message: str | None = None, reason: str | None = None) -> None:
        """Answer the next ``count`` matching requests with a Status of code ``status``."""
        with self._lock:
            self._faults.append(_Rule(method, path_contains, count, status=status,
                                      message=message, reason=reason))

    def delay_next(self, seconds: float, method: str | None = None, path_contains: str | None = None,
                   count: int = 1) -> None:
        """Sleep ``seconds`` before answering the next ``count`` matching requests."""
        with self._lock:
            self._delays.append(_Rule(method, path_contains, count, seconds=seconds))

    def _take_rule(self, rules, method, path):
        with self._lock:
            for rule in rules:
                if rule.count > 0 and rule.matches(method, path):
                    rule.count -= 1
                    if rule.count <= 0:
                        rules.remove(rule)
                    return rule
        return None

    # ------------------------------------------------------------ hooks
    def on_write(self, kind: str, fn) -> None:
        """Register ``fn(obj) -> obj | None`` run on every create/update/patch/apply
        of ``kind`` (kind name or plural, case-insensitive; ``"*"`` for all).
        Returning None keeps the (possibly in-place modified) object.  Hooks run
        with the store lock held: do not call the emulator over HTTP from them."""
        with self._lock:
            self._hooks.append((kind.lower(), fn))

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        with self._lock:
            self._pod_logs[(namespace, name)] = text

    # ------------------------------------------------------------ registry
    def register_kind(self, rt: ResourceType) -> None:
        with self._lock:
            self._types[(rt.group, rt.version, rt.plural)] = rt
            self._store.setdefault(rt.skey, {})

    def _unregister_crd_types(self, group, plural):
        for key in [k for k, t in self._types.items() if t.custom and t.group == group and t.plural == plural]:
            del self._types[key]

    def resolve(self, kind_or_plural: str, api_version: str | None = None) -> ResourceType:
        """Find a served type by kind, plural, singular or short name
        (``plural.group`` / ``Kind.group`` also accepted)."""
        name = kind_or_plural
        group = None
        if api_version:
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        elif "." in name:
            name, group = name.split(".", 1)
        low = name.lower()
        with self._lock:
            candidates = []
            for rt in self._types.values():
                if group is not None and rt.group != group:
                    continue
                if api_version and rt.api_version != api_version:
                    continue
                if low in (rt.kind.lower(), rt.plural, rt.singular) or low in rt.short_names:
                    candidates.append(rt)
            if not candidates:
                raise KeyError(f"unknown kind {kind_or_plural!r}")
            # prefer builtins / core group on ambiguity
            candidates.sort(key=lambda t: (t.custom, t.group != "", t.group))
            return candidates[0]

    # ------------------------------------------------------------ test helpers
    def get(self, kind_or_plural: str, name: str, namespace: str | None = None):
        """The stored object (a copy) or None.  Namespaced kinds default to 'default'."""
        rt = self.resolve(kind_or_plural)
        ns = (namespace or "default") if rt.namespaced else ""
        with self._lock:
            obj = self._store.get(rt.skey, {}).get((ns, name))
            return self._present(rt, obj) if obj is not None else None

    def objects(self, kind: str | None = None, namespace: str | None = None) -> list:
        """Copies of stored objects, optionally of one kind / namespace."""
        with self._lock:
            if kind is not None:
                rt = self.resolve(kind)
                pairs = [(rt, o) for o in self._store.get(rt.skey, {}).values()]
            else:
                pairs = []
                seen = set()
                for rt in self._types.values():
                    if rt.skey in seen:
                        continue
                    seen.add(rt.skey)
                    pairs.extend((rt, o) for o in self._store.get(rt.skey, {}).values())
            out = []
            for rt, obj in pairs:
                if namespace is not None and obj["metadata"].get("namespace") != namespace:
                    continue
                out.append(self._present(rt, obj) if rt.custom else copy.deepcopy(obj))
            out.sort(key=lambda o: (o.get("kind", ""), o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            return out

    def put_object(self, obj: dict, run_controllers: bool = False) -> dict:
        """Seed an object directly (no request log entry, no validation of the
        namespace).  Metadata bookkeeping is filled in; CRDs register their kinds."""
        obj = copy.deepcopy(obj)
        rt = self.resolve(obj["kind"], obj.get("apiVersion"))
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            raise ValueError("put_object needs metadata.name")
        ns = (meta.get("namespace") or "default") if rt.namespaced else ""
        with self._lock:
            old = self._store[rt.skey].get((ns, meta["name"]))
            result, _ = self._commit(rt, ns, meta["name"], old, obj, dry=False, main=run_controllers,
                                     keep_body_status=True, sync_controllers=True)
            return result

    def set_status(self, kind: str, name: str, status: dict, namespace: str | None = None) -> dict:
        """Replace an object's status directly (like PUT .../status)."""
        rt = self.resolve(kind)
        ns = (namespace or "default") if rt.namespaced else ""
        with self._lock:
            old = self._store[rt.skey].get((ns, name))
            if old is None:
                raise KeyError(f"{rt.describe()} {ns}/{name} not found")
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(status)
            return self._commit(rt, ns, name, old, new, dry=False, main=False)[0]

    def delete_object(self, kind: str, name: str, namespace: str | None = None) -> bool:
        rt = self.resolve(kind)
        ns = (namespace or "default") if rt.namespaced else ""
        with self._lock:
            if (ns, name) not in self._store[rt.skey]:
                return False
            self._remove(rt, ns, name)
            return True

    # ------------------------------------------------------------ HTTP plumbing
    def _serve(self, handler, method):
        split = urlsplit(handler.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw = handler.rfile.read(length) if length > 0 else b""
        ctype = handler.headers.get("Content-Type")
        ctype_base = ctype.split(";")[0].strip().lower() if ctype else None

        delay = self._take_rule(self._delays, method, path)
        if delay is not None:
            self._stopping.wait(delay.seconds)
        try:
            logged_body = _parse_body(raw)
        except Exception:  # noqa: BLE001 - logging only
            logged_body = raw.decode("utf-8", "replace")
        entry = {"method": method, "path": path, "query": query, "content_type": ctype,
                 "status": None, "body": logged_body,
                 # who asked: the tool's kubernetes client, or a stand-in / real helm
                 "user_agent": handler.headers.get("User-Agent") or ""}

        fault = self._take_rule(self._faults, method, path)
        self._local.user_agent = handler.headers.get("User-Agent") or ""
        self._local.warnings = []
        try:
            self._authenticate(handler.headers.get("Authorization"), path)
            if fault is not None:
                raise ApiError(fault.status, fault.message or f"injected failure ({fault.status})",
                               reason=fault.reason)
            if ctype_base == "application/vnd.kubernetes.protobuf":
                raw, ctype_base = _protobuf_to_json(raw), "application/json"
                entry["body"] = _parse_body(raw)
            result = self._dispatch(method, path, query, ctype_base, raw)
        except _PageNotFound:
            result = (404, "404 page not found\n", "text/plain; charset=utf-8")
        except ApiError as exc:
            result = (exc.code, exc.body(), "application/json")
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            result = (500, status_body(500, f"kube-emulator internal error: {exc!r}"), "application/json")

        if isinstance(result, _Watch):
            entry["status"] = 200
            with self._lock:
                self._requests.append(entry)
            self._send_watch(handler, result)
            return
        code, payload, content_type = result
        entry["status"] = code
        with self._lock:
            self._requests.append(entry)
        if isinstance(payload, (dict, list)):
            data = json.dumps(payload).encode("utf-8")
        else:
            data = str(payload).encode("utf-8")
        if code == 204:
            data = b""
        try:
            handler.send_response(code)
            if content_type and code != 204:
                handler.send_header("Content-Type", content_type)
            if self._local.warnings:
                handler.send_header("Warning", ", ".join(
                    '299 - "%s"' % w.replace("\\", "\\\\").replace('"', '\\"') for w in self._local.warnings))
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if method != "HEAD":
                handler.wfile.write(data)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            handler.close_connection = True

    def _authenticate(self, authorization, path):
        """401 for a bad token (even on /version); anonymous users see only version and health."""
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if self.reject_unknown_tokens and (scheme.lower() != "bearer" or token.strip() not in self.tokens):
                raise ApiError(401, "Unauthorized")
            return
        parts = [p for p in path.split("/") if p]
        if parts[:1] in (["version"], ["healthz"], ["readyz"], ["livez"]) or self.anonymous_admin:
            return
        raise ApiError(403, f'forbidden: User "system:anonymous" cannot get path "{path}"')

    def _warn(self, text):
        warnings = getattr(self._local, "warnings", None)
        if warnings is not None and text not in warnings:
            warnings.append(text)

    def _manager_name(self, query):
        """fieldManager, else the User-Agent up to its first '/', as the real server derives it."""
        name = query.get("fieldManager") if query else None
        if name:
            return name
        agent = getattr(self._local, "user_agent", "") or ""
        return agent.split("/", 1)[0] or "unknown"

    def _send_watch(self, handler, watch):
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            handler.wfile.flush()
            for event in watch.events:
                data = (json.dumps(event) + "\n").encode("utf-8")
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                handler.wfile.flush()
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        handler.close_connection = True

    # ------------------------------------------------------------ routing
    def _dispatch(self, method, path, query, ctype, raw):
        parts = [unquote(p) for p in path.split("/") if p]
        if parts in (["version"], ["version", ""]):
            return 200, self._version_info(), "application/json"
        if parts and parts[0] in ("healthz", "readyz", "livez"):
            return 200, "ok", "text/plain"
        if not parts:
            return 200, {"paths": ["/api", "/api/v1", "/apis", "/openapi/v3", "/version", "/healthz"]}, "application/json"
        if parts[0] == "openapi" and parts[1:2] == ["v3"]:
            return self._only_get(method, self._openapi_v3(parts[2:]))
        if parts[0] == "api":
            if len(parts) == 1:
                return self._only_get(method, self._api_versions())
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return self._only_get(method, self._api_group_list())
            if len(parts) == 2:
                grp = self._api_group(parts[1])
                if grp is None:
                    raise _PageNotFound()
                return self._only_get(method, grp)
            group, version, rest = parts[1], parts[2], parts[3:]
            if group == "authorization.k8s.io" and version == "v1" and rest in (
                    ["subjectaccessreviews"], ["selfsubjectaccessreviews"]):
                return self._access_review(method, rest[0], raw)
            if self._api_group(group) is None:
                raise _PageNotFound()
        else:
            raise _PageNotFound()

        watch_path = False
        if rest[:1] == ["watch"]:
            # the deprecated /api/v1/watch/... form: a watch, on a collection or (by name) one object
            watch_path, rest = True, rest[1:]
            if not rest:
                raise ApiError(404, "the server could not find the requested resource")

        if not rest:
            lst = self._resource_list(group, version)
            if lst is None:
                raise ApiError(404, "the server could not find the requested resource")
            return self._only_get(method, lst)

        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            ns, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        with self._lock:
            rt = self._types.get((group, version, plural))
            if rt is not None and rt.custom and rt.skey not in self._established:
                # a CRD's routes are served only once it is Established
                if not any(t.custom and t.group == group and t.skey in self._established
                           for t in self._types.values()):
                    raise _PageNotFound()
                rt = None
        if rt is None or (ns is not None and not rt.namespaced):
            raise ApiError(404, "the server could not find the requested resource")
        dry = query.get("dryRun") == "All"
        if query.get("dryRun") not in (None, "All"):
            options = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions",
                       "DELETE": "DeleteOptions"}.get(method, "ListOptions")
            raise _options_invalid(options, "dryRun", "FieldValueNotSupported",
                                   f'Unsupported value: ["{query.get("dryRun")}"]: supported values: "All"')
        if query.get("fieldValidation") not in (None, "", "Ignore", "Strict", "Warn"):
            options = {"POST": "CreateOptions", "PUT": "UpdateOptions"}.get(method, "PatchOptions")
            raise _options_invalid(options, "fieldValidation", "FieldValueNotSupported",
                                   f'Unsupported value: "{query["fieldValidation"]}": supported values: "", '
                                   f'"Ignore", "Strict", "Warn"')
        if watch_path:
            if method != "GET" or sub is not None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            if name is not None:
                query = dict(query, fieldSelector=f"metadata.name={name}")
            return _Watch(self._watch_events(rt, ns, query))

        if name is None:
            if method == "GET":
                if str(query.get("watch", "")).lower() in ("true", "1"):
                    return _Watch(self._watch_events(rt, ns, query))
                return 200, self._list(rt, ns, query), "application/json"
            if method == "POST":
                if rt.namespaced and ns is None:
                    raise ApiError(405, f"the server does not allow this method on the requested resource")
                return self._create(rt, ns or "", _parse_body(raw, allow_yaml=True), query, dry)
            if method == "DELETE":
                return 200, self._delete_collection(rt, ns, query, dry), "application/json"
            raise ApiError(405, "the server does not allow this method on the requested resource")

        if rt.namespaced and ns is None:
            raise ApiError(404, "the server could not find the requested resource")
        ns = ns or ""
        if sub is None:
            if method == "GET":
                self._check_list_options(query, single=True)
                self._wait_for_rv(query.get("resourceVersion"))
                return 200, self._read(rt, ns, name), "application/json"
            if method == "PUT":
                return self._replace(rt, ns, name, _parse_body(raw), dry, main=True)
            if method == "PATCH":
                return self._patch(rt, ns, name, ctype, raw, query, dry, main=True)
            if method == "DELETE":
                return self._delete(rt, ns, name, _parse_body(raw), dry, query)
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if sub == "status":
            if method == "GET":
                return 200, self._read(rt, ns, name), "application/json"
            if method == "PUT":
                return self._replace(rt, ns, name, _parse_body(raw), dry, main=False)
            if method == "PATCH":
                return self._patch(rt, ns, name, ctype, raw, query, dry, main=False)
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if sub == "log" and rt.skey == ("", "pods") and method == "GET":
            text = self._pod_log(ns, name, query)
            if text is None:  # no node: nothing ran, so nothing logged
                return 204, "", None
            return 200, text, "text/plain"
        raise ApiError(404, "the server could not find the requested resource")

    def _access_review(self, method, plural, raw):
        """SubjectAccessReview / SelfSubjectAccessReview: create-only, answered by the RBAC rules in the
        store (tests/kube_emulator_rbac.py). Every emulator token is an admin (system:masters)."""
        if method != "POST":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        code, body = kube_emulator_rbac.review(
            lambda kind: self.objects(kind), _parse_body(raw), self_review=plural.startswith("self"),
            caller_groups=["system:masters", "system:authenticated"])
        if code == 201:   # the real server records who asked, as for any create
            body["metadata"]["managedFields"] = [{
                "manager": self._manager_name({}), "operation": "Update",
                "apiVersion": "authorization.k8s.io/v1", "time": _now(), "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": _fields_v1(body["spec"])}}]
        return code, body, "application/json"

    @staticmethod
    def _only_get(method, payload):
        if method not in ("GET", "HEAD"):
            raise ApiError(405, "the server does not allow this method on the requested resource")
        return 200, payload, "application/json"

    # ------------------------------------------------------------ discovery
    def _version_info(self):
        major, minor = GIT_VERSION.lstrip("v").split(".")[:2]
        return {
            "major": major, "minor": minor, "emulationMajor": major, "emulationMinor": minor,
            "gitVersion": GIT_VERSION, "gitCommit": "0" * 40, "gitTreeState": "clean",
            "buildDate": "2025-08-27T00:00:00Z", "goVersion": "go1.24.6", "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _cidrs(self):
        return [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]

    def _api_versions(self):
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": self._cidrs()}

    def _groups(self):
        """{group: [versions in preference order]} for non-core groups."""
        with self._lock:
            groups = {}
            for rt in self._types.values():
                if rt.group == "":
                    continue
                versions = groups.setdefault(rt.group, [])
                if rt.version not in versions:
                    versions.append(rt.version)
            return groups

    def _api_group(self, group):
        versions = self._groups().get(group)
        if not versions:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs,
                "preferredVersion": gvs[0]}

    def _api_group_list(self):
        groups = [self._api_group(g) for g in self._groups()]
        for g in groups:
            g.pop("kind")
            g.pop("apiVersion")
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group, version):
        with self._lock:
            types = [t for t in self._types.values() if t.group == group and t.version == version]
        if not types:
            return None
        resources = []
        for rt in sorted(types, key=lambda t: t.plural):
            entry = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                     "kind": rt.kind, "verbs": list(_VERBS)}
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            resources.append({"name": rt.plural + "/status", "singularName": "", "namespaced": rt.namespaced,
                              "kind": rt.kind, "verbs": ["get", "patch", "update"]})
            if rt.skey == ("", "pods"):
                resources.append({"name": "pods/log", "singularName": "", "namespaced": True,
                                  "kind": "Pod", "verbs": ["get"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    def _openapi_v3(self, gv_parts):
        """OpenAPI v3 as client-go reads it: the root lists one document per group-version; a document has
        a path per resource whose PATCH operation names its GVK and takes `fieldValidation` (so kubectl's and
        helm's validation defers to the server, as with a real v1.34 server). Schemas are left open."""
        with self._lock:
            types = sorted(self._types.values(), key=lambda t: (t.group, t.version, t.plural))
        by_gv = {}
        for rt in types:
            by_gv.setdefault(f"api/{rt.version}" if rt.group == "" else f"apis/{rt.group}/{rt.version}", []).append(rt)
        if not gv_parts:
            paths = {}
            for gv, rts in by_gv.items():
                digest = uuid.uuid5(uuid.NAMESPACE_URL, gv + ",".join(t.plural for t in rts)).hex.upper()
                paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
            return {"paths": paths}
        rts = by_gv.get("/".join(gv_parts))
        if rts is None:
            raise ApiError(404, "the server could not find the requested resource")
        paths, schemas = {}, {}
        for rt in rts:
            gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
            ref = f"{rt.group or 'core'}.{rt.version}.{rt.kind}"
            schemas[ref] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                            "x-kubernetes-group-version-kind": [gvk]}
            prefix = f"/{'/'.join(gv_parts)}" + ("/namespaces/{namespace}" if rt.namespaced else "")
            params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                      for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
            body = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
            op = {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "patch", "parameters": params,
                  "requestBody": body, "responses": {"200": body}}
            paths[f"{prefix}/{rt.plural}/{{name}}"] = {"patch": op}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": GIT_VERSION}, "paths": paths,
                "components": {"schemas": schemas}}

    # ------------------------------------------------------------ read paths
    def _present(self, rt, obj):
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def _not_found(self, rt, name):
        return ApiError(404, f'{rt.describe()} "{name}" not found', name=name, kind=rt.plural,
                        group=rt.group or None)

    def _read(self, rt, ns, name):
        with self._lock:
            obj = self._store[rt.skey].get((ns, name))
            if obj is None:
                raise self._not_found(rt, name)
            return self._present(rt, obj)

    _FIELD_SELECTABLE = {
        ("", "pods"): {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                       "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"},
        ("", "events"): {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                         "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                         "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
        ("", "secrets"): {"type"},
        ("", "namespaces"): {"status.phase"},
        ("", "nodes"): {"spec.unschedulable"},
        ("", "persistentvolumeclaims"): set(),
        ("apps", "replicasets"): {"status.replicas"},
        ("batch", "jobs"): {"status.successful"},
    }

    def _field_matcher(self, rt, selector):
        allowed = {"metadata.name", "metadata.namespace"} | self._FIELD_SELECTABLE.get(rt.skey, set())
        for term in _split_top_level(selector or ""):
            field = re.split(r"!=|==|=", term, 1)[0].strip()
            if field not in allowed:
                known = ", ".join(f'"{f}"' for f in sorted(allowed, key=lambda f: (f != "metadata.name", f)))
                raise ApiError(400, f'"{field}" is not a known field selector: only {known}')
        return parse_field_selector(selector or "")

    def _matching(self, rt, ns, query):
        label_match = parse_label_selector(query.get("labelSelector", ""))
        field_match = self._field_matcher(rt, query.get("fieldSelector", ""))
        items = []
        for (ons, _), obj in sorted(self._store.get(rt.skey, {}).items()):
            if ns is not None and ons != ns:
                continue
            if not label_match(obj["metadata"].get("labels")):
                continue
            if not field_match(obj):
                continue
            items.append(obj)
        return items

    def _check_list_options(self, query, single=False, watch=False):
        rv = query.get("resourceVersion")
        if rv not in (None, "") and not re.fullmatch(r"[0-9]+", rv):
            raise ApiError(400, f'invalid resource version: resourceVersion: Invalid value: "{rv}": '
                                f'strconv.ParseUint: parsing "{rv}": invalid syntax')
        if single:
            return
        match = query.get("resourceVersionMatch")
        if match and not rv and not (watch and str(query.get("sendInitialEvents", "")).lower() == "true"):
            raise _options_invalid("ListOptions", "resourceVersionMatch", "FieldValueForbidden",
                                   "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is "
                                   "provided")
        if match not in (None, "", "Exact", "NotOlderThan"):
            raise _options_invalid("ListOptions", "resourceVersionMatch", "FieldValueNotSupported",
                                   f'Unsupported value: "{match}": supported values: "Exact", "NotOlderThan"')
        if watch and str(query.get("sendInitialEvents", "")).lower() == "true" and match != "NotOlderThan":
            raise _options_invalid("ListOptions", "resourceVersionMatch", "FieldValueForbidden",
                                   "Forbidden: sendInitialEvents requires setting resourceVersionMatch to "
                                   "NotOlderThan")

    def _wait_for_rv(self, rv):
        """A resourceVersion newer than the store: the real server waits ~3 s, then 504."""
        if not rv or not rv.isdigit() or int(rv) <= self._rv:
            return
        deadline = time.monotonic() + self.future_rv_wait_seconds
        with self._cond:
            while int(rv) > self._rv and time.monotonic() < deadline and not self._stopping.is_set():
                self._cond.wait(min(0.05, max(deadline - time.monotonic(), 0.001)))
            if int(rv) <= self._rv:
                return
            current = self._rv
        raise ApiError(504, f"Timeout: Too large resource version: {rv}, current: {current}", reason="Timeout",
                       causes=[{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}])

    def _list_item(self, rt, obj):
        """A LIST item: built-in lists leave kind/apiVersion off their items, custom-resource lists keep them."""
        if rt.custom:
            return self._present(rt, obj)
        out = copy.deepcopy(obj)
        out.pop("kind", None)
        out.pop("apiVersion", None)
        return out

    def _list(self, rt, ns, query):
        self._check_list_options(query)
        self._wait_for_rv(query.get("resourceVersion"))
        with self._lock:
            scope = [o for (ons, _), o in sorted(self._store.get(rt.skey, {}).items()) if ns is None or ons == ns]
            matching = self._matching(rt, ns, query)
            rv = str(self._rv)
        meta = {"resourceVersion": rv}
        token = query.get("continue")
        if token:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(token.encode()).decode()))
            except Exception:  # noqa: BLE001
                raise ApiError(400, "invalid continue token: continue key is not valid") from None
            key = lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])  # noqa: E731
            scope = [o for o in scope if key(o) > after]
            matching = [o for o in matching if key(o) > after]
        items = matching
        limit = int(query.get("limit") or 0)
        if limit > 0 and len(matching) >= limit and len(scope) > limit:
            # like etcd paging: a page ends after `limit` matches, and a continue token is given while
            # unread objects remain (matching or not), so the last page may come back empty
            items = matching[:limit]
            last = items[-1]["metadata"]
            rest = [o for o in scope if (o["metadata"].get("namespace", ""), o["metadata"]["name"])
                    > (last.get("namespace", ""), last["name"])]
            if rest:
                meta["continue"] = base64.urlsafe_b64encode(
                    json.dumps([last.get("namespace", ""), last["name"]]).encode()).decode()
                if not query.get("labelSelector") and not query.get("fieldSelector"):
                    meta["remainingItemCount"] = len(rest)
        if rt.custom:
            meta.setdefault("continue", "")
        return {"apiVersion": rt.api_version, "items": [self._list_item(rt, o) for o in items],
                "kind": rt.list_kind, "metadata": meta}

    def _watch_events(self, rt, ns, query):
        self._check_list_options(query, watch=True)
        label_match = parse_label_selector(query.get("labelSelector", ""))
        field_match = self._field_matcher(rt, query.get("fieldSelector", ""))
        timeout = float(query.get("timeoutSeconds") or self.max_watch_seconds)
        deadline = time.monotonic() + min(timeout, self.max_watch_seconds)
        since = query.get("resourceVersion")
        initial = []
        # watch-list (client-go >= 1.32 reflectors, helm 4's kstatus): the current state as ADDED events,
        # then a BOOKMARK annotated k8s.io/initial-events-end
        send_initial = str(query.get("sendInitialEvents", "")).lower() == "true"
        with self._lock:
            if not since or since == "0" or send_initial:
                initial = [self._present(rt, o) for o in self._matching(rt, ns, query)]
                cursor = self._rv
            else:
                try:
                    cursor = int(since)
                except ValueError:
                    raise ApiError(400, f"invalid resourceVersion {since!r}") from None
                if cursor < self._events_floor:
                    initial = None

        def gen():
            nonlocal cursor
            if initial is None:
                yield {"type": "ERROR", "object": status_body(
                    410, f"too old resource version: {since} ({self._events_floor})", "Expired")}
                return
            for obj in initial:
                yield {"type": "ADDED", "object": obj}
            if send_initial:
                yield {"type": "BOOKMARK", "object": {
                    "kind": rt.kind, "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(cursor),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}}
            while not self._stopping.is_set():
                with self._cond:
                    fresh = [e for e in self._events if e[0] > cursor]
                    if not fresh:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return
                        self._cond.wait(min(remaining, 0.5))
                        continue
                    cursor = fresh[-1][0]
                for _rv, etype, skey, ens, (obj, prev) in fresh:
                    if skey != rt.skey or (ns is not None and ens != ns):
                        continue
                    now_in = label_match(obj["metadata"].get("labels")) and field_match(obj)
                    was_in = prev is not None and label_match(prev["metadata"].get("labels")) and field_match(prev)
                    if etype == "MODIFIED" and prev is not None and now_in != was_in:
                        if now_in:
                            etype = "ADDED"
                        else:  # it left the selector: DELETED, showing its old state at the new RV
                            gone = copy.deepcopy(prev)
                            gone["metadata"]["resourceVersion"] = obj["metadata"].get("resourceVersion")
                            yield {"type": "DELETED", "object": self._present(rt, gone)}
                            continue
                    if not now_in:
                        continue
                    yield {"type": etype, "object": self._present(rt, obj)}

        return gen()

    def _pod_log(self, ns, name, query):
        with self._lock:
            pod = self._store[("", "pods")].get((ns, name))
            if pod is None:
                raise ApiError(404, f'pods "{name}" not found', name=name, kind="pods")
            containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []
                          if isinstance(c, dict)]
            container = query.get("container")
            if container and containers and container not in containers:  # (seeded pods may have no spec)
                raise ApiError(400, f"container {container} is not valid for pod {name}")
            if (pod.get("status") or {}).get("phase") not in ("Running", "Succeeded", "Failed") \
                    and (ns, name) not in self._pod_logs:
                return None
            text = self._pod_logs.get((ns, name), "")
        tail = query.get("tailLines")
        if tail:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail):]) if int(tail) > 0 else ""
        return text

    # ------------------------------------------------------------ write paths
    def _check_body(self, rt, body, ns, name=None):
        if not isinstance(body, dict):
            raise ApiError(400, f"the object provided is unrecognized (must be of type {rt.kind}): couldn't get "
                                f"version/kind; json parse error")
        if body.get("kind") and body["kind"] != rt.kind:
            raise ApiError(400, f"the kind in the body ({body['kind']}) does not match the resource "
                                f"({rt.kind})")
        api_version = body.get("apiVersion")
        body_group = api_version.rsplit("/", 1)[0] if api_version and "/" in api_version else ""
        if api_version and body_group != rt.group:
            raise ApiError(400, f"the API version in the data ({api_version}) does not match the "
                                f"expected API version ({rt.api_version})")
        meta = body.get("metadata")
        if meta is None:
            meta = body["metadata"] = {}
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(400, "the namespace of the provided object does not match the namespace "
                                    "sent on the request")
        if name is not None and meta.get("name") and meta["name"] != name:
            raise ApiError(400, f"the name of the object ({meta['name']}) does not match the name on "
                                f"the URL ({name})")
        return meta

    def _require_namespace(self, rt, ns, name=None):
        if not rt.namespaced:
            return
        namespace = self._store[("", "namespaces")].get(("", ns))
        if namespace is None:
            raise ApiError(404, f'namespaces "{ns}" not found', name=ns, kind="namespaces")
        if namespace["metadata"].get("deletionTimestamp"):
            raise ApiError(403, f'{rt.describe()} "{name}" is forbidden: unable to create new content in '
                                f'namespace {ns} because it is being terminated', name=name, kind=rt.plural,
                           group=rt.group or None,
                           causes=[{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                    "message": f"namespace {ns} is being terminated"}])

    def _create(self, rt, ns, body, query, dry):
        meta = self._check_body(rt, body, ns)
        with self._lock:
            if not meta.get("name"):
                prefix = meta.get("generateName")
                if not prefix:
                    raise ApiError(422, f"{rt.kind} \"\" is invalid: metadata.name: Required value: name "
                                        f"or generateName is required", kind=rt.kind,
                                   causes=[{"reason": "FieldValueRequired", "field": "metadata.name",
                                            "message": "Required value: name or generateName is required"}])
                while True:
                    candidate = prefix + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
                    if (ns, candidate) not in self._store[rt.skey]:
                        break
                meta["name"] = candidate
            name = meta["name"]
            self._require_namespace(rt, ns, name)
            if (ns, name) in self._store[rt.skey]:
                raise ApiError(409, f'{rt.describe()} "{name}" already exists', reason="AlreadyExists",
                               name=name, kind=rt.plural, group=rt.group or None)
            body = self._decode_typed(rt, body, query)
            self._validate(rt, body)
            obj, _ = self._commit(rt, ns, name, None, body, dry=dry, main=True,
                                  field_manager=self._manager_name(query))
            return 201, obj, "application/json"

    def _precondition(self, rt, old, name, rv, uid=None):
        if rv and not str(rv).isdigit():
            raise ApiError(500, f'strconv.ParseUint: parsing "{rv}": invalid syntax', reason=False)
        if uid and uid != old["metadata"].get("uid"):
            raise ApiError(409, f'Operation cannot be fulfilled on {rt.describe()} "{name}": StorageError: invalid '
                                f'object, Code: 4, Key: /registry/{rt.describe()}/{old["metadata"].get("namespace", "")}'
                                f'/{name}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in '
                                f'precondition: {uid}, UID in object meta: {old["metadata"].get("uid")}',
                           reason="Conflict", name=name, kind=rt.plural, group=rt.group or None)
        if rv and rv != old["metadata"].get("resourceVersion"):
            raise ApiError(409, f'Operation cannot be fulfilled on {rt.describe()} "{name}": the object '
                                f'has been modified; please apply your changes to the latest version '
                                f'and try again', reason="Conflict", name=name, kind=rt.plural,
                           group=rt.group or None)

    def _replace(self, rt, ns, name, body, dry, main):
        meta = self._check_body(rt, body, ns, name)
        with self._lock:
            old = self._store[rt.skey].get((ns, name))
            if old is None:
                raise self._not_found(rt, name)
            self._precondition(rt, old, name, meta.get("resourceVersion"), meta.get("uid"))
            if main:
                new = self._decode_typed(rt, body, {})
                self._validate(rt, new, old)
            else:
                new = copy.deepcopy(old)
                if "status" in body:
                    new["status"] = body["status"]
                else:
                    new.pop("status", None)
            obj, _ = self._commit(rt, ns, name, old, new, dry=dry, main=main,
                                  field_manager=self._manager_name({}))
            return 200, obj, "application/json"

    def _patch(self, rt, ns, name, ctype, raw, query, dry, main):
        ptype = _PATCH_TYPES.get(ctype or "")
        if ptype is None:
            raise ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                                f"include: {', '.join(_PATCH_TYPES)}")
        if ptype == "strategic" and rt.custom:
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types "
                                "include: application/json-patch+json, application/merge-patch+json, "
                                "application/apply-patch+yaml")
        body = _parse_body(raw, allow_yaml=(ptype == "apply"))
        if ptype == "apply":
            return self._apply(rt, ns, name, body, query, dry, main)
        with self._lock:
            old = self._store[rt.skey].get((ns, name))
            if old is None:
                raise self._not_found(rt, name)
            current = self._present(rt, old)
            if ptype == "json":
                patched = json_patch(current, body)
            else:
                if not isinstance(body, dict):
                    raise ApiError(400, "merge patch body must be a JSON object")
                if ptype == "strategic":
                    body = _strip_directives(body)
                patched = merge_patch(current, body)
            if not isinstance(patched, dict):
                raise ApiError(422, "patch result is not an object")
            meta = patched.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise ApiError(422, "metadata must be an object")
            self._precondition(rt, old, name, meta.get("resourceVersion"))
            if meta.get("name") != name:
                raise ApiError(400, "the name of the object cannot be changed by a patch")
            if main:
                new = patched
                self._validate(rt, new, old)
            else:
                new = copy.deepcopy(old)
                if "status" in patched:
                    new["status"] = patched["status"]
                else:
                    new.pop("status", None)
            obj, _ = self._commit(rt, ns, name, old, new, dry=dry, main=main,
                                  field_manager=self._manager_name(query))
            return 200, obj, "application/json"

    def _apply(self, rt, ns, name, cfg, query, dry, main):
        manager = query.get("fieldManager")
        if not manager:
            raise _options_invalid("PatchOptions", "fieldManager", "FieldValueRequired",
                                   "Required value: is required for apply patch")
        force = str(query.get("force", "")).lower() in ("true", "1")
        if not isinstance(cfg, dict):
            raise ApiError(400, "the apply configuration must be an object")
        if not cfg.get("apiVersion") or not cfg.get("kind"):
            raise ApiError(400, f"invalid object type: {cfg.get('apiVersion') or ''}/, Kind={cfg.get('kind') or ''}")
        meta = self._check_body(rt, cfg, ns, name)
        cfg = _drop_nulls(copy.deepcopy(cfg))
        want_rv = meta.get("resourceVersion")
        for path in _SSA_IGNORED:
            if path[0] == "metadata" and path[1] not in ("name", "namespace"):
                _remove_path(cfg, path)
        cfg.setdefault("metadata", {})
        key = (rt.skey, ns, name)
        with self._lock:
            old = self._store[rt.skey].get((ns, name))
            if old is None:
                if not main:
                    raise self._not_found(rt, name)
                self._require_namespace(rt, ns, name)
                if want_rv:
                    raise self._not_found(rt, name)
            else:
                self._precondition(rt, old, name, want_rv)
            live = self._present(rt, old) if old is not None else {}
            managers = copy.deepcopy(self._managers.get(key, {}))
            if not main:
                # only the status of the applied configuration matters here
                cfg = {k: v for k, v in cfg.items() if k in ("apiVersion", "kind", "metadata", "status")}
                cfg["metadata"] = {k: v for k, v in cfg["metadata"].items() if k in ("name", "namespace")}

            self._typed_apply_check(rt, ns, name, cfg, query)
            # conflicts with other managers (appliers, and updaters "using" their API version) that own a
            # field the applier sets to a different value
            updaters = copy.deepcopy(self._updaters.get(key, {}))
            conflicts = []
            for path, value in _leaf_paths(cfg):
                if path in _SSA_IGNORED or _get_path(live, path) == value:
                    continue
                for other, ocfg in managers.items():
                    if other != manager and _get_path(ocfg, path) is not _MISSING:
                        conflicts.append((f'"{other}"', path))
                for (other, sub), paths in updaters.items():
                    if sub == ("" if main else "status") and any(path[:len(p)] == p for p in paths):
                        conflicts.append((f'"{other}" using {rt.api_version}', path))
            conflicts.sort(key=lambda c: (c[0], [str(x) for x in c[1]]))
            if conflicts and not force:
                fields = [(o, "." + ".".join(map(str, p))) for o, p in conflicts]
                causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {o}", "field": f}
                          for o, f in fields]
                if len(fields) == 1:
                    message = f"Apply failed with 1 conflict: conflict with {fields[0][0]}: {fields[0][1]}"
                else:
                    owners = sorted({o for o, _f in fields})
                    message = f"Apply failed with {len(fields)} conflicts: " + "\n".join(
                        f"conflicts with {o}:\n" + "\n".join(f"- {f}" for oo, f in fields if oo == o)
                        for o in owners)
                raise ApiError(409, message, reason="Conflict", causes=causes)
            for other, path in conflicts:
                for mname, ocfg in managers.items():
                    if mname != manager:
                        _remove_path(ocfg, path)
                for paths in updaters.values():
                    paths.discard(path)
            self._updaters[key] = {k: v for k, v in updaters.items() if v} if not dry else \
                self._updaters.get(key, {})

            # fields this manager applied before and no longer applies are removed
            base = copy.deepcopy(live)
            previous = managers.get(manager, {})
            for path, _value in list(_leaf_paths(previous)):
                if path in _SSA_IGNORED or _covered(cfg, path):
                    continue
                if any(_get_path(ocfg, path) is not _MISSING for o, ocfg in managers.items() if o != manager):
                    continue
                _remove_path(base, path)
            _deep_merge(base, cfg)
            base.setdefault("metadata", {})["name"] = name
            managers[manager] = cfg
            if main:
                new = base
                self._validate(rt, new, old)
            else:
                new = copy.deepcopy(old)
                if "status" in base:
                    new["status"] = base["status"]
                else:
                    new.pop("status", None)
            obj, _ = self._commit(rt, ns, name, old, new, dry=dry, main=main, managers=managers,
                                  applying=True)
            return (201 if old is None else 200), obj, "application/json"

    def _delete(self, rt, ns, name, options, dry, query=None):
        options = options if isinstance(options, dict) else {}
        policy = (query or {}).get("propagationPolicy") or options.get("propagationPolicy")
        if options.get("orphanDependents") is True and not policy:
            policy = "Orphan"
        if policy not in (None, "Foreground", "Background", "Orphan"):
            raise _options_invalid("DeleteOptions", "propagationPolicy", "FieldValueNotSupported",
                                   f'Unsupported value: "{policy}": supported values: "Foreground", '
                                   f'"Background", "Orphan", "nil"')
        with self._lock:
            old = self._store[rt.skey].get((ns, name))
            if old is None:
                raise self._not_found(rt, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"].get("uid"):
                raise ApiError(409, f'Operation cannot be fulfilled on {rt.kind} "{name}": the UID in the '
                                    f'precondition ({pre["uid"]}) does not match the UID in record '
                                    f'({old["metadata"].get("uid")}). The object might have been deleted and '
                                    f'then recreated', reason="Conflict", name=name, kind=rt.kind,
                               group=rt.group or None)
            self._precondition(rt, old, name, pre.get("resourceVersion"))
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "details": dict({"name": name}, **({"group": rt.group} if rt.group else {}),
                                      kind=rt.plural, uid=old["metadata"].get("uid"))}
            if old["metadata"].get("deletionTimestamp"):
                return 200, self._present(rt, old), "application/json"  # already being deleted
            if rt.kind == "Namespace":
                # the namespace controller empties it, then it goes; until then it is Terminating
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = _now()
                new.setdefault("status", {})["phase"] = "Terminating"
                obj, _ = self._commit(rt, ns, name, old, new, dry=dry, main=False, deleting=True)
                if not dry:
                    self._schedule(self.namespace_finalize_seconds, lambda: self._finalize_namespace(name))
                return 200, obj, "application/json"
            finalizers = list(old["metadata"].get("finalizers") or [])
            gc = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy)
            if gc and gc not in finalizers:
                finalizers.append(gc)
            if finalizers:
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = _now()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new["metadata"]["finalizers"] = finalizers
                if "generation" in new["metadata"]:
                    new["metadata"]["generation"] += 1
                obj, _ = self._commit(rt, ns, name, old, new, dry=dry, main=False, deleting=True)
                if gc and not dry:
                    self._schedule(self.controller_delay_seconds,
                                   lambda: self._collect_garbage(rt, ns, name, gc))
                if "kubernetes.io/pvc-protection" in finalizers and not dry:
                    self._schedule(self.controller_delay_seconds, lambda: self._release_pvc(ns, name))
                return 200, obj, "application/json"
            if dry:
                obj = self._present(rt, old)
            else:
                obj = self._remove(rt, ns, name)
                self._schedule(self.controller_delay_seconds,
                               lambda: self._delete_dependents(old["metadata"].get("uid")))
            if rt.return_deleted:
                if rt.skey == ("", "pods"):  # an unscheduled pod goes at once, shown as being deleted
                    obj["metadata"].setdefault("deletionTimestamp", _now())
                    obj["metadata"].setdefault("deletionGracePeriodSeconds", 0)
                    obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
                return 200, obj, "application/json"
            return 200, status, "application/json"

    def _dependents(self, uid):
        if not uid:
            return []
        out = []
        for rt in {t.skey: t for t in self._types.values()}.values():
            for (ons, oname), obj in list(self._store.get(rt.skey, {}).items()):
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                    out.append((rt, ons, oname, obj))
        return out

    def _delete_dependents(self, uid):
        """The garbage collector: owned objects follow their owner."""
        for rt, ons, oname, obj in self._dependents(uid):
            if (ons, oname) in self._store[rt.skey]:
                self._remove(rt, ons, oname)
                self._delete_dependents(obj["metadata"].get("uid"))

    def _collect_garbage(self, rt, ns, name, finalizer):
        old = self._store[rt.skey].get((ns, name))
        if old is None:
            return
        uid = old["metadata"].get("uid")
        if finalizer == "orphan":
            for drt, dns, dname, dobj in self._dependents(uid):
                new = copy.deepcopy(dobj)
                refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                if refs:
                    new["metadata"]["ownerReferences"] = refs
                else:
                    new["metadata"].pop("ownerReferences", None)
                self._commit(drt, dns, dname, dobj, new, dry=False, main=False)
        else:
            self._delete_dependents(uid)
        old = self._store[rt.skey].get((ns, name))
        if old is not None:
            new = copy.deepcopy(old)
            new["metadata"]["finalizers"] = [f for f in new["metadata"].get("finalizers") or [] if f != finalizer]
            self._commit(rt, ns, name, old, new, dry=False, main=False)

    def _release_pvc(self, ns, name):
        """The pvc-protection controller: drop the finalizer once no Pod uses the claim (else look again)."""
        rt = self._types[("", "v1", "persistentvolumeclaims")]
        old = self._store[rt.skey].get((ns, name))
        if old is None:
            return
        in_use = any(((v or {}).get("persistentVolumeClaim") or {}).get("claimName") == name
                     for (pns, _), pod in self._store[("", "pods")].items() if pns == ns
                     for v in (pod.get("spec") or {}).get("volumes") or [])
        if in_use:
            self._schedule(0.2, lambda: self._release_pvc(ns, name))
            return
        new = copy.deepcopy(old)
        new["metadata"]["finalizers"] = [f for f in new["metadata"].get("finalizers") or []
                                         if f != "kubernetes.io/pvc-protection"]
        self._commit(rt, ns, name, old, new, dry=False, main=False)

    def _finalize_namespace(self, name):
        namespace = self._store[("", "namespaces")].get(("", name))
        if namespace is not None and namespace["metadata"].get("deletionTimestamp"):
            self._remove(self._types[("", "v1", "namespaces")], "", name)

    def _delete_collection(self, rt, ns, query, dry):
        if rt.namespaced and ns is None:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        with self._lock:
            items = self._matching(rt, ns, query)
            out = []
            for obj in items:
                meta = obj["metadata"]
                if dry:
                    out.append(self._list_item(rt, obj))
                else:
                    self._remove(rt, meta.get("namespace", ""), meta["name"])
                    out.append(self._list_item(rt, obj))
            return {"kind": rt.list_kind, "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(self._rv)}, "items": out}

    # ------------------------------------------------------------ store core
    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, etype, rt, ns, obj, prev=None):
        # the previous state lets a selector watch turn "left the selector" into DELETED
        self._events.append((self._rv, etype, rt.skey, ns, (copy.deepcopy(obj), copy.deepcopy(prev))))
        if len(self._events) > 5000:
            drop = len(self._events) - 4000
            self._events_floor = self._events[drop - 1][0]
            del self._events[:drop]
        self._cond.notify_all()

    def _remove(self, rt, ns, name):
        """Delete an object (and what depends on it); returns the deleted object."""
        obj = self._store[rt.skey].pop((ns, name))
        self._managers.pop((rt.skey, ns, name), None)
        obj = self._present(rt, obj)
        obj["metadata"]["resourceVersion"] = str(self._bump())
        self._record("DELETED", rt, ns, obj)
        if rt.skey == ("", "namespaces"):
            self._pod_logs = {k: v for k, v in self._pod_logs.items() if k[0] != name}
            for t in list({t.skey: t for t in self._types.values() if t.namespaced}.values()):
                for (ons, oname) in [k for k in self._store.get(t.skey, {}) if k[0] == name]:
                    self._remove(t, ons, oname)
        elif rt.skey == ("apiextensions.k8s.io", "customresourcedefinitions"):
            spec = obj.get("spec") or {}
            group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
            crd_types = [t for t in self._types.values() if t.custom and t.skey == (group, plural)]
            if crd_types:
                for (ons, oname) in list(self._store.get((group, plural), {})):
                    self._remove(crd_types[0], ons, oname)
            self._unregister_crd_types(group, plural)
            self._store.pop((group, plural), None)
        elif rt.skey == ("", "pods"):
            self._pod_logs.pop((ns, name), None)
        return obj

    def _type_errors(self, rt, obj):
        """(path, value) of values whose JSON type the built-in schema rejects."""
        errors = []
        if rt.skey == ("", "configmaps"):
            errors += [(f".data.{k}", v) for k, v in (obj.get("data") or {}).items() if not isinstance(v, str)]
        pod_specs = []
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        if rt.skey == ("", "pods"):
            pod_specs.append((".spec", spec))
        elif isinstance((spec.get("template") or {}).get("spec"), dict):
            pod_specs.append((".spec.template.spec", spec["template"]["spec"]))
        for prefix, pspec in pod_specs:
            for c in pspec.get("containers") or []:
                for env in (c or {}).get("env") or []:
                    if isinstance(env, dict) and "value" in env and not isinstance(env["value"], str):
                        errors.append((f'{prefix}.containers[name="{c.get("name")}"].env[name="{env.get("name")}"]'
                                       f'.value', env["value"]))
        return errors

    def _crd_schema(self, rt):
        crd = self._store[("apiextensions.k8s.io", "customresourcedefinitions")].get(("", f"{rt.plural}.{rt.group}"))
        for v in ((crd or {}).get("spec") or {}).get("versions") or []:
            if v.get("name") == rt.version:
                return ((v.get("schema") or {}).get("openAPIV3Schema")) or {}
        return {}

    def _unknown_fields(self, rt, obj):
        if rt.custom:
            schema = self._crd_schema(rt)
            if not schema.get("properties") or schema.get("x-kubernetes-preserve-unknown-fields"):
                return []
            known = set(schema["properties"]) | {"apiVersion", "kind", "metadata"}
        else:
            known = _defaults.KNOWN_TOP_LEVEL.get(rt.kind)
        return [k for k in obj if k not in known] if known else []

    def _decode_typed(self, rt, body, query):
        """What decoding a POST/PUT body into the typed object rejects (400) or drops (with a Warning)."""
        errors = self._type_errors(rt, body)
        if errors:
            path, value = errors[0]
            go_type = "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else \
                "bool" if isinstance(value, bool) else "object"
            field = "ConfigMap.data" if path.startswith(".data.") else "EnvVar.spec.template.spec.containers.env.value"
            raise ApiError(400, f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: '
                                f'cannot unmarshal {go_type} into Go struct field {field} of type string')
        if rt.skey == ("", "secrets"):
            try:
                _defaults.decode_secret_data(body.get("data"))
            except ValueError as exc:
                raise ApiError(400, f'Secret in version "v1" cannot be handled as a Secret: {exc}') from None
        unknown = self._unknown_fields(rt, body)
        if unknown:
            if (query or {}).get("fieldValidation") == "Strict":
                raise ApiError(400, f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                                    f'strict decoding error: unknown field "{unknown[0]}"')
            if (query or {}).get("fieldValidation") != "Ignore":
                for field in unknown:
                    self._warn(f'unknown field "{field}"')
            body = {k: v for k, v in body.items() if k not in unknown}
        return body

    def _typed_apply_check(self, rt, ns, name, cfg, query):
        """Server-side apply builds a typed patch first: a type error or unknown field there is a 500
        without a reason (kubernetes/kubernetes#139253), whatever fieldValidation says."""
        where = f"({ns}/{name}; {rt.group}/{rt.version}, Kind={rt.kind})"
        errors = self._type_errors(rt, cfg)
        if errors:
            path, value = errors[0]
            raise ApiError(500, f"failed to create typed patch object {where}: {path}: expected string, got "
                                f"&value.valueUnstructured{{Value:{json.dumps(value)}}}", reason=False)
        unknown = self._unknown_fields(rt, cfg)
        if unknown:
            raise ApiError(500, f"failed to create typed patch object {where}: .{unknown[0]}: field not declared "
                                f"in schema", reason=False)

    def _semantic_checks(self, rt, obj, old):
        """422 causes beyond the name: labels, data keys, Secrets, immutable fields, workloads."""
        causes = _defaults.validate_metadata(obj.get("metadata"))
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        if rt.custom:
            for field in self._crd_schema(rt).get("required") or []:
                if field not in obj:
                    causes.append(("FieldValueRequired", field, "Required value"))
        if rt.skey == ("", "configmaps"):
            causes += _defaults.validate_configmap(obj)
        elif rt.skey == ("", "secrets"):
            causes += _defaults.validate_secret(obj)
        elif rt.skey == ("", "persistentvolumeclaims") and old is not None:
            if _defaults.pvc_immutable_change(old.get("spec"), spec):
                causes.append(("FieldValueForbidden", "spec", "Forbidden: spec is immutable after creation except "
                                                              "resources.requests and volumeAttributesClassName "
                                                              "for bound claims"))
        elif rt.skey == ("rbac.authorization.k8s.io", "rolebindings") or \
                rt.skey == ("rbac.authorization.k8s.io", "clusterrolebindings"):
            if old is not None and old.get("roleRef") != obj.get("roleRef"):
                causes.append(("FieldValueInvalid", "roleRef",
                               f"Invalid value: {json.dumps(obj.get('roleRef'))}: cannot change roleRef"))
        elif rt.skey == ("apps", "deployments"):
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                causes.append(("FieldValueInvalid", "spec.template.metadata.labels",
                               f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`"))
            if isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
                causes.append(("FieldValueInvalid", "spec.replicas",
                               f"Invalid value: {spec['replicas']}: must be greater than or equal to 0"))
            for i, c in enumerate(((spec.get("template") or {}).get("spec") or {}).get("containers") or []):
                if isinstance(c, dict) and not c.get("image"):
                    causes.append(("FieldValueRequired", f"spec.template.spec.containers[{i}].image",
                                   "Required value"))
            if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
                causes.append(("FieldValueInvalid", "spec.selector",
                               f"Invalid value: {json.dumps(spec.get('selector'))}: field is immutable"))
        if causes:
            name = (obj.get("metadata") or {}).get("name") or ""
            title = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
            text = ", ".join(f"{f}: {m}" for _r, f, m in causes)
            raise ApiError(422, f'{title} "{name}" is invalid: ' + (f"[{text}]" if len(causes) > 1 else text),
                           name=name, kind=rt.kind, group=rt.group or None,
                           causes=[{"reason": r, "message": m, "field": f} for r, f, m in causes])

    def _validate(self, rt, obj, old=None):
        self._validate_name(rt, obj)
        self._semantic_checks(rt, obj, old)

    def _validate_name(self, rt, obj):
        name = (obj.get("metadata") or {}).get("name") or ""
        if rt.custom or rt.group == "rbac.authorization.k8s.io":
            bad = name in (".", "..") or "/" in name or "%" in name
            rule = "may not contain '/' or '%' and may not be '.' or '..'"
        elif rt.skey in (("", "namespaces"), ("", "services")):
            bad = len(name) > 63 or not _DNS_LABEL.fullmatch(name)
            rule = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                    "and must start and end with an alphanumeric character")
        else:
            bad = len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name)
            rule = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                    "'.', and must start and end with an alphanumeric character")
        if bad:
            raise ApiError(422, f'{rt.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": {rule}',
                           name=name, kind=rt.kind, group=rt.group or None,
                           causes=[{"reason": "FieldValueInvalid", "field": "metadata.name",
                                    "message": f'Invalid value: "{name}": {rule}'}])
        if rt.skey == ("apiextensions.k8s.io", "customresourcedefinitions"):
            spec = obj.get("spec") or {}
            names = spec.get("names") or {}
            name = (obj.get("metadata") or {}).get("name")
            errors = []
            if not spec.get("group"):
                errors.append("spec.group: Required value")
            if not names.get("plural"):
                errors.append("spec.names.plural: Required value")
            if not names.get("kind"):
                errors.append("spec.names.kind: Required value")
            if spec.get("scope") not in ("Namespaced", "Cluster"):
                errors.append("spec.scope: Unsupported value")
            if not spec.get("versions"):
                errors.append("spec.versions: Required value")
            if name and names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
                errors.append(f"metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group")
            if errors:
                raise ApiError(422, f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: '
                                    + ", ".join(errors), name=name, kind="CustomResourceDefinition",
                               group="apiextensions.k8s.io")

    def _commit(self, rt, ns, name, old, new, *, dry, main, managers=None, applying=False,
                field_manager=None, keep_body_status=False, deleting=False, sync_controllers=False,
                subresource=None):
        """Finish a write: bookkeeping, defaults, controllers, no-op detection, store."""
        new = copy.deepcopy(new)
        new["apiVersion"] = rt.api_version
        new["kind"] = rt.kind
        meta = new.setdefault("metadata", {})
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if old is not None:
            ometa = old["metadata"]
            for field in ("uid", "creationTimestamp", "deletionTimestamp"):
                if field in ometa:
                    meta[field] = ometa[field]
                elif not (deleting and field == "deletionTimestamp"):
                    meta.pop(field, None)
            if main and rt.status_subresource and not keep_body_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta.pop("deletionTimestamp", None)
            if main and rt.status_subresource and not keep_body_status:
                new.pop("status", None)
        meta.pop("resourceVersion", None)
        self._default(rt, new, old)
        if main:
            # hooks at once; the simulated controllers a moment later (see _reconcile), except when
            # seeding with put_object(run_controllers=True)
            new = self._run_controllers(rt, new, builtin=sync_controllers or rt.skey == ("", "namespaces"))
            meta = new["metadata"]
        if old is None:
            meta["generation"] = 1
        else:
            gen = old["metadata"].get("generation", 1)
            if "spec" in new or "spec" in old:
                if new.get("spec") != old.get("spec"):
                    gen += 1
            if meta.get("deletionTimestamp") and not old["metadata"].get("deletionTimestamp") \
                    and "generation" in old["metadata"]:
                gen += 1  # setting deletionTimestamp counts as a spec change
            meta["generation"] = gen

        # server-side-apply ownership
        key = (rt.skey, ns, name)
        if managers is None:
            managers = copy.deepcopy(self._managers.get(key, {}))
            if old is not None and main:
                for cfg in managers.values():
                    for path, _v in list(_leaf_paths(cfg)):
                        if path not in _SSA_IGNORED and _get_path(old, path) != _get_path(new, path):
                            _remove_path(cfg, path)
        updaters = self._track_updates(rt, old, new, main, managers, applying, field_manager, subresource)
        if managers or updaters:
            old_entries = {(e.get("manager"), e.get("operation"), e.get("subresource", "")): e
                           for e in (old or {}).get("metadata", {}).get("managedFields") or []}
            entries = []
            for mname, cfg in sorted(managers.items()):
                fields = _fields_v1(cfg)
                prev = old_entries.get((mname, "Apply", ""))
                when = prev["time"] if prev and prev.get("fieldsV1") == fields else _now()
                entries.append({"manager": mname, "operation": "Apply", "apiVersion": rt.api_version,
                                "time": when, "fieldsType": "FieldsV1", "fieldsV1": fields})
            for (mname, sub), paths in updaters.items():
                fields = _fields_v1(_paths_tree(paths))
                prev = old_entries.get((mname, "Update", sub))
                when = prev["time"] if prev and prev.get("fieldsV1") == fields else _now()
                entry = {"manager": mname, "operation": "Update", "apiVersion": rt.api_version,
                         "time": when, "fieldsType": "FieldsV1", "fieldsV1": fields}
                if sub:
                    entry["subresource"] = sub
                entries.append(entry)
            meta["managedFields"] = entries
        else:
            meta.pop("managedFields", None)

        if old is not None and _strip_for_compare(new) == _strip_for_compare(old):
            if not dry:
                self._managers[key] = managers
                self._updaters[key] = updaters
            return self._present(rt, old), False
        if dry:
            if old is not None:
                meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            return self._present(rt, new), True

        if old is not None and meta.get("deletionTimestamp") and not meta.get("finalizers") \
                and rt.skey != ("", "namespaces"):
            self._store[rt.skey][(ns, name)] = new
            return self._remove(rt, ns, name), True
        meta["resourceVersion"] = str(self._bump())
        self._store[rt.skey][(ns, name)] = new
        if managers:
            self._managers[key] = managers
        else:
            self._managers.pop(key, None)
        if updaters:
            self._updaters[key] = updaters
        else:
            self._updaters.pop(key, None)
        self._record("ADDED" if old is None else "MODIFIED", rt, ns, new, prev=old)
        if rt.skey == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register_crd(new, old)
        if main and not sync_controllers:
            delay = {("apiextensions.k8s.io", "customresourcedefinitions"): self.crd_establish_seconds,
                     ("", "secrets"): self.token_fill_seconds}.get(rt.skey, self.controller_delay_seconds)
            self._schedule(delay, lambda: self._reconcile(rt, ns, name))
        if old is None and rt.skey == ("", "namespaces") and self.auto_namespace_defaults and not sync_controllers:
            self._schedule(self.controller_delay_seconds, lambda: self._namespace_defaults(name))
        return self._present(rt, new), True

    def _track_updates(self, rt, old, new, main, managers, applying, field_manager, subresource):
        """Field ownership of non-apply writers (operation Update): what each one last changed."""
        key = (rt.skey, new["metadata"].get("namespace", ""), new["metadata"]["name"])
        updaters = {k: set(v) for k, v in self._updaters.get(key, {}).items()}
        present = {p for p, _v in _leaf_paths(new)}
        for k in updaters:
            updaters[k] = {p for p in updaters[k] if p in present}
        if not applying and field_manager:
            sub = subresource if subresource is not None else ("" if main else "status")

            def in_scope(path):
                if path in _SSA_IGNORED or path[:2] in (("metadata", "managedFields"),
                                                        ("metadata", "deletionGracePeriodSeconds")):
                    return False
                if path[:1] in (("apiVersion",), ("kind",)):
                    return False
                if sub == "status":
                    return path[:1] == ("status",)
                return not (rt.status_subresource and path[:1] == ("status",))

            changed = {p for p, v in _leaf_paths(new) if in_scope(p) and _get_path(old or {}, p) != v}
            if changed:
                for k in updaters:
                    if k != (field_manager, sub):
                        updaters[k] -= changed
                for cfg in (managers or {}).values():
                    for p in changed:
                        _remove_path(cfg, p)
                updaters.setdefault((field_manager, sub), set()).update(changed)
        return {k: v for k, v in updaters.items() if v}

    def _reconcile(self, rt, ns, name):
        """The simulated controllers' turn on one object (status, tokens, CRD conditions)."""
        old = self._store.get(rt.skey, {}).get((ns, name))
        if old is None or old["metadata"].get("deletionTimestamp"):
            return
        current = self._present(rt, old)
        new = self._builtin_controllers(rt, copy.deepcopy(current))
        if new != current:
            # CRD conditions come from the apiserver itself, the rest from kube-controller-manager
            manager = "kube-apiserver" if rt.skey == ("apiextensions.k8s.io", "customresourcedefinitions") \
                else "kube-controller-manager"
            self._commit(rt, ns, name, old, new, dry=False, main=False, field_manager=manager,
                         subresource="status" if rt.status_subresource else "")

    def _namespace_defaults(self, ns):
        """What KCM adds to every new namespace: the `default` ServiceAccount and kube-root-ca.crt."""
        if ("", ns) not in self._store[("", "namespaces")]:
            return
        seeds = [(("", "v1", "serviceaccounts"), {"metadata": {"name": "default", "namespace": ns}}),
                 (("", "v1", "configmaps"), {"metadata": {
                     "name": "kube-root-ca.crt", "namespace": ns, "annotations": {
                         "kubernetes.io/description": "Contains a CA bundle that can be used to verify the "
                         "kube-apiserver when using internal endpoints such as the internal service IP or "
                         "kubernetes.default.svc. No other usage is guaranteed across distributions of "
                         "Kubernetes clusters."}}, "data": {"ca.crt": _FAKE_CA}})]
        for type_key, body in seeds:
            rt = self._types[type_key]
            if (ns, body["metadata"]["name"]) not in self._store[rt.skey]:
                self._commit(rt, ns, body["metadata"]["name"], None, body, dry=False, main=False,
                             field_manager="kube-controller-manager", subresource="")

    def _register_crd(self, crd, old):
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural = spec.get("group"), names.get("plural")
        if not group or not plural or not names.get("kind"):
            return
        if old is not None:
            ospec = old.get("spec") or {}
            oplural = (ospec.get("names") or {}).get("plural")
            if (ospec.get("group"), oplural) != (group, plural):
                self._unregister_crd_types(ospec.get("group"), oplural)
        self._unregister_crd_types(group, plural)
        versions = sorted(spec.get("versions") or [], key=lambda v: not v.get("storage", False))
        for v in versions:
            if v.get("served", True) is False or not v.get("name"):
                continue
            rt = ResourceType(group, v["name"], names["kind"], plural,
                              namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                              singular=names.get("singular") or names["kind"].lower(),
                              short_names=names.get("shortNames") or [],
                              status_subresource="status" in ((v.get("subresources") or {})),
                              list_kind=names.get("listKind"), categories=names.get("categories") or [],
                              custom=True)
            self._types[(group, v["name"], plural)] = rt
        self._store.setdefault((group, plural), {})
        established = any(c.get("type") == "Established" and c.get("status") == "True"
                          for c in (crd.get("status") or {}).get("conditions") or [])
        if established or not self.auto_crd_established:
            self._established.add((group, plural))

    # ------------------------------------------------------------ defaults & controllers
    def _default(self, rt, obj, old):
        spec = obj.get("spec")
        kind = (rt.group, rt.kind)
        if kind == ("apps", "Deployment"):
            _defaults.default_deployment(spec)
            if old is None and "status" not in obj:
                obj["status"] = {}  # what the POST answers; the controller fills it a moment later
        elif kind in (("apps", "StatefulSet"), ("apps", "ReplicaSet"), ("apps", "DaemonSet"), ("batch", "Job"),
                      ("batch", "CronJob")):
            if kind[1] in ("StatefulSet", "ReplicaSet") and isinstance(spec, dict) and spec.get("replicas") is None:
                spec["replicas"] = 1
            _defaults.default_workload(rt.kind, spec)
        elif kind == ("", "Pod"):
            _defaults.default_pod_spec(spec, template=False)
            if old is None and not obj.get("status"):
                obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif kind == ("", "PersistentVolumeClaim"):
            _defaults.default_pvc(obj, creating=old is None)
            if not obj.get("status"):
                obj["status"] = {"phase": "Pending"}
        elif kind == ("", "Secret"):
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None)
            if string_data:
                data = obj.setdefault("data", {}) or {}
                obj["data"] = data
                for k, v in string_data.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
        elif kind == ("", "Service"):
            if not isinstance(spec, dict):
                spec = obj["spec"] = {}
            ospec = (old or {}).get("spec") or {}
            _defaults.default_service(spec, lambda: ospec.get("clusterIP") or self._allocate_ip(obj))
            if not obj.get("status"):
                obj["status"] = {"loadBalancer": {}}
        elif kind == ("", "Namespace"):
            labels = obj["metadata"].setdefault("labels", {}) or {}
            obj["metadata"]["labels"] = labels
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            spec = obj.setdefault("spec", {}) or {}
            obj["spec"] = spec
            spec.setdefault("finalizers", ["kubernetes"])
        elif kind == ("apiextensions.k8s.io", "CustomResourceDefinition") and isinstance(spec, dict):
            names = spec.get("names") or {}
            if names.get("kind"):
                names.setdefault("singular", names["kind"].lower())
                names.setdefault("listKind", names["kind"] + "List")
            spec.setdefault("conversion", {"strategy": "None"})
            if old is None and not obj.get("status"):
                obj["status"] = {"acceptedNames": {"kind": "", "plural": ""}, "conditions": [],
                                 "storedVersions": [v.get("name") for v in spec.get("versions") or []
                                                    if v.get("storage")]}

    def _allocate_ip(self, obj):
        h = uuid.uuid5(uuid.NAMESPACE_DNS, f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}").int
        return f"10.96.{(h >> 8) % 254 + 1}.{h % 254 + 1}"

    def _run_controllers(self, rt, obj, builtin=True):
        if builtin:
            obj = self._builtin_controllers(rt, obj)
        for hook_kind, fn in list(self._hooks):
            if hook_kind in ("*", rt.kind.lower(), rt.plural, f"{rt.plural}.{rt.group}"):
                result = fn(obj)
                if result is not None:
                    obj = result
        return obj

    def _builtin_controllers(self, rt, obj):
        kind = (rt.group, rt.kind)
        if not self.auto_ready and kind == ("apps", "Deployment"):
            spec = obj.get("spec") or {}
            status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
            replicas = spec.get("replicas", 1)
            obj.setdefault("metadata", {}).setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
            new_status = dict(status, observedGeneration=obj["metadata"].get("generation", 1),
                              replicas=replicas, updatedReplicas=replicas, unavailableReplicas=replicas)
            kept = [c for c in status.get("conditions") or [] if c.get("type") not in ("Available", "Progressing")]
            new_status["conditions"] = kept + [
                {"type": "Available", "status": "False", "lastUpdateTime": _now(), "lastTransitionTime": _now(),
                 "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."},
                {"type": "Progressing", "status": "True", "lastUpdateTime": _now(), "lastTransitionTime": _now(),
                 "reason": "ReplicaSetUpdated", "message": "ReplicaSet is progressing."}]
            prev = {c.get("type"): c for c in status.get("conditions") or []}
            for cond in new_status["conditions"]:
                old_cond = prev.get(cond["type"])
                if old_cond and old_cond.get("status") == cond["status"] and old_cond.get("reason") == cond["reason"]:
                    cond.update({k: old_cond[k] for k in ("lastUpdateTime", "lastTransitionTime") if k in old_cond})
            obj["status"] = new_status
            return obj
        meta = obj["metadata"]
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        if self.auto_ready and kind in (("apps", "Deployment"), ("apps", "StatefulSet"),
                                        ("apps", "ReplicaSet"), ("apps", "DaemonSet")):
            spec = obj.get("spec") or {}
            replicas = spec.get("replicas", 1) if rt.kind != "DaemonSet" else 1
            gen = self._next_generation(rt, obj)
            if rt.kind == "DaemonSet":
                new_status = {"observedGeneration": gen, "currentNumberScheduled": 1, "desiredNumberScheduled": 1,
                              "numberAvailable": 1, "numberMisscheduled": 0, "numberReady": 1,
                              "updatedNumberScheduled": 1}
            else:
                new_status = {"observedGeneration": gen, "replicas": replicas, "readyReplicas": replicas,
                              "availableReplicas": replicas, "updatedReplicas": replicas}
                if rt.kind == "StatefulSet":
                    new_status["currentReplicas"] = replicas
                if rt.kind == "ReplicaSet":
                    new_status["fullyLabeledReplicas"] = replicas
            cond_types = {"Deployment": [("Available", "MinimumReplicasAvailable"),
                                         ("Progressing", "NewReplicaSetAvailable")],
                          "StatefulSet": [("Available", "MinimumReplicasAvailable")]}.get(rt.kind, [])
            new_status["conditions"] = self._conditions(status, cond_types)
            obj["status"] = new_status
        elif self.auto_ready and kind == ("", "Pod"):
            containers = (obj.get("spec") or {}).get("containers") or []
            started = status.get("startTime") or _now()
            obj["status"] = {
                "phase": "Running",
                "conditions": self._conditions(status, [("PodReadyToStartContainers", None), ("Initialized", None),
                                                        ("Ready", None), ("ContainersReady", None),
                                                        ("PodScheduled", None)]),
                "hostIP": "192.168.49.2",
                "podIP": status.get("podIP") or self._allocate_ip(obj).replace("10.96.", "10.244.", 1),
                "startTime": started,
                "qosClass": "BestEffort",
                "containerStatuses": [
                    {"name": c.get("name", f"c{i}"), "image": c.get("image", ""), "imageID": "",
                     "ready": True, "started": True, "restartCount": 0,
                     "state": {"running": {"startedAt": started}}}
                    for i, c in enumerate(containers) if isinstance(c, dict)],
            }
        elif self.auto_complete_jobs and kind == ("batch", "Job"):
            started = status.get("startTime") or _now()
            obj["status"] = {"startTime": started, "completionTime": status.get("completionTime") or started,
                             "succeeded": 1, "active": 0, "ready": 0,
                             "conditions": self._conditions(status, [("SuccessCriteriaMet", None),
                                                                     ("Complete", None)])}
        elif self.auto_token and kind == ("", "Secret"):
            annotations = meta.get("annotations") or {}
            sa = annotations.get("kubernetes.io/service-account.name")
            if obj.get("type") == "kubernetes.io/service-account-token" and sa:
                data = obj.get("data") or {}
                obj["data"] = data
                if not data.get("token"):
                    data["token"] = base64.b64encode(
                        f"eyJhbGciOiJSUzI1NiJ9.{secrets.token_urlsafe(48)}".encode()).decode()
                data.setdefault("ca.crt", base64.b64encode(_FAKE_CA.encode()).decode())
                data.setdefault("namespace", base64.b64encode(meta.get("namespace", "").encode()).decode())
                annotations.setdefault("kubernetes.io/service-account.uid", str(
                    uuid.uuid5(uuid.NAMESPACE_URL, f"{meta.get('namespace')}/{sa}")))
        elif self.auto_crd_established and kind == ("apiextensions.k8s.io", "CustomResourceDefinition"):
            spec = obj.get("spec") or {}
            names = dict(spec.get("names") or {})
            storage = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
            stored = list(status.get("storedVersions") or [])
            for v in storage:
                if v not in stored:
                    stored.append(v)
            obj["status"] = {
                "acceptedNames": names,
                "conditions": self._conditions(status, [("NamesAccepted", "NoConflicts"),
                                                        ("Established", "InitialNamesAccepted")]),
                "storedVersions": stored,
            }
        elif self.auto_namespace_active and kind == ("", "Namespace"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["status"] = {"phase": "Active"}
        return obj

    def _next_generation(self, rt, obj):
        ns = obj["metadata"].get("namespace", "") if rt.namespaced else ""
        old = self._store[rt.skey].get((ns, obj["metadata"]["name"]))
        if old is None:
            return 1
        gen = old["metadata"].get("generation", 1)
        return gen + 1 if obj.get("spec") != old.get("spec") else gen

    @staticmethod
    def _conditions(status, wanted):
        existing = {c.get("type"): c for c in (status or {}).get("conditions") or [] if isinstance(c, dict)}
        out = []
        for ctype, reason in wanted:
            prev = existing.get(ctype)
            cond = {"type": ctype, "status": "True",
                    "lastTransitionTime": prev["lastTransitionTime"]
                    if prev and prev.get("status") == "True" and prev.get("lastTransitionTime") else _now()}
            if reason:
                cond["reason"] = reason
                cond["message"] = reason
            out.append(cond)
        return out


# --------------------------------------------------------------------------
# standalone process
# --------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description="Kubernetes API emulator for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing at the emulator here")
    parser.add_argument("--context", default="minikube")
    parser.add_argument("--namespace", default=None)
    args = parser.parse_args(argv)
    emu = KubeEmulator(host=args.host, port=args.port).start()
    if args.kubeconfig:
        emu.write_kubeconfig(args.kubeconfig, context=args.context, namespace=args.namespace)
    done = threading.Event()

    def _stop(*_):
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(emu.url, flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
