"""AWS_DELIVERY=sqs on moto's server: S3 -> SQS -> (read as the SQS EventSource reads) -> the Sensor's parameter
-> s3_etl.py -> Parquet; the four runs counted at the server; teardown twice; switching delivery; status with
the queue depth and dead letters. (No key or secret in any output, for both deliveries: test_errors.py.)

The SQS EventSource is read here as argo-events v1.9.10 `awssqs/start.go` does it: ReceiveMessage (up to 10,
long polling, VisibilityTimeout 120), the event data `{"messageId", "messageAttributes", "body"}` with the body
embedded as JSON (`jsonBody: true`), then DeleteMessage; with the SQS user's key from its Secret.
"""

from __future__ import annotations

import io
import json
import re

import boto3
import pyarrow.parquet as pq
from invoke import Context, Exit

from etlboot.tasks import aws as aws_tasks

from aws_testkit import NAMESPACE, REGION, run_steps
from test_chain import CSV, gjson_get, run_s3_etl, sensor_data_key, wait_for

QUEUE = "argo-etl-s3-events"
DLQ = QUEUE + "-dlq"
OURS = {"managed-by": "argo-etl-bootstrap"}


def run_task(fn, capsys, **kwargs) -> tuple[int, str]:
    try:
        fn(Context(), **kwargs)
        code = 0
    except Exit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def step_lines(out: str) -> dict[str, str]:
    return {line.split()[2]: line for line in out.splitlines() if line[:1] in "✓✗●○-" and len(line.split()) > 2}


class EventSource:
    """Reads the queue as the Argo Events SQS source does, with the key aws.setup stored for it."""

    def __init__(self, moto: str, creds: dict):
        self.client = boto3.client("sqs", region_name=REGION, endpoint_url=moto,
                                   aws_access_key_id=creds["accessKey"], aws_secret_access_key=creds["secretKey"])
        self.url = self.client.get_queue_url(QueueName=QUEUE)["QueueUrl"]

    def receive(self, wait: int = 1) -> list[dict]:
        answer = self.client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                                             VisibilityTimeout=120, AttributeNames=["SentTimestamp"],
                                             MessageAttributeNames=["All"])
        events = []
        for message in answer.get("Messages") or []:
            events.append({"messageId": message["MessageId"],
                           "messageAttributes": message.get("MessageAttributes") or {},
                           "body": json.loads(message["Body"])})  # jsonBody: the body embedded as JSON
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return events

    def until(self, predicate, timeout: float = 10.0) -> list[dict]:
        seen: list[dict] = []
        wait_for(lambda: seen.extend(self.receive(wait=0)) or predicate(seen), timeout=timeout)
        return seen


def test_s3_event_through_sqs_to_parquet(sqs_env, cluster, admin, moto):
    aws_tasks.setup(Context())
    bucket = sqs_env["AWS_BUCKET"]
    source = EventSource(moto, cluster.secret("sqs-credential"))
    data_key = sensor_data_key("aws-sqs-etl")
    creds = cluster.secret("s3-credential")

    # writing the notification made S3 send an s3:TestEvent to the queue: s3_etl.py ignores it
    (test_event,) = source.until(lambda seen: seen)
    assert test_event["body"]["Event"] == "s3:TestEvent"
    ignored = run_s3_etl(gjson_get(test_event, data_key), moto, creds)
    assert ignored.returncode == 0, ignored.stderr
    assert "s3:TestEvent" in ignored.stdout

    key = "input/day 1/scores+extra.csv"  # a space and a plus: S3 URL-encodes the key in the event
    admin.s3.put_object(Bucket=bucket, Key=key, Body=CSV.encode())
    admin.s3.put_object(Bucket=bucket, Key="elsewhere/ignored.csv", Body=CSV.encode())  # filtered by prefix
    admin.s3.put_object(Bucket=bucket, Key="input/notes.txt", Body=b"x")               # filtered by suffix
    (event,) = source.until(lambda seen: seen)
    assert source.receive(wait=1) == [], "only the input/*.csv object may be sent to the queue"
    record = event["body"]["Records"][0]
    assert record["s3"]["bucket"]["name"] == bucket
    assert record["s3"]["object"]["key"] != key and "+" in record["s3"]["object"]["key"]  # encoded on the wire

    parameter = gjson_get(event, data_key)  # what the Sensor puts into the workflow's parameter
    assert isinstance(parameter, str) and json.loads(parameter)["Records"]
    done = run_s3_etl(parameter, moto, creds)
    assert done.returncode == 0, done.stdout + done.stderr
    table = pq.read_table(io.BytesIO(admin.s3.get_object(Bucket=bucket, Key="output/day 1/scores+extra.parquet")
                                     ["Body"].read()))
    assert table.to_pylist() == [{"no": 1, "name": "aaa", "score": 70}, {"no": 2, "name": "bbb", "score": 80},
                                 {"no": 3, "name": "ccc", "score": 90}]
    # the EventSource deleted what it passed on: nothing is left, nothing went to the dead-letter queue
    for name in (QUEUE, DLQ):
        url = source.client.get_queue_url(QueueName=name)["QueueUrl"]
        depth = source.client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        assert depth["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_four_runs_counted_at_the_server(sqs_env, aws_server, cluster, admin, sqs, env_file, capsys):
    # 1. dry run: says what it would change; not one write request reaches AWS or Kubernetes
    code, out = run_task(aws_tasks.setup, capsys, dry_run=True)
    assert code == 0 and "would-change" in out
    for call in ("sqs:CreateQueue " + DLQ, "sqs:CreateQueue " + QUEUE, "iam:CreateUser argo-etl-sqs",
                 "s3:PutBucketNotificationConfiguration"):
        assert call in out
    assert "sns:" not in out and "SNS_WEBHOOK" not in out
    assert aws_server.writes() == [] and cluster.emulator.write_requests() == []
    assert sqs.list_queues().get("QueueUrls") is None

    # 2. run: makes it so
    code, out = run_task(aws_tasks.setup, capsys)
    assert code == 0 and " changed " in out
    assert {"sqs:CreateQueue", "iam:CreateUser", "iam:CreateAccessKey"} <= set(aws_server.writes())
    assert "SNS_WEBHOOK_PATH" not in (env_file.read_text() if env_file.exists() else "")  # sqs needs no webhook

    # 3. dry run: nothing would change
    aws_server.clear()
    code, out = run_task(aws_tasks.setup, capsys, dry_run=True)
    assert code == 0 and "would-change" not in out and "plan: nothing to do" in out
    assert aws_server.writes() == []

    # 4. run: every step ok, and no write request at all, counted where they arrive
    aws_server.clear()
    cluster.emulator.clear_log()
    code, out = run_task(aws_tasks.setup, capsys)
    assert code == 0 and " changed " not in out
    assert aws_server.writes() == [] and aws_server.reads()
    assert cluster.emulator.write_requests() == []

    # what run 2 made: the queue's redrive and policy, the DLQ's retention, all tagged
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=DLQ)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]["QueueArn"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn and int(redrive["maxReceiveCount"]) == 5
    (statement,) = json.loads(attributes["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"} and statement["Action"] == "SQS:SendMessage"
    assert statement["Resource"] == attributes["QueueArn"]
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"},
                                      "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{sqs_env['AWS_BUCKET']}"}}
    assert sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["MessageRetentionPeriod"])[
        "Attributes"]["MessageRetentionPeriod"] == "1209600"
    for queue_url in (url, dlq_url):
        assert sqs.list_queue_tags(QueueUrl=queue_url)["Tags"] == OURS
    (entry,) = admin.s3.get_bucket_notification_configuration(Bucket=sqs_env["AWS_BUCKET"])["QueueConfigurations"]
    assert entry["QueueArn"] == attributes["QueueArn"] and entry["Id"] == "argo-etl-bootstrap-input-csv"
    # the EventSource's user: the queue's messages and nothing else
    policy = admin.iam.get_user_policy(UserName="argo-etl-sqs", PolicyName="argo-etl-bootstrap")["PolicyDocument"]
    (allowed,) = policy["Statement"]
    assert sorted(allowed["Action"]) == ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                                         "sqs:ReceiveMessage"]
    assert allowed["Resource"] == attributes["QueueArn"] and allowed["Effect"] == "Allow"
    assert {u["UserName"] for u in admin.iam.list_users()["Users"]} == {"argo-etl-sqs", "argo-etl-s3"}
    assert admin.sns.list_topics()["Topics"] == []


def test_a_drifted_queue_is_put_back_and_other_policy_statements_are_kept(sqs_env, aws_server, cluster, sqs,
                                                                          monkeypatch):
    from aws.sqs_steps import QueueStep
    from aws.preflight_steps import PreflightStep
    from aws.steps import BucketStep

    steps = [PreflightStep(need_webhook=False), BucketStep(), QueueStep(dead_letter=True), QueueStep(dead_letter=False)]
    assert run_steps("up", *steps)[0] == 0
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    theirs = {"Sid": "AuditPeek", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
              "Action": "SQS:GetQueueAttributes", "Resource": arn}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        "Policy": json.dumps({"Version": "2012-10-17", "Statement": [theirs]}),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn + "-dlq", "maxReceiveCount": 99})})
    monkeypatch.setenv("AWS_QUEUE_MAX_RECEIVES", "3")

    aws_server.clear()
    assert run_steps("up", *steps)[0] == 0
    assert aws_server.writes() == ["sqs:SetQueueAttributes"]  # one call puts both back
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(json.loads(attributes["RedrivePolicy"])["maxReceiveCount"]) == 3
    by_sid = {s["Sid"]: s for s in json.loads(attributes["Policy"])["Statement"]}
    assert by_sid["AuditPeek"] == theirs and "ArgoEtlBootstrapS3Send" in by_sid

    aws_server.clear()
    assert run_steps("up", *steps)[0] == 0
    assert aws_server.writes() == []


def test_teardown_removes_only_ours_and_twice_is_nothing_to_do(sqs_env, aws_server, cluster, admin, sqs, capsys):
    bucket = sqs_env["AWS_BUCKET"]
    foreign = sqs.create_queue(QueueName="someone-elses-queue")["QueueUrl"]
    aws_tasks.setup(Context())
    admin.s3.put_object(Bucket=bucket, Key="input/data.csv", Body=CSV.encode())
    capsys.readouterr()

    code, out = run_task(aws_tasks.teardown, capsys, yes=True)
    assert code == 0 and "deleted" in out
    assert sqs.list_queues()["QueueUrls"] == [foreign]
    assert admin.iam.list_users()["Users"] == []
    assert cluster.secret("sqs-credential") is None and cluster.secret("s3-credential") is None
    for kind, name in (("EventSource", "aws-sqs"), ("Sensor", "aws-sqs-etl"), ("WorkflowTemplate", "s3-etl")):
        assert cluster.emulator.get(kind, name, NAMESPACE) is None
    assert "QueueConfigurations" not in admin.s3.get_bucket_notification_configuration(Bucket=bucket)
    assert admin.s3.get_object(Bucket=bucket, Key="input/data.csv")["Body"].read() == CSV.encode()  # data kept

    aws_server.clear()
    cluster.emulator.clear_log()
    code, out = run_task(aws_tasks.teardown, capsys, yes=True)  # twice: nothing to do
    assert code == 0 and "deleted" not in out
    assert aws_server.writes() == [] and cluster.emulator.write_requests() == []


def test_a_queue_of_our_name_we_did_not_make_stops_setup_before_anything(sqs_env, cluster, admin, sqs, capsys):
    sqs.create_queue(QueueName=QUEUE)  # same name, no tag
    code, out = run_task(aws_tasks.setup, capsys)
    assert code == 1
    assert f"SQS queue {QUEUE} exists but is not tagged managed-by=argo-etl-bootstrap" in out
    assert "nothing was created or changed" in out
    assert admin.s3.list_buckets()["Buckets"] == [] and admin.iam.list_users()["Users"] == []
    assert run_task(aws_tasks.teardown, capsys, yes=True)[0] == 0
    assert sqs.list_queues()["QueueUrls"]  # not ours: teardown leaves it


def test_switching_delivery_moves_our_entry_and_teardown_takes_both(aws_env, cluster, admin, sqs, webhook, capsys,
                                                                     monkeypatch):
    """sns-webhook first, then sqs: our notification entry (same Id) moves from the topic to the queue, another
    party's entry stays; teardown removes what either delivery made."""
    bucket = aws_env["AWS_BUCKET"]
    aws_tasks.setup(Context())  # the fixture's delivery: sns-webhook
    audit = admin.sns.create_topic(Name="audit")["TopicArn"]
    config = admin.s3.get_bucket_notification_configuration(Bucket=bucket)
    theirs = {"Id": "audit-deletes", "TopicArn": audit, "Events": ["s3:ObjectRemoved:*"]}
    admin.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "TopicConfigurations": config["TopicConfigurations"] + [theirs]})

    monkeypatch.setenv("AWS_DELIVERY", "sqs")
    capsys.readouterr()
    code, out = run_task(aws_tasks.setup, capsys, dry_run=True)
    assert code == 0 and "ours goes to the other delivery" in out
    assert run_task(aws_tasks.setup, capsys)[0] == 0
    config = admin.s3.get_bucket_notification_configuration(Bucket=bucket)
    assert [e["Id"] for e in config["TopicConfigurations"]] == ["audit-deletes"]
    assert [e["Id"] for e in config["QueueConfigurations"]] == ["argo-etl-bootstrap-input-csv"]

    assert run_task(aws_tasks.teardown, capsys, yes=True)[0] == 0
    assert [t["TopicArn"] for t in admin.sns.list_topics()["Topics"]] == [audit]
    assert sqs.list_queues().get("QueueUrls") is None
    assert admin.iam.list_users()["Users"] == []
    for kind, name in (("EventSource", "aws-sns"), ("EventSource", "aws-sqs"), ("Sensor", "aws-s3-etl"),
                       ("Sensor", "aws-sqs-etl")):
        assert cluster.emulator.get(kind, name, NAMESPACE) is None
    left = admin.s3.get_bucket_notification_configuration(Bucket=bucket)
    assert [e["Id"] for e in left["TopicConfigurations"]] == ["audit-deletes"] and "QueueConfigurations" not in left


def test_status_shows_the_queue_depth_and_dead_letters(sqs_env, aws_server, cluster, sqs, capsys):
    aws_tasks.setup(Context())
    capsys.readouterr()
    code, out = run_task(aws_tasks.status, capsys)
    lines = step_lines(out)
    assert code == 0, out
    assert re.search(rf"{QUEUE}: \d+ waiting, 0 in flight", lines["aws/sqs-queue"])  # the s3:TestEvent waits
    assert f"{DLQ}: 0 waiting, 0 in flight" in lines["aws/sqs-dlq"]

    dlq_url = sqs.get_queue_url(QueueName=DLQ)["QueueUrl"]
    sqs.send_message(QueueUrl=dlq_url, MessageBody=json.dumps({"Records": []}))  # an event that failed 5 times
    aws_server.clear()
    code, out = run_task(aws_tasks.status, capsys)
    line = step_lines(out)["aws/sqs-dlq"]
    assert code == 1 and line.startswith("✗") and "unhealthy" in line
    assert "1 event(s) the EventSource received 5 times" in line and "start-message-move-task" in line
    assert aws_server.writes() == []
    # doctor's check of them: the same reading, with where to look as its hint
    from etlboot import doctor
    capsys.readouterr()
    code, _ = run_steps("status", doctor.dead_letters_step())
    out = capsys.readouterr().out
    line = step_lines(out)["aws/sqs-dlq"]
    assert code == 1 and "1 event(s)" in line
    assert "hint:" in out and "eventsource-name=aws-sqs" in out[out.index(line):]
    # setup reports dead letters but does not wait for them to go away
    code, out = run_task(aws_tasks.setup, capsys)
    assert code == 0 and "1 event(s)" in step_lines(out)["aws/sqs-dlq"]


def test_sqs_needs_no_webhook_address_and_names_what_is_missing(sqs_env, aws_calls, env_file, capsys, monkeypatch):
    monkeypatch.delenv("AWS_BUCKET")
    code, out = run_task(aws_tasks.setup, capsys, dry_run=True)
    (line,) = [line for line in out.splitlines() if line.startswith("✗")]
    assert code == 1 and "AWS_BUCKET is not set" in line and "SNS_WEBHOOK_URL" not in line
    assert aws_calls == [] and not env_file.exists()


ES_ROLE = "arn:aws:iam::123456789012:role/argo-etl-eventsource"
ETL_ROLE = "arn:aws:iam::123456789012:role/argo-etl-s3"


def test_eks_roles_instead_of_access_keys(sqs_env, aws_server, cluster, admin, capsys, monkeypatch):
    """With both role ARNs: no IAM user, key or Secret; the EventSource assumes its role (roleARN), the ETL runs
    as the annotated ServiceAccount s3-etl; converged runs write nothing; teardown takes the ServiceAccount."""
    monkeypatch.setenv("AWS_EVENTSOURCE_ROLE_ARN", ES_ROLE)
    monkeypatch.setenv("AWS_ETL_ROLE_ARN", ETL_ROLE)
    code, out = run_task(aws_tasks.setup, capsys)
    assert code == 0, out
    assert admin.iam.list_users()["Users"] == []
    assert not any(c.operation.startswith(("CreateUser", "CreateAccessKey")) for c in aws_server.calls)
    assert cluster.secret("sqs-credential") is None and cluster.secret("s3-credential") is None

    source = cluster.emulator.get("EventSource", "aws-sqs", NAMESPACE)["spec"]["sqs"]["s3-events"]
    assert source["roleARN"] == ES_ROLE and "accessKey" not in source and "secretKey" not in source
    template = cluster.emulator.get("WorkflowTemplate", "s3-etl", NAMESPACE)["spec"]
    assert template["serviceAccountName"] == "s3-etl"
    env = {e["name"] for e in template["templates"][0]["container"]["env"]}
    assert env == {"AWS_REGION", "S3_ETL_BUCKET"}  # no key variables: boto3 takes the pod's identity
    account = cluster.emulator.get("ServiceAccount", "s3-etl", NAMESPACE)
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == ETL_ROLE
    binding = cluster.emulator.get("RoleBinding", "s3-etl-executor", NAMESPACE)
    assert binding["roleRef"]["name"] == "argo-workflow-executor"

    aws_server.clear()
    cluster.emulator.clear_log()
    code, out = run_task(aws_tasks.setup, capsys)
    assert code == 0 and " changed " not in out
    assert aws_server.writes() == [] and cluster.emulator.write_requests() == []

    assert run_task(aws_tasks.teardown, capsys, yes=True)[0] == 0
    for kind, name in (("ServiceAccount", "s3-etl"), ("RoleBinding", "s3-etl-executor"), ("EventSource", "aws-sqs")):
        assert cluster.emulator.get(kind, name, NAMESPACE) is None


def test_moving_from_keys_to_roles_leaves_nothing_behind_at_teardown(sqs_env, cluster, admin, capsys, monkeypatch):
    aws_tasks.setup(Context())  # IAM users and keys first
    assert {u["UserName"] for u in admin.iam.list_users()["Users"]} == {"argo-etl-sqs", "argo-etl-s3"}
    monkeypatch.setenv("AWS_EVENTSOURCE_ROLE_ARN", ES_ROLE)
    monkeypatch.setenv("AWS_ETL_ROLE_ARN", ETL_ROLE)
    assert run_task(aws_tasks.setup, capsys)[0] == 0
    source = cluster.emulator.get("EventSource", "aws-sqs", NAMESPACE)["spec"]["sqs"]["s3-events"]
    assert "accessKey" not in source  # the server-side apply dropped the key fields
    assert run_task(aws_tasks.teardown, capsys, yes=True)[0] == 0
    assert admin.iam.list_users()["Users"] == []  # the users the earlier setup made went too
    assert cluster.secret("sqs-credential") is None and cluster.secret("s3-credential") is None


def test_a_role_setting_must_be_a_role_arn(sqs_env, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ETL_ROLE_ARN", "argo-etl-s3")
    code, out = run_task(aws_tasks.setup, capsys, dry_run=True)
    assert code != 0 and "AWS_ETL_ROLE_ARN='argo-etl-s3' is not an IAM role ARN" in out
