"""The checks before `aws.setup`'s first write: every setting named at once, the cluster ready for the Secrets.

`PreflightStep` reads the settings (and, through `settings_problems`, says every missing or wrong one in one
line); `ClusterReadyStep` checks that the namespace the Secrets go to is there. Both read only.
"""

from __future__ import annotations

from urllib.parse import urlparse

from etlboot import config
from etlboot import manifests as m
from etlboot.engine import Check, Context, State, Step, StepError
from etlboot.steps import kube

from . import WEBHOOK_PORT
from .steps import aws, needs_webhook

WEBHOOK_HINT = (f"set SNS_WEBHOOK_URL to the public http(s) address that forwards to the EventSource's port "
                f"{WEBHOOK_PORT} (README: Making the webhook reachable)")


def settings_problems(settings, need_webhook: bool | None = None) -> list[StepError]:
    """Every setting the aws tasks need that is missing or unusable: all of them, so that one run names
    each one (`config.aws_problems`, of which `config.require_aws` raises the first). The webhook address
    is needed only by the sns-webhook delivery (`need_webhook=None`: as AWS_DELIVERY says)."""
    if need_webhook is None:
        need_webhook = needs_webhook(settings)
    problems = [StepError(problem, hint=fix) for problem, fix in config.aws_problems(settings)]
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


