"""aws.setup / aws.status / aws.teardown against moto's server and the Kubernetes API emulator."""

from __future__ import annotations

import json

import pytest
from invoke import Context, Exit

from etlboot.tasks import aws as aws_tasks

from aws_testkit import NAMESPACE, run_steps


def writes(calls):
    return [f"{service}:{operation}" for service, operation, w in calls if w]


def test_setup_four_runs_converge_then_change_nothing(aws_env, aws_calls, cluster, admin, capsys):
    c = Context()
    # 1. dry run: says what it would change, touches nothing
    aws_tasks.setup(c, dry_run=True)
    out = capsys.readouterr().out
    assert "would-change" in out
    assert "s3:CreateBucket" in out and "sns:CreateTopic" in out and "iam:CreateUser" in out
    assert writes(aws_calls) == []
    assert admin.s3.list_buckets()["Buckets"] == []
    assert cluster.emulator.write_requests() == []

    # 2. run: creates everything
    aws_calls.clear()
    aws_tasks.setup(c)
    out = capsys.readouterr().out
    assert "changed" in out
    assert "s3:CreateBucket" in writes(aws_calls)
    assert cluster.secret("sns-credential") and cluster.secret("s3-credential")

    # 3. dry run: nothing to do
    aws_calls.clear()
    aws_tasks.setup(c, dry_run=True)
    out = capsys.readouterr().out
    assert "would-change" not in out
    assert "plan: nothing to do" in out
    assert writes(aws_calls) == []

    # 4. run: all ok, not one write call to AWS or Kubernetes
    aws_calls.clear()
    cluster.emulator.clear_log()
    aws_tasks.setup(c)
    out = capsys.readouterr().out
    assert " changed " not in out and "would-change" not in out
    assert writes(aws_calls) == []
    assert cluster.emulator.write_requests() == []


def run_quietly(fn, *args, **kwargs) -> int:
    """Run a task; its exit code (0 when it returned)."""
    try:
        fn(Context(), *args, **kwargs)
        return 0
    except Exit as exc:
        return exc.code


def test_teardown_removes_only_what_is_tagged_and_twice_is_fine(aws_env, aws_calls, cluster, admin, capsys):
    bucket = aws_env["AWS_BUCKET"]
    foreign_topic = admin.sns.create_topic(Name="someone-elses-topic")["TopicArn"]
    admin.iam.create_user(UserName="someone-else")
    aws_tasks.setup(Context())
    admin.s3.put_object(Bucket=bucket, Key="input/data.csv", Body=b"1,aaa,70\n")
    capsys.readouterr()

    aws_tasks.teardown(Context(), yes=True)
    out = capsys.readouterr().out
    assert "deleted" in out
    assert [t["TopicArn"] for t in admin.sns.list_topics()["Topics"]] == [foreign_topic]
    assert [u["UserName"] for u in admin.iam.list_users()["Users"]] == ["someone-else"]
    assert cluster.secret("sns-credential") is None and cluster.secret("s3-credential") is None
    for kind, name in (("EventSource", "aws-sns"), ("Sensor", "aws-s3-etl"), ("WorkflowTemplate", "s3-etl")):
        assert cluster.emulator.get(kind, name, NAMESPACE) is None
    assert cluster.emulator.get("ConfigMap", "etl-code", NAMESPACE) is not None  # `up`'s, not ours
    # the bucket and its data stay (no --delete-bucket); our notification entry is gone
    assert admin.s3.get_object(Bucket=bucket, Key="input/data.csv")["Body"].read() == b"1,aaa,70\n"
    assert "TopicConfigurations" not in admin.s3.get_bucket_notification_configuration(Bucket=bucket)

    aws_calls.clear()
    aws_tasks.teardown(Context(), yes=True)  # twice: nothing left to do, nothing fails
    assert "deleted" not in capsys.readouterr().out
    assert [c for c in aws_calls if c[2]] == []

    aws_tasks.teardown(Context(), yes=True, delete_bucket=True)  # now the bucket and its data go
    assert bucket not in [b["Name"] for b in admin.s3.list_buckets()["Buckets"]]


def test_teardown_dry_run_and_delete_bucket_spare_a_bucket_we_did_not_create(aws_env, aws_calls, cluster, admin):
    from aws.preflight_steps import PreflightStep
    from aws.steps import BucketStep, TopicStep

    bucket = aws_env["AWS_BUCKET"]
    admin.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    admin.s3.put_object(Bucket=bucket, Key="input/keep.csv", Body=b"1,aaa,70\n")
    steps = [PreflightStep(), BucketStep(), TopicStep()]
    assert run_steps("up", *steps)[0] == 0  # adopts the existing bucket as is (no tag added)
    aws_calls.clear()
    assert run_steps("down", *steps, dry_run=True, delete_bucket=True)[0] == 0
    assert [c for c in aws_calls if c[2]] == []
    assert admin.sns.list_topics()["Topics"]
    assert run_steps("down", *steps, delete_bucket=True)[0] == 0
    assert admin.s3.head_object(Bucket=bucket, Key="input/keep.csv")  # not ours: never deleted
    assert admin.sns.list_topics()["Topics"] == []


def test_status_on_half_built_state(aws_env, aws_calls, cluster, admin, capsys):
    from aws import TAGS

    admin.s3.create_bucket(Bucket=aws_env["AWS_BUCKET"], CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    admin.s3.put_bucket_tagging(Bucket=aws_env["AWS_BUCKET"], Tagging={"TagSet": TAGS})
    admin.sns.create_topic(Name="argo-etl-s3-events", Tags=TAGS)  # without our policy statement
    capsys.readouterr()
    assert run_quietly(aws_tasks.status) == 1
    out = capsys.readouterr().out
    lines = {line.split()[2]: line for line in out.splitlines() if line[:1] in "✓✗" and len(line.split()) > 2}
    assert lines["aws/s3-bucket"].startswith("✓")
    assert "drifted" in lines["aws/sns-topic"] and "SetTopicAttributes" in lines["aws/sns-topic"]
    assert "missing" in lines["aws/iam-user-sns"] and "missing" in lines["aws/credentials-s3"]
    assert "missing" in lines["aws/eventsource/aws-sns"]
    assert "no subscription yet" in lines["aws/sns-subscription"]
    assert "missing" in lines["aws/s3-notification"]
    assert [c for c in aws_calls if c[2]] == []
    assert cluster.emulator.write_requests() == []


def test_status_explains_a_pending_subscription(aws_env, cluster, admin, capsys, monkeypatch):
    from aws import TAGS
    from aws import sns as sns_api
    from aws.preflight_steps import PreflightStep
    from aws.steps import SubscriptionStep, webhook_endpoint
    from etlboot.config import load

    arn = admin.sns.create_topic(Name="argo-etl-s3-events", Tags=TAGS)["TopicArn"]
    admin.sns.subscribe(TopicArn=arn, Protocol="https", Endpoint=webhook_endpoint(load()))
    monkeypatch.setattr(sns_api, "subscription_pending", lambda sns, arn: True)  # moto confirms at once
    capsys.readouterr()
    assert run_steps("status", PreflightStep(), SubscriptionStep())[0] == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if "aws/sns-subscription" in line)
    assert "pending confirmation" in line and "cannot reach" in line


def notification_steps():
    from aws.preflight_steps import PreflightStep
    from aws.steps import BucketStep, NotificationStep, TopicStep

    return [PreflightStep(), BucketStep(), TopicStep(), NotificationStep()]


def test_someone_elses_notification_entry_survives_setup_and_teardown(aws_env, cluster, admin):
    bucket = aws_env["AWS_BUCKET"]
    admin.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    other_topic = admin.sns.create_topic(Name="audit")["TopicArn"]
    theirs = {"Id": "audit-deletes", "TopicArn": other_topic, "Events": ["s3:ObjectRemoved:*"]}
    admin.s3.put_bucket_notification_configuration(Bucket=bucket,
                                                   NotificationConfiguration={"TopicConfigurations": [theirs]})

    assert run_steps("up", *notification_steps())[0] == 0
    ids = {e["Id"]: e for e in admin.s3.get_bucket_notification_configuration(Bucket=bucket)["TopicConfigurations"]}
    assert set(ids) == {"audit-deletes", "argo-etl-bootstrap-input-csv"}
    assert ids["audit-deletes"]["TopicArn"] == other_topic and ids["audit-deletes"]["Events"] == ["s3:ObjectRemoved:*"]
    ours = ids["argo-etl-bootstrap-input-csv"]
    assert ours["Events"] == ["s3:ObjectCreated:*"]  # Put, Post, Copy and CompleteMultipartUpload alike
    assert sorted((r["Name"].lower(), r["Value"]) for r in ours["Filter"]["Key"]["FilterRules"]) == [
        ("prefix", "input/"), ("suffix", ".csv")]

    assert run_steps("down", *notification_steps())[0] == 0
    left = admin.s3.get_bucket_notification_configuration(Bucket=bucket)["TopicConfigurations"]
    assert [e["Id"] for e in left] == ["audit-deletes"]


def test_our_old_put_only_entry_is_replaced_and_the_others_kept(aws_env, aws_server, cluster, admin):
    """An entry an earlier version wrote (same Id, ObjectCreated:Put only) becomes ObjectCreated:*."""
    from aws import NOTIFICATION_ID

    bucket = aws_env["AWS_BUCKET"]
    admin.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    topic = admin.sns.create_topic(Name="argo-etl-s3-events", Tags=[{"Key": "managed-by",
                                                                     "Value": "argo-etl-bootstrap"}])["TopicArn"]
    audit = admin.sns.create_topic(Name="audit")["TopicArn"]
    old = {"Id": NOTIFICATION_ID, "TopicArn": topic, "Events": ["s3:ObjectCreated:Put"],
           "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "input/"},
                                              {"Name": "suffix", "Value": ".csv"}]}}}
    theirs = [{"Id": "audit-deletes", "TopicArn": audit, "Events": ["s3:ObjectRemoved:*"]},
              {"Id": "archive-copies", "TopicArn": audit, "Events": ["s3:ObjectCreated:*"],
               "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "archive/"}]}}}]
    admin.s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"TopicConfigurations": [old, *theirs]})

    def entries():
        got = admin.s3.get_bucket_notification_configuration(Bucket=bucket)["TopicConfigurations"]
        return {e["Id"]: e for e in got}

    before = entries()
    assert run_steps("up", *notification_steps())[0] == 0
    after = entries()
    assert set(after) == {NOTIFICATION_ID, "audit-deletes", "archive-copies"}
    assert after[NOTIFICATION_ID]["Events"] == ["s3:ObjectCreated:*"]
    assert after[NOTIFICATION_ID]["TopicArn"] == topic
    assert after["audit-deletes"] == before["audit-deletes"] and after["archive-copies"] == before["archive-copies"]
    assert "s3:PUT /" + bucket + "?notification" in aws_server.writes()

    aws_server.clear()  # converged: the next run leaves the configuration alone
    assert run_steps("up", *notification_steps())[0] == 0
    assert aws_server.writes() == []


def test_existing_topic_policy_statements_are_kept(aws_env, cluster, admin):
    from aws import TAGS
    from aws.preflight_steps import PreflightStep
    from aws.steps import TopicStep

    arn = admin.sns.create_topic(Name="argo-etl-s3-events", Tags=TAGS)["TopicArn"]
    audit = {"Sid": "AuditRead", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
             "Action": "SNS:GetTopicAttributes", "Resource": arn}
    admin.sns.set_topic_attributes(TopicArn=arn, AttributeName="Policy",
                                   AttributeValue=json.dumps({"Version": "2008-10-17", "Statement": [audit]}))
    assert run_steps("up", PreflightStep(), TopicStep())[0] == 0
    policy = json.loads(admin.sns.get_topic_attributes(TopicArn=arn)["Attributes"]["Policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["AuditRead"] == audit
    ours = by_sid["ArgoEtlBootstrapS3Publish"]
    assert ours["Principal"] == {"Service": "s3.amazonaws.com"}
    assert ours["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"
    assert ours["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{aws_env['AWS_BUCKET']}"


def test_refuses_things_it_did_not_create(aws_env, cluster, admin, capsys):
    admin.sns.create_topic(Name="argo-etl-s3-events")  # same name, no tag
    assert run_quietly(aws_tasks.setup) == 1
    out = capsys.readouterr().out
    assert "exists but is not tagged managed-by=argo-etl-bootstrap" in out
    assert admin.iam.list_users()["Users"] == []  # stopped there


@pytest.mark.parametrize("url, reason", [
    ("", "SNS_WEBHOOK_URL is empty"),
    ("http://192.168.1.20:12000", "is not public"),
    ("https://localhost:12000", "is not public"),
    ("http://eventsource.argo-etl.svc:12000", "is not public"),
])
def test_refuses_a_webhook_address_sns_cannot_reach(aws_env, admin, capsys, monkeypatch, url, reason):
    monkeypatch.setenv("SNS_WEBHOOK_URL", url)
    assert run_quietly(aws_tasks.setup) == 1
    out = capsys.readouterr().out
    assert reason in out and "SNS" in out
    assert admin.s3.list_buckets()["Buckets"] == []


def test_refuses_without_region_or_credentials(aws_env, admin, capsys, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "")
    assert run_quietly(aws_tasks.setup) == 1
    assert "AWS_REGION is not set" in capsys.readouterr().out
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert run_quietly(aws_tasks.status) == 1
    assert "AWS_PROFILE is not set" in capsys.readouterr().out
    assert admin.s3.list_buckets()["Buckets"] == []


def test_teardown_on_the_wrong_kube_context_deletes_nothing(aws_env, aws_calls, cluster, admin, capsys, monkeypatch):
    aws_tasks.setup(Context())
    aws_calls.clear()
    cluster.emulator.clear_log()
    capsys.readouterr()
    monkeypatch.setenv("KUBE_CONTEXT", "production")
    assert run_quietly(aws_tasks.teardown, yes=True) == 1
    out = capsys.readouterr().out
    assert "aws/preflight" in out and "production" in out
    assert writes(aws_calls) == []
    assert cluster.emulator.write_requests() == []
    assert cluster.secret("sns-credential") is not None
