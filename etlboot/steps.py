"""The kinds of step the stack is made of, for its objects: Kubernetes objects, CRDs, MinIO buckets and
EventSources. Each follows the contract in engine.py. The steps before any object (the tools, the context
guard, minikube, the image) are in cluster_steps.py.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Callable

from . import MANAGED_BY_LABEL, MANAGER
from .engine import Check, Context, Outcome, State, Step, StepError, wait_until
from .kube import KINDS, Kube, extra_keys, is_managed, is_terminating, kind_of, subset_diff, with_identity

# -- shared clients (opened once per run) ---------------------------------------------------------


def kube(ctx: Context) -> Kube:
    """The run's client for KUBE_CONTEXT, opened only after the context guard passed: every task that talks
    to a cluster through it (any `--only`, demo, examples, ui, aws) refuses the same way `up` does."""
    def connect() -> Kube:
        from .cluster_steps import check_kube_context   # the guard's module needs this one's clients

        check_kube_context(ctx.settings)
        return Kube.from_context(ctx.settings.kube_context, ctx.settings.request_timeout_seconds)

    return ctx.cached("kube", connect)


# -- readiness per kind ---------------------------------------------------------------------------


def _conditions(obj: dict) -> dict[str, str]:
    return {c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions") or []}


def readiness(obj: dict) -> tuple[bool | None, str]:
    """(healthy, detail) for the kinds whose readiness matters; (None, '') for the rest."""
    kind = obj.get("kind")
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet"):
        want = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0) or 0
        fresh = (status.get("observedGeneration") or 0) >= (obj["metadata"].get("generation") or 0)
        updated = status.get("updatedReplicas", 0) or 0
        ok = fresh and ready >= want and updated >= want
        return ok, f"{ready}/{want} ready" + ("" if fresh else ", rollout pending")
    if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token":
        filled = bool((obj.get("data") or {}).get("token"))
        return filled, "token filled" if filled else "token not filled yet"
    if kind == "CustomResourceDefinition":
        ok = _conditions(obj).get("Established") == "True"
        return ok, "established" if ok else "not established"
    if kind in ("EventBus", "EventSource", "Sensor"):
        conditions = _conditions(obj)
        if not conditions:
            return False, "no status from the controller yet"
        bad = sorted(t for t, s in conditions.items() if s != "True")
        return not bad, "ready" if not bad else f"not ready: {', '.join(bad)}"
    return None, ""


#: on an object `up --adopt` took over: it was there before the tool
ADOPTED = f"{MANAGER}/adopted"


# -- a Kubernetes object --------------------------------------------------------------------------


class ObjectStep(Step):
    """One Kubernetes object: server-side applied when missing or drifted; deleted by `down` if ours."""

    def __init__(self, name: str, build: Callable[[Context], dict], title: str = "", *,
                 keep_unless_purge: bool = False, wait_ready: bool = True,
                 before_apply: Callable[[Context, dict], None] | None = None,
                 extra_health: Callable[[Context, dict], tuple[bool | None, str]] | None = None):
        self.name = name
        self.title = title
        self._build = build
        self.keep_unless_purge = keep_unless_purge  # `down` leaves it unless --purge (it holds data)
        self.wait_ready = wait_ready
        self.before_apply = before_apply
        self.extra_health = extra_health
        self._adopted_in_this_run = False  # steps are made anew for every run

    def desired(self, ctx: Context) -> dict:
        return ctx.cached(f"desired:{self.name}",
                          lambda: with_identity(self._build(ctx), ctx.settings.namespace))

    def _ident(self, ctx: Context) -> tuple[str, str, str, str | None]:
        obj = self.desired(ctx)
        meta = obj["metadata"]
        return obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")

    def check(self, ctx: Context) -> Check:
        desired = self.desired(ctx)
        live = kube(ctx).get(*self._ident(ctx))
        if live is None:
            return Check(State.MISSING, detail="", healthy=None)
        if is_terminating(live):
            return Check(State.DRIFTED, diff=["being deleted: made again once it is gone"], healthy=False,
                         detail="terminating", live=live)
        if not is_managed(live):
            adopting = self._adoption(ctx, live, desired)
        elif (live["metadata"].get("annotations") or {}).get(ADOPTED):
            # keep the mark through later applies: `down` must still know we did not create it
            desired["metadata"].setdefault("annotations", {})[ADOPTED] = live["metadata"]["annotations"][ADOPTED]
            adopting = []
        else:
            adopting = []
        diff = adopting + subset_diff(desired, live)
        diff += [f".{field}.{key} (not ours)" for field, keys in extra_keys(desired, live).items() for key in keys]
        state = State.DRIFTED if diff else State.PRESENT
        healthy, detail = readiness(live) if self.wait_ready else (None, "")
        if self.extra_health and healthy is not False:
            extra, extra_detail = self.extra_health(ctx, live)
            if extra is not None:
                healthy = extra if healthy is None else (healthy and extra)
                detail = "; ".join(d for d in (detail, extra_detail) if d)
        if self._adopted_in_this_run:
            detail = "; ".join(d for d in (f"adopted with --adopt: it was there before the tool", detail) if d)
        return Check(state, diff=diff, healthy=healthy, detail=detail, live=live)

    def _adoption(self, ctx: Context, live: dict, desired: dict) -> list[str]:
        """An object with our name that we did not make: refused, unless `up --adopt` takes it over on purpose."""
        meta = live["metadata"]
        what = f"{live.get('kind')} {(meta.get('namespace') + '/') if meta.get('namespace') else ''}{meta['name']}"
        if not ctx.option("adopt"):
            raise StepError(f"{what} exists and was not made by this tool (no label {MANAGED_BY_LABEL}={MANAGER}): "
                            "refusing to overwrite it",
                            hint="give ours another name in .env (NAMESPACE, release names), or run `up --adopt` "
                                 "to take it over on purpose")
        desired["metadata"].setdefault("annotations", {})[ADOPTED] = "true"
        return [f"adopting {what} (--adopt)"]

    def apply(self, ctx: Context, check: Check) -> None:
        desired = self.desired(ctx)
        if is_terminating(check.live):
            # applying to it would not stop the deletion, and a Terminating namespace refuses new objects
            wait_gone(ctx, *self._ident(ctx))
            check = Check(State.MISSING)
        if desired["apiVersion"].startswith("argoproj.io/"):
            wait_for_crd(ctx, desired["apiVersion"], desired["kind"])
        if self.before_apply:
            self.before_apply(ctx, desired)
        kube(ctx).apply(desired)
        if any(d.startswith("adopting ") for d in check.diff):
            self._adopted_in_this_run = True  # the line of this step says so
        extra = extra_keys(desired, check.live) if check.live else {}
        if extra:
            # server-side apply keeps fields another manager set (`kubectl edit`): remove them explicitly
            api_version, kind, name, namespace = self._ident(ctx)
            kube(ctx).merge_patch(api_version, kind, name, namespace,
                                  {field: {key: None for key in keys} for field, keys in extra.items()})

    def _ours(self, ctx: Context) -> tuple[dict | None, bool]:
        live = kube(ctx).get(*self._ident(ctx))
        return live, is_managed(live)

    def _removal_allowed(self, ctx: Context) -> bool:
        return not self.keep_unless_purge or ctx.option("purge")

    def remove_plan(self, ctx: Context) -> Outcome:
        live, ours = self._ours(ctx)
        if live is None:
            return Outcome.OK
        removable = ours and self._removal_allowed(ctx) and not self._adopted_namespace(live)
        return Outcome.WOULD_CHANGE if removable else Outcome.SKIPPED

    def remove(self, ctx: Context) -> Outcome:
        live, ours = self._ours(ctx)
        if live is None:
            return Outcome.OK
        if not ours or not self._removal_allowed(ctx) or self._adopted_namespace(live):
            return Outcome.SKIPPED
        delete_and_wait(ctx, live)
        return Outcome.CHANGED

    @staticmethod
    def _adopted_namespace(live: dict) -> bool:
        # a namespace the tool did not create holds more than what it made: never deleted
        return live.get("kind") == "Namespace" and bool((live["metadata"].get("annotations") or {}).get(ADOPTED))


class NamespaceStep(ObjectStep):
    """Our namespace. `down --purge` deletes it only while it holds nothing that is not ours: deleting a
    namespace deletes everything in it, including what other people put there."""

    #: what Kubernetes itself (or a controller) puts in every namespace
    BUILT_IN = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}

    def _foreign(self, ctx: Context) -> list[str]:
        namespace = ctx.settings.namespace
        found = []
        for k in KINDS.values():
            if not k.namespaced or k.kind == "Pod":  # pods belong to workloads; those are listed
                continue
            for obj in kube(ctx).list(k.api_version, k.kind, namespace):
                if not is_managed(obj) and not self._not_anybodys(obj):
                    found.append(f"{k.kind} {obj['metadata']['name']}")
        return found

    def _not_anybodys(self, obj: dict) -> bool:
        """Made by Kubernetes, a controller (it has an owner) or Helm's release records, not by a person."""
        meta = obj["metadata"]
        return ((obj["kind"], meta["name"]) in self.BUILT_IN or bool(meta.get("ownerReferences"))
                or (meta.get("labels") or {}).get("owner") == "helm")

    def remove_plan(self, ctx: Context) -> Outcome:
        outcome = super().remove_plan(ctx)
        if outcome is Outcome.WOULD_CHANGE and self._foreign(ctx):
            return Outcome.SKIPPED
        return outcome

    def remove(self, ctx: Context) -> Outcome | tuple[Outcome, str]:
        if self._removal_allowed(ctx):
            foreign = self._foreign(ctx)
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                return Outcome.SKIPPED, f"kept: it holds {len(foreign)} object(s) this tool did not make: {shown}"
        return super().remove(ctx)


def _waits_for_finalizers(obj: dict) -> bool:
    # Argo's controllers clear their custom resources' finalizers (the EventBus keeps one while an EventSource
    # or Sensor uses it): they must be gone before `down` uninstalls the controller, or they stay Terminating
    return bool((obj.get("metadata") or {}).get("finalizers")) or obj.get("apiVersion", "").startswith("argoproj.io/")


def delete_and_wait(ctx: Context, live: dict) -> None:
    """Delete an object; if finalizers hold it (or will), wait, bounded, until the server has removed it."""
    meta = live["metadata"]
    ident = (live["apiVersion"], live["kind"], meta["name"], meta.get("namespace"))
    if kube(ctx).delete(*ident) and _waits_for_finalizers(live):
        wait_gone(ctx, *ident)


def wait_gone(ctx: Context, api_version: str, kind: str, name: str, namespace: str | None) -> None:
    def probe():
        live = kube(ctx).get(api_version, kind, name, namespace)
        if live is None:
            return True, "gone"
        finalizers = (live.get("metadata") or {}).get("finalizers") or []
        return False, "terminating" + (f", finalizers: {', '.join(finalizers)}" if finalizers else "")

    wait_until(probe, timeout=ctx.wait_timeout(), what=f"{kind} {name} to be deleted", reporter=ctx.reporter,
               interval=0.5)


def secret_object(name: str, data: dict[str, str], labels: dict | None = None) -> dict:
    """A Secret with base64 `data` (what the API stores), so a re-run compares equal."""
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def configmap_from_files(name: str, files: list[Path], annotations: dict | None = None) -> dict:
    from .manifests import content_hash

    data = {p.name: p.read_text(encoding="utf-8") for p in sorted(files)}
    digest = content_hash(files)[:16] if files else "empty"
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "annotations": {f"{MANAGER}/content-hash": digest, **(annotations or {})}},
        "data": data,
    }



# -- CRDs of a chart ------------------------------------------------------------------------------


CRD_API = ("apiextensions.k8s.io/v1", "CustomResourceDefinition")


def crds_on_cluster(ctx: Context, fresh: bool = False) -> dict[str, dict]:
    """Every CRD by name, from one LIST kept for the run (`fresh`: read again, e.g. after a chart install)."""
    if fresh:
        ctx.forget("crd-list")
    return ctx.cached("crd-list", lambda: {c["metadata"]["name"]: c for c in kube(ctx).list(*CRD_API)})


def _crd_problems(ctx: Context, names: list[str], fresh: bool) -> tuple[list[str], list[str]]:
    live = crds_on_cluster(ctx, fresh)
    missing = [n for n in names if n not in live]
    pending = [n for n in names if n in live and readiness(live[n])[0] is not True]
    return missing, pending


class CrdsStep(Step):
    """Argo CRDs: installed by the charts and kept on uninstall; `down --purge` removes them."""

    def __init__(self, name: str, crds: list[str], title: str = ""):
        self.name = name
        self.title = title
        self.crds = crds
        self.poll_interval = 1.0

    def check(self, ctx: Context) -> Check:
        missing, pending = _crd_problems(ctx, self.crds, fresh=False)
        if missing or pending:  # the run's listing may predate the chart install: read once more
            missing, pending = _crd_problems(ctx, self.crds, fresh=True)
        if missing:
            return Check(State.MISSING, diff=[f"missing {c}" for c in missing])
        return Check(State.PRESENT, healthy=not pending,
                     detail="established" if not pending else f"not established: {', '.join(pending)}")

    def apply(self, ctx: Context, check: Check) -> None:
        raise StepError(f"CRDs missing after the chart install: {'; '.join(check.diff)}",
                        hint="the chart installs them (crds.install=true); check `helm status`")

    def _present(self, ctx: Context) -> list[dict]:
        live = crds_on_cluster(ctx, fresh=True)
        return [live[c] for c in self.crds if c in live]

    def _refuse_if_used_elsewhere(self, ctx: Context, present: list[dict]) -> None:
        """Deleting a CRD deletes every object of its kind, in every namespace: not while others have some
        (anywhere else, or in our namespace without our label)."""
        ours = ctx.settings.namespace
        elsewhere = []
        for crd in present:
            spec = crd.get("spec") or {}
            version = next((v["name"] for v in spec.get("versions") or [] if v.get("served")), None)
            if not version:
                continue
            kind = (spec.get("names") or {}).get("kind", crd["metadata"]["name"])
            for obj in kube(ctx).list_all(spec.get("group", ""), version, spec["names"]["plural"]):
                namespace = obj["metadata"].get("namespace")
                if namespace != ours or not is_managed(obj):
                    elsewhere.append(f"{kind} {(namespace + '/') if namespace else ''}{obj['metadata']['name']}")
        if elsewhere:
            shown = ", ".join(elsewhere[:5]) + (f" and {len(elsewhere) - 5} more" if len(elsewhere) > 5 else "")
            raise StepError(f"refusing to delete the CRDs: {len(elsewhere)} object(s) of them are not ours "
                            f"(outside namespace {ours}, or without our label): {shown}",
                            hint="they belong to someone else: keep the CRDs (`down` without --purge keeps them)")

    def remove_plan(self, ctx: Context) -> Outcome:
        if not ctx.option("purge"):
            return Outcome.SKIPPED
        present = self._present(ctx)
        self._refuse_if_used_elsewhere(ctx, present)
        return Outcome.WOULD_CHANGE if present else Outcome.OK

    def remove(self, ctx: Context) -> tuple[Outcome, str] | Outcome:
        if not ctx.option("purge"):
            return Outcome.SKIPPED
        present = self._present(ctx)
        self._refuse_if_used_elsewhere(ctx, present)
        removed = [c["metadata"]["name"] for c in present if kube(ctx).delete(*CRD_API, c["metadata"]["name"])]
        ctx.forget("crd-list")
        return (Outcome.CHANGED, f"deleted {', '.join(removed)}") if removed else Outcome.OK


# -- MinIO buckets --------------------------------------------------------------------------------


def minio_client(ctx: Context):
    """A minio client through a port-forward opened once per run and closed at its end."""
    from minio import Minio

    from .portforward import PortForward

    def open_forward():
        return PortForward(ctx.settings, "svc/minio", 9000).start()

    forward = ctx.cached("minio-forward", open_forward, close=lambda f: f.stop())
    return ctx.cached("minio-client", lambda: Minio(forward.endpoint, access_key=ctx.settings.minio_root_user,
                                                     secret_key=ctx.settings.minio_root_password, secure=False))


class BucketStep(Step):
    """A MinIO bucket, created through a port-forward. `down` keeps buckets (they are MinIO's data)."""

    removable = False

    depends_on = ("minio/deployment/minio", "minio/service/minio")

    def __init__(self, bucket: Callable[[Context], str], name: str):
        self.name = name
        self.title = "MinIO bucket"
        self._bucket = bucket

    def check(self, ctx: Context) -> Check:
        bucket = self._bucket(ctx)
        exists = minio_client(ctx).bucket_exists(bucket)
        return Check(State.PRESENT if exists else State.MISSING, detail=bucket)

    def apply(self, ctx: Context, check: Check) -> None:
        minio_client(ctx).make_bucket(self._bucket(ctx))


def wait_for_crd(ctx: Context, api_version: str, kind: str) -> None:
    """Custom resources can be applied only once their CRD is established."""
    k = kind_of(api_version, kind)
    group = api_version.split("/")[0]
    crd = f"{k.plural}.{group}"
    if readiness(crds_on_cluster(ctx).get(crd) or {"kind": "CustomResourceDefinition"})[0]:
        return  # established in this run's listing: no read per custom resource

    def probe():
        live = kube(ctx).get(*CRD_API, crd)
        if live is None:
            return False, f"{crd} not installed"
        ok, detail = readiness(live)
        return bool(ok), f"{crd} {detail}"

    wait_until(probe, timeout=ctx.wait_timeout(), what=f"CRD {crd}", reporter=ctx.reporter, interval=1.0)
    ctx.forget("crd-list")


# -- MinIO EventSources: listening or silently dead ------------------------------------------------

LISTENING = "started listening to bucket notifications"
STOPPED = "event source is stopped"


def minio_listener_state(kube_client: Kube, namespace: str, eventsource: str) -> tuple[bool | None, str]:
    """(True, ...) listening; (False, ...) its pod runs but the listener ended; (None, ...) cannot tell yet.

    A MinIO EventSource whose bucket was missing or whose MinIO was down when it started logs
    "event source is stopped" and never listens again until its pod restarts (see README).
    """
    pods = kube_client.list("v1", "Pod", namespace, label_selector=f"eventsource-name={eventsource}")
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if not running:
        return None, "no running pod yet"
    return listener_state_in(kube_client.pod_log(namespace, running[0]["metadata"]["name"], container="main", tail=500))


def listener_state_in(log: str) -> tuple[bool | None, str]:
    """The listener's state as a MinIO EventSource pod's log tells it (see minio_listener_state)."""
    started, stopped = log.rfind(LISTENING), log.rfind(STOPPED)
    if stopped > started:
        return False, "listener stopped (bucket missing or MinIO down when it started)"
    if started >= 0:
        return True, "listening"
    return None, "listener not started yet"


class MinioEventSourceStep(ObjectStep):
    """A MinIO EventSource: applied like any object, and healthy only while its listener runs.

    A stopped listener shows as drift; `up` repairs it by restarting the pod (the Deployment makes a new one).
    """

    def check(self, ctx: Context) -> Check:
        check = super().check(ctx)
        if check.state is State.MISSING or check.healthy is False:
            return check
        listening, detail = minio_listener_state(kube(ctx), ctx.settings.namespace, self.desired(ctx)["metadata"]["name"])
        check.detail = "; ".join(d for d in (check.detail, detail) if d)
        if listening is False:
            check.state = State.DRIFTED
            check.diff.append("listener stopped: restart its pod")
        check.healthy = bool(listening)
        return check

    def apply(self, ctx: Context, check: Check) -> None:
        if any(not d.startswith("listener") for d in check.diff) or check.state is State.MISSING:
            super().apply(ctx, check)
        if "listener stopped: restart its pod" in check.diff:
            name = self.desired(ctx)["metadata"]["name"]
            for pod in kube(ctx).list("v1", "Pod", ctx.settings.namespace, label_selector=f"eventsource-name={name}"):
                kube(ctx).delete("v1", "Pod", pod["metadata"]["name"], ctx.settings.namespace)
