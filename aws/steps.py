"""The steps of `aws.setup` / `aws.status` / `aws.teardown`, in the engine's contract.

Each AWS step's `check` reads (only reads) and returns the calls it intends (`aws.plan`): a dry run
prints them, a run executes exactly them, and the runner checks again until the step converged.
Before the first of them, `PreconditionsStep` asks every step what it can already tell is in the way
(`preconditions`), so setup fails whole or starts; it never stops half-way for a reason it could read.
`remove` deletes only what carries our tag (the notification entry: only ours, by its Id; keys: those
marked when created; a user only when nothing else is left on it). Here: the shared state of a run, the
bucket, topic, subscription and notification steps; the checks before the first write are in
`aws.preflight_steps`, the IAM users and their keys in `aws.iam_steps`, the queue steps of the sqs delivery in
`aws.sqs_steps`; the lists each task runs, for either delivery, in `aws.step_lists`.
"""

from __future__ import annotations

from dataclasses import dataclass

from etlboot import config
from etlboot import manifests as m
from etlboot.engine import Check, Context, Outcome, State, Step, StepError, WaitTimeout, wait_until
from etlboot.steps import ObjectStep

from . import (INPUT_PREFIX, INPUT_SUFFIX, S3_SECRET, SNS_SECRET, SNS_WEBHOOK, SQS, SQS_SECRET, TAG_KEY, TAG_VALUE,
               TAGS, TOPIC_POLICY_SID, WEBHOOK_PORT)
from . import policies
from . import s3 as s3_api
from . import sns as sns_api
from .clients import AwsClients
from .plan import Plan, plan_of
from .roles import etl_role, with_roles


# -- per-run shared state -------------------------------------------------------------------------

def aws(ctx: Context) -> AwsClients:
    def make() -> AwsClients:
        config.require_aws(ctx.settings)
        return AwsClients(ctx.settings, dry_run=ctx.dry_run)

    return ctx.cached("aws-clients", make, close=lambda c: c.close())


@dataclass(frozen=True)
class Names:
    account: str
    partition: str
    region: str
    bucket: str
    bucket_arn: str
    topic_name: str
    topic_arn: str
    sns_user: str
    s3_user: str
    queue_name: str
    queue_arn: str
    dlq_name: str
    dlq_arn: str
    sqs_user: str


def names(ctx: Context) -> Names:
    def make() -> Names:
        v = ctx.settings.values
        who = aws(ctx).identity()
        region = v["AWS_REGION"]
        return Names(
            account=who.account, partition=who.partition, region=region,
            bucket=v["AWS_BUCKET"], bucket_arn=policies.bucket_arn(who.partition, v["AWS_BUCKET"]),
            topic_name=v["AWS_TOPIC"],
            topic_arn=policies.topic_arn(who.partition, region, who.account, v["AWS_TOPIC"]),
            sns_user=v["AWS_SNS_USER"], s3_user=v["AWS_S3_USER"],
            queue_name=v["AWS_QUEUE"],
            queue_arn=policies.queue_arn(who.partition, region, who.account, v["AWS_QUEUE"]),
            dlq_name=dead_letter_queue(v["AWS_QUEUE"]),
            dlq_arn=policies.queue_arn(who.partition, region, who.account, dead_letter_queue(v["AWS_QUEUE"])),
            sqs_user=v["AWS_SQS_USER"],
        )

    return ctx.cached("aws-names", make)


def dead_letter_queue(queue: str) -> str:
    return f"{queue}-dlq"


def delivery(settings) -> str:
    """`sqs` (S3 -> SQS, polled by the SQS EventSource) or `sns-webhook` (S3 -> SNS -> public webhook)."""
    return settings.values.get("AWS_DELIVERY") or SQS


def needs_webhook(settings) -> bool:
    return delivery(settings) == SNS_WEBHOOK


def webhook_endpoint(settings) -> str:
    """The address the EventSource subscribes (Argo's FormattedURL: url without trailing / + endpoint)."""
    return settings.values["SNS_WEBHOOK_URL"].rstrip("/") + "/" + settings.values["SNS_WEBHOOK_PATH"]


def manifest_variables(settings, account: str = "ACCOUNT_ID", partition: str = "aws") -> dict[str, str]:
    """The placeholders manifests/aws needs besides `etlboot.manifests.variables` (offline: a stand-in
    account id, so `invoke render` works without AWS)."""
    v = settings.values
    return {
        "AWS_REGION": v["AWS_REGION"],
        "AWS_BUCKET": v["AWS_BUCKET"],
        "AWS_TOPIC_ARN": policies.topic_arn(partition, v["AWS_REGION"], account, v["AWS_TOPIC"]),
        "SNS_WEBHOOK_URL": v["SNS_WEBHOOK_URL"],
        "SNS_WEBHOOK_PATH": v["SNS_WEBHOOK_PATH"],
        "SNS_WEBHOOK_PORT": WEBHOOK_PORT,
        "SNS_SECRET": SNS_SECRET,
        "S3_SECRET": S3_SECRET,
        "AWS_QUEUE": v["AWS_QUEUE"],
        "SQS_SECRET": SQS_SECRET,
        "AWS_ETL_ROLE_ARN": etl_role(settings),
    }


def rendered(ctx: Context) -> dict[tuple[str, str], dict]:
    def make():
        n = names(ctx)
        values = {**m.variables(ctx.settings), **manifest_variables(ctx.settings, n.account, n.partition)}
        return {(d["kind"], d["metadata"]["name"]): with_roles(d, ctx.settings) for d in m.render_group("aws", values)}

    return ctx.cached("aws-manifests", make)


def _planned(state: State, plan: Plan, detail: str = "", healthy: bool | None = None,
             extra_diff: list[str] | None = None) -> Check:
    return Check(state, diff=(extra_diff or []) + plan.describe(), healthy=healthy, detail=detail,
                 live={"plan": plan})


def plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


class AwsStep(Step):
    poll_interval = 1.0

    def preconditions(self, ctx: Context) -> list[StepError]:
        """What is in the way of this step and can be read before anything is written (read-only)."""
        return []

    def apply(self, ctx: Context, check: Check) -> None:
        plan_of(check).execute()


# -- S3 bucket ------------------------------------------------------------------------------------

def bucket_problems(ctx: Context) -> tuple[s3_api.BucketState | None, list[StepError]]:
    """The bucket's state, and why it cannot be used: another account's, or in another region."""
    n, s3 = names(ctx), aws(ctx).s3
    try:
        state = s3_api.head_bucket(s3, n.bucket, n.account)
    except s3_api.ForeignBucket as exc:
        return None, [exc]
    if not state.exists:
        return state, []
    if s3_api.bucket_listed(s3, n.bucket) is False:
        return None, [s3_api.ForeignBucket(f"S3 bucket {n.bucket} exists but is not one of account {n.account}'s "
                                           "buckets: owned by another account", hint=s3_api.FOREIGN_BUCKET_HINT)]
    if state.region and state.region != n.region:
        return state, [StepError(f"S3 bucket {n.bucket} is in region {state.region}, not AWS_REGION={n.region}",
                                 hint=f"set AWS_REGION={state.region}, or pick another AWS_BUCKET")]
    return state, []


def usable_bucket(ctx: Context) -> s3_api.BucketState:
    """The bucket's state; raises when it exists but is not this account's (or not in our region)."""
    state, problems = bucket_problems(ctx)
    if problems:
        raise problems[0]
    return state


class BucketStep(AwsStep):
    def __init__(self):
        self.name = "aws/s3-bucket"
        self.title = "S3 bucket in the configured region"

    def preconditions(self, ctx: Context) -> list[StepError]:
        return bucket_problems(ctx)[1]

    def check(self, ctx: Context) -> Check:
        n, s3 = names(ctx), aws(ctx).s3
        state = usable_bucket(ctx)
        if not state.exists:
            plan = Plan()
            plan.add("s3:CreateBucket", n.bucket, lambda: s3_api.create_bucket(s3, n.bucket, n.region),
                     f"region {n.region}")
            plan.add("s3:PutPublicAccessBlock", n.bucket, lambda: s3_api.block_public_access(s3, n.bucket),
                     "block all public access")
            plan.add("s3:PutBucketTagging", n.bucket,
                     lambda: s3_api.put_bucket_tags(s3, n.bucket, {TAG_KEY: TAG_VALUE}), f"{TAG_KEY}={TAG_VALUE}")
            return _planned(State.MISSING, plan)
        ours = s3_api.bucket_tags(s3, n.bucket).get(TAG_KEY) == TAG_VALUE
        detail = n.bucket if ours else f"{n.bucket}: yours, not created by this tool (used as is, never deleted)"
        return Check(State.PRESENT, detail=detail, live={"plan": Plan(), "ours": ours})

    def _ours(self, ctx: Context) -> bool | None:
        n, s3 = names(ctx), aws(ctx).s3
        if not usable_bucket(ctx).exists:
            return None
        return s3_api.bucket_tags(s3, n.bucket).get(TAG_KEY) == TAG_VALUE

    def remove_plan(self, ctx: Context) -> Outcome:
        ours = self._ours(ctx)
        if ours is None:
            return Outcome.OK
        return Outcome.WOULD_CHANGE if ours and ctx.option("delete_bucket") else Outcome.SKIPPED

    def remove(self, ctx: Context) -> Outcome:
        ours = self._ours(ctx)
        if ours is None:
            return Outcome.OK
        if not ours or not ctx.option("delete_bucket"):
            return Outcome.SKIPPED  # the bucket holds the user's data: kept unless --delete-bucket
        s3_api.empty_and_delete_bucket(aws(ctx).s3, names(ctx).bucket)
        return Outcome.CHANGED


# -- SNS topic ------------------------------------------------------------------------------------

class TaggedStep(AwsStep):
    """A resource that is ours by its tag: one with our name but without the tag is in the way (a
    precondition); teardown deletes it only when tagged. Subclasses say how to read the tag (`_ours`: None
    when there is nothing) and how to delete (`_delete`, which may return SKIPPED when it kept the thing)."""

    def _ours(self, ctx: Context) -> bool | None:
        raise NotImplementedError

    def _not_ours(self, ctx: Context) -> StepError:
        raise NotImplementedError

    def _delete(self, ctx: Context) -> Outcome | None:
        raise NotImplementedError

    def _would_delete(self, ctx: Context) -> Outcome:
        return Outcome.WOULD_CHANGE

    def preconditions(self, ctx: Context) -> list[StepError]:
        return [self._not_ours(ctx)] if self._ours(ctx) is False else []

    def remove_plan(self, ctx: Context) -> Outcome:
        ours = self._ours(ctx)
        return Outcome.OK if ours is None else self._would_delete(ctx) if ours else Outcome.SKIPPED

    def remove(self, ctx: Context) -> Outcome:
        ours = self._ours(ctx)
        if ours is None:
            return Outcome.OK
        if not ours:
            return Outcome.SKIPPED
        return self._delete(ctx) or Outcome.CHANGED


class TopicStep(TaggedStep):
    def __init__(self):
        self.name = "aws/sns-topic"
        self.title = "SNS topic, tagged, whose policy lets only this bucket's S3 events in"

    def _statement(self, n: Names) -> dict:
        return policies.topic_publish_statement(n.topic_arn, n.bucket, n.account, n.partition)

    def _set_policy(self, ctx: Context) -> None:
        # merged at execution time with what is there then (other statements survive)
        n, sns = names(ctx), aws(ctx).sns
        current = policies.parse((sns_api.topic_attributes(sns, n.topic_arn) or {}).get("Policy"))
        merged, changed = policies.merge_statement(current, self._statement(n))
        if changed:
            sns_api.set_topic_policy(sns, n.topic_arn, merged)

    def check(self, ctx: Context) -> Check:
        n, sns = names(ctx), aws(ctx).sns
        attributes = sns_api.topic_attributes(sns, n.topic_arn)
        note = f"statement {TOPIC_POLICY_SID}: S3 may publish for {n.bucket} in account {n.account} only"
        if attributes is None:
            plan = Plan()
            plan.add("sns:CreateTopic", n.topic_name, lambda: sns_api.create_topic(sns, n.topic_name, TAGS),
                     f"tag {TAG_KEY}={TAG_VALUE}")
            plan.add("sns:SetTopicAttributes", f"{n.topic_name} Policy", lambda: self._set_policy(ctx), note)
            return _planned(State.MISSING, plan)
        if sns_api.topic_tags(sns, n.topic_arn).get(TAG_KEY) != TAG_VALUE:
            raise self._not_ours(ctx)
        _, changed = policies.merge_statement(policies.parse(attributes.get("Policy")), self._statement(n))
        detail = (f"{n.topic_name}; subscriptions: {attributes.get('SubscriptionsConfirmed', '?')} confirmed, "
                  f"{attributes.get('SubscriptionsPending', '?')} pending")
        if changed:
            plan = Plan().add("sns:SetTopicAttributes", f"{n.topic_name} Policy", lambda: self._set_policy(ctx),
                              note.replace("statement", "add/replace statement"))
            return _planned(State.DRIFTED, plan, detail)
        return _planned(State.PRESENT, Plan(), detail)

    def _not_ours(self, ctx: Context) -> StepError:
        return not_ours_error(f"SNS topic {names(ctx).topic_name}", "AWS_TOPIC", "topic")

    def _ours(self, ctx: Context) -> bool | None:
        n, sns = names(ctx), aws(ctx).sns
        if sns_api.topic_attributes(sns, n.topic_arn) is None:
            return None
        return sns_api.topic_tags(sns, n.topic_arn).get(TAG_KEY) == TAG_VALUE

    def _delete(self, ctx: Context) -> None:
        sns_api.delete_topic(aws(ctx).sns, names(ctx).topic_arn)


def not_ours_error(what: str, setting: str, thing: str) -> StepError:
    return StepError(f"{what} exists but is not tagged {TAG_KEY}={TAG_VALUE}: not created by this tool, left alone",
                     hint=f"set {setting} to another name (or tag the {thing} yourself to hand it over)")


# -- the SNS subscription (made by the EventSource) -----------------------------------------------

PENDING_MEANING = ("pending confirmation: SNS sent a SubscriptionConfirmation to SNS_WEBHOOK_URL and waits for "
                   "the EventSource to confirm it; if this stays pending, SNS cannot reach that address "
                   "(firewall/security group, port-forward, or an https certificate SNS does not trust)")


class SubscriptionStep(AwsStep):
    """The EventSource's subscription to the topic: it subscribes when its pod starts and confirms when
    SNS calls back. Nothing to do here but observe (and wait, bounded, during setup)."""

    #: teardown: deleting the (tagged) topic deletes its subscriptions; the EventSource unsubscribes itself
    removable = False

    def __init__(self):
        self.name = "aws/sns-subscription"
        self.title = "the EventSource's webhook is subscribed to the topic and confirmed"

    def check(self, ctx: Context) -> Check:
        base = ctx.settings.values["SNS_WEBHOOK_URL"].rstrip("/")
        endpoint = webhook_endpoint(ctx.settings)
        every = sns_api.subscriptions(aws(ctx).sns, names(ctx).topic_arn)
        subs = [s for s in every if s.get("Endpoint") == endpoint]
        others = len(every) - len(subs)
        note = (f"; {others} other subscription(s) on the topic (an earlier SNS_WEBHOOK_URL? "
                "`aws sns list-subscriptions-by-topic` shows them)") if others else ""
        if not subs:
            plan = Plan().add("sns:Subscribe (made by the EventSource)", f"{base}/…",
                              lambda: None, "when its pod starts; then waits for the confirmation")
            return _planned(State.MISSING, plan,
                            "no subscription yet: the EventSource subscribes when its pod starts" + note)
        sns = aws(ctx).sns
        confirmed = [s for s in subs if not sns_api.subscription_pending(sns, s["SubscriptionArn"])]
        if confirmed:
            return _planned(State.PRESENT, Plan(), f"confirmed ({base}/…){note}", healthy=True)
        return _planned(State.PRESENT, Plan(), PENDING_MEANING + note, healthy=False)


# -- the bucket notification ----------------------------------------------------------------------

class NotificationStep(AwsStep):
    """Our entry (by Id) in the bucket's notification configuration; every other entry survives. It names
    the topic (sns-webhook) or the queue (sqs); switching AWS_DELIVERY replaces it, by the same Id."""

    #: seconds between tries while S3 cannot validate the topic or queue yet
    validate_interval = 3.0

    def __init__(self, to: str = SNS_WEBHOOK):
        self.to = to
        self.destination = "the queue" if to == SQS else "the topic"
        self.name = "aws/s3-notification"
        self.title = (f"bucket notification: {', '.join(s3_api.OUR_EVENTS)} on {INPUT_PREFIX}*{INPUT_SUFFIX} "
                      f"-> {self.destination}")

    def _entry(self, ctx: Context) -> dict:
        n = names(ctx)
        return s3_api.our_entry(n.queue_arn if self.to == SQS else n.topic_arn, INPUT_PREFIX, INPUT_SUFFIX)

    def _overlap(self, ctx: Context, current: dict) -> StepError | None:
        """S3 refuses the whole configuration when another entry could fire for the same object and event."""
        clashing = s3_api.overlapping_entries(current, self._entry(ctx))
        if not clashing:
            return None
        bucket = names(ctx).bucket
        return StepError(f"S3 bucket {bucket}: notification {plural(len(clashing), 'entry', 'entries')} "
                         f"{', '.join(clashing)} not made by this tool overlap{'s' if len(clashing) == 1 else ''} "
                         f"ours ({', '.join(s3_api.OUR_EVENTS)} on {INPUT_PREFIX}*{INPUT_SUFFIX}): S3 refuses "
                         "two entries that share an event type and could match the same key",
                         hint="narrow that entry's events or prefix/suffix (or remove it), then run again: "
                              f"`aws s3api get-bucket-notification-configuration --bucket {bucket}`")

    def preconditions(self, ctx: Context) -> list[StepError]:
        state, problems = bucket_problems(ctx)
        if problems or not state.exists:
            return []  # a bucket we cannot use is the bucket step's precondition; a new one has no entries
        overlap = self._overlap(ctx, s3_api.get_notification(aws(ctx).s3, names(ctx).bucket))
        return [overlap] if overlap else []

    def _write(self, ctx: Context) -> None:
        # read again at execution time: the configuration is one document shared with others
        n, s3 = names(ctx), aws(ctx).s3
        merged, changed = s3_api.merge_notification(s3_api.get_notification(s3, n.bucket), self._entry(ctx))
        if not changed:
            return
        failure: list[StepError] = []

        def attempt() -> tuple[bool, str]:
            # S3 validates the destination by publishing a test message; a topic policy written moments
            # ago may not be in effect yet, so that one error is retried (bounded)
            try:
                s3_api.put_notification(s3, n.bucket, merged)
                return True, "written"
            except s3_api.DestinationNotValidated as exc:
                failure[:] = [exc]
                return False, f"S3 cannot validate {self.destination} as a destination yet"

        try:
            wait_until(attempt, timeout=min(60.0, ctx.wait_timeout(self)), what=f"S3 to accept {self.destination}",
                       reporter=ctx.reporter, interval=self.validate_interval)
        except WaitTimeout:
            raise failure[-1] from None

    def check(self, ctx: Context) -> Check:
        n, s3 = names(ctx), aws(ctx).s3
        plan = Plan().add("s3:PutBucketNotificationConfiguration", n.bucket, lambda: self._write(ctx),
                          "add/replace our entry only; S3 then sends an s3:TestEvent")
        if not usable_bucket(ctx).exists:
            return _planned(State.MISSING, plan)
        current = s3_api.get_notification(s3, n.bucket)
        overlap = self._overlap(ctx, current)
        if overlap:
            raise overlap
        others = sum(len(current.get(k) or []) for k in s3_api.NOTIFICATION_KINDS if k != "EventBridgeConfiguration")
        ours = s3_api.find_entry(current)
        others -= 1 if ours else 0
        detail = f"{others} other entr{'y' if others == 1 else 'ies'} kept"
        switch = ([f"ours goes to the other delivery: moved to {self.destination} (AWS_DELIVERY={self.to})"]
                  if ours is not None and s3_api.entry_kind(ours) != s3_api.entry_kind(self._entry(ctx)) else [])
        _, changed = s3_api.merge_notification(current, self._entry(ctx))
        if not changed:
            return _planned(State.PRESENT, Plan(), detail)
        return _planned(State.MISSING if ours is None else State.DRIFTED, plan, detail, extra_diff=switch)

    def _without_ours(self, ctx: Context) -> tuple[dict, bool] | None:
        n, s3 = names(ctx), aws(ctx).s3
        if not usable_bucket(ctx).exists:
            return None
        return s3_api.remove_notification(s3_api.get_notification(s3, n.bucket))

    def remove_plan(self, ctx: Context) -> Outcome:
        found = self._without_ours(ctx)
        return Outcome.WOULD_CHANGE if found and found[1] else Outcome.OK

    def remove(self, ctx: Context) -> Outcome:
        found = self._without_ours(ctx)
        if not found or not found[1]:
            return Outcome.OK
        s3_api.put_notification(aws(ctx).s3, names(ctx).bucket, found[0])
        return Outcome.CHANGED


# -- Argo objects from manifests/aws --------------------------------------------------------------

def argo_step(kind: str, name: str) -> ObjectStep:
    # rendered lazily: the topic ARN needs the account id, which needs AWS credentials
    return ObjectStep(f"aws/{kind.lower()}/{name}", lambda ctx: rendered(ctx)[(kind, name)],
                      title=f"{kind} {name}")
