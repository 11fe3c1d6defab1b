"""The steps of `aws.setup` / `aws.status` / `aws.teardown`, in the engine's contract.

Each AWS step's `check` reads (only reads) and returns the calls it intends (`aws.plan`): a dry run
prints them, a run executes exactly them, and the runner checks again until the step converged.
Before the first of them, `PreconditionsStep` asks every step what it can already tell is in the way
(`preconditions`), so setup fails whole or starts; it never stops half-way for a reason it could read.
`remove` deletes only what carries our tag (the notification entry: only ours, by its Id; keys: those
marked when created; a user only when nothing else is left on it). The queue steps of the sqs delivery are
in `aws.sqs_steps`; the lists each task runs, for either delivery, in `aws.step_lists`.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from urllib.parse import urlparse

from etlboot import config
from etlboot import manifests as m
from etlboot.engine import Check, Context, Outcome, State, Step, StepError, WaitTimeout, wait_until
from etlboot.kube import is_managed, with_identity
from etlboot.steps import ObjectStep, kube, secret_object

from . import (INPUT_PREFIX, INPUT_SUFFIX, S3_SECRET, SECRET_ID_KEY, SECRET_KEY_KEY, SNS_SECRET, SNS_WEBHOOK, SQS,
               SQS_SECRET, TAG_KEY, TAG_VALUE, TAGS, TOPIC_POLICY_SID, USER_POLICY_NAME, WEBHOOK_PORT)
from . import iam as iam_api
from . import policies
from . import s3 as s3_api
from . import sns as sns_api
from .clients import AwsClients
from .plan import Plan, plan_of
from .roles import etl_role, with_roles

#: user tag value marking an access key (tag key = the key's id) as created by this tool
KEY_MARK = f"{TAG_VALUE} access key"


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


class AwsStep(Step):
    poll_interval = 1.0

    def preconditions(self, ctx: Context) -> list[StepError]:
        """What is in the way of this step and can be read before anything is written (read-only)."""
        return []

    def apply(self, ctx: Context, check: Check) -> None:
        plan_of(check).execute()


# -- preflight ------------------------------------------------------------------------------------

WEBHOOK_HINT = (f"set SNS_WEBHOOK_URL to the public http(s) address that forwards to the EventSource's port "
                f"{WEBHOOK_PORT} (README: Making the webhook reachable)")


def settings_problems(settings, need_webhook: bool | None = None) -> list[StepError]:
    """Every setting the aws tasks need that is missing or unusable: all of them, so that one run names
    each one (the same rules as `config.require_aws`, which stops at the first). The webhook address is
    needed only by the sns-webhook delivery (`need_webhook=None`: as AWS_DELIVERY says)."""
    v = settings.values
    if need_webhook is None:
        need_webhook = needs_webhook(settings)
    problems = []
    if not v["AWS_REGION"]:
        problems.append(StepError("AWS_REGION is not set: the aws tasks never guess a region",
                                  hint="set AWS_REGION, e.g. eu-west-1"))
    if not v["AWS_PROFILE"] and not (os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")):
        problems.append(StepError("AWS_PROFILE is not set and no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the "
                                  "environment", hint="set AWS_PROFILE, or export the two keys"))
    if not v["AWS_BUCKET"]:
        problems.append(StepError("AWS_BUCKET is not set (S3 bucket names are global: pick your own)",
                                  hint="set AWS_BUCKET"))
    if need_webhook:
        try:
            config.require_public_webhook(settings)
        except config.ConfigError as exc:
            problems.append(StepError(str(exc), hint=WEBHOOK_HINT))
    return problems


def one_error(problems: list[StepError], many: str, one_suffix: str = "") -> StepError:
    """Several problems as one line: `N <many>: (1) …; (2) …`, their hints numbered the same way."""
    if len(problems) == 1:
        return StepError(f"{problems[0]}{one_suffix}", hint=problems[0].hint)
    numbered = [f"({i}) {p}" for i, p in enumerate(problems, 1)]
    hints = [f"({i}) {p.hint}" for i, p in enumerate(problems, 1) if p.hint]
    return StepError(f"{len(problems)} {many}: " + "; ".join(numbered), hint="; ".join(hints))


class PreflightStep(Step):
    """Region, credentials, bucket (and for sns-webhook the public webhook address) are set; says which
    account we act on.

    A gate: without them no AWS step can even be checked, so `aws.status` says so once, not once per step."""

    removable = False
    gates_all = True

    def __init__(self, need_webhook: bool = True, applies: bool = False):
        self.name = "aws/preflight"
        self.title = "AWS region, credentials" + (" and webhook address" if need_webhook else "")
        self.need_webhook = need_webhook
        self.applies = applies  # aws.setup: the run subscribes the webhook, so its path must be there

    def check(self, ctx: Context) -> Check:
        problems = settings_problems(ctx.settings, self.need_webhook)
        if problems:
            raise one_error(problems, "settings are missing or unusable")
        unborn = self.need_webhook and not ctx.settings.values.get("SNS_WEBHOOK_PATH")
        if unborn and self.applies and not ctx.dry_run:
            raise StepError("SNS_WEBHOOK_PATH is empty", hint="delete it from .env to have one generated")
        who = aws(ctx).identity()
        detail = f"account {who.account}, region {ctx.settings.values['AWS_REGION']}"
        if unborn:
            detail += "; SNS_WEBHOOK_PATH is not generated yet (the first aws.setup writes it into .env)"
        if self.need_webhook and urlparse(ctx.settings.values["SNS_WEBHOOK_URL"]).scheme == "http":
            detail += "; warning: SNS_WEBHOOK_URL is http, so the webhook path travels unencrypted (use https)"
        return Check(State.PRESENT, detail=detail)

    def apply(self, ctx: Context, check: Check) -> None:  # pragma: no cover - always present or failing
        pass


class ClusterReadyStep(Step):
    """`invoke up` ran: the namespace and the etl-code ConfigMap holding s3_etl.py exist."""

    removable = False

    def __init__(self):
        self.name = "aws/cluster-ready"
        self.title = "the pipeline from `invoke up` is in place"

    def check(self, ctx: Context) -> Check:
        ns = ctx.settings.namespace
        if kube(ctx).get("v1", "Namespace", ns) is None:
            raise StepError(f"namespace {ns} does not exist", hint="run `invoke up` first")
        code = kube(ctx).get("v1", "ConfigMap", m.CODE_CONFIGMAP, ns)
        if code is None or "s3_etl.py" not in (code.get("data") or {}):
            raise StepError(f"ConfigMap {m.CODE_CONFIGMAP} with s3_etl.py is not in namespace {ns}",
                            hint="run `invoke up` (it builds the ConfigMap from code/*.py)")
        return Check(State.PRESENT, detail=f"namespace {ns}, {m.CODE_CONFIGMAP} has s3_etl.py")

    def apply(self, ctx: Context, check: Check) -> None:  # pragma: no cover
        pass


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


# -- IAM users ------------------------------------------------------------------------------------

#: each IAM user's role: what it is for, and its one inline policy
USER_ROLES = {
    "sns": ("IAM user of the SNS EventSource (Subscribe/ConfirmSubscription/Unsubscribe on the topic)",
            lambda n: policies.sns_user_policy(n.topic_arn)),
    "sqs": ("IAM user of the SQS EventSource (ReceiveMessage/DeleteMessage/GetQueueAttributes/GetQueueUrl "
            "on the queue)", lambda n: policies.sqs_user_policy(n.queue_arn)),
    "s3": ("IAM user of the ETL job (read input/, write output/)",
           lambda n: policies.s3_user_policy(n.bucket, n.partition)),
}


def user_of(ctx: Context, role: str) -> str:
    return getattr(names(ctx), f"{role}_user")


class UserStep(TaggedStep):
    """An IAM user, tagged, whose only permission is our inline policy."""

    def __init__(self, role: str):
        self.role = role  # "sns" / "sqs" (the EventSource) or "s3" (the ETL job)
        self.name = f"aws/iam-user-{role}"
        self.title = USER_ROLES[role][0]

    def user(self, ctx: Context) -> str:
        return user_of(ctx, self.role)

    def document(self, ctx: Context) -> dict:
        return USER_ROLES[self.role][1](names(ctx))

    def _not_ours(self, ctx: Context) -> StepError:
        return StepError(f"IAM user {self.user(ctx)} exists but is not tagged {TAG_KEY}={TAG_VALUE}: not created by "
                         "this tool, left alone", hint=f"set AWS_{self.role.upper()}_USER to another name")

    def check(self, ctx: Context) -> Check:
        iam, user, document = aws(ctx).iam, self.user(ctx), self.document(ctx)
        put = ("iam:PutUserPolicy", f"{user} {USER_POLICY_NAME}",
               lambda: iam_api.put_user_policy(iam, user, USER_POLICY_NAME, document))
        if iam_api.get_user(iam, user) is None:
            plan = Plan().add("iam:CreateUser", user, lambda: iam_api.create_user(iam, user, TAGS),
                              f"tag {TAG_KEY}={TAG_VALUE}, no console access")
            plan.add(*put)
            return _planned(State.MISSING, plan)
        if iam_api.user_tags(iam, user).get(TAG_KEY) != TAG_VALUE:
            raise self._not_ours(ctx)
        if not policies.same_policy(iam_api.user_policy(iam, user, USER_POLICY_NAME), document):
            return _planned(State.DRIFTED, Plan().add(*put, "policy differs from the least-privilege one"), user)
        return _planned(State.PRESENT, Plan(), user)

    def _ours(self, ctx: Context) -> bool | None:
        iam, user = aws(ctx).iam, self.user(ctx)
        if iam_api.get_user(iam, user) is None:
            return None
        return iam_api.user_tags(iam, user).get(TAG_KEY) == TAG_VALUE

    def _holdings(self, ctx: Context, ours: set[str]) -> list[str]:
        """What is on the user that this tool did not put there (`ours`: ids of our keys still on it).

        The user is deleted only when this is empty: a key, policy or group someone added means the user
        is in use beyond this tool."""
        iam, user = aws(ctx).iam, self.user(ctx)
        held: list[str] = []
        keys = [k for k in iam_api.access_keys(iam, user) if k["AccessKeyId"] not in ours]
        if keys:
            held.append(_count(len(keys), "access key"))
        inline = [p for p in iam_api.inline_policy_names(iam, user) if p != USER_POLICY_NAME]
        if inline:
            held.append(f"inline {_plural(len(inline), 'policy', 'policies')} {', '.join(inline)}")
        attached = iam_api.attached_policy_names(iam, user)
        if attached:
            held.append(f"attached {_plural(len(attached), 'policy', 'policies')} {', '.join(attached)}")
        groups = iam_api.group_names(iam, user)
        if groups:
            held.append(f"membership of {_plural(len(groups), 'group', 'groups')} {', '.join(groups)}")
        boundary = ((iam_api.get_user(iam, user) or {}).get("PermissionsBoundary") or {}).get(
            "PermissionsBoundaryArn")
        if boundary:
            held.append(f"permissions boundary {boundary.rsplit('/', 1)[-1]}")
        if iam_api.has_login_profile(iam, user):
            held.append("a console password")
        for items, what in ((iam_api.mfa_devices(iam, user), "MFA device"),
                            (iam_api.ssh_public_keys(iam, user), "SSH public key"),
                            (iam_api.signing_certificates(iam, user), "signing certificate")):
            if items:
                held.append(_count(len(items), what))
        return held

    def _say_kept(self, ctx: Context, user: str, held: list[str], *, would: bool = False) -> None:
        verb = "would keep" if would else "kept"
        removed = "would remove" if would else "removed"
        ctx.reporter.say(f"  {self.name}: {verb} IAM user {user}, because it holds what this tool did not make "
                         f"({'; '.join(held)}); {removed} only this tool's keys, inline policy {USER_POLICY_NAME} "
                         f"and tag {TAG_KEY}")

    def _would_delete(self, ctx: Context) -> Outcome:
        held = self._holdings(ctx, _marked_keys(aws(ctx).iam, self.user(ctx)))
        if held:
            self._say_kept(ctx, self.user(ctx), held, would=True)
        return Outcome.WOULD_CHANGE

    def _delete(self, ctx: Context) -> Outcome:
        iam, user = aws(ctx).iam, self.user(ctx)
        marks = _key_marks(iam, user)
        for key_id in _marked_keys(iam, user):  # normally gone already (the credentials step ran first)
            iam_api.delete_access_key(iam, user, key_id)
        iam_api.delete_user_policy(iam, user, USER_POLICY_NAME)
        held = self._holdings(ctx, set())
        if not held:
            try:
                iam_api.delete_user(iam, user)
                return Outcome.CHANGED
            except iam_api.UserNotEmpty as exc:  # something not listed above (e.g. a service credential)
                held = [f"something IAM would not delete it with ({exc})"]
        # the user is in use beyond this tool: it stays, and is no longer marked as ours
        iam_api.untag_user(iam, user, [TAG_KEY, *marks])
        self._say_kept(ctx, user, held)
        return Outcome.SKIPPED


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _count(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _key_marks(iam, user: str) -> list[str]:
    """The user's tags that mark an access key (tag key = the key's id) as created by this tool."""
    return sorted(k for k, v in iam_api.user_tags(iam, user).items() if v == KEY_MARK)


def _marked_keys(iam, user: str) -> set[str]:
    """Ids of the user's access keys this tool created: marked by a user tag when they were made. A key
    merely found in our Secret is not proof (a Secret can be edited), so it is never deleted on that basis."""
    marks = set(_key_marks(iam, user))
    return {k["AccessKeyId"] for k in iam_api.access_keys(iam, user) if k["AccessKeyId"] in marks}


# -- access keys and their Secrets ----------------------------------------------------------------

#: IAM's limit of access keys per user
IAM_KEYS_PER_USER = 2


@dataclass
class KeySituation:
    """What the credentials step sees: the Secret, the user's keys, which of them are ours."""

    live: dict | None          # the Secret
    key_id: str | None         # the key id the Secret holds
    secret_key: str | None
    user_exists: bool
    user_ours: bool
    keys: list[str]            # ids of the user's keys
    ours: set[str]             # ids of the keys this tool created (marked)
    rotate: bool

    @property
    def matches(self) -> bool:
        """The Secret holds a complete key that the user has."""
        return bool(self.key_id and self.secret_key and self.key_id in self.keys)

    @property
    def needs_new_key(self) -> bool:
        return not self.matches or self.rotate

    @property
    def stale(self) -> list[str]:
        """Our keys other than the one in the Secret: deleted before a new key is made."""
        return sorted(self.ours - ({self.key_id} if self.matches else set()))

    @property
    def free_slots(self) -> int:
        return IAM_KEYS_PER_USER - (len(self.keys) - len(self.stale))


class CredentialsStep(AwsStep):
    """The user's access key in a Kubernetes Secret. A key whose Secret still matches is reused; IAM allows
    two keys per user, so a third is never attempted; --rotate-keys: create new -> update Secret -> delete old.
    """

    def __init__(self, role: str, secret: str):
        self.role = role
        self.secret = secret
        self.name = f"aws/credentials-{role}"
        self.title = f"access key of the {role} user in Secret {secret}"

    def user(self, ctx: Context) -> str:
        return user_of(ctx, self.role)

    def _secret(self, ctx: Context) -> tuple[dict | None, str | None, str | None]:
        live = kube(ctx).get("v1", "Secret", self.secret, ctx.settings.namespace)
        data = (live or {}).get("data") or {}

        def decoded(key: str) -> str | None:
            try:
                return base64.b64decode(data[key]).decode() if data.get(key) else None
            except (ValueError, UnicodeDecodeError):
                return None

        key_id, secret_key = decoded(SECRET_ID_KEY), decoded(SECRET_KEY_KEY)
        ctx.reporter.redact.add(*(v for v in (key_id, secret_key) if v))
        return live, key_id, secret_key

    def _rotated(self, ctx: Context) -> set:
        return ctx.cached("aws-rotated-keys", set)

    def _situation(self, ctx: Context) -> KeySituation:
        iam, user = aws(ctx).iam, self.user(ctx)
        live, key_id, secret_key = self._secret(ctx)
        exists = iam_api.get_user(iam, user) is not None
        keys = [k["AccessKeyId"] for k in iam_api.access_keys(iam, user)] if exists else []
        tags = iam_api.user_tags(iam, user) if exists else {}
        return KeySituation(live=live, key_id=key_id, secret_key=secret_key, user_exists=exists,
                            user_ours=tags.get(TAG_KEY) == TAG_VALUE, keys=keys,
                            ours={k for k in keys if tags.get(k) == KEY_MARK},
                            rotate=bool(ctx.option("rotate_keys")) and self.secret not in self._rotated(ctx))

    def _slot_problem(self, user: str, seen: KeySituation) -> StepError | None:
        if not seen.needs_new_key or seen.free_slots > 0:
            return None
        old = seen.key_id if seen.matches else None
        whose = ("one in Secret " + self.secret + " and one not made by this tool" if old else
                 "none of them in Secret " + self.secret)
        return StepError(f"IAM user {user} already has {IAM_KEYS_PER_USER} access keys ({whose}); IAM allows "
                         f"{IAM_KEYS_PER_USER}, so no key was created",
                         hint=f"delete a key you no longer use: `aws iam list-access-keys --user-name {user}`, "
                              "then `aws iam delete-access-key`; then run again")

    def preconditions(self, ctx: Context) -> list[StepError]:
        seen = self._situation(ctx)
        if not seen.user_exists or not seen.user_ours:
            return []  # a new user has free slots; a user not ours is the user step's precondition
        problem = self._slot_problem(self.user(ctx), seen)
        return [problem] if problem else []

    def check(self, ctx: Context) -> Check:
        user = self.user(ctx)
        seen = self._situation(ctx)
        detail = f"user {user}, {len(seen.keys)} key(s)"
        plan = Plan()
        for index, stale_id in enumerate(seen.stale, 1):
            plan.add("iam:DeleteAccessKey", f"{user} (stale key #{index} made by this tool)",
                     lambda k=stale_id: self._delete_key(ctx, k))
        if not seen.needs_new_key:
            if not plan:
                return _planned(State.PRESENT, plan, f"{detail}; Secret {self.secret} holds a live key of the user")
            return _planned(State.DRIFTED, plan, detail)

        problem = self._slot_problem(user, seen)
        if problem:
            raise problem
        old = seen.key_id if seen.matches else None
        if seen.rotate and old:
            why = "rotate (--rotate-keys)"
        elif seen.live is None:
            why = f"Secret {self.secret} missing"
        elif not seen.key_id or not seen.secret_key:
            why = f"Secret {self.secret} lacks {SECRET_ID_KEY}/{SECRET_KEY_KEY}"
        else:
            why = f"Secret {self.secret} holds a key user {user} does not have"
        created: dict[str, str] = {}
        plan.add("iam:CreateAccessKey", user, lambda: self._create_key(ctx, created))
        plan.add("kubernetes:apply Secret", self.secret, lambda: self._write_secret(ctx, created, seen.rotate),
                 f"keys {SECRET_ID_KEY}, {SECRET_KEY_KEY}")
        if seen.rotate and old:
            plan.add("iam:DeleteAccessKey", f"{user} (the previous key)", lambda: self._delete_key(ctx, old))
        return _planned(State.MISSING if seen.live is None else State.DRIFTED, plan, detail, extra_diff=[why])

    def _create_key(self, ctx: Context, created: dict) -> None:
        iam, user = aws(ctx).iam, self.user(ctx)
        key_id, secret_key = iam_api.create_access_key(iam, user)
        ctx.reporter.redact.add(key_id, secret_key)
        created.update(id=key_id, secret=secret_key)
        # the mark lets a later run recognise this key as ours (e.g. if writing the Secret failed), and
        # teardown delete it: IAM access keys cannot carry tags themselves
        iam_api.tag_user(iam, user, {key_id: KEY_MARK})

    def _write_secret(self, ctx: Context, created: dict, rotate: bool) -> None:
        obj = secret_object(self.secret, {SECRET_ID_KEY: created["id"], SECRET_KEY_KEY: created["secret"]})
        kube(ctx).apply(with_identity(obj, ctx.settings.namespace))
        if rotate:  # rotated once per run: the re-check after this apply must not ask for another key
            self._rotated(ctx).add(self.secret)

    def _delete_key(self, ctx: Context, key_id: str) -> None:
        iam, user = aws(ctx).iam, self.user(ctx)
        iam_api.delete_access_key(iam, user, key_id)
        iam_api.untag_user(iam, user, [key_id])

    def _removable(self, ctx: Context) -> tuple[dict | None, list[str]]:
        """Our Secret (labelled) and our keys (marked when created) on our user."""
        live, _, _ = self._secret(ctx)
        iam, user = aws(ctx).iam, self.user(ctx)
        user_ours = (iam_api.get_user(iam, user) is not None
                     and iam_api.user_tags(iam, user).get(TAG_KEY) == TAG_VALUE)
        keys = sorted(_marked_keys(iam, user)) if user_ours else []
        return (live if is_managed(live) else None), keys

    def remove_plan(self, ctx: Context) -> Outcome:
        secret, keys = self._removable(ctx)
        return Outcome.WOULD_CHANGE if secret is not None or keys else Outcome.OK

    def remove(self, ctx: Context) -> Outcome:
        secret, keys = self._removable(ctx)
        for key_id in keys:
            self._delete_key(ctx, key_id)
        if secret is not None:
            kube(ctx).delete("v1", "Secret", self.secret, ctx.settings.namespace)
        return Outcome.CHANGED if secret is not None or keys else Outcome.OK


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
        return StepError(f"S3 bucket {bucket}: notification {_plural(len(clashing), 'entry', 'entries')} "
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
