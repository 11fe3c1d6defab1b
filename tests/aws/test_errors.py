"""AWS failures: throttling and 5xx are retried, then reported as one clear line; no secret ever shown."""

from __future__ import annotations


import pytest
from botocore.awsrequest import AWSResponse
from botocore.retries.standard import ExponentialBackoff
from invoke import Context, Exit

from aws import clients
from aws.clients import scrub
from aws.preflight_steps import PreflightStep
from aws.steps import TopicStep
from etlboot.tasks import aws as aws_tasks

from aws_testkit import assert_no_secret, run_steps

THROTTLED = (b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
             b"<Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>")
UNAVAILABLE = (b"<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code>"
               b"<Message>Service is unavailable</Message></Error><RequestId>1</RequestId></ErrorResponse>")


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


class Injector:
    """Answers the next `times` sends of one operation with an error response, counting every send."""

    def __init__(self, operation: str, status: int, body: bytes, times: int):
        self.operation, self.status, self.body, self.times = operation, status, body, times
        self.sends = 0

    def hook(self, client):
        client.meta.events.register("before-send", self.before_send)

    def before_send(self, request=None, event_name="", **_):
        if not event_name.endswith("." + self.operation):  # before-send.<service>.<Operation>
            return None
        self.sends += 1
        if self.times <= 0:
            return None
        self.times -= 1
        return AWSResponse(request.url, self.status, {"Content-Type": "text/xml"}, _Raw(self.body))


@pytest.fixture
def inject(monkeypatch):
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)  # no real sleeping
    made = []

    def make(operation, status, body, times):
        injector = Injector(operation, status, body, times)
        clients.client_hooks.append(injector.hook)
        made.append(injector)
        return injector

    yield make
    for injector in made:
        clients.client_hooks.remove(injector.hook)


def test_throttling_is_retried_then_succeeds(aws_env, cluster, admin, inject):
    injector = inject("GetTopicAttributes", 400, THROTTLED, times=2)  # AWS_MAX_ATTEMPTS=3: the third works
    assert run_steps("up", PreflightStep(), TopicStep())[0] == 0
    assert injector.sends >= 3
    assert admin.sns.list_topics()["Topics"]


@pytest.mark.parametrize("status, body, said", [(400, THROTTLED, "Throttling"), (503, UNAVAILABLE, "ServiceUnavailable")],
                         ids=["throttling", "unavailable"])
def test_persistent_throttling_or_5xx_fails_with_one_clear_line(aws_env, cluster, admin, inject, capsys,
                                                                status, body, said):
    injector = inject("GetTopicAttributes", status, body, times=100)
    capsys.readouterr()
    assert run_steps("up", PreflightStep(), TopicStep())[0] == 1
    assert injector.sends == 3  # AWS_MAX_ATTEMPTS
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("✗")]
    assert len(failed) == 1
    assert "look up SNS topic" in failed[0] and said in failed[0] and "after 3 attempts" in failed[0]
    assert "Traceback" not in out
    assert "throttling or unavailable" in out  # the hint
    assert admin.sns.list_topics()["Topics"] == []


NOT_VALIDATED = (b"<Error><Code>InvalidArgument</Code><Message>Unable to validate the following destination "
                 b"configurations</Message><RequestId>1</RequestId></Error>")


def test_a_topic_policy_not_yet_in_effect_is_waited_for(aws_env, cluster, admin, inject, monkeypatch):
    from aws.steps import BucketStep, NotificationStep

    monkeypatch.setattr(NotificationStep, "validate_interval", 0.05)
    injector = inject("PutBucketNotificationConfiguration", 400, NOT_VALIDATED, times=2)
    assert run_steps("up", PreflightStep(), BucketStep(), TopicStep(), NotificationStep())[0] == 0
    assert injector.sends == 3  # not retried by botocore (a 400), but by the step, bounded
    config = admin.s3.get_bucket_notification_configuration(Bucket=aws_env["AWS_BUCKET"])
    assert [e["Id"] for e in config["TopicConfigurations"]] == ["argo-etl-bootstrap-input-csv"]


def test_scrub_removes_access_key_ids():
    assert scrub("The Access Key with id AKIAABCDEFGHIJKLMNOP cannot be found") == \
        "The Access Key with id AKIA… cannot be found"
    assert scrub("nothing here") == "nothing here"


@pytest.mark.parametrize("delivery, source_secret", [("sns-webhook", "sns-credential"), ("sqs", "sqs-credential")])
def test_no_access_key_or_secret_in_any_output(aws_env, cluster, admin, fake_credentials, capsys, monkeypatch,
                                               delivery, source_secret):
    """setup (also dry run, rotation), status and teardown, with --debug and a failure that prints a traceback;
    for both deliveries."""
    monkeypatch.setenv("AWS_DELIVERY", delivery)
    outputs = []

    def run(fn, **kwargs):
        try:
            fn(Context(), **kwargs)
        except Exit:
            pass
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)

    run(aws_tasks.setup, dry_run=True, debug=True, verbose=True)
    run(aws_tasks.setup, debug=True, verbose=True)
    seen = [cluster.secret(source_secret), cluster.secret("s3-credential")]
    run(aws_tasks.setup, debug=True, verbose=True, rotate_keys=True)
    seen += [cluster.secret(source_secret), cluster.secret("s3-credential")]
    run(aws_tasks.status, debug=True)
    # a failing step with --debug prints its traceback: still nothing secret
    from aws import iam as iam_api

    def broken(iam, name):
        raise RuntimeError("boom while listing keys")

    with monkeypatch.context() as patch:
        patch.setattr(iam_api, "access_keys", broken)
        run(aws_tasks.setup, debug=True, verbose=True)
    assert "Traceback" in outputs[-1] and "boom while listing keys" in outputs[-1]
    run(aws_tasks.teardown, yes=True, debug=True, verbose=True)

    text = "\n".join(outputs)
    assert_no_secret(text, fake_credentials, seen, expected=10)
    from etlboot.config import load

    if delivery == "sns-webhook":
        assert load().values["SNS_WEBHOOK_PATH"] not in text  # the webhook's unguessable path either
    assert "deleted" in outputs[-1]  # the runs did happen
