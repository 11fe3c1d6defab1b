"""The whole chain on loopback: S3 -> SNS -> (webhook stand-in) -> Sensor parameter -> s3_etl.py -> Parquet.

moto's S3 publishes the bucket's notifications through the SNS topic aws.setup configured, and SNS
POSTs them to a local HTTP endpoint standing in for the EventSource's webhook. What arrives is turned
into the event the Sensor sees (`{"header":…, "body": <SNS envelope>}`), the parameter is taken with
the dataKey written in manifests/aws/sensor.yaml, and code/s3_etl.py runs as in the pod, with the
credentials aws.setup stored in the s3-credential Secret.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
from invoke import Context

from etlboot import PROJECT_ROOT
from etlboot import manifests as m
from etlboot.config import load
from etlboot.report import plain_reporter
from etlboot.tasks import aws as aws_tasks

from aws_testkit import REGION, run_steps

S3_ETL = PROJECT_ROOT / "code" / "s3_etl.py"
CSV = "1,aaa,70\n2,bbb,80\n3,ccc,90\n"


def sensor_data_key(name: str = "aws-s3-etl") -> str:
    """The dataKey the Sensor `name` passes to the workflow, read from the manifest itself."""
    from aws.steps import manifest_variables

    settings = load()
    docs = m.render_group("aws", {**m.variables(settings), **manifest_variables(settings, "123456789012")})
    sensor = next(d for d in docs if d["kind"] == "Sensor" and d["metadata"]["name"] == name)
    (parameter,) = sensor["spec"]["triggers"][0]["template"]["k8s"]["parameters"]
    assert parameter["dest"] == "spec.arguments.parameters.0.value"
    return parameter["src"]["dataKey"]


def gjson_get(data, path: str):
    """The subset of gjson paths the Sensor uses: dot-separated keys."""
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    # gjson's String(): a string as is, anything else as its JSON text
    return data if isinstance(data, str) else json.dumps(data)


def sensor_parameter(delivery: dict) -> str:
    event = {"header": {k: [v] for k, v in delivery["headers"].items()}, "body": delivery["body"]}
    return gjson_get(event, sensor_data_key())


def run_s3_etl(argument: str, moto, creds: dict) -> subprocess.CompletedProcess:
    """As in the pod: `python s3_etl.py MESSAGE` with the credentials of a Secret in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=creds["accessKey"], AWS_SECRET_ACCESS_KEY=creds["secretKey"], AWS_REGION=REGION,
               AWS_ENDPOINT_URL=moto, S3_ETL_BUCKET=os.environ["AWS_BUCKET"])
    return subprocess.run([sys.executable, str(S3_ETL), argument], env=env, capture_output=True, text=True,
                          timeout=60)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_s3_event_through_sns_to_parquet(aws_env, cluster, admin, moto, webhook, capsys):
    aws_tasks.setup(Context())  # setup's own notification write sent a TestEvent: to the stand-in webhook
    bucket = aws_env["AWS_BUCKET"]
    path = "/" + load().values["SNS_WEBHOOK_PATH"]
    assert wait_for(lambda: len(webhook.received) >= 1)
    webhook.received.clear()

    # re-writing the notification makes S3 send an s3:TestEvent through the topic
    config = admin.s3.get_bucket_notification_configuration(Bucket=bucket)
    config.pop("ResponseMetadata")
    admin.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    assert wait_for(lambda: len(webhook.received) >= 1)
    test_event = webhook.received[0]
    assert test_event["body"]["Type"] == "Notification"
    assert json.loads(test_event["body"]["Message"])["Event"] == "s3:TestEvent"
    creds = cluster.secret("s3-credential")  # the ETL user's key, as aws.setup stored it
    ignored = run_s3_etl(sensor_parameter(test_event), moto, creds)
    assert ignored.returncode == 0, ignored.stderr
    assert "s3:TestEvent" in ignored.stdout

    # a key with a space and a plus: S3 form-encodes it in the notification
    key = "input/day 1/scores+extra.csv"
    admin.s3.put_object(Bucket=bucket, Key=key, Body=CSV.encode())
    admin.s3.put_object(Bucket=bucket, Key="elsewhere/ignored.csv", Body=CSV.encode())  # filtered by prefix
    admin.s3.put_object(Bucket=bucket, Key="input/notes.txt", Body=b"x")               # filtered by suffix
    assert wait_for(lambda: len(webhook.received) >= 2)
    time.sleep(0.3)
    assert len(webhook.received) == 2, "only the input/*.csv object may be notified"
    delivery = webhook.received[1]
    assert delivery["path"] == path  # the EventSource's unguessable endpoint
    message = json.loads(delivery["body"]["Message"])
    encoded = message["Records"][0]["s3"]["object"]["key"]
    assert encoded != key and "+" in encoded  # encoded on the wire

    parameter = sensor_parameter(delivery)
    assert isinstance(parameter, str) and json.loads(parameter)["Records"]
    done = run_s3_etl(parameter, moto, creds)
    assert done.returncode == 0, done.stdout + done.stderr
    out = admin.s3.get_object(Bucket=bucket, Key="output/day 1/scores+extra.parquet")["Body"].read()
    table = pq.read_table(io.BytesIO(out))
    assert table.to_pylist() == [{"no": 1, "name": "aaa", "score": 70}, {"no": 2, "name": "bbb", "score": 80},
                                 {"no": 3, "name": "ccc", "score": 90}]
    assert table.schema.field("score").type == pa.int64()


def test_demo_upload_verifies_the_parquet_the_pipeline_writes(aws_env, cluster, admin, moto, webhook, tmp_path,
                                                              fake_credentials):
    """demo_upload against a stand-in pipeline: every SNS delivery runs s3_etl.py, as the Sensor would."""
    from aws.preflight_steps import PreflightStep
    from aws.steps import BucketStep, NotificationStep, TopicStep, webhook_endpoint

    assert run_steps("up", PreflightStep(), BucketStep(), TopicStep(), NotificationStep())[0] == 0
    topic = admin.sns.list_topics()["Topics"][0]["TopicArn"]
    admin.sns.subscribe(TopicArn=topic, Protocol="https", Endpoint=webhook_endpoint(load()))  # as the EventSource
    creds = {"accessKey": fake_credentials["AWS_ACCESS_KEY_ID"], "secretKey": fake_credentials["AWS_SECRET_ACCESS_KEY"]}
    stop = threading.Event()
    results = []

    def pipeline():
        seen = 0
        while not stop.is_set():
            if len(webhook.received) > seen:
                results.append(run_s3_etl(sensor_parameter(webhook.received[seen]), moto, creds))
                seen += 1
            time.sleep(0.05)

    worker = threading.Thread(target=pipeline, daemon=True)
    worker.start()
    sample = tmp_path / "test.csv"
    sample.write_text("1,aaa,70\n2,bbb,80\n3,ccc,90\n4,ddd,100\nfive,eee,1\n")
    out = io.StringIO()
    try:
        ok = aws_tasks.demo_upload(load(), plain_reporter(file=out), source=sample, timeout=20, interval=0.2)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert ok, out.getvalue() + "".join(r.stdout + r.stderr for r in results)
    assert "4 rows as expected" in out.getvalue() and "1 rejected" in out.getvalue()


def test_demo_upload_fails_when_the_output_is_wrong_or_missing(aws_env, admin, moto, tmp_path):
    sample = tmp_path / "test.csv"
    sample.write_text(CSV)
    bucket = aws_env["AWS_BUCKET"]
    admin.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    stop = threading.Event()

    def wrong_pipeline():  # writes a Parquet with one row too few for every upload
        done = set()
        while not stop.is_set():
            for obj in admin.s3.list_objects_v2(Bucket=bucket, Prefix="input/").get("Contents") or []:
                if obj["Key"] not in done:
                    done.add(obj["Key"])
                    sink = io.BytesIO()
                    pq.write_table(pa.table({"no": pa.array([1], pa.int64()), "name": ["aaa"],
                                             "score": pa.array([70], pa.int64())}), sink)
                    name = obj["Key"][len("input/"):-len(".csv")]
                    admin.s3.put_object(Bucket=bucket, Key=f"output/{name}.parquet", Body=sink.getvalue())
            time.sleep(0.05)

    worker = threading.Thread(target=wrong_pipeline, daemon=True)
    worker.start()
    out = io.StringIO()
    try:
        ok = aws_tasks.demo_upload(load(), plain_reporter(file=out), source=sample, timeout=10, interval=0.2)
    finally:
        stop.set()
        worker.join(timeout=10)
    assert not ok
    assert "differ" in out.getvalue()

    out = io.StringIO()  # nothing processes the upload: a bounded wait, then False
    marks = []

    def failed_workflow(mark: str) -> list[dict]:  # what the cluster shows: the S3 ETL workflow failed
        marks.append(mark)
        return [{"metadata": {"name": "s3-etl-x7k2p"}, "status": {"phase": "Failed", "message": "child failed"}}]

    started = time.monotonic()
    assert not aws_tasks.demo_upload(load(), plain_reporter(file=out), source=sample, timeout=1, interval=0.2,
                                     workflows=failed_workflow)
    assert time.monotonic() - started < 15
    assert "no output after" in out.getvalue()
    # the shared follower drew the workflow of this upload, asked for by a mark that is in the uploaded key
    assert "s3-etl-x7k2p: Failed  child failed" in out.getvalue()
    uploaded = [o["Key"] for o in admin.s3.list_objects_v2(Bucket=bucket, Prefix="input/demo/")["Contents"]]
    assert marks and any(marks[0] in key for key in uploaded)
    from etlboot.demo import last_upload   # `invoke trace` starts from the last key sent, as an S3 key
    target, last = last_upload(load())
    assert target == "aws" and last in uploaded and marks[0] in last


def deliveries(webhook, key: str) -> dict[str, dict]:
    """The deliveries naming `key` so far, by their S3 event name (Records[0].eventName)."""
    from urllib.parse import unquote_plus

    found = {}
    for delivery in list(webhook.received):
        message = json.loads(delivery["body"]["Message"])
        for record in message.get("Records") or []:
            if unquote_plus(record["s3"]["object"]["key"]) == key:
                found[record["eventName"]] = delivery
    return found


def test_multipart_and_copy_uploads_reach_the_pipeline(aws_env, cluster, admin, moto, webhook):
    """`aws s3 cp` and boto3 upload in parts above their threshold (CompleteMultipartUpload), and a copy
    arrives as Copy: both must fire, not only a plain PUT."""
    import boto3
    from boto3.s3.transfer import TransferConfig

    aws_tasks.setup(Context())
    bucket = aws_env["AWS_BUCKET"]
    creds = cluster.secret("s3-credential")
    assert wait_for(lambda: len(webhook.received) >= 1)  # the s3:TestEvent of setup's notification write

    # boto3's own transfer manager, told to use parts for anything: what it does above 8 MB by default
    uploader = boto3.client("s3", region_name=REGION, endpoint_url=moto)
    uploader.upload_fileobj(io.BytesIO(CSV.encode()), bucket, "input/parts.csv",
                            Config=TransferConfig(multipart_threshold=1, use_threads=False))
    assert wait_for(lambda: "ObjectCreated:CompleteMultipartUpload" in deliveries(webhook, "input/parts.csv"))

    admin.s3.put_object(Bucket=bucket, Key="staging/ready.csv", Body=CSV.encode())  # outside input/: no event
    admin.s3.copy_object(Bucket=bucket, Key="input/copied.csv",
                         CopySource={"Bucket": bucket, "Key": "staging/ready.csv"})
    assert wait_for(lambda: "ObjectCreated:Copy" in deliveries(webhook, "input/copied.csv"))
    assert deliveries(webhook, "staging/ready.csv") == {}

    for key, event in (("input/parts.csv", "ObjectCreated:CompleteMultipartUpload"),
                       ("input/copied.csv", "ObjectCreated:Copy")):
        done = run_s3_etl(sensor_parameter(deliveries(webhook, key)[event]), moto, creds)
        assert done.returncode == 0, done.stdout + done.stderr
        name = key[len("input/"):-len(".csv")]
        parquet = admin.s3.get_object(Bucket=bucket, Key=f"output/{name}.parquet")["Body"].read()
        table = pq.read_table(io.BytesIO(parquet))
        assert table.num_rows == 3
