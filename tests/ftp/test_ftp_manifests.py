"""manifests/ftp: Argo objects checked with Hera's models (unknown fields rejected), the rest with
plain YAML checks, and every name that ties two objects (or an object and the code) together."""

from __future__ import annotations

import copy
import re
import string
from types import SimpleNamespace

import pytest
import yaml

from etlboot import config, manifests

import ftp_etl
import ftp_watch
from ftp_support import CODE, ROOT, SERVER_DIR
from helpers.hera_check import ManifestError, render_manifest, validate_argo_manifest

FTP_DIR = ROOT / "manifests" / "ftp"
# a placeholder of ours the tool may not know yet (see the report): the content hash of the
# event server's ConfigMap, so the Deployment rolls when the code changes
OVERRIDES = {"FTP_EVENT_SERVER_CODE_HASH": "0123456789abcdef"}
ALLOWED_PLACEHOLDERS = {
    "ETL_IMAGE", "ETL_IMAGE_PULL_POLICY", "MINIO_ENDPOINT", "MINIO_SECRET", "ETL_BUCKET", "WORKFLOW_SA",
    "SENSOR_SA", "CODE_CONFIGMAP", "FTP_IMAGE", "FTP_EVENT_SERVER_CONFIGMAP", "FTP_POLL_SECONDS",
    "FTP_SECRET", "FTP_EVENT_SERVER_CODE_HASH",
    "FTP_MIN_AGE_SECONDS", "FTP_DONE_FILE", "FTP_IGNORE", "FTP_CONFIRM_SECONDS",
}


@pytest.fixture(scope="module")
def docs():
    out = {}
    for path in sorted(FTP_DIR.glob("*.yaml")):
        for doc in render_manifest(path, **OVERRIDES):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


@pytest.fixture(scope="module")
def values():
    from helpers.hera_check import sample_values
    return sample_values(**OVERRIDES)


def test_the_expected_objects_are_there(docs):
    assert set(docs) == {
        ("Deployment", "vsftpd"), ("Service", "vsftpd"),
        ("PersistentVolumeClaim", "ftp-event-server-state"), ("Deployment", "ftp-event-server"),
        ("Service", "ftp-event-server"), ("EventSource", "ftp"), ("Sensor", "ftp"),
        ("WorkflowTemplate", "ftp-etl"),
    }


def test_templates_use_known_placeholders_and_leave_namespace_and_labels_to_the_tool(docs):
    for path in FTP_DIR.glob("*.yaml"):
        text = path.read_text()
        used = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(text)
                if m.group("named") or m.group("braced")}
        assert used <= ALLOWED_PLACEHOLDERS, (path.name, used - ALLOWED_PLACEHOLDERS)
    for doc in docs.values():
        assert "namespace" not in doc["metadata"]
        assert "app.kubernetes.io/managed-by" not in (doc["metadata"].get("labels") or {})


@pytest.mark.parametrize("kind", ["EventSource", "Sensor", "WorkflowTemplate"])
def test_argo_objects_pass_the_strict_hera_check(docs, kind):
    [doc] = [d for (k, _), d in docs.items() if k == kind]
    validate_argo_manifest(doc)


@pytest.mark.parametrize("kind,where,typo", [
    ("EventSource", ("spec", "generic", "ftp"), "jsonBdy"),
    ("Sensor", ("spec", "dependencies", 0, "filters", "data", 0), "vaule"),
    ("WorkflowTemplate", ("spec", "templates", 0, "container"), "comand"),
])
def test_a_typo_is_rejected(docs, kind, where, typo):
    [doc] = [copy.deepcopy(d) for (k, _), d in docs.items() if k == kind]
    node = doc
    for step in where:
        node = node[step]
    node[typo] = True
    with pytest.raises(ManifestError, match=typo):
        validate_argo_manifest(doc)


def container(deployment):
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def secret_refs(env):
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in env if "valueFrom" in e}


def plain_env(env):
    return {e["name"]: e["value"] for e in env if "value" in e}


@pytest.mark.parametrize("name", ["vsftpd", "ftp-event-server"])
def test_deployment_and_service_agree(docs, name):
    deploy, service = docs[("Deployment", name)], docs[("Service", name)]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    container_ports = {p["containerPort"] for p in container(deploy)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == container_ports
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    assert deploy["spec"]["replicas"] == 1


def test_vsftpd_passive_ports_are_all_reachable_through_the_service(docs, values):
    deploy, service = docs[("Deployment", "vsftpd")], docs[("Service", "vsftpd")]
    c = container(deploy)
    assert c["image"] == values["FTP_IMAGE"]
    opts = dict(a[2:].split("=", 1) for a in c["args"] if a.startswith("-o"))
    # the overrides come after the config file, or the file would win
    assert c["args"].index("/etc/vsftpd.conf") < min(i for i, a in enumerate(c["args"]) if a.startswith("-o"))
    wanted = set(range(int(opts["pasv_min_port"]), int(opts["pasv_max_port"]) + 1))
    assert len(wanted) >= 10
    assert wanted | {21} == {p["port"] for p in service["spec"]["ports"]}
    assert secret_refs(c["env"]) == {"FTP_USER": (values["FTP_SECRET"], "username"),
                                     "FTP_PASS": (values["FTP_SECRET"], "password")}


def test_event_server_deployment_runs_the_code_with_state_on_a_pvc(docs, values):
    deploy = docs[("Deployment", "ftp-event-server")]
    pod = deploy["spec"]["template"]["spec"]
    c = container(deploy)
    assert c["image"] == values["ETL_IMAGE"]
    assert c["command"][:2] == ["python", "/code/event_server.py"]
    assert (SERVER_DIR / "event_server.py").is_file()
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/code"]]["configMap"]["name"] == values["FTP_EVENT_SERVER_CONFIGMAP"]
    state_claim = volumes[mounts["/state"]]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", state_claim) in docs
    assert plain_env(c["env"])["FTP_STATE_DIR"] == "/state"
    assert secret_refs(c["env"]) == {"FTP_USER": (values["FTP_SECRET"], "username"),
                                     "FTP_PASSWORD": (values["FTP_SECRET"], "password")}
    assert pod["securityContext"]["runAsNonRoot"] is True
    annotations = deploy["spec"]["template"]["metadata"]["annotations"]
    assert OVERRIDES["FTP_EVENT_SERVER_CODE_HASH"] in annotations.values()


def test_eventsource_config_is_accepted_by_the_event_server(docs, values):
    """The config string in the EventSource, with the env the Deployment gives the server, passes
    the server's own validation (a typo there would otherwise surface only in the cluster)."""
    generic = docs[("EventSource", "ftp")]["spec"]["generic"]
    [(event_name, source)] = generic.items()
    assert source["insecure"] is True and source["jsonBody"] is True
    host, port = source["url"].rsplit(":", 1)
    service = docs[("Service", host)]
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}

    deploy_env = container(docs[("Deployment", "ftp-event-server")])["env"]
    env = {name: "value-of-" + name for name in secret_refs(deploy_env)}
    env.update(plain_env(deploy_env))
    cfg = ftp_watch.parse_config(source["config"], env, event_name=event_name)
    assert (cfg.user, cfg.password) == ("value-of-FTP_USER", "value-of-FTP_PASSWORD")
    assert cfg.poll_seconds == float(values["FTP_POLL_SECONDS"])
    assert cfg.state_file.startswith("/state/ftp-")
    assert ("Service", cfg.host) in docs and cfg.port in {p["port"] for p in docs[("Service", cfg.host)]["spec"]["ports"]}
    assert "password:" not in source["config"].replace("passwordEnv:", "")


@pytest.mark.parametrize("settings,expected", [
    ({}, {"min_age": 30.0, "done_file": "", "ignore": ("*.part", "*.tmp", ".*"), "confirm": 30.0}),
    ({"FTP_POLL_SECONDS": "20"}, {"min_age": 60.0}),
    ({"FTP_MIN_AGE_SECONDS": "0", "FTP_IGNORE": "", "FTP_CONFIRM_SECONDS": "5"},
     {"min_age": 0.0, "ignore": (), "confirm": 5.0}),
    ({"FTP_DONE_FILE": "{stem}.ok", "FTP_IGNORE": "*.partial, ~*"},
     {"done_file": "{stem}.ok", "min_age": 0.0, "ignore": ("*.partial", "~*")}),
    ({"FTP_IGNORE": 'say "hi", x: y'}, {"ignore": ('say "hi"', "x: y")}),
])
def test_the_ftp_settings_reach_the_event_server(settings, expected):
    """FTP_MIN_AGE_SECONDS, FTP_DONE_FILE, FTP_IGNORE and FTP_CONFIRM_SECONDS, as `up` renders them
    into the event server's Deployment, are the rules the server then applies; empty means its
    default (and any value survives YAML quoting)."""
    raw = {s.name: (s.default if s.default is not None else "sample") for s in config.SETTINGS}
    raw.update(settings)
    for name, value in settings.items():
        config._validate(config.BY_NAME[name], value)
    values = manifests.variables(SimpleNamespace(values={**raw, "ETL_IMAGE": "argo-etl:test"}))
    docs = {(d["kind"], d["metadata"]["name"]): d for path in sorted(FTP_DIR.glob("*.yaml"))
            for d in manifests.render(path, {**values, **OVERRIDES})}
    deploy_env = container(docs[("Deployment", "ftp-event-server")])["env"]
    env = {name: "x" for name in secret_refs(deploy_env)}
    env.update(plain_env(deploy_env))
    [(event_name, source)] = docs[("EventSource", "ftp")]["spec"]["generic"].items()
    cfg = ftp_watch.parse_config(source["config"], env, event_name=event_name)
    got = {"min_age": cfg.min_age_seconds, "done_file": cfg.done_file, "ignore": tuple(cfg.ignore),
           "confirm": cfg.confirm_seconds}
    assert {k: got[k] for k in expected} == expected


@pytest.mark.parametrize("name,value", [
    ("FTP_DONE_FILE", "done"), ("FTP_DONE_FILE", "{name}"), ("FTP_DONE_FILE", "ok/{name}"),
    ("FTP_DONE_FILE", "{nam}.done"), ("FTP_IGNORE", "*.part,,*.tmp"), ("FTP_IGNORE", "tmp/*"),
    ("FTP_MIN_AGE_SECONDS", "soon"), ("FTP_CONFIRM_SECONDS", "0"),
])
def test_a_bad_ftp_setting_is_refused_with_its_name(name, value):
    with pytest.raises(config.ConfigError, match=name):
        config._validate(config.BY_NAME[name], value)


def gjson_get(data, path):
    """The subset of gjson paths used here: dot-separated keys and array indexes."""
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def test_sensor_wiring_filter_and_parameter(docs, values):
    sensor = docs[("Sensor", "ftp")]
    [dep] = sensor["spec"]["dependencies"]
    generic = docs[("EventSource", dep["eventSourceName"])]["spec"]["generic"]
    assert dep["eventName"] in generic
    assert sensor["spec"]["template"]["serviceAccountName"] == values["SENSOR_SA"]

    [trigger] = sensor["spec"]["triggers"]
    k8s = trigger["template"]["k8s"]
    workflow = k8s["source"]["resource"]
    assert k8s["operation"] == "create"
    template = docs[("WorkflowTemplate", workflow["spec"]["workflowTemplateRef"]["name"])]
    [param] = k8s["parameters"]
    assert param["src"]["dependencyName"] == dep["name"]
    index = int(re.fullmatch(r"spec\.arguments\.parameters\.(\d+)\.value", param["dest"]).group(1))
    assert workflow["spec"]["arguments"]["parameters"][index]["name"] == \
        template["spec"]["arguments"]["parameters"][0]["name"]

    # what the event server sends, as the generic source hands it to the Sensor (jsonBody: true)
    def event_data(path):
        change = ftp_watch.Change(path, 10, "2024-01-01T00:00:00Z", "new")
        return {"body": change.payload(), "metadata": {}}

    assert gjson_get(event_data("/in/20230414/a b.csv"), param["src"]["dataKey"]) == "/in/20230414/a b.csv"
    [data_filter] = dep["filters"]["data"]
    assert data_filter["type"] == "string"

    def passes(path):  # Go regexp semantics: unanchored search; RE2 and Python agree on this pattern
        text = gjson_get(event_data(path), data_filter["path"])
        return any(re.search(v, text) for v in data_filter["value"])

    assert passes("/a.csv") and passes("/x/Sales Report.CSV") and passes("/데이터.csv")
    assert not passes("/a.csv.part") and not passes("/a.txt") and not passes("/csv")


def test_workflow_template_runs_ftp_etl_with_its_settings(docs, values):
    template = docs[("WorkflowTemplate", "ftp-etl")]
    spec = template["spec"]
    assert spec["serviceAccountName"] == values["WORKFLOW_SA"]
    [tmpl] = [t for t in spec["templates"] if t["name"] == spec["entrypoint"]]
    c = tmpl["container"]
    assert c["command"] == ["python"]
    assert c["args"][0] == "/code/ftp_etl.py" and (CODE / "ftp_etl.py").is_file()
    assert c["args"][1:] == ["--", "{{inputs.parameters.path}}"]
    assert [p["name"] for p in tmpl["inputs"]["parameters"]] == ["path"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/code"]]["configMap"]["name"] == values["CODE_CONFIGMAP"]
    assert plain_env(c["env"])["TMPDIR"] in mounts  # temporary files go to a mounted emptyDir
    assert "emptyDir" in volumes[mounts[plain_env(c["env"])["TMPDIR"]]]

    env = plain_env(c["env"])
    refs = secret_refs(c["env"])
    assert refs == {
        "FTP_USER": (values["FTP_SECRET"], "username"), "FTP_PASSWORD": (values["FTP_SECRET"], "password"),
        "S3_ACCESS_KEY": (values["MINIO_SECRET"], "root-user"),
        "S3_SECRET_KEY": (values["MINIO_SECRET"], "root-password"),
    }
    assert (env["S3_ENDPOINT"], env["S3_SECURE"], env["ETL_BUCKET"]) == (
        values["MINIO_ENDPOINT"], "false", values["ETL_BUCKET"])
    assert ("Service", env["FTP_HOST"]) in docs
    # the program accepts exactly this environment
    settings = ftp_etl.ftp_settings({**env, **{k: "x" for k in refs}})
    assert (settings["host"], settings["port"], settings["passive"]) == ("vsftpd", 21, True)


def test_the_rendered_yaml_round_trips(docs):
    for doc in docs.values():
        assert yaml.safe_load(yaml.safe_dump(doc)) == doc
