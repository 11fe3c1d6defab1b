"""manifests/pipeline: every file renders, passes the strict Hera check, and the Sensors' parameter
paths give the right values on a MinIO listen-API notification (tests/fixtures/minio_notification.json,
shaped after minio-go's notification.Event JSON tags)."""
from __future__ import annotations

import copy
import json
import posixpath
import re
from pathlib import Path

import pytest

from helpers.hera_check import ManifestError, render_manifest, validate_argo_manifest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "manifests" / "pipeline"
FILES = sorted(PIPELINE.glob("*.yaml"))
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "minio_notification.json").read_text())
RAW_KEY = "input/20230414/class 3+4 점수.csv"


def docs_by_kind() -> dict[tuple[str, str], dict]:
    found = {}
    for path in FILES:
        for doc in render_manifest(path):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


# --- tiny evaluators of the two languages the Sensor uses ------------------------------------


def gjson_get(data, path: str):
    """gjson for plain dotted paths (`a.0.b`): the only form our dataKeys use."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", path):
        raise ValueError(f"path {path!r} uses gjson syntax this evaluator does not cover")
    for part in path.split("."):
        if isinstance(data, list) and part.isdigit():
            data = data[int(part)] if int(part) < len(data) else None
        elif isinstance(data, dict):
            data = data.get(part)
        else:
            data = None
        if data is None:
            raise KeyError(f"{path}: no value at {part!r}")
    return data


def go_path_dir(p: str) -> str:   # Go's path.Dir
    d = posixpath.dirname(p)
    return d or "."


def go_path_base(p: str) -> str:  # Go's path.Base
    if p == "":
        return "."
    p = p.rstrip("/")
    return p.rsplit("/", 1)[-1] if p else "/"


def go_template(template: str, data: dict) -> str:
    """Evaluates the subset of Go text/template + sprig our dataTemplates use:
    one action `{{ PIPELINE }}` where PIPELINE is `ARG | fn | fn`, ARG a field chain on `.Input` or
    on a parenthesised `index X N`; functions `dir` and `base` (sprig: path.Dir, path.Base); or
    `index (splitList "SEP" ARG) N` (sprig's splitList, Go's index)."""
    m = re.fullmatch(r"\{\{\s*(.+?)\s*\}\}", template)
    if not m:
        raise ValueError("expected exactly one {{ ... }} action")
    split = re.fullmatch(r'index \(splitList "([^"]*)" (.+)\) (\d+)', m.group(1).strip())
    if split:  # sprig's splitList, then Go's index of the list
        return str(str(_go_operand(split.group(2), {"Input": data})).split(split.group(1))[int(split.group(3))])
    stages = [s.strip() for s in m.group(1).split("|")]
    value = _go_operand(stages[0], {"Input": data})
    for fn in stages[1:]:
        value = {"dir": go_path_dir, "base": go_path_base}[fn](value)
    return str(value)


def _go_operand(expr: str, dot: dict):
    m = re.fullmatch(r"\(index\s+(\.[\w.]+)\s+(\d+)\)((?:\.\w+)*)", expr)
    if m:
        target = _go_fields(dot, m.group(1))[int(m.group(2))]
        return _go_fields(target, m.group(3)) if m.group(3) else target
    if re.fullmatch(r"(\.\w+)+", expr):
        return _go_fields(dot, expr)
    raise ValueError(f"operand {expr!r} is outside the evaluated subset")


def _go_fields(value, chain: str):
    for name in chain.strip(".").split("."):
        value = value[name]
    return value


def sjson_set(obj: dict, dest: str, value: str) -> None:
    """sjson for dotted paths into existing lists/maps, as the Sensor applies `dest`."""
    *parents, last = dest.split(".")
    for part in parents:
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    if isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value


def fire(sensor: dict, event: dict) -> dict:
    """The Workflow the Sensor's k8s trigger would create for `event`."""
    trigger = sensor["spec"]["triggers"][0]["template"]["k8s"]
    resource = copy.deepcopy(trigger["source"]["resource"])
    for param in trigger["parameters"]:
        src = param["src"]
        if "dataTemplate" in src:
            value = go_template(src["dataTemplate"], event)
        else:
            value = gjson_get(event, src["dataKey"])
        sjson_set(resource, param["dest"], value)
    return resource


def agg_event(key: str) -> dict:
    event = copy.deepcopy(FIXTURE)
    event["notification"][0]["s3"]["object"]["key"] = key
    return event


# --- tests -----------------------------------------------------------------------------------


def test_pipeline_has_the_six_manifests():
    assert {p.name for p in FILES} == {
        "etl-workflowtemplate.yaml", "agg-workflowtemplate.yaml", "etlproj-eventsource.yaml",
        "agg-eventsource.yaml", "etl-sensor.yaml", "agg-sensor.yaml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_manifest_renders_and_is_valid(path):
    docs = render_manifest(path)
    assert docs, f"{path.name} has no document"
    for doc in docs:
        assert validate_argo_manifest(doc) is not None
        # conventions: the tool sets namespace and managed-by label
        assert "namespace" not in doc["metadata"]
        assert "app.kubernetes.io/managed-by" not in (doc["metadata"].get("labels") or {})


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_rendering_is_strict(path):
    # every ${...} in the file is substituted: nothing placeholder-like survives rendering
    text = json.dumps(render_manifest(path))
    assert "${" not in text


def test_typo_is_rejected_even_inside_the_sensor_resource():
    wt = docs_by_kind()[("WorkflowTemplate", "etl")]
    wt["spec"]["entrypont"] = wt["spec"].pop("entrypoint")
    with pytest.raises(ManifestError, match=r"spec\.entrypont: unknown field .*'entrypoint'"):
        validate_argo_manifest(wt)

    sensor = docs_by_kind()[("Sensor", "etlproj")]
    sensor["spec"]["triggers"][0]["template"]["k8s"]["source"]["resource"]["spec"]["argument"] = {}
    with pytest.raises(ManifestError, match=r"resource: spec\.argument: unknown field"):
        validate_argo_manifest(sensor)


def test_removed_v4_field_is_rejected():
    wt = docs_by_kind()[("WorkflowTemplate", "agg")]
    wt["spec"]["synchronization"] = {"mutex": {"name": "agg-{{workflow.parameters.date}}"}}
    with pytest.raises(ManifestError, match=r"synchronization\.mutex: removed field"):
        validate_argo_manifest(wt)


def test_wrong_value_type_is_rejected():
    es = docs_by_kind()[("EventSource", "etlproj")]
    es["spec"]["minio"]["put"]["events"] = "s3:ObjectCreated:*"   # must be a list
    with pytest.raises(ManifestError, match=r"events"):
        validate_argo_manifest(es)


def test_fixture_has_minio_listen_shape():
    event = FIXTURE["notification"][0]
    assert set(event) == {"eventVersion", "eventSource", "awsRegion", "eventTime", "eventName",
                          "userIdentity", "requestParameters", "responseElements", "s3", "source"}
    assert set(event["s3"]["object"]) <= {"key", "size", "eTag", "contentType", "userMetadata",
                                          "versionId", "sequencer"}
    assert " " in RAW_KEY and "+" in RAW_KEY and event["s3"]["object"]["key"] == RAW_KEY


def test_etl_sensor_passes_bucket_and_raw_key():
    docs = docs_by_kind()
    wf = fire(docs[("Sensor", "etlproj")], FIXTURE)
    params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    assert params == {"bucket": "etlproj", "key": RAW_KEY}   # not URL-decoded, not re-encoded
    assert wf["spec"]["workflowTemplateRef"]["name"] == "etl"
    validate_argo_manifest(wf)


@pytest.mark.parametrize("key,date", [
    ("output/20230414/3.parquet", "20230414"),
    ("output/20230414/class 3+4 점수.parquet", "20230414"),
    ("output/20261127/test.parquet", "20261127"),
    # outputs keep the input's folders (input/teamA/x.csv -> output/<day>/teamA/x.parquet)
    ("output/20261127/teamA/x.parquet", "20261127"),
    ("output/20261127/teamA/sub/x.parquet", "20261127"),
])
def test_agg_sensor_derives_date_from_key(key, date):
    wf = fire(docs_by_kind()[("Sensor", "agg")], agg_event(key))
    params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    assert params == {"date": date, "bucket": "etlproj", "key": key}   # agg.py folds that one file in
    assert wf["spec"]["workflowTemplateRef"]["name"] == "agg"


def test_template_evaluator_refuses_what_it_does_not_know():
    with pytest.raises((ValueError, KeyError)):
        go_template('{{ .Input.notification | first }}', FIXTURE)
    with pytest.raises(KeyError):
        gjson_get(FIXTURE, "notification.0.s3.object.name")


@pytest.mark.parametrize("sensor_name,template_name", [("etlproj", "etl"), ("agg", "agg")])
def test_sensor_workflow_matches_its_template(sensor_name, template_name):
    docs = docs_by_kind()
    sensor = docs[("Sensor", sensor_name)]
    template = docs[("WorkflowTemplate", template_name)]
    dep = sensor["spec"]["dependencies"][0]
    source = docs[("EventSource", dep["eventSourceName"])]
    assert dep["eventName"] in source["spec"]["minio"]
    resource = sensor["spec"]["triggers"][0]["template"]["k8s"]["source"]["resource"]
    sent = [p["name"] for p in resource["spec"]["arguments"]["parameters"]]
    declared = [p["name"] for p in template["spec"]["arguments"]["parameters"]]
    assert sent == declared
    # each parameter dest points at an existing slot, in order
    dests = [p["dest"] for p in sensor["spec"]["triggers"][0]["template"]["k8s"]["parameters"]]
    assert dests == [f"spec.arguments.parameters.{i}.value" for i in range(len(sent))]
    assert sensor["spec"]["template"]["serviceAccountName"] == "operate-workflow-sa"
    assert template["spec"]["serviceAccountName"] == "argo-workflow"


@pytest.mark.parametrize("name", ["etl", "agg"])
def test_workflowtemplate_runs_a_program_from_code(name):
    wt = docs_by_kind()[("WorkflowTemplate", name)]
    container = wt["spec"]["templates"][0]["container"]
    program = container["command"][1]
    assert container["command"][0] == "python" and program == f"/code/{name}.py"
    assert (ROOT / "code" / f"{name}.py").is_file()
    volumes = {v["name"]: v for v in wt["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/code")
    assert volumes[mount["name"]]["configMap"]["name"] == "etl-code"
    env = {e["name"]: e for e in container["env"]}
    assert env["S3_ENDPOINT"]["value"] == "minio:9000"
    for var, key in (("S3_ACCESS_KEY", "root-user"), ("S3_SECRET_KEY", "root-password")):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "minio-credentials", "key": key}
    # every {{workflow.parameters.X}} / {{inputs.parameters.X}} refers to something declared
    text = json.dumps(wt)
    declared = {p["name"] for p in wt["spec"]["arguments"]["parameters"]}
    assert set(re.findall(r"\{\{workflow\.parameters\.(\w+)\}\}", text)) <= declared
    inputs = {p["name"] for t in wt["spec"]["templates"]
              for p in (t.get("inputs") or {}).get("parameters", [])}
    assert set(re.findall(r"\{\{inputs\.parameters\.(\w+)\}\}", text)) <= inputs


def test_agg_holds_a_per_date_mutex_and_settles():
    wt = docs_by_kind()[("WorkflowTemplate", "agg")]
    assert wt["spec"]["synchronization"] == {
        "mutexes": [{"name": "agg-{{workflow.parameters.date}}"}]}
    env = {e["name"]: e.get("value") for e in wt["spec"]["templates"][0]["container"]["env"]}
    assert env["AGG_SETTLE_SECONDS"] == "20"
    settle = render_manifest(PIPELINE / "agg-workflowtemplate.yaml", AGG_SETTLE_SECONDS="5")[0]
    env = {e["name"]: e.get("value") for e in settle["spec"]["templates"][0]["container"]["env"]}
    assert env["AGG_SETTLE_SECONDS"] == "5"


@pytest.mark.parametrize("name,prefix,suffix", [("etlproj", "input/", ".csv"),
                                               ("agg", "output/", ".parquet")])
def test_eventsources_watch_the_right_objects(name, prefix, suffix):
    put = docs_by_kind()[("EventSource", name)]["spec"]["minio"]["put"]
    assert put["bucket"]["name"] == "etlproj"
    assert put["filter"] == {"prefix": prefix, "suffix": suffix}
    assert put["events"] == ["s3:ObjectCreated:*"]
    assert put["endpoint"] == "minio:9000" and put["insecure"] is True
    assert put["accessKey"] == {"name": "minio-credentials", "key": "root-user"}
    assert put["secretKey"] == {"name": "minio-credentials", "key": "root-password"}


@pytest.mark.parametrize("group, name", [("pipeline", "etl"), ("pipeline", "agg"), ("ftp", "ftp-etl")])
def test_workflows_retry_only_what_a_retry_can_fix(group, name):
    """The programs' exit codes (code/failures.py) decide: 75 is retried, 1 and 2 are not."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("failures", ROOT / "code" / "failures.py")
    failures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(failures)
    docs = [d for path in sorted((ROOT / "manifests" / group).glob("*.yaml")) for d in render_manifest(path)]
    template = next(d for d in docs if d["kind"] == "WorkflowTemplate" and d["metadata"]["name"] == name)
    strategies = [t["retryStrategy"] for t in template["spec"]["templates"] if "retryStrategy" in t]
    assert strategies
    for strategy in strategies:
        assert strategy["retryPolicy"] == "Always"
        expression = strategy["expression"]
        assert f"asInt(lastRetry.exitCode) == {failures.EXIT_RETRY}" in expression
        assert 'lastRetry.status == "Error"' in expression
