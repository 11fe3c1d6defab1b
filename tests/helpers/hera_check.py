"""Offline checks for Argo manifests with Hera's models, strict about unknown fields.

The Argo CRDs keep `spec` as `x-kubernetes-preserve-unknown-fields`, so the cluster accepts a typo
(`entrypont`) silently. Hera's pydantic models parse these kinds but ignore extra keys, so after
`parse_obj` every key of the YAML is walked and must be a field (by its JSON name) of the model at that
place. Fields Hera still models but Argo Workflows v4 removed (`synchronization.mutex`/`semaphore`,
CronWorkflow `schedule`) are rejected too. A k8s trigger's `source.resource` (an arbitrary object to
Hera) is checked as the Argo manifest it is.

Where Hera's generated events models differ from the JSON Argo Events really reads, the Go source
wins: structs embedded inline (`WebhookContext`, `WatchPathConfig`, `GroupVersionResource`) have their
fields at the parent, and `Int64OrString` / `Amount` are a plain number or string.

    from helpers.hera_check import render_manifest, validate_argo_manifest
    for doc in render_manifest("manifests/pipeline/etl-sensor.yaml"):
        validate_argo_manifest(doc)
"""
from __future__ import annotations

import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Union

import pydantic.v1 as pyd
from hera.events import models as ev
from hera.workflows import models as wf

ROOT = Path(__file__).resolve().parents[2]
API_VERSION = "argoproj.io/v1alpha1"

MODELS: dict[str, type] = {
    "Workflow": wf.Workflow,
    "WorkflowTemplate": wf.WorkflowTemplate,
    "ClusterWorkflowTemplate": wf.ClusterWorkflowTemplate,
    "CronWorkflow": wf.CronWorkflow,
    "EventSource": ev.EventSource,
    "Sensor": ev.Sensor,
}

# Hera 5.x still models these; Argo Workflows v4 removed them (docs/upgrading.md).
REMOVED_IN_V4: dict[type, dict[str, str]] = {
    wf.Synchronization: {"mutex": "use `mutexes` (a list) in Argo Workflows v4",
                         "semaphore": "use `semaphores` (a list) in Argo Workflows v4"},
    wf.CronWorkflowSpec: {"schedule": "use `schedules` (a list) in Argo Workflows v4"},
}


# Argo Events structs embedded `json:",inline"` in Go (pkg/apis/events/v1alpha1) that Hera models as
# a nested field: their fields belong directly to the parent.
INLINE_EVENTS_FIELDS = {
    (ev.WebhookEventSource, "webhookContext"),
    (ev.ResourceEventSource, "groupVersionResource"),
    (ev.FileEventSource, "watchPathConfig"),
    (ev.HDFSEventSource, "watchPathConfig"),
    (ev.SFTPEventSource, "watchPathConfig"),
}

# Go types with their own JSON form (a number or a string) that Hera models as structs.
SCALAR_MODELS: tuple[type, ...] = (ev.Int64OrString, ev.Amount)


class ManifestError(ValueError):
    """The manifest does not match the Argo schema; the message lists every problem with its path."""


def validate_argo_manifest(doc: dict) -> Any:
    """Parses `doc` with the Hera model for its kind and rejects unknown or removed fields.

    Returns the parsed model; raises ManifestError listing each problem as `path: reason`.
    """
    if not isinstance(doc, dict):
        raise ManifestError(f"manifest is a {type(doc).__name__}, not a mapping")
    kind = doc.get("kind")
    model = MODELS.get(kind)
    meta = doc.get("metadata") or {}
    where = f"{kind}/{meta.get('name') or meta.get('generateName', '?')}"
    if model is None:
        raise ManifestError(f"{where}: kind {kind!r} is not one of {sorted(MODELS)}")
    problems = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: {doc.get('apiVersion')!r}, expected {API_VERSION}")
    parsed, scalars = None, []
    try:
        parsed = model.parse_obj(doc)
    except pyd.ValidationError as exc:
        for err in exc.errors():
            if _scalar_in_scalar_model(model, doc, err["loc"]):
                scalars.append(err["loc"])
            else:
                problems.append(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
    if scalars and not problems:
        parsed = model.parse_obj(_as_hera_structs(doc, scalars, model))
    # Hera's events models have no apiVersion/kind fields; both were checked above.
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
    problems += unknown_fields(model, body, path="")
    if problems:
        raise ManifestError(f"{where}:\n  " + "\n  ".join(problems))
    return parsed


def unknown_fields(model: type, data: Any, path: str) -> list[str]:
    """Every key in `data` (recursively) that is not a field of `model` at that place."""
    if not isinstance(data, dict):
        return []   # a type mismatch is parse_obj's business
    fields = model.__fields__
    if set(fields) == {"__root__"}:
        return _check_type(fields["__root__"].outer_type_, data, path)
    by_alias = _fields_by_json_name(model)
    removed = REMOVED_IN_V4.get(model, {})
    problems = []
    for key, value in data.items():
        here = f"{path}.{key}" if path else str(key)
        if key in removed:
            problems.append(f"{here}: removed field ({removed[key]})")
            continue
        field = by_alias.get(key)
        if field is None:
            problems.append(f"{here}: unknown field for {model.__name__}" + _hint(key, by_alias))
            continue
        problems += _check_type(field.outer_type_, value, here)
    return problems


def _fields_by_json_name(model: type) -> dict:
    by_alias = {}
    for f in model.__fields__.values():
        if (model, f.alias) in INLINE_EVENTS_FIELDS:
            by_alias.update({g.alias: g for g in _unwrap(f.outer_type_).__fields__.values()})
        else:
            by_alias[f.alias] = f
    return by_alias


def _check_type(tp: Any, value: Any, path: str) -> list[str]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _check_type(args[0], value, path)
    if origin is Union:
        candidates = [a for a in args if a is not type(None)]
        results = [_check_type(a, value, path) for a in candidates]
        return min(results, key=len) if results else []
    if origin in (list, typing.List, tuple, set) and isinstance(value, list):
        inner = args[0] if args else Any
        return [p for i, item in enumerate(value) for p in _check_type(inner, item, f"{path}.{i}")]
    if origin in (dict, typing.Dict) and isinstance(value, dict):
        inner = args[1] if len(args) == 2 else Any
        return [p for k, v in value.items() for p in _check_type(inner, v, f"{path}.{k}")]
    if tp is ev.K8SResource:
        return _embedded_resource(value, path)
    if tp in SCALAR_MODELS:
        ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number or a string"]
    if isinstance(tp, type) and issubclass(tp, pyd.BaseModel):
        return unknown_fields(tp, value, path)
    return []


def _scalar_in_scalar_model(model: type, doc: dict, loc: tuple) -> bool:
    """Whether a parse error is only Hera's struct form of a number-or-string Go type."""
    value: Any = doc
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False
    return _type_at(model, loc) in SCALAR_MODELS


def _as_hera_structs(doc: dict, locs: list[tuple], model: type) -> dict:
    """A copy of `doc` with number-or-string values in the struct form Hera expects."""
    import copy

    doc = copy.deepcopy(doc)
    for loc in locs:
        parent: Any = doc
        for part in loc[:-1]:
            parent = parent[part]
        value = parent[loc[-1]]
        if _type_at(model, loc) is ev.Amount:
            parent[loc[-1]] = {"value": str(value)}
        elif isinstance(value, int):
            parent[loc[-1]] = {"type": "Int64", "int64Val": str(value)}
        else:
            parent[loc[-1]] = {"type": "String", "strVal": str(value)}
    return doc


def _type_at(tp: Any, loc: tuple) -> Any:
    for part in loc:
        tp = _unwrap(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (list, typing.List) and isinstance(part, int):
            tp = args[0]
        elif origin in (dict, typing.Dict):
            tp = args[1]
        elif isinstance(tp, type) and issubclass(tp, pyd.BaseModel):
            field = _fields_by_json_name(tp).get(part)
            if field is None:
                return None
            tp = field.outer_type_
        else:
            return None
    return _unwrap(tp)


def _unwrap(tp: Any) -> Any:
    while True:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            tp = args[0]
        elif origin is Union:
            members = [a for a in args if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _embedded_resource(value: Any, path: str) -> list[str]:
    # Hera models K8SResource as {value: str}; in a Sensor it is the whole object to create.
    if not isinstance(value, dict):
        return [f"{path}: expected an object"]
    if value.get("apiVersion") == API_VERSION and value.get("kind") in MODELS:
        try:
            validate_argo_manifest(value)
        except ManifestError as exc:
            return [f"{path}: {line.strip()}" for line in str(exc).splitlines()[1:]]
    return []


def _hint(key: str, by_alias: dict) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), list(by_alias), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- rendering ---------------------------------------------------------------------------------


def sample_values(**overrides: str) -> dict[str, str]:
    """A value for every placeholder the tool fills in, from the settings' defaults."""
    from etlboot import config, manifests

    values = {s.name: (s.default if s.default is not None else "sample") for s in config.SETTINGS}
    values["ETL_IMAGE"] = "argo-etl:test"
    result = manifests.variables(SimpleNamespace(values=values))
    result.update(overrides)
    return result


def render_manifest(path: str | Path, **overrides: str) -> list[dict]:
    """Renders a manifests/ template (strict `${NAME}` substitution, as the tool does) with sample
    values for every placeholder; returns its YAML documents."""
    from etlboot import manifests

    path = Path(path)
    if not path.is_absolute():
        path = ROOT / path
    return manifests.render(path, sample_values(**overrides))
