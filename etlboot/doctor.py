"""`invoke doctor`: the failure modes users of Argo Events and Argo Workflows meet most, each checked
read-only and named with its fix.

Each check is a step of the engine run in `status` mode, so doctor has the same gates (tools, cluster,
context), the same one-line output per check, `--json`, and exit code 1 when a problem is found. A
problem's fix is the step's hint. What is checked, and how:

- a MinIO EventSource whose listener ended (its log says so: FACTS §2, it never listens again until its
  pod restarts);
- the Sensors' ServiceAccount may create Workflows, and the workflows' ServiceAccount may create and
  patch WorkflowTaskResults: asked of the cluster's own authorizer with SubjectAccessReviews, so a
  binding someone changed, or an admission or RBAC setup we did not write, shows as it really is;
- the EventBus is ready and its JetStream pods run;
- pods of the namespace stuck in ImagePullBackOff / ErrImagePull / CrashLoopBackOff /
  CreateContainerConfigError, or killed for memory (OOMKilled), with the container's last message;
- the artifact repository: the ConfigMap names a key it has, its Secret exists, its bucket exists;
- the FTP server's clock, as the event server measured it against the cluster's, when it is off by
  more than the minimum age a file must reach before it is reported;
- with the AWS settings given: for `AWS_DELIVERY=sqs` the dead-letter queue is empty, for `sns-webhook` the SNS
  subscription is confirmed (not pending).
"""

from __future__ import annotations

import re

import yaml

from . import manifests as m
from .engine import Check, Context, State, Step
from .steps import kube, minio_client, minio_listener_state, readiness

STUCK_REASONS = {
    "ImagePullBackOff": "the image cannot be pulled: check its name and tag (ETL_IMAGE, MINIO_IMAGE, FTP_IMAGE) "
                        "and that the node can reach its registry; on minikube `invoke up` builds the ETL image",
    "ErrImagePull": "the image cannot be pulled: check its name and tag and the node's access to the registry",
    "CrashLoopBackOff": "it exits again and again: `kubectl logs -n {ns} {pod} -c {container} --previous` "
                        "shows why",
    "CreateContainerConfigError": "a Secret or ConfigMap it refers to is missing: `invoke up` makes ours",
}
OOM_FIX = "it used more memory than its limit: raise the memory limit of that container (or give it less data)"
CLOCK_LINE = re.compile(r"the FTP server's clock is about ([+-]\d+)s off ours")


class Diagnosis(Step):
    """A read-only check: PRESENT and healthy when all is well, else unhealthy with the fix as hint."""

    removable = False

    def __init__(self, name: str, title: str):
        self.name = f"doctor/{name}"
        self.title = title

    @staticmethod
    def ok(detail: str) -> Check:
        return Check(State.PRESENT, healthy=True, detail=detail)

    @staticmethod
    def problem(detail: str, fix: str) -> Check:
        return Check(State.PRESENT, healthy=False, detail=detail, hint=fix)

    def apply(self, ctx: Context, check: Check) -> None:  # doctor only looks
        raise NotImplementedError


class MinioListeners(Diagnosis):
    def __init__(self):
        super().__init__("minio-listeners", "the MinIO EventSources still listen to their bucket")

    def check(self, ctx: Context) -> Check:
        namespace = ctx.settings.namespace
        sources = [d["metadata"]["name"] for d in m.render_group("pipeline", m.variables(ctx.settings))
                   if d["kind"] == "EventSource" and "minio" in (d.get("spec") or {})]
        stopped, unknown = [], []
        for name in sources:
            if kube(ctx).get("argoproj.io/v1alpha1", "EventSource", name, namespace) is None:
                unknown.append(f"{name} (not installed)")
                continue
            listening, detail = minio_listener_state(kube(ctx), namespace, name)
            if listening is False:
                stopped.append(name)
            elif listening is None:
                unknown.append(f"{name} ({detail})")
        if stopped:
            return self.problem(f"EventSource {', '.join(stopped)} stopped listening: MinIO was unreachable or "
                                "the bucket missing when it started, and it never listens again by itself",
                                "`invoke up` restarts its pod (or `kubectl delete pod -n "
                                f"{namespace} -l eventsource-name={stopped[0]}`)")
        if unknown:
            return self.problem(f"cannot tell yet: {', '.join(unknown)}", "`invoke up`, then look again")
        return self.ok(f"{', '.join(sources)} listening")


class Permission(Diagnosis):
    """What a ServiceAccount of ours may do, asked of the cluster's authorizer."""

    def __init__(self, name: str, account: str, group: str, resource: str, verbs: tuple[str, ...], what: str):
        super().__init__(name, f"ServiceAccount {account} may {'/'.join(verbs)} {resource}")
        self.account, self.group, self.resource, self.verbs, self.what = account, group, resource, verbs, what

    def check(self, ctx: Context) -> Check:
        namespace = ctx.settings.namespace
        user = f"system:serviceaccount:{namespace}:{self.account}"
        denied, reasons = [], []
        for verb in self.verbs:
            allowed, reason = kube(ctx).allowed(user, verb, self.group, self.resource, namespace)
            (reasons if allowed else denied).append(reason if allowed else verb)
        if denied:
            return self.problem(f"ServiceAccount {self.account} may not {'/'.join(denied)} {self.resource} in "
                                f"{namespace}: {self.what}",
                                "`invoke up --only platform` restores the Roles and RoleBindings in "
                                "manifests/platform/rbac.yaml")
        return self.ok(f"{'/'.join(self.verbs)} {self.resource} allowed"
                       + (f" ({reasons[0]})" if reasons and reasons[0] else ""))


class EventBusReady(Diagnosis):
    def __init__(self):
        super().__init__("eventbus", "the EventBus is ready and its JetStream pods run")

    def check(self, ctx: Context) -> Check:
        namespace = ctx.settings.namespace
        bus = kube(ctx).get("argoproj.io/v1alpha1", "EventBus", "default", namespace)
        fix = "`invoke up --only platform`; then `kubectl describe eventbus default -n " + namespace + "`"
        if bus is None:
            return self.problem("EventBus default is missing: no event reaches any Sensor", fix)
        ok, detail = readiness(bus)
        if not ok:
            return self.problem(f"EventBus default {detail}", fix)
        pods = kube(ctx).list("v1", "Pod", namespace, label_selector="eventbus-name=default")
        ready = [p for p in pods if _pod_ready(p)]
        want = int(((bus.get("spec") or {}).get("jetstream") or {}).get("replicas") or 1)
        if len(ready) < want:
            return self.problem(f"{len(ready)}/{want} JetStream pods ready", fix.replace(
                "describe eventbus default", "get pods -l eventbus-name=default"))
        return self.ok(f"ready, {len(ready)}/{want} JetStream pods")


def _pod_ready(pod: dict) -> bool:
    conditions = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []}
    return (pod.get("status") or {}).get("phase") == "Running" and conditions.get("Ready") == "True"


class StuckPods(Diagnosis):
    def __init__(self):
        super().__init__("pods", "no pod stuck pulling its image, crash-looping or killed for memory")

    def check(self, ctx: Context) -> Check:
        namespace = ctx.settings.namespace
        problems, fixes = [], []
        for pod in kube(ctx).list("v1", "Pod", namespace):
            name = pod["metadata"]["name"]
            status = pod.get("status") or {}
            for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                state, last = cs.get("state") or {}, cs.get("lastState") or {}
                waiting = state.get("waiting") or {}
                killed = (state.get("terminated") or {}).get("reason") == "OOMKilled" or \
                    (last.get("terminated") or {}).get("reason") == "OOMKilled"
                if waiting.get("reason") in STUCK_REASONS:
                    message = (waiting.get("message") or "").strip().splitlines()
                    problems.append(f"pod {name} container {cs.get('name')}: {waiting['reason']}"
                                    + (f" ({message[0][:160]})" if message else ""))
                    fixes.append(STUCK_REASONS[waiting["reason"]].format(ns=namespace, pod=name,
                                                                         container=cs.get("name")))
                elif killed:
                    problems.append(f"pod {name} container {cs.get('name')}: OOMKilled "
                                    f"({cs.get('restartCount', 0)} restarts)")
                    fixes.append(OOM_FIX)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            return self.problem("; ".join(problems[:3]) + more, fixes[0])
        return self.ok("none")


class ArtifactRepository(Diagnosis):
    def __init__(self):
        super().__init__("artifact-repository", "the workflows' artifact repository is configured and its bucket exists")

    def check(self, ctx: Context) -> Check:
        namespace = ctx.settings.namespace
        fix = "`invoke up --only platform` restores ConfigMap artifact-repositories, its Secret and its bucket"
        cm = kube(ctx).get("v1", "ConfigMap", "artifact-repositories", namespace)
        if cm is None:
            return self.problem("ConfigMap artifact-repositories is missing: workflows that pass artifacts fail", fix)
        key = ((cm["metadata"].get("annotations") or {})
               .get("workflows.argoproj.io/default-artifact-repository"))
        text = (cm.get("data") or {}).get(key or "")
        if not text:
            return self.problem(f"ConfigMap artifact-repositories has no entry {key!r} (its default)", fix)
        s3 = (yaml.safe_load(text) or {}).get("s3") or {}
        for ref in ("accessKeySecret", "secretKeySecret"):
            secret = (s3.get(ref) or {}).get("name")
            live = kube(ctx).get("v1", "Secret", secret, namespace) if secret else None
            if live is None or (s3.get(ref) or {}).get("key") not in (live.get("data") or {}):
                return self.problem(f"the artifact repository's {ref} ({secret}) is missing or lacks its key", fix)
        bucket = s3.get("bucket")
        if not bucket or not minio_client(ctx).bucket_exists(bucket):
            return self.problem(f"the artifact repository's bucket {bucket!r} does not exist in MinIO", fix)
        return self.ok(f"{key}: s3://{bucket} at {s3.get('endpoint')}")


class FtpClock(Diagnosis):
    def __init__(self):
        super().__init__("ftp-clock", "the FTP server's clock agrees with the cluster's")

    def skip_reason(self, ctx: Context) -> str | None:
        return None if ctx.settings.ftp_enabled else "FTP_ENABLED=false"

    def check(self, ctx: Context) -> Check:
        namespace = ctx.settings.namespace
        pods = [p for p in kube(ctx).list("v1", "Pod", namespace, label_selector="app=ftp-event-server")
                if (p.get("status") or {}).get("phase") == "Running"]
        if not pods:
            return self.problem("the FTP event server is not running", "`invoke up`; then "
                                f"`kubectl describe deploy ftp-event-server -n {namespace}`")
        offsets = CLOCK_LINE.findall(kube(ctx).pod_log(namespace, pods[0]["metadata"]["name"], tail=2000))
        if not offsets:
            return self.ok("no offset measured above 5 s")
        offset = int(offsets[-1])
        values = ctx.settings.values
        min_age = float(values.get("FTP_MIN_AGE_SECONDS") or max(30, 3 * int(values["FTP_POLL_SECONDS"])))
        if abs(offset) < max(min_age, 5):
            return self.ok(f"about {offset:+d}s off, below the minimum age of {min_age:.0f}s")
        return self.problem(f"the FTP server's clock is about {offset:+d}s off the cluster's, more than the "
                            f"minimum age of {min_age:.0f}s: until the event server has seen three files change "
                            "after a restart, files can be reported too early or too late",
                            "set the FTP server's clock right (NTP), or use a done marker (FTP_DONE_FILE), which "
                            "does not depend on clocks")


def doctor_steps(ctx: Context) -> list[Step]:
    from .stack import gate_steps

    steps: list[Step] = gate_steps(ctx) + [
        MinioListeners(),
        Permission("sensor-rbac", m.SENSOR_SA, "argoproj.io", "workflows", ("create",),
                   "its Sensors' triggers fail with 'forbidden' and no workflow runs"),
        Permission("workflow-rbac", m.WORKFLOW_SA, "argoproj.io", "workflowtaskresults", ("create", "patch"),
                   "every workflow step fails to report its result (Argo Workflows ≥ 3.4)"),
        EventBusReady(),
        StuckPods(),
        ArtifactRepository(),
        FtpClock(),
    ]
    values = ctx.settings.values
    if values.get("AWS_REGION") and values.get("AWS_BUCKET"):
        if values.get("AWS_DELIVERY") == "sns-webhook":
            if values.get("SNS_WEBHOOK_URL"):
                steps.append(sns_subscription_step())
        else:
            steps.append(dead_letters_step())
    return steps


def dead_letters_step() -> Step:
    """aws.status's dead-letter queue check: events the SQS EventSource could not pass on."""
    from aws.sqs_steps import QueueStep

    class DeadLetters(QueueStep):
        def check(self, ctx: Context) -> Check:
            check = super().check(ctx)
            check.hint = ("the EventSource received these events but could not pass them on: its log says why "
                          f"(`kubectl logs -n {ctx.settings.namespace} -l eventsource-name=aws-sqs`); "
                          "`invoke aws.status` shows how to read and re-drive them")
            return check

    return DeadLetters(dead_letter=True, dead_letters_unhealthy=True)


def sns_subscription_step() -> Step:
    """aws.status's subscription check, with the fix for a subscription that stays pending."""
    from aws.steps import SubscriptionStep

    class SnsSubscription(SubscriptionStep):
        def check(self, ctx: Context) -> Check:
            check = super().check(ctx)
            check.hint = ("SNS must reach SNS_WEBHOOK_URL from the internet over https with a certificate it "
                          "trusts; once it does, `invoke aws.setup` waits for the confirmation")
            return check

    return SnsSubscription()
