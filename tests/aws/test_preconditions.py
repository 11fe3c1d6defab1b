"""aws.setup checks everything it can read before its first write, and reports every failing check at once.

Writes are counted where they arrive: the tool talks to moto through a counting proxy (`aws_server`),
and the Kubernetes emulator logs its own write requests.
"""

from __future__ import annotations

import boto3
import pytest
from invoke import Context, Exit

from aws import TAGS
from aws import s3 as s3_api
from etlboot.tasks import aws as aws_tasks

from aws_testkit import REGION, as_other_account

S3_USER, SNS_USER, TOPIC = "argo-etl-s3", "argo-etl-sns", "argo-etl-s3-events"


def run_setup(**kwargs) -> int:
    try:
        aws_tasks.setup(Context(), **kwargs)
        return 0
    except Exit as exc:
        return exc.code


def failed_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("✗")]


def full_s3_user(admin) -> list[str]:
    """The ETL user as an earlier run made it (tagged), holding two keys someone else created."""
    admin.iam.create_user(UserName=S3_USER, Tags=TAGS)
    return sorted(admin.iam.create_access_key(UserName=S3_USER)["AccessKey"]["AccessKeyId"] for _ in range(2))


def assert_nothing_written(aws_server, cluster, admin, users: list[str]):
    assert aws_server.writes() == []
    assert aws_server.reads(), "the proxy saw the tool's reads: the count above is real"
    assert cluster.emulator.write_requests() == []
    assert admin.s3.list_buckets()["Buckets"] == []
    assert sorted(u["UserName"] for u in admin.iam.list_users()["Users"]) == sorted(users)


def test_a_full_key_slot_stops_setup_before_its_first_write(aws_env, aws_server, cluster, admin, capsys):
    foreign = full_s3_user(admin)
    capsys.readouterr()
    assert run_setup() == 1
    assert_nothing_written(aws_server, cluster, admin, [S3_USER])
    out = capsys.readouterr().out
    (line,) = failed_lines(out)
    assert "aws/preconditions" in line
    assert f"IAM user {S3_USER} already has 2 access keys" in line and "nothing was created or changed" in line
    assert "delete-access-key" in out  # the hint says how to make room
    assert admin.sns.list_topics()["Topics"] == []
    keys = admin.iam.list_access_keys(UserName=S3_USER)["AccessKeyMetadata"]
    assert sorted(k["AccessKeyId"] for k in keys) == foreign
    assert cluster.secret("sns-credential") is None


def test_every_failing_precondition_is_reported_together(aws_env, aws_server, cluster, admin, moto, capsys):
    bucket = aws_env["AWS_BUCKET"]
    theirs = as_other_account(boto3.client("s3", region_name=REGION, endpoint_url=moto))
    theirs.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    admin.sns.create_topic(Name=TOPIC)               # our topic's name, not tagged: someone else's
    admin.iam.create_user(UserName=SNS_USER)         # likewise the EventSource user
    full_s3_user(admin)
    capsys.readouterr()

    for dry_run in (True, False):
        assert run_setup(dry_run=dry_run) == 1
        assert aws_server.writes() == []
        assert cluster.emulator.write_requests() == []
        out = capsys.readouterr().out
        (line,) = failed_lines(out)
        assert "4 preconditions fail, so nothing was created or changed" in line
        assert f"S3 bucket {bucket} exists but is not one of account 123456789012's buckets" in line
        assert f"SNS topic {TOPIC} exists but is not tagged" in line
        assert f"IAM user {SNS_USER} exists but is not tagged" in line
        assert f"IAM user {S3_USER} already has 2 access keys" in line
        assert "AWS_TOPIC" in out and "AWS_SNS_USER" in out and "AWS_BUCKET" in out  # each one's hint
    assert [b["Name"] for b in theirs.list_buckets()["Buckets"]] == [bucket]
    assert admin.s3.list_buckets()["Buckets"] == []
    assert theirs.get_bucket_notification_configuration(Bucket=bucket).get("TopicConfigurations") is None


def test_a_notification_entry_s3_would_refuse_beside_ours_stops_setup(aws_env, aws_server, cluster, admin, capsys):
    bucket = aws_env["AWS_BUCKET"]
    admin.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    lake = admin.sns.create_topic(Name="data-lake")["TopicArn"]
    theirs = {"Id": "lake-ingest", "TopicArn": lake, "Events": ["s3:ObjectCreated:Put"],
              "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "input/"}]}}}
    admin.s3.put_bucket_notification_configuration(Bucket=bucket,
                                                   NotificationConfiguration={"TopicConfigurations": [theirs]})
    capsys.readouterr()
    assert run_setup() == 1
    assert aws_server.writes() == []
    assert cluster.emulator.write_requests() == []
    (line,) = failed_lines(capsys.readouterr().out)
    assert "notification entry lake-ingest" in line and "overlaps ours" in line
    assert [t["TopicArn"] for t in admin.sns.list_topics()["Topics"]] == [lake]
    left = admin.s3.get_bucket_notification_configuration(Bucket=bucket)["TopicConfigurations"]
    assert [e["Id"] for e in left] == ["lake-ingest"]


def test_with_nothing_in_the_way_setup_runs_and_a_second_run_writes_nothing(aws_env, aws_server, cluster, admin):
    assert run_setup() == 0
    assert "s3:PUT /" + aws_env["AWS_BUCKET"] in aws_server.writes()  # CreateBucket went through the proxy
    aws_server.clear()
    cluster.emulator.clear_log()
    assert run_setup() == 0
    assert aws_server.writes() == []
    assert cluster.emulator.write_requests() == []


def entry(events, prefix=None, suffix=None, id_="theirs"):
    rules = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v is not None]
    return {"Id": id_, "TopicArn": "arn:aws:sns:eu-west-1:1:t", "Events": events,
            **({"Filter": {"Key": {"FilterRules": rules}}} if rules else {})}


OURS = s3_api.our_entry("arn:aws:sns:eu-west-1:1:ours", "input/", ".csv")


@pytest.mark.parametrize("other, overlaps", [
    (entry(["s3:ObjectCreated:Put"]), True),                                   # no filter: every key
    (entry(["s3:ObjectCreated:*"], prefix="input/day1/"), True),               # narrower prefix
    (entry(["s3:ObjectCreated:CompleteMultipartUpload"], suffix="s.csv"), True),
    (entry(["s3:ObjectCreated:Copy"], prefix="in"), True),                     # wider prefix
    (entry(["s3:ObjectCreated:*"], prefix="archive/"), False),                 # other prefix
    (entry(["s3:ObjectCreated:*"], prefix="input/", suffix=".json"), False),   # other suffix
    (entry(["s3:ObjectRemoved:*"]), False),                                    # other event type
    (entry(["s3:ObjectRemoved:Delete", "s3:ObjectCreated:Post"], prefix="input/"), True),
    (entry(["s3:ObjectCreated:Put"], id_=OURS["Id"]), False),                  # our own old entry: replaced
], ids=lambda v: v if isinstance(v, bool) else "|".join(v["Events"]) + str(v.get("Filter", "")))
def test_which_entries_s3_counts_as_overlapping_ours(other, overlaps):
    configuration = {"QueueConfigurations": [{**other, "QueueArn": "arn:aws:sqs:eu-west-1:1:q"}]}
    assert bool(s3_api.overlapping_entries(configuration, OURS)) is overlaps
