"""manifests/aws: rendered with sample values, strictly checked with Hera's models, and wired together."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.hera_check import ManifestError, render_manifest, validate_argo_manifest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "manifests" / "aws").glob("*.yaml"))
#: the objects of each delivery (the WorkflowTemplate is shared)
SNS_FILES = ("eventsource.yaml", "sensor.yaml", "workflowtemplate.yaml")
SQS_FILES = ("eventsource-sqs.yaml", "sensor-sqs.yaml", "workflowtemplate.yaml")
#: applied only with AWS_ETL_ROLE_ARN (plain Kubernetes objects: tests/test_strict_schemas.py checks them)
ROLE_FILES = ("etl-serviceaccount.yaml",)
ARGO_FILES = [p for p in FILES if p.name not in ROLE_FILES]
AWS_VALUES = {
    "AWS_REGION": "eu-west-1", "AWS_BUCKET": "my-etl-bucket",
    "AWS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:argo-etl-s3-events",
    "SNS_WEBHOOK_URL": "https://hooks.example.com:12000", "SNS_WEBHOOK_PATH": "p" * 32,
    "SNS_WEBHOOK_PORT": "12000", "SNS_SECRET": "sns-credential", "S3_SECRET": "s3-credential",
    "AWS_QUEUE": "argo-etl-s3-events", "SQS_SECRET": "sqs-credential",
    "AWS_ETL_ROLE_ARN": "arn:aws:iam::123456789012:role/argo-etl-s3",
}


def docs(files=SNS_FILES) -> dict[str, dict]:
    return {doc["kind"]: doc for path in FILES if path.name in files for doc in render_manifest(path, **AWS_VALUES)}


def test_the_objects_of_both_deliveries_are_there():
    assert sorted(p.name for p in FILES) == sorted(set(SNS_FILES) | set(SQS_FILES) | set(ROLE_FILES))
    for files in (SNS_FILES, SQS_FILES):
        assert sorted(docs(files)) == ["EventSource", "Sensor", "WorkflowTemplate"]


@pytest.mark.parametrize("path", ARGO_FILES, ids=lambda p: p.name)
def test_each_manifest_passes_the_strict_hera_check(path):
    for doc in render_manifest(path, **AWS_VALUES):
        assert "namespace" not in doc["metadata"]
        assert "labels" not in doc["metadata"]  # the tool adds managed-by
        validate_argo_manifest(doc)


def test_the_strict_check_would_catch_a_typo():
    es = docs()["EventSource"]
    es["spec"]["sns"]["s3-events"]["validateSignatures"] = False
    with pytest.raises(ManifestError, match="validateSignatures"):
        validate_argo_manifest(es)


def test_eventsource_sensor_and_template_agree():
    d = docs()
    source = d["EventSource"]["spec"]["sns"]["s3-events"]
    assert source["topicArn"] == AWS_VALUES["AWS_TOPIC_ARN"] and source["region"] == "eu-west-1"
    assert source["webhook"]["endpoint"] == "/" + "p" * 32  # the unguessable path, Argo wants a leading /
    assert source["webhook"]["port"] == "12000" and source["webhook"]["url"] == AWS_VALUES["SNS_WEBHOOK_URL"]
    assert source["validateSignature"] is False  # see the comment in the manifest and the README
    assert source["accessKey"] == {"name": "sns-credential", "key": "accessKey"}
    assert d["EventSource"]["spec"]["service"]["ports"][0]["targetPort"] == 12000

    sensor = d["Sensor"]["spec"]
    dependency = sensor["dependencies"][0]
    assert (dependency["eventSourceName"], dependency["eventName"]) == (d["EventSource"]["metadata"]["name"],
                                                                        "s3-events")
    assert sensor["template"]["serviceAccountName"] == "operate-workflow-sa"
    trigger = sensor["triggers"][0]["template"]["k8s"]
    assert trigger["operation"] == "create"
    workflow = trigger["source"]["resource"]
    assert workflow["kind"] == "Workflow"
    assert workflow["spec"]["workflowTemplateRef"]["name"] == d["WorkflowTemplate"]["metadata"]["name"]
    (parameter,) = trigger["parameters"]
    assert parameter["src"] == {"dependencyName": dependency["name"], "dataKey": "body.Message"}
    assert parameter["dest"] == "spec.arguments.parameters.0.value"
    assert workflow["spec"]["arguments"]["parameters"][0]["name"] == "message"

    template = d["WorkflowTemplate"]["spec"]
    assert template["serviceAccountName"] == "argo-workflow"
    container = template["templates"][0]["container"]
    assert container["args"] == ["/code/s3_etl.py", "{{inputs.parameters.message}}"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-credential", "key": "accessKey"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s3-credential", "key": "secretKey"}
    assert env["AWS_REGION"]["value"] == "eu-west-1" and env["S3_ETL_BUCKET"]["value"] == "my-etl-bucket"
    assert template["volumes"][0]["configMap"]["name"] == "etl-code"
    assert container["volumeMounts"][0]["mountPath"] == "/code"


def test_manifest_variables_cover_every_placeholder_of_the_group(env_file, monkeypatch):
    """What aws.steps passes (or `invoke render` can pass offline) renders the whole group."""
    from aws.steps import manifest_variables
    from etlboot import manifests as m
    from etlboot.config import load

    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_BUCKET", "my-etl-bucket")
    settings = load()
    rendered = m.render_group("aws", {**m.variables(settings), **manifest_variables(settings)})
    assert {d["kind"] for d in rendered} == {"EventSource", "Sensor", "WorkflowTemplate", "ServiceAccount", "RoleBinding"}


def test_sqs_eventsource_and_sensor_agree():
    d = docs(SQS_FILES)
    assert d["EventSource"]["metadata"]["name"] == "aws-sqs" and d["Sensor"]["metadata"]["name"] == "aws-sqs-etl"
    source = d["EventSource"]["spec"]["sqs"]["s3-events"]
    assert (source["region"], source["queue"]) == ("eu-west-1", "argo-etl-s3-events")
    assert source["jsonBody"] is True  # the body is the S3 event as JSON, not base64 text
    assert source["dlq"] is True  # a body it cannot pass on stays in the queue: it ends in the dead-letter queue
    assert 1 <= source["waitTimeSeconds"] <= 20  # long polling (SQS allows at most 20)
    assert source["accessKey"] == {"name": "sqs-credential", "key": "accessKey"}
    assert source["secretKey"] == {"name": "sqs-credential", "key": "secretKey"}
    assert "webhook" not in source and "service" not in d["EventSource"]["spec"]  # nothing listens
    sensor = d["Sensor"]["spec"]
    dependency = sensor["dependencies"][0]
    assert (dependency["eventSourceName"], dependency["eventName"]) == ("aws-sqs", "s3-events")
    trigger = sensor["triggers"][0]["template"]["k8s"]
    (parameter,) = trigger["parameters"]
    assert parameter["src"] == {"dependencyName": dependency["name"], "dataKey": "body"}
    assert trigger["source"]["resource"]["spec"]["workflowTemplateRef"]["name"] == "s3-etl"


def test_the_etl_role_service_account_is_bound_to_the_executor_role():
    d = docs(ROLE_FILES)
    account = d["ServiceAccount"]["metadata"]
    assert account["name"] == "s3-etl"
    assert account["annotations"] == {"eks.amazonaws.com/role-arn": AWS_VALUES["AWS_ETL_ROLE_ARN"]}
    binding = d["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "argo-workflow-executor"}  # made by `invoke up` (manifests/platform)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "s3-etl"}]
