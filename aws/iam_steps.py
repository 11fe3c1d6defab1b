"""The IAM users of the AWS wiring and their access keys, kept as Kubernetes Secrets (or EKS roles instead).

`UserStep`: one tagged IAM user per role (`USER_ROLES`), with its one inline least-privilege policy.
`CredentialsStep`: the user's access key, created only when its Secret is missing or stale, marked with a user
tag so teardown deletes only keys this tool made; at most `IAM_KEYS_PER_USER` keys are respected. Both follow
the contract of `aws.steps` (check reads and plans, a run executes exactly the plan, remove only what is ours).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from etlboot.engine import Check, Context, Outcome, State, StepError
from etlboot.kube import is_managed, with_identity
from etlboot.steps import kube, secret_object

from . import SECRET_ID_KEY, SECRET_KEY_KEY, TAG_KEY, TAG_VALUE, TAGS, USER_POLICY_NAME
from . import iam as iam_api
from . import policies
from .plan import Plan
from .steps import AwsStep, TaggedStep, _planned, aws, names, plural

#: user tag value marking an access key (tag key = the key's id) as created by this tool
KEY_MARK = f"{TAG_VALUE} access key"

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
            held.append(f"inline {plural(len(inline), 'policy', 'policies')} {', '.join(inline)}")
        attached = iam_api.attached_policy_names(iam, user)
        if attached:
            held.append(f"attached {plural(len(attached), 'policy', 'policies')} {', '.join(attached)}")
        groups = iam_api.group_names(iam, user)
        if groups:
            held.append(f"membership of {plural(len(groups), 'group', 'groups')} {', '.join(groups)}")
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


