"""`trace --target aws` on moto's server (S3, SQS) and the emulator (pods, logs, Workflows): an S3 key from the
object through the SQS delivery, the EventSource, the Sensor and the Workflow to its Parquet, broken at each link
in turn, and a whole journey complete; nothing written in the cluster or in AWS."""

from __future__ import annotations

import io
import json
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from invoke import Context

from etlboot import config
from etlboot.cli import make_context
from etlboot.tasks import aws as aws_tasks
from etlboot.trace import render, trace

from aws_testkit import NAMESPACE

KEY = "input/demo/test 20991231.csv"
OUTPUT = "output/demo/test 20991231.parquet"
EVENT_ID = "sqs-event-1"


@pytest.fixture
def made(sqs_env, aws_server, cluster, admin):
    """aws.setup done (the queue, its dead-letter queue, the notification); then only reads are allowed."""
    aws_tasks.setup(Context())
    aws_server.clear()
    cluster.emulator.clear_log()
    return sqs_env


def journey(cluster, aws_server, key: str = KEY):
    ctx = make_context(config.load())
    try:
        found = trace(ctx, key, "aws")
    finally:
        ctx.close()
    assert aws_server.writes() == [] and cluster.emulator.write_requests() == []
    return found, "\n".join(render(found))


def pod(cluster, name: str, labels: dict, *records: dict) -> None:
    cluster.emulator.put_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE,
                                                                                 "labels": labels},
                                 "status": {"phase": "Running"}})
    cluster.emulator.set_pod_log(NAMESPACE, name, "".join(
        json.dumps({"level": "info", "ts": "2099-01-01T00:00:00Z", **r}) + "\n" for r in records))


def workflow(cluster, phase: str, key: str = KEY) -> None:
    event = {"Records": [{"eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": "b"}, "object": {"key": quote_plus(key, safe="/")}}}]}
    cluster.emulator.put_object({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": f"s3-etl-{phase.lower()}", "namespace": NAMESPACE,
                     "labels": {"events.argoproj.io/sensor": "aws-sqs-etl"}},
        "spec": {"workflowTemplateRef": {"name": "s3-etl"},
                 "arguments": {"parameters": [{"name": "message", "value": json.dumps(event)}]}},
        "status": {"phase": phase, "startedAt": "2099-01-01T00:00:01Z", "finishedAt": "2099-01-01T00:00:04Z",
                   "nodes": {}}})


def links(found) -> list[tuple[str, bool | None]]:
    return [(link.name, link.ok) for link in found.links]


def test_a_missing_object_breaks_at_the_object(made, cluster, aws_server):
    found, text = journey(cluster, aws_server)
    assert found.broken.name == "object" and "is not in S3" in found.broken.detail
    assert [name for name, _ in links(found)] == ["object", "delivery", "eventsource", "sensor", "workflow", "output"]


def test_dead_letters_with_nothing_come_of_the_upload_break_at_the_delivery(made, cluster, aws_server, admin, sqs):
    admin.s3.put_object(Bucket=made["AWS_BUCKET"], Key=KEY, Body=b"1,a,1\n")
    found, _ = journey(cluster, aws_server)
    assert links(found)[:3] == [("object", True), ("delivery", True), ("eventsource", False)]
    assert "passed no event on since the upload" in found.broken.cause
    dlq = sqs.get_queue_url(QueueName="argo-etl-s3-events-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"Records": []}))
    found, _ = journey(cluster, aws_server)
    assert found.broken.name == "delivery" and "1 event(s)" in found.broken.detail
    assert "eventsource-name=aws-sqs" in found.broken.cause
    # the dead letters are the queue's, not necessarily this upload's: once its workflow is there, it held
    pod(cluster, "aws-sqs-eventsource-pod", {"eventsource-name": "aws-sqs"},
        {"msg": "Succeeded to publish an event", "eventID": EVENT_ID})
    pod(cluster, "aws-sqs-etl-sensor-pod", {"sensor-name": "aws-sqs-etl"},
        {"msg": "Successfully processed trigger 's3-etl-workflow'", "triggeredByEvents": [EVENT_ID]})
    workflow(cluster, "Failed")
    found, _ = journey(cluster, aws_server)
    assert found.broken.name == "workflow" and links(found)[1] == ("delivery", True)


def test_the_whole_journey_through_the_form_encoded_key(made, cluster, aws_server, admin):
    bucket = made["AWS_BUCKET"]
    admin.s3.put_object(Bucket=bucket, Key=KEY, Body=b"1,a,1\n2,b,2\n")
    pod(cluster, "aws-sqs-eventsource-pod", {"eventsource-name": "aws-sqs"},
        {"msg": "Succeeded to publish an event", "eventID": EVENT_ID})
    pod(cluster, "aws-sqs-etl-sensor-pod", {"sensor-name": "aws-sqs-etl"},
        {"msg": "Successfully processed trigger 's3-etl-workflow'", "triggeredByEvents": [EVENT_ID]})
    workflow(cluster, "Succeeded", key="input/demo/another.csv")   # another key's: not ours
    found, _ = journey(cluster, aws_server)
    assert found.broken.name == "sensor"
    workflow(cluster, "Succeeded")
    found, _ = journey(cluster, aws_server)
    assert found.broken.name == "output" and f"s3://{bucket}/{OUTPUT} is missing" == found.broken.detail
    sink = io.BytesIO()
    pq.write_table(pa.table({"no": [1, 2], "name": ["a", "b"], "score": [1, 2]}), sink)
    admin.s3.put_object(Bucket=bucket, Key=OUTPUT, Body=sink.getvalue())
    found, text = journey(cluster, aws_server)
    assert found.broken is None and all(ok for _, ok in links(found)), text
    assert f"{OUTPUT}: 2 rows; no rejects" in text and "s3-etl-succeeded: Succeeded in 3s" in text
    assert "complete: every link holds" in text and "testing" not in text   # no key or secret shown
