"""`trace --key KEY --target aws`: one object of AWS_BUCKET, from S3 through the delivery to its Parquet.

- object       the input in S3 (HEAD: size, time);
- delivery     AWS_DELIVERY=sqs: the queue exists and what it holds, and its dead-letter queue (messages there
               are events the EventSource received but could not pass on); sns-webhook: the topic's
               subscription to SNS_WEBHOOK_URL is confirmed. The same checks as `aws.status`;
- eventsource  `aws-sqs` (or `aws-sns`) published an event after the upload;
- sensor, workflow  as every target (etlboot/trace.py); the Workflows are the S3 ETL's whose `message` (the S3
               event, its key form-encoded as S3 sends it) names the key;
- output       the Parquet file (s3_etl.py's output key) and the rejects, if any, in the same bucket.
"""

from __future__ import annotations

from urllib.parse import quote_plus

from etlboot.engine import Context
from etlboot.steps import kube
from etlboot.trace import CLOCK_SLACK, Journey, Link, ObjectStore, event_links, output_link, pod_log
from etlboot.workflows import WORKFLOW_API, created, parameter

from .clients import absent
from .demo import ETL_SENSORS, _code_module
from .steps import aws

#: per AWS_DELIVERY: its EventSource and Sensor (manifests/aws/)
CHAIN = {"sqs": ("aws-sqs", "aws-sqs-etl"), "sns-webhook": ("aws-sns", "aws-s3-etl")}


class S3Store(ObjectStore):
    """The objects of one S3 bucket, through boto3."""

    def read(self, key: str) -> tuple[bytes, str] | None:
        found = absent(f"read {self.url(key)}", {"404", "NoSuchKey", "NotFound"}, self.client.get_object,
                       Bucket=self.bucket, Key=key)
        if found is None:
            return None
        return found["Body"].read(), str(found.get("ETag") or "").strip('"')


def _delivery(ctx: Context, delivery: str) -> tuple[bool, str, str]:
    """(holds, detail, cause when it does not) for the delivery: the checks `aws.status` and `doctor` make, and
    doctor's fix as the cause."""
    from etlboot.doctor import dead_letters_step, sns_subscription_step

    if delivery == "sns-webhook":
        check = sns_subscription_step().check(ctx)
        return check.converged, f"SNS subscription: {check.detail}", check.hint
    from .sqs_steps import QueueStep

    queue = QueueStep(dead_letter=False).for_status().check(ctx)
    if not queue.converged:
        return False, f"SQS queue: {queue.detail}", "run `invoke aws.setup` (S3 sends the events to that queue)"
    dead = dead_letters_step().check(ctx)
    return dead.converged, f"SQS queue: {queue.detail}; dead-letter queue: {dead.detail}", dead.hint


def trace_aws(ctx: Context, key: str) -> Journey:
    journey = Journey(key, [], "aws")
    rest = ("output",)
    values = ctx.settings.values
    bucket = values.get("AWS_BUCKET") or ""
    s3 = aws(ctx).s3   # AWS settings missing: one line naming them (config.require_aws)
    head = absent(f"look for s3://{bucket}/{key}", {"404", "NoSuchKey", "NotFound"}, s3.head_object,
                  Bucket=bucket, Key=key)
    if head is None:
        journey.add(Link("object", False, f"s3://{bucket}/{key} is not in S3",
                         "check the key (`invoke demo.upload --target aws` prints the key it sends)"))
        return journey.unreached("delivery", "eventsource", "sensor", "workflow", *rest)
    uploaded = head["LastModified"]
    journey.add(Link("object", True, f"s3://{bucket}/{key}: {head['ContentLength']} bytes", at=uploaded.isoformat()))

    delivery = values.get("AWS_DELIVERY") or "sqs"
    source, sensor = CHAIN.get(delivery, CHAIN["sqs"])
    encoded = quote_plus(key, safe="/")   # S3 form-encodes the key in its event
    workflows = sorted((w for w in kube(ctx).list(WORKFLOW_API, "Workflow", ctx.settings.namespace,
                                                 label_selector=f"events.argoproj.io/sensor in ({','.join(ETL_SENSORS)})")
                        if (encoded in parameter(w, "message") or key in parameter(w, "message"))
                        and created(w) >= uploaded - CLOCK_SLACK), key=created)
    holds, detail, cause = _delivery(ctx, delivery)
    # the delivery's health is the whole queue's; it broke this input's chain only when nothing came of it
    journey.add(Link("delivery", holds or bool(workflows), detail, "" if holds or workflows else cause))
    if not (holds or workflows):
        return journey.unreached("eventsource", "sensor", "workflow", *rest)

    source_log = pod_log(ctx, f"eventsource-name={source}")
    not_published = (f"the EventSource {source} passed no event on since the upload: is the bucket's notification "
                     "in place (`invoke aws.status`)? `invoke doctor`")
    if event_links(ctx, journey, source=source, sensor=sensor, since=uploaded, workflows=workflows,
                   source_log=source_log, not_published=not_published, rest=rest) is None:
        return journey

    s3_etl = _code_module("s3_etl")
    output_link(journey, S3Store(s3, bucket), s3_etl.output_key(key), s3_etl.rejects_key(key),
                missing_cause="the workflow succeeded but wrote nothing there: its log names what it wrote")
    return journey
