"""The steps of the sqs delivery (`AWS_DELIVERY=sqs`): S3 -> SQS queue <- the Argo Events SQS EventSource.

S3 sends each event of `input/*.csv` to the queue; the EventSource polls the queue from inside the cluster
(outbound HTTPS only: behind NAT, no public port) and deletes a message once the EventBus took it. A message
the source cannot pass on becomes visible again; after AWS_QUEUE_MAX_RECEIVES receives SQS moves it to the
dead-letter queue `<queue>-dlq`, where `aws.status` shows it.

The steps follow the contract of `aws.steps`: `check` reads and returns the calls it intends, a run executes
exactly them, teardown deletes only what carries our tag (the queues; our Sid in the queue policy goes with
the queue). The step list of this delivery is `aws.step_lists.sqs_setup_steps`.
"""

from __future__ import annotations

import json

from etlboot.engine import Check, Context, State

from . import QUEUE_POLICY_SID, TAG_KEY, TAG_VALUE
from . import policies
from . import sqs as sqs_api
from .plan import Plan
from .steps import TaggedStep, _planned, aws, names, not_ours_error

#: the dead-letter queue keeps a message 14 days (SQS's maximum). SQS counts a standard queue's message age
#: from when it first entered the source queue, so the dead-letter queue must keep it longer than that (4 days)
DLQ_RETENTION_SECONDS = "1209600"


def _messages(attributes: dict) -> tuple[int, int]:
    """(waiting, in flight) as SQS estimates them."""
    return (int(attributes.get("ApproximateNumberOfMessages") or 0),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible") or 0))


def _redrive(document: str | None) -> dict | None:
    """A RedrivePolicy as data (SQS answers maxReceiveCount as a number or a string)."""
    if not document:
        return None
    parsed = json.loads(document)
    return {"deadLetterTargetArn": parsed.get("deadLetterTargetArn"),
            "maxReceiveCount": int(parsed.get("maxReceiveCount") or 0)}


class QueueStep(TaggedStep):
    """The queue (`dead_letter=False`: its redrive policy to the dead-letter queue, and in its access policy one
    statement, Sid `QUEUE_POLICY_SID`, letting S3 send only this bucket's events of this account), or its
    dead-letter queue. Both tagged; other statements of the policy are kept."""

    def __init__(self, dead_letter: bool, dead_letters_unhealthy: bool = False):
        self.dead_letter = dead_letter
        self.dead_letters_unhealthy = dead_letters_unhealthy
        self.name = "aws/sqs-dlq" if dead_letter else "aws/sqs-queue"
        self.title = ("SQS dead-letter queue: the events the EventSource could not pass on" if dead_letter else
                      "SQS queue, tagged, whose policy lets only this bucket's S3 events in; redrive to the DLQ")

    def for_status(self) -> "QueueStep":
        """`aws.status`: messages in the dead-letter queue make it unhealthy (setup only reports them)."""
        return QueueStep(self.dead_letter, dead_letters_unhealthy=self.dead_letter)

    def queue(self, ctx: Context) -> str:
        n = names(ctx)
        return n.dlq_name if self.dead_letter else n.queue_name

    def _url(self, ctx: Context) -> str | None:
        return sqs_api.queue_url(aws(ctx).sqs, self.queue(ctx))

    def _statement(self, ctx: Context) -> dict:
        n = names(ctx)
        return policies.queue_send_statement(n.queue_arn, n.bucket, n.account, n.partition)

    def _changes(self, ctx: Context, attributes: dict) -> dict[str, str]:
        """The attributes to write so that `attributes` become what we want (none: as wanted)."""
        if self.dead_letter:
            current = attributes.get("MessageRetentionPeriod")
            return {} if current == DLQ_RETENTION_SECONDS else {"MessageRetentionPeriod": DLQ_RETENTION_SECONDS}
        n, changes = names(ctx), {}
        redrive = {"deadLetterTargetArn": n.dlq_arn,
                   "maxReceiveCount": int(ctx.settings.values["AWS_QUEUE_MAX_RECEIVES"])}
        if _redrive(attributes.get("RedrivePolicy")) != redrive:
            changes["RedrivePolicy"] = json.dumps(redrive)
        merged, changed = policies.merge_statement(policies.parse(attributes.get("Policy")), self._statement(ctx),
                                                   version=policies.VERSION)
        if changed:
            changes["Policy"] = policies.dumps(merged)
        return changes

    def _create(self, ctx: Context) -> None:
        sqs_api.create_queue(aws(ctx).sqs, self.queue(ctx), self._changes(ctx, {}), {TAG_KEY: TAG_VALUE})

    def _update(self, ctx: Context) -> None:
        # read again at execution time: the policy is one document others may have written to meanwhile
        sqs, url = aws(ctx).sqs, self._url(ctx)
        changes = self._changes(ctx, sqs_api.queue_attributes(sqs, url) or {})
        if changes:
            sqs_api.set_queue_attributes(sqs, url, changes)

    def _notes(self, changes: dict) -> str:
        notes = {"MessageRetentionPeriod": "keep dead letters 14 days",
                 "RedrivePolicy": "after AWS_QUEUE_MAX_RECEIVES receives -> the dead-letter queue",
                 "Policy": f"statement {QUEUE_POLICY_SID}: S3 may send for this bucket and account only"}
        return "; ".join(notes[k] for k in sorted(changes))

    def check(self, ctx: Context) -> Check:
        sqs, queue = aws(ctx).sqs, self.queue(ctx)
        url = self._url(ctx)
        if url is None:
            wanted = self._changes(ctx, {})
            plan = Plan().add("sqs:CreateQueue", queue, lambda: self._create(ctx),
                              f"tag {TAG_KEY}={TAG_VALUE}; {self._notes(wanted)}")
            return _planned(State.MISSING, plan)
        if sqs_api.queue_tags(sqs, url).get(TAG_KEY) != TAG_VALUE:
            raise self._not_ours(ctx)
        attributes = sqs_api.queue_attributes(sqs, url) or {}
        waiting, in_flight = _messages(attributes)
        detail = f"{queue}: {waiting} waiting, {in_flight} in flight"
        healthy = None
        if self.dead_letter and waiting + in_flight:
            detail = (f"{queue}: {waiting + in_flight} event(s) the EventSource received "
                      f"{ctx.settings.values['AWS_QUEUE_MAX_RECEIVES']} times without passing them on; read them "
                      f"with `aws sqs receive-message --queue-url {url}`, and after fixing the cause move them back "
                      f"with `aws sqs start-message-move-task --source-arn {names(ctx).dlq_arn}`")
            healthy = False if self.dead_letters_unhealthy else None
        changes = self._changes(ctx, attributes)
        if changes:
            plan = Plan().add("sqs:SetQueueAttributes", f"{queue} {', '.join(sorted(changes))}",
                              lambda: self._update(ctx), self._notes(changes))
            return _planned(State.DRIFTED, plan, detail)
        return _planned(State.PRESENT, Plan(), detail, healthy=healthy)

    def _not_ours(self, ctx: Context):
        return not_ours_error(f"SQS queue {self.queue(ctx)}", "AWS_QUEUE", "queue")

    def _ours(self, ctx: Context) -> bool | None:
        url = self._url(ctx)
        if url is None:
            return None
        return sqs_api.queue_tags(aws(ctx).sqs, url).get(TAG_KEY) == TAG_VALUE

    def _delete(self, ctx: Context) -> None:
        sqs_api.delete_queue(aws(ctx).sqs, self._url(ctx))
