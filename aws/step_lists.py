"""The step lists `aws.setup` / `aws.status` / `aws.teardown` run, for the delivery AWS_DELIVERY names.

- sns-webhook: bucket -> topic -> IAM users/keys -> Argo objects -> the subscription -> the notification entry;
- sqs: bucket -> dead-letter queue -> queue -> IAM users/keys -> Argo objects -> the notification entry.

With AWS_EVENTSOURCE_ROLE_ARN / AWS_ETL_ROLE_ARN (EKS, `aws.roles`) the users and keys the roles stand in
for are left out, and the ETL's ServiceAccount comes before the Argo objects. Teardown runs the steps of both
deliveries and of both ways of signing in: what any earlier setup made goes, and only that.
"""

from __future__ import annotations

from etlboot.engine import Check, Context, State, Step
from etlboot.cluster_steps import KubeContextStep

from . import EVENTSOURCE_NAME, S3_SECRET, SNS_SECRET, SQS, SQS_EVENTSOURCE_NAME, SQS_SECRET
from .roles import ETL_ROLE_OBJECTS, etl_role, eventsource_role
from .iam_steps import CredentialsStep, UserStep
from .preflight_steps import ClusterReadyStep, PreflightStep, one_error
from .sqs_steps import QueueStep
from .steps import AwsStep, BucketStep, NotificationStep, SubscriptionStep, TopicStep, argo_step, delivery, needs_webhook

ARGO_OBJECTS = (("WorkflowTemplate", "s3-etl"), ("Sensor", "aws-s3-etl"), ("EventSource", EVENTSOURCE_NAME))
SQS_ARGO_OBJECTS = (("WorkflowTemplate", "s3-etl"), ("Sensor", "aws-sqs-etl"), ("EventSource", SQS_EVENTSOURCE_NAME))


class PreconditionsStep(Step):
    """Everything that can be read before the first write, checked before it: a bucket or a name taken by
    someone else, a user without a free access-key slot, a notification entry S3 would refuse next to ours.
    Every failing one is reported (in one line), and nothing is created or changed."""

    removable = False

    def __init__(self, steps: list[Step]):
        self.steps = steps
        self.name = "aws/preconditions"
        self.title = "nothing in the way (checked before anything is created)"

    def check(self, ctx: Context) -> Check:
        problems = [problem for step in self.steps for problem in step.preconditions(ctx)]
        if not problems:
            return Check(State.PRESENT, detail="bucket, topic, users, key slots and notification entries checked")
        raise one_error(problems, "preconditions fail, so nothing was created or changed",
                        one_suffix=" (nothing was created or changed)")

    def apply(self, ctx: Context, check: Check) -> None:  # pragma: no cover - present or failing
        pass


def identity_steps(settings, source: str, secret: str, every: bool = False) -> list[AwsStep]:
    """The IAM users and their keys in Secrets: of the EventSource (`source`: sns or sqs) and of the ETL job;
    either is left out when an IAM role stands in for it (`aws.roles`), unless `every` (teardown)."""
    pairs = [(role, name) for role, name, arn in ((source, secret, eventsource_role(settings)),
                                                  ("s3", S3_SECRET, etl_role(settings))) if every or not arn]
    return [*(UserStep(role) for role, _ in pairs), *(CredentialsStep(role, name) for role, name in pairs)]


def argo_steps(settings, objects, every: bool = False) -> list[Step]:
    """The Argo objects of a delivery, after the ETL role's ServiceAccount when AWS_ETL_ROLE_ARN is set."""
    extra = ETL_ROLE_OBJECTS if every or etl_role(settings) else ()
    return [argo_step(kind, name) for kind, name in (*extra, *objects)]


def setup_steps(ctx: Context) -> list[Step]:
    """What `aws.setup` runs, for the delivery AWS_DELIVERY names."""
    return sqs_setup_steps(ctx) if delivery(ctx.settings) == SQS else sns_setup_steps(ctx)


def sns_setup_steps(ctx: Context, every: bool = False) -> list[Step]:
    aws_steps = [BucketStep(), TopicStep(), *identity_steps(ctx.settings, "sns", SNS_SECRET, every)]
    notification = NotificationStep()
    return [
        PreflightStep(need_webhook=True, applies=True),
        KubeContextStep(),
        ClusterReadyStep(),
        PreconditionsStep([*aws_steps, notification]),
        *aws_steps,
        *argo_steps(ctx.settings, ARGO_OBJECTS, every),
        SubscriptionStep(),
        notification,
    ]


def sqs_setup_steps(ctx: Context, every: bool = False) -> list[Step]:
    """`every`: also the steps an IAM role stands in for (teardown removes what an earlier setup made)."""
    aws_steps = [BucketStep(), QueueStep(dead_letter=True), QueueStep(dead_letter=False),
                 *identity_steps(ctx.settings, "sqs", SQS_SECRET, every)]
    notification = NotificationStep(to=SQS)
    return [
        PreflightStep(need_webhook=False, applies=True),
        KubeContextStep(),
        ClusterReadyStep(),
        PreconditionsStep([*aws_steps, notification]),
        *aws_steps,
        *argo_steps(ctx.settings, SQS_ARGO_OBJECTS, every),
        notification,
    ]


def status_steps(ctx: Context) -> list[Step]:
    # each step reports its own precondition: the combined check is what keeps setup from starting
    # (a step with `for_status` reports more there: the dead-letter queue holding messages is unhealthy)
    return [PreflightStep(need_webhook=needs_webhook(ctx.settings)) if isinstance(step, PreflightStep)
            else step.for_status() if hasattr(step, "for_status") else step
            for step in setup_steps(ctx) if not isinstance(step, PreconditionsStep)]


class TeardownGuardStep(Step):
    """Checked before teardown deletes anything: refuses a wrong kube context or missing AWS settings.

    A gate: the runner's `down` checks it first and deletes nothing when it fails."""

    removable = False
    gates_all = True

    def __init__(self):
        self.name = "aws/preflight"
        self.title = "kube context and AWS credentials (checked before deleting)"

    def check(self, ctx: Context) -> Check:
        # the settings first, as setup checks them: what is missing is said whatever state the cluster is in
        preflight = PreflightStep(need_webhook=False).check(ctx)
        KubeContextStep().check(ctx)
        return preflight

    def apply(self, ctx: Context, check: Check) -> None:  # pragma: no cover
        pass


def teardown_steps(ctx: Context) -> list[Step]:
    """The guard, then the setup lists of both deliveries (what an earlier AWS_DELIVERY made goes too);
    the runner checks the guard first, skips the read-only checks, removes in reverse order, and each step
    deletes only what carries our tag/label. The guard checks the settings without the webhook address
    (deleting needs none), in place of setup's preflight."""
    sns, sqs = sns_setup_steps(ctx, every=True), sqs_setup_steps(ctx, every=True)
    # interleaved by kind, so that removing in reverse order takes the notification entry first, then the
    # Argo objects, the keys, the users, the topic and queues, and the bucket last
    order = ["aws/s3-bucket", "aws/sns-topic", "aws/sqs-dlq", "aws/sqs-queue", "aws/iam-user", "aws/credentials",
             "aws/serviceaccount", "aws/rolebinding", "aws/workflowtemplate", "aws/sensor", "aws/eventsource",
             "aws/sns-subscription", "aws/s3-notification"]

    def rank(step: Step) -> int:
        return next((i for i, prefix in enumerate(order) if step.name.startswith(prefix)), -1)

    unique = {step.name: step for step in [*sns, *sqs] if not isinstance(step, (PreflightStep, PreconditionsStep))}
    return [TeardownGuardStep(), *sorted(unique.values(), key=rank)]
