"""Strict schema checks of what the tool sends, against what the real components accept.

- Core Kubernetes objects: `kubernetes-validate` in strict mode (unknown fields are errors) for Kubernetes
  K8S_VERSION, with the schemas the package ships.
- Argo objects (EventBus, EventSource, Sensor, Workflow, WorkflowTemplate, CronWorkflow, ClusterWorkflowTemplate):
  the upstream JSON schemas in ../shared/upstream (see its README), made strict: every object schema that
  lists `properties` and says nothing of `additionalProperties` gets `additionalProperties: false`. The
  Kubernetes types those schemas embed (ObjectMeta, Container, …) are checked the same way.
  A Quantity (a bare string upstream) is a number or a string in Kubernetes' quantity grammar, or an Argo
  `{{…}}` expression, which the controller substitutes before Kubernetes parses it; an IntOrString (a bare
  string in the workflows schema) is an integer or a string, as Go's intstr.IntOrString reads it.
  A Sensor's k8s trigger `source.resource` (free-form in the schema) is checked as the Argo object it is.
- Helm values: every leaf key path the tool sets must be a key of the pinned chart's values.yaml; a key
  whose upstream default is "unset" may be there only as a commented-out `# key:` line, which counts.

Nothing from ../shared/upstream is copied into the project: the files are read from there, once.
"""
from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from helpers.quantity import QUANTITY

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ROOT.parent / "shared" / "upstream"
K8S_VERSION = "1.34"

EVENTS_SCHEMA = "argo-events-v1.9.10-schema.json"
WORKFLOWS_SCHEMA = "argo-workflows-v4.0.6-schema.json"
EVENTS_VALUES = "argo-events-chart-2.4.22-values.yaml"
WORKFLOWS_VALUES = "argo-workflows-chart-1.0.18-values.yaml"

#: the schema file and definition of each Argo kind
ARGO_KINDS: dict[str, tuple[str, str]] = {
    "EventBus": (EVENTS_SCHEMA, "io.argoproj.events.v1alpha1.EventBus"),
    "EventSource": (EVENTS_SCHEMA, "io.argoproj.events.v1alpha1.EventSource"),
    "Sensor": (EVENTS_SCHEMA, "io.argoproj.events.v1alpha1.Sensor"),
    "Workflow": (WORKFLOWS_SCHEMA, "io.argoproj.workflow.v1alpha1.Workflow"),
    "WorkflowTemplate": (WORKFLOWS_SCHEMA, "io.argoproj.workflow.v1alpha1.WorkflowTemplate"),
    "ClusterWorkflowTemplate": (WORKFLOWS_SCHEMA, "io.argoproj.workflow.v1alpha1.ClusterWorkflowTemplate"),
    "CronWorkflow": (WORKFLOWS_SCHEMA, "io.argoproj.workflow.v1alpha1.CronWorkflow"),
}
ARGO_API = "argoproj.io/v1alpha1"
QUANTITY_DEF = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING_DEF = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"

ARGO_EXPRESSION = re.compile(r"\{\{.*\}\}", re.S)


def missing_upstream(*names: str) -> str | None:
    """Why a test cannot run here (the pinned upstream files are absent), or None."""
    if not UPSTREAM.is_dir():
        return f"no upstream data at {UPSTREAM} (a plain clone has no ../shared/upstream)"
    absent = [n for n in names if not (UPSTREAM / n).is_file()]
    return f"missing in {UPSTREAM}: {', '.join(absent)}" if absent else None


def is_argo(obj: dict) -> bool:
    return obj.get("apiVersion") == ARGO_API or obj.get("kind") in ARGO_KINDS


def where(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name') or meta.get('generateName') or '?'}"


def _path(error: jsonschema.ValidationError) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path) or "."


def _leaf_errors(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """The innermost errors of a oneOf/anyOf failure: what really did not match."""
    if error.context:
        for sub in error.context:
            yield from _leaf_errors(sub)
    else:
        yield error


# -- Kubernetes core objects (kubernetes-validate) -------------------------------------------------


def k8s_problems(obj: dict) -> list[str]:
    """[] if `obj` passes kubernetes-validate strictly for K8S_VERSION; else `path: message` lines.

    Past kubernetes-validate, the same schemas are checked once more for what they type loosely: a Quantity
    (`string | number` there) must be a number or follow the quantity grammar, and `format: byte` data
    (Secret.data, ConfigMap.binaryData) must be base64.
    """
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{where(obj)}: {_path(exc)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where(obj)}: {exc.message}"]
    validator = _k8s_formats_validator(obj["apiVersion"], obj["kind"])
    return [f"{where(obj)}: {_path(leaf)}: {leaf.message[:300]}"
            for error in validator.iter_errors(obj) for leaf in _leaf_errors(error)]


def k8s_schema_version() -> str:
    """The schema version kubernetes-validate really uses for K8S_VERSION (the newest not newer than it)."""
    import kubernetes_validate

    return kubernetes_validate.validate({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
                                        K8S_VERSION, strict=True)


@functools.lru_cache(maxsize=None)
def _k8s_definitions(schema_dir: str) -> dict:
    from kubernetes_validate.utils import schema_contents

    defs = copy.deepcopy(schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", K8S_VERSION))
    defs["$defs"][QUANTITY_DEF] = {"anyOf": [{"type": ["number", "null"]},
                                             {"type": "string", "pattern": QUANTITY.pattern}]}
    return defs


@functools.lru_cache(maxsize=None)
def _k8s_formats_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    import base64
    import binascii

    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    schema_dir = f"v{k8s_schema_version()}.0-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = schema_contents(f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{api}.json", K8S_VERSION)
    registry = Resource.from_contents(_k8s_definitions(schema_dir)) @ Registry()
    formats = jsonschema.FormatChecker([])

    @formats.checks("byte", raises=(binascii.Error, ValueError))
    def _base64(value) -> bool:
        return not isinstance(value, str) or base64.b64decode(value, validate=True) is not None

    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=formats)


# -- Argo objects (upstream JSON schemas, strict) --------------------------------------------------


def _strict(schema: Any) -> Any:
    """additionalProperties: false wherever an object schema lists properties and allows anything else."""
    if isinstance(schema, dict):
        out = {k: _strict(v) if k not in ("properties", "definitions") else v for k, v in schema.items()}
        if "properties" in schema:
            out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
            if "additionalProperties" not in schema and "patternProperties" not in schema:
                out["additionalProperties"] = False
        if "definitions" in schema:
            out["definitions"] = {k: _strict(v) for k, v in schema["definitions"].items()}
        return out
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    return schema


@functools.lru_cache(maxsize=None)
def _argo_root(filename: str) -> dict:
    schema = json.loads((UPSTREAM / filename).read_text(encoding="utf-8"))
    schema = _strict(schema)
    defs = schema["definitions"]
    # Kubernetes accepts a JSON number for a Quantity; a string must follow the quantity grammar (Argo
    # substitutes `{{…}}` before the controller parses it)
    quantity = dict(defs[QUANTITY_DEF])
    quantity.pop("type", None)
    quantity["anyOf"] = [{"type": "number"}, {"type": "string", "pattern": QUANTITY.pattern},
                         {"type": "string", "pattern": ARGO_EXPRESSION.pattern}]
    defs[QUANTITY_DEF] = quantity
    # the workflows schema types IntOrString as a string, but Go's intstr.IntOrString reads a JSON integer too
    int_or_string = dict(defs[INT_OR_STRING_DEF])
    int_or_string["type"] = ["integer", "string"]
    defs[INT_OR_STRING_DEF] = int_or_string
    schema.pop("oneOf", None)
    schema.pop("type", None)
    return schema


@functools.lru_cache(maxsize=None)
def _argo_validator(kind: str) -> jsonschema.protocols.Validator:
    filename, definition = ARGO_KINDS[kind]
    root = _argo_root(filename)
    schema = {**root, "$ref": f"#/definitions/{definition}"}
    return jsonschema.Draft202012Validator(schema)


def argo_definition(kind: str) -> dict:
    """The (strict) upstream schema definition of an Argo kind."""
    filename, definition = ARGO_KINDS[kind]
    return _argo_root(filename)["definitions"][definition]


def argo_problems(obj: dict, at: str = "") -> list[str]:
    """[] if `obj` is valid for the upstream schema of its kind with unknown fields forbidden."""
    kind = obj.get("kind")
    label = at or where(obj)
    if kind not in ARGO_KINDS:
        return [f"{label}: kind {kind!r} is not one of {sorted(ARGO_KINDS)}"]
    problems = []
    for error in sorted(_argo_validator(kind).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        for leaf in _leaf_errors(error):
            problems.append(f"{label}: {_path(leaf)}: {leaf.message[:300]}")
    if kind == "Sensor":
        for i, trigger in enumerate((obj.get("spec") or {}).get("triggers") or []):
            k8s = (trigger.get("template") or {}).get("k8s") or {}
            resource = (k8s.get("source") or {}).get("resource")
            if not isinstance(resource, dict):
                continue
            at_resource = f"{label} .spec.triggers[{i}].template.k8s.source.resource ({where(resource)})"
            found = argo_problems(resource, at_resource)
            problems += found
            if found:
                continue
            # what the Sensor really creates: the resource with each parameter's dest set from the event
            filled, unset = copy.deepcopy(resource), []
            for parameter in k8s.get("parameters") or []:
                if not _sjson_set(filled, parameter.get("dest") or "", "from-the-event"):
                    unset.append(parameter.get("dest"))
            problems += [f"{at_resource}: parameter dest {d!r} names no settable field" for d in unset]
            if not unset:
                problems += argo_problems(filled, f"{at_resource} with its parameters set")
    return problems


def _sjson_set(obj: Any, path: str, value: str) -> bool:
    """Set a dotted sjson path as Argo Events does for a trigger parameter's dest (no new list items)."""
    parts = path.split(".") if path else []
    if not parts:
        return False
    node = obj
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return False
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, [] if parts[i + 1].isdigit() else {})
        else:
            return False
    return True


# -- Helm values -----------------------------------------------------------------------------------


def leaf_paths(values: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths of every leaf the tool sets (a list or a scalar is a leaf; so is an empty mapping)."""
    if isinstance(values, dict) and values:
        return [p for key, value in values.items() for p in leaf_paths(value, (*prefix, str(key)))]
    return [prefix]


@functools.lru_cache(maxsize=None)
def chart_values(filename: str) -> tuple[Any, frozenset[tuple[str, ...]]]:
    """The chart's values (parsed) and the key paths it has only as a commented-out `# key:` line."""
    text = (UPSTREAM / filename).read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}, frozenset(commented_keys(text))


_REAL_KEY = re.compile(r"^(\s*)([A-Za-z0-9_][A-Za-z0-9_.\-/]*|\"[^\"]+\"|'[^']+'):(\s|$)")
_COMMENTED_KEY = re.compile(r"^(\s*#\s*)([A-Za-z_][A-Za-z0-9_\-]*):(\s|$)")


def commented_keys(text: str) -> list[tuple[str, ...]]:
    """Key paths of `# key: …` lines, nested by indentation under the real (and commented) keys above."""
    stack: list[tuple[int, str, bool]] = []  # (column of the key, key, commented)
    found = []
    for line in text.splitlines():
        real, commented = _REAL_KEY.match(line), _COMMENTED_KEY.match(line)
        if real:
            column = len(real.group(1))
            stack = [e for e in stack if e[0] < column and not e[2]]
            stack.append((column, real.group(2).strip("\"'"), False))
        elif commented:
            column = len(commented.group(1))
            stack = [e for e in stack if e[0] < column]
            stack.append((column, commented.group(2), True))
            found.append(tuple(k for _, k, _ in stack))
    return found


def value_key_problems(values: dict, filename: str) -> list[str]:
    """Each key path of `values` the chart's values.yaml lacks, with the reason; [] when all exist.

    A key exists when values.yaml has it (a null default counts), lists it commented out (`# key: …`, the
    chart's way to document an unset key), or sits under a mapping the chart leaves free (`{}` or null:
    labels, annotations, nodeSelector …). Setting a mapping where the chart has a scalar or list, or a scalar
    where it has a non-empty mapping, is wrong too.
    """
    defaults, commented = chart_values(filename)
    problems = []
    for path in leaf_paths(values):
        node: Any = defaults
        leaf = values
        for key in path:
            leaf = leaf[key]
        for depth, key in enumerate(path):
            here = path[:depth + 1]
            if isinstance(node, dict) and key in node:
                node = node[key]
                continue
            if here in commented or node is None or node == {}:
                node = None  # unset upstream: nothing below to compare with
                break
            if not isinstance(node, dict):
                problems.append(f"{'.'.join(path)}: {'.'.join(path[:depth])} is a {type(node).__name__} "
                                f"in the chart, not a mapping")
            else:
                problems.append(f"{'.'.join(path)}: no key {'.'.join(here)!r} in {filename}")
            break
        else:
            if isinstance(node, dict) and node and not isinstance(leaf, dict):
                problems.append(f"{'.'.join(path)}: a {type(leaf).__name__} where the chart has a mapping")
    return problems
