"""`down` finds what is there by our label, not by today's settings.

An earlier `up` may have made objects that today's steps no longer describe (FTP_ENABLED=false now, a renamed
object, a manifest removed from manifests/). `down` lists every kind the tool makes, in its namespace, by the
managed-by label, and deletes those no step claims, Argo custom resources first and waiting for their
finalizers, so that the controllers are uninstalled only after they are gone.
"""

from __future__ import annotations

from typing import Callable

from . import MANAGED_BY_LABEL, MANAGER
from .engine import Check, Context, Outcome, State, Step
from .kube import KINDS, sort_for_apply
from .steps import ObjectStep, delete_and_wait, kube

# what `down` keeps unless --purge, like the steps that make them (they hold data)
KEPT_UNLESS_PURGE = {"PersistentVolumeClaim"}
# owned by a workload or the API server: deleting their owner removes them
NOT_SWEPT = {"Pod", "Namespace", "CustomResourceDefinition"}

Ident = tuple[str, str, str, str | None]


class LeftoversStep(Step):
    """Objects labelled ours in our namespace that no step of today's settings claims."""

    name = "cleanup/leftovers"
    title = "objects of an earlier `up` that today's settings no longer make"

    def __init__(self, claimed: Callable[[Context], set[Ident]]):
        self._claimed = claimed

    def _leftovers(self, ctx: Context) -> list[dict]:
        claimed = self._claimed(ctx)
        namespace = ctx.settings.namespace
        found = []
        for k in KINDS.values():
            # cluster-scoped objects carry no namespace to tell this install's from another's: never swept
            if not k.namespaced or k.kind in NOT_SWEPT:
                continue
            for obj in kube(ctx).list(k.api_version, k.kind, namespace, label_selector=f"{MANAGED_BY_LABEL}={MANAGER}"):
                meta = obj["metadata"]
                ident = (obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
                if ident not in claimed:
                    found.append(obj)
        return list(reversed(sort_for_apply(found)))

    def _removable(self, ctx: Context, obj: dict) -> bool:
        return obj["kind"] not in KEPT_UNLESS_PURGE or bool(ctx.option("purge"))

    def check(self, ctx: Context) -> Check:
        return Check(State.PRESENT, detail="looked for by `down`")

    def remove_plan(self, ctx: Context) -> Outcome:
        return Outcome.WOULD_CHANGE if any(self._removable(ctx, o) for o in self._leftovers(ctx)) else Outcome.OK

    def remove(self, ctx: Context) -> Outcome:
        deleted = []
        for obj in self._leftovers(ctx):
            if self._removable(ctx, obj):
                delete_and_wait(ctx, obj)
                deleted.append(f"{obj['kind']}/{obj['metadata']['name']}")
        return (Outcome.CHANGED, f"deleted {len(deleted)}: {', '.join(deleted)}") if deleted else Outcome.OK


def claimed_by(steps: list[Step]) -> Callable[[Context], set[Ident]]:
    def claimed(ctx: Context) -> set[Ident]:
        return {s._ident(ctx) for s in steps if isinstance(s, ObjectStep)}
    return claimed
