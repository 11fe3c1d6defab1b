"""Strict schemas: every object the tool sends is valid for the real components, and every Helm value it
sets is a key of the pinned chart.

- Core Kubernetes objects pass `kubernetes-validate` in strict mode for Kubernetes 1.34 (the schemas ship
  inside the package), plus the quantity grammar and base64 `data` it leaves unchecked.
- Argo objects validate against the upstream JSON schemas of Argo Events v1.9.10 and Argo Workflows v4.0.6
  (../shared/upstream) with unknown fields forbidden everywhere; a Sensor's k8s trigger resource is checked
  as the Workflow it creates, before and after its parameters are filled in.
- The values `argo_events_values` / `argo_workflows_values` pass to helm exist in the charts' values.yaml.

"What the tool sends" is collected from where it is sent: the ObjectSteps of `etlboot.stack.up_steps`, every
manifests/ group as rendered, the examples as `invoke examples.run` submits them, the webhook walkthrough,
the AWS variant's objects and Secrets, and the FTP demo's upload ConfigMap and Job. The checks themselves
are in tests/helpers/strict_schemas.py. Tests that need ../shared/upstream skip when it is absent.
"""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest

from helpers import strict_schemas as ss

ARGO_SCHEMAS = (ss.EVENTS_SCHEMA, ss.WORKFLOWS_SCHEMA)
CHART_VALUES = (ss.EVENTS_VALUES, ss.WORKFLOWS_VALUES)
needs_argo_schemas = pytest.mark.skipif(ss.missing_upstream(*ARGO_SCHEMAS) is not None,
                                        reason=ss.missing_upstream(*ARGO_SCHEMAS) or "")
needs_chart_values = pytest.mark.skipif(ss.missing_upstream(*CHART_VALUES) is not None,
                                        reason=ss.missing_upstream(*CHART_VALUES) or "")

# what a full `up` (FTP on), the examples and the AWS variant need; nothing here is contacted
ENVIRON = {"FTP_ENABLED": "true", "AWS_REGION": "eu-west-1", "AWS_BUCKET": "my-etl-bucket",
           "SNS_WEBHOOK_URL": "https://hooks.example.com:12000"}


class _Quiet:
    redact: set = set()

    def say(self, *args, **kwargs) -> None:
        pass


def _context():
    from etlboot import config
    from etlboot.engine import Context

    env_file = Path(tempfile.mkdtemp(prefix="strict-schemas-")) / ".env"
    return Context(config.load(env_file=env_file, environ=dict(ENVIRON)), _Quiet())


def sent_objects() -> list[tuple[str, dict]]:
    """(where it comes from, object) for every object the tool sends to the API server."""
    from aws import S3_SECRET, SECRET_ID_KEY, SECRET_KEY_KEY, SNS_SECRET
    from aws.steps import manifest_variables
    from etlboot import demo, ftpdemo, stack
    from etlboot import examples as ex
    from etlboot import webhook
    from etlboot import manifests as m
    from etlboot.kube import with_identity
    from etlboot.steps import ObjectStep, secret_object

    ctx = _context()
    s, namespace = ctx.settings, ctx.settings.namespace
    out: list[tuple[str, dict]] = []
    # the stack: exactly what `up` applies
    out += [(f"up:{step.name}", step.desired(ctx)) for step in stack.up_steps(ctx) if isinstance(step, ObjectStep)]
    # every manifests/ group as rendered (aws with its offline stand-in account id)
    values = {**m.variables(s), **manifest_variables(s)}
    for folder in sorted(p for p in m.MANIFESTS.iterdir() if p.is_dir()):
        out += [(f"manifests/{folder.name}", with_identity(doc, namespace)) for doc in m.render_group(folder.name, values)]
    # the examples as `examples.run` submits them (side objects applied, the Workflow created)
    for example in ex.CATALOG:
        labels = {ex.EXAMPLE_LABEL: example.name}
        for doc in ex.load(example, s):
            if doc["kind"] == "Workflow":
                doc = ex.with_parameters(doc, {}, example.name)
            out.append((f"examples.run {example.name}", with_identity(doc, namespace, labels)))
    out += [(f"examples.webhook:{step.name}", step.desired(ctx)) for step in webhook.webhook_steps(ctx)]
    # the AWS variant's credential Secrets (its Argo objects are manifests/aws, above)
    for secret in (SNS_SECRET, S3_SECRET):
        obj = secret_object(secret, {SECRET_ID_KEY: "AKIAIOSFODNN7EXAMPLE", SECRET_KEY_KEY: "wJalrXUtnFEMI/K7MDENG"})
        out.append((f"aws.setup:secret/{secret}", with_identity(obj, namespace)))
    # the FTP demo's upload
    uploads = demo.plan(next(iter(demo.DATASETS)))
    out.append(("demo.upload --target ftp", with_identity(ftpdemo.files_configmap(uploads), namespace)))
    out.append(("demo.upload --target ftp", with_identity(ftpdemo.upload_job(s), namespace)))
    return out


def unique(entries: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The first source of each distinct object (a manifest rendered for `up` is the step's object too)."""
    found, seen = [], set()
    for source, obj in entries:
        key = json.dumps(obj, sort_keys=True)
        if key not in seen:
            seen.add(key)
            found.append((source, obj))
    return found


ALL_SENT = sent_objects()
SENT = unique(ALL_SENT)
CORE = [(source, obj) for source, obj in SENT if not ss.is_argo(obj)]
ARGO = [(source, obj) for source, obj in SENT if ss.is_argo(obj)]


def ids(entries):
    return [f"{source}:{ss.where(obj)}" for source, obj in entries]


def test_everything_the_tool_sends_is_collected():
    kinds = {obj["kind"] for _, obj in SENT}
    assert kinds >= {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret", "ConfigMap",
                     "PersistentVolumeClaim", "Deployment", "Service", "Job"}
    assert kinds >= {"EventBus", "EventSource", "Sensor", "Workflow", "WorkflowTemplate", "CronWorkflow"}
    assert {obj["kind"] for _, obj in ARGO} <= set(ss.ARGO_KINDS)
    sources = {source.split(":")[0].split(" ")[0] for source, _ in ALL_SENT}
    assert {"up", "manifests/platform", "manifests/pipeline", "manifests/ftp", "manifests/examples",
            "manifests/webhook", "manifests/aws", "examples.run", "examples.webhook", "aws.setup",
            "demo.upload"} <= sources


# -- core Kubernetes objects -----------------------------------------------------------------------


def test_kubernetes_validate_has_the_1_34_schemas():
    assert ss.k8s_schema_version() == "1.34"


@pytest.mark.parametrize("source,obj", CORE, ids=ids(CORE))
def test_core_object_passes_kubernetes_validate_strictly(source, obj):
    assert ss.k8s_problems(obj) == []


def _first(kind: str, entries=None) -> dict:
    return copy.deepcopy(next(obj for _, obj in (entries or SENT) if obj["kind"] == kind))


def test_the_core_check_catches_unknown_fields_bad_quantities_and_bad_base64():
    deployment = _first("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    [problem] = ss.k8s_problems(deployment)
    assert "imagePullPolcy" in problem and ".spec.template.spec.containers[0]" in problem
    claim = _first("PersistentVolumeClaim")
    claim["spec"]["resources"]["requests"]["storage"] = "5 Gi"
    assert [p for p in ss.k8s_problems(claim) if ".spec.resources.requests.storage" in p]
    claim["spec"]["resources"]["requests"]["storage"] = 5368709120  # a JSON number is a quantity
    assert ss.k8s_problems(claim) == []
    secret = _first("Secret")
    secret["data"] = {"password": "not base64!"}
    assert [p for p in ss.k8s_problems(secret) if ".data.password" in p]
    assert ss.k8s_problems({"apiVersion": "v1", "kind": "Nonsense", "metadata": {"name": "x"}})


# -- Argo objects ----------------------------------------------------------------------------------


@needs_argo_schemas
@pytest.mark.parametrize("kind", sorted(ss.ARGO_KINDS))
def test_each_argo_kind_names_its_upstream_definition(kind):
    definition = ss.argo_definition(kind)
    assert definition["properties"]["kind"].get("const", kind) == kind
    assert definition["additionalProperties"] is False


@needs_argo_schemas
@pytest.mark.parametrize("source,obj", ARGO, ids=ids(ARGO))
def test_argo_object_is_valid_for_the_upstream_schema_with_unknown_fields_forbidden(source, obj):
    assert ss.argo_problems(obj) == []


@needs_argo_schemas
def test_the_argo_check_catches_unknown_fields_at_any_depth():
    workflow = _first("Workflow", ARGO)
    workflow["spec"]["entrypont"] = "main"
    workflow["spec"]["templates"][0]["metadata"] = {"lables": {}}
    problems = ss.argo_problems(workflow)
    assert any("'entrypont' was unexpected" in p for p in problems)
    assert any(".spec.templates[0].metadata" in p and "'lables'" in p for p in problems)
    template = _first("WorkflowTemplate", ARGO)
    body = template["spec"]["templates"][0].get("container") or template["spec"]["templates"][0]["script"]
    body["resources"] = {"limits": {"memory": "1 Gi"}}
    assert [p for p in ss.argo_problems(template) if "resources.limits.memory" in p]
    body["resources"] = {"limits": {"memory": "{{inputs.parameters.memory}}"}}  # Argo substitutes it first
    assert ss.argo_problems(template) == []
    source = _first("EventSource", ARGO)
    source["spec"]["bogus"] = {}
    assert any("'bogus' was unexpected" in p for p in ss.argo_problems(source))


@needs_argo_schemas
def test_the_argo_check_reads_a_sensor_trigger_resource_as_the_workflow_it_creates():
    sensor = next(obj for _, obj in ARGO if obj["kind"] == "Sensor"
                  and "k8s" in obj["spec"]["triggers"][0]["template"])
    k8s = sensor["spec"]["triggers"][0]["template"]["k8s"]
    typo = copy.deepcopy(sensor)
    typo["spec"]["triggers"][0]["template"]["k8s"]["source"]["resource"]["spec"]["argumets"] = {}
    assert any("source.resource" in p and "'argumets'" in p for p in ss.argo_problems(typo))
    if k8s.get("parameters"):
        wrong_dest = copy.deepcopy(sensor)
        wrong_dest["spec"]["triggers"][0]["template"]["k8s"]["parameters"][0]["dest"] = "spec.argument.x"
        assert any("with its parameters set" in p and "'argument'" in p for p in ss.argo_problems(wrong_dest))


@needs_argo_schemas
def test_int_or_string_takes_both_forms():
    template = _first("WorkflowTemplate", ARGO)
    for value in (3600, "3600", "{{workflow.parameters.deadline}}"):
        template["spec"]["templates"][0]["activeDeadlineSeconds"] = value
        assert ss.argo_problems(template) == []
    template["spec"]["templates"][0]["activeDeadlineSeconds"] = 36.5
    assert ss.argo_problems(template)


# -- Helm values -----------------------------------------------------------------------------------


def _values():
    from etlboot import stack

    ctx = _context()
    return {ss.EVENTS_VALUES: stack.argo_events_values(ctx), ss.WORKFLOWS_VALUES: stack.argo_workflows_values(ctx)}


@needs_chart_values
@pytest.mark.parametrize("chart", CHART_VALUES)
def test_every_helm_value_the_tool_sets_is_a_key_of_the_pinned_chart(chart):
    values = _values()[chart]
    assert values, "the tool sets no values for this chart?"
    assert ss.value_key_problems(values, chart) == []


@needs_chart_values
def test_the_values_check_knows_null_commented_and_free_keys_and_catches_the_rest():
    workflows, events = ss.WORKFLOWS_VALUES, ss.EVENTS_VALUES
    # present with a null default / only as a comment / under a free-form `{}`
    assert ss.value_key_problems({"fullnameOverride": "etl", "controller": {"parallelism": 5}}, workflows) == []
    assert ss.value_key_problems({"controller": {"persistence": {"archive": True}}}, workflows) == []
    assert ss.value_key_problems({"commonLabels": {"team": "etl"}}, workflows) == []
    assert ss.value_key_problems({"singleNamespace": True}, workflows) == []
    assert ss.value_key_problems({"controller": {"rbac": {"namespaced": True}}, "fullnameOverride": "e"},
                                 events) == []
    # keys one chart has and the other does not, typos, and a scalar over a mapping
    assert ss.value_key_problems({"singleNamespace": True}, events) == [
        f"singleNamespace: no key 'singleNamespace' in {events}"]
    assert ss.value_key_problems({"controller": {"rbac": {"namespaced": True}}}, workflows) == [
        f"controller.rbac.namespaced: no key 'controller.rbac.namespaced' in {workflows}"]
    assert ss.value_key_problems({"crds": {"instal": True}}, events) == [f"crds.instal: no key 'crds.instal' in {events}"]
    assert ss.value_key_problems({"crds": True}, workflows) == ["crds: a bool where the chart has a mapping"]
    assert ss.value_key_problems({"controller": {"workflowNamespaces": {"a": 1}}}, workflows) == [
        "controller.workflowNamespaces.a: controller.workflowNamespaces is a list in the chart, not a mapping"]
