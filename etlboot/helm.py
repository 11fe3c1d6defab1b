"""Helm releases of the pinned argo-helm charts: checked as real helm reports them, repaired when left broken.

What real helm prints (checked with helm 3.18.0 and 4.1.4):

- `helm status -o json` has no `.chart` (helm strips the chart from that output), and no `.config` when no values
  were given. So the chart name/version/state come from `helm get metadata RELEASE -o json` (`chart`, `version`,
  `status`, `revision`, `deployedAt`), and the user-supplied values from `helm get values RELEASE -o json`
  (`null` when there are none). Both fail with `Error: release: not found` when there is no release.
- `helm list` cannot be used for the state: helm 3 hides pending releases unless `--all`, which helm 4 removed.
- A release is left `failed` by a failed upgrade, a `--wait` that timed out, or Ctrl-C (helm marks it failed on
  SIGINT: "context canceled"); `pending-install`/`pending-upgrade`/`pending-rollback` when helm was killed (-9)
  mid-operation. helm itself refuses every later upgrade of a pending release ("another operation
  (install/upgrade/rollback) is in progress"), so `up` repairs it: see :meth:`HelmReleaseStep.apply`.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from datetime import datetime, timezone
from typing import Callable

import yaml

from .engine import Check, Context, Outcome, State, Step, StepError
from .steps import kube, readiness
from . import shell

#: what `up` does with a release whose last revision is in this state (the first words of the diff)
REPAIRS = {
    "failed": "release failed: reinstall (helm upgrade --install)",
    "unknown": "release in state unknown: reinstall (helm upgrade --install)",
    "pending-install": "release stuck in pending-install: uninstall and install again",
    "uninstalling": "release stuck in uninstalling: uninstall and install again",
    "pending-upgrade": "release stuck in pending-upgrade: roll back to the last deployed revision, then upgrade",
    "pending-rollback": "release stuck in pending-rollback: roll back to the last deployed revision, then upgrade",
}
PENDING = ("pending-install", "pending-upgrade", "pending-rollback", "uninstalling")


class HelmReleaseStep(Step):
    """A pinned argo-helm chart release; upgraded only when the chart version or values differ, and repaired
    when a previous run left it failed or pending."""

    def __init__(self, name: str, release: Callable[[Context], str], chart: str,
                 version: Callable[[Context], str], values: Callable[[Context], dict], title: str = ""):
        self.name = name
        self.title = title
        self._release = release
        self.chart = chart
        self._version = version
        self._values = values
        self.poll_interval = 3.0
        self._repaired = ""  # what apply() repaired, said once in the next check's detail

    # -- reading --------------------------------------------------------------------------------
    def _helm(self, ctx: Context, *args: str, check: bool = True, timeout: float = 120):
        return shell.run("helm", ctx.settings, "--kube-context", ctx.settings.kube_context, *args,
                         check=check, timeout=timeout)

    def _get(self, ctx: Context, what: str) -> dict | None:
        """`helm get <what> RELEASE -o json`: the parsed output, or None when there is no release."""
        release = self._release(ctx)
        ran = self._helm(ctx, "get", what, release, "-n", ctx.settings.namespace, "-o", "json", check=False)
        if not ran.ok:
            if "not found" in ran.stderr:
                return None
            raise StepError(f"helm get {what} {release} failed: {_last_line(ran.stderr)}",
                            hint=f"run `helm get {what} {release} -n {ctx.settings.namespace}` by hand")
        try:
            return json.loads(ran.stdout or "null") or {}
        except ValueError:
            raise StepError(f"helm get {what} {release} printed no JSON: {ran.stdout.strip()[:120]!r}") from None

    def _metadata(self, ctx: Context) -> dict | None:
        return self._get(ctx, "metadata")

    def check(self, ctx: Context) -> Check:
        meta = self._metadata(ctx)
        if meta is None:
            return Check(State.MISSING)
        release = self._release(ctx)
        if meta.get("chart") != self.chart:
            raise StepError(f"release {release} exists but runs chart {meta.get('chart')!r}, not {self.chart!r}: "
                            f"not ours", hint="pick another release name in .env")
        phase = str(meta.get("status") or "unknown")
        version = meta.get("version")
        detail = f"{phase}, chart {version}, revision {meta.get('revision')}"
        if phase != "deployed":
            repair = REPAIRS.get(phase, f"release in state {phase}: reinstall (helm upgrade --install)")
            return Check(State.DRIFTED, diff=[repair], healthy=False, detail=detail, live=meta)
        diff = []
        want = self._version(ctx)
        if version != want:
            diff.append(f"chart version {version} -> {want}")
        values = self._get(ctx, "values") or {}
        diff += [f"values{p}" for p in _values_diff(self._values(ctx), values)]
        healthy, ready = self._workloads_ready(ctx)
        detail += f", {ready}"
        if self._repaired and not diff:
            detail += f"; {self._repaired}"
        return Check(State.DRIFTED if diff else State.PRESENT, diff=diff, healthy=healthy, detail=detail, live=meta)

    def _workloads_ready(self, ctx: Context) -> tuple[bool, str]:
        deployments = kube(ctx).list("apps/v1", "Deployment", ctx.settings.namespace,
                                     label_selector=f"app.kubernetes.io/instance={self._release(ctx)}")
        if not deployments:
            return False, "no deployments yet"
        waiting = [d["metadata"]["name"] for d in deployments if readiness(d)[0] is not True]
        return not waiting, "deployments ready" if not waiting else f"waiting for {', '.join(waiting)}"

    # -- acting ---------------------------------------------------------------------------------
    def apply(self, ctx: Context, check: Check) -> None:
        """Install or upgrade; first repair what a previous run left behind:

        - `failed` (or `unknown`): `helm upgrade --install` again;
        - `pending-install` / `uninstalling` (helm was killed during the first install or an uninstall):
          `helm uninstall`, then install;
        - `pending-upgrade` / `pending-rollback` (killed during an upgrade or rollback): `helm rollback` to the
          last deployed revision, then upgrade.

        A pending state younger than HELM_TIMEOUT may be another helm still at work: it is waited for (polled)
        until it ends or becomes older than that, and only then repaired.
        """
        meta = check.live if isinstance(check.live, dict) else None
        phase = str((meta or {}).get("status") or "")
        self._repaired = ""
        if phase in PENDING:
            meta = self._wait_out_other_helm(ctx, meta)
            phase = str((meta or {}).get("status") or "")
            if phase == "deployed" and self.check(ctx).state is State.PRESENT:
                return  # the other helm finished what we wanted
        release, ns = self._release(ctx), ctx.settings.namespace
        if phase in ("pending-install", "uninstalling"):
            self._say(ctx, f"release {release} was left {phase}: uninstalling it, then installing again")
            self._act(ctx, "uninstall", release, "-n", ns, "--wait", "--timeout", ctx.settings.helm_timeout,
                      timeout=_seconds(ctx.settings.helm_timeout) + 60)
            self._repaired = f"repaired: was {phase}, uninstalled and installed again"
        elif phase in ("pending-upgrade", "pending-rollback"):
            target = self._rollback_target(ctx, meta)
            self._say(ctx, f"release {release} was left {phase}: rolling back to revision {target}, then upgrading")
            self._act(ctx, "rollback", release, str(target), "-n", ns, timeout=300)
            self._repaired = f"repaired: was {phase}, rolled back to revision {target} and upgraded"
        elif phase and phase != "deployed":
            self._say(ctx, f"release {release} was left {phase}: running helm upgrade --install again")
            self._repaired = f"repaired: was {phase}, upgraded again"
        self._upgrade(ctx)

    def _act(self, ctx: Context, *args: str, timeout: float) -> None:
        """A writing helm command; its failure is one line naming the command, with what to do next."""
        release, s = self._release(ctx), ctx.settings
        what = args[0]
        hint = (f"helm left release {release} failed or pending: the next `invoke up` repairs it; `invoke status` "
                f"shows its state (HELM_TIMEOUT={s.helm_timeout} bounds helm's wait)")
        try:
            ran = self._helm(ctx, *args, check=False, timeout=timeout)
        except StepError as exc:  # killed, or did not finish in time
            raise StepError(f"helm {what} {release}: {str(exc).split(': ', 1)[-1]}", hint=hint) from None
        if not ran.ok:
            raise StepError(f"helm {what} {release} failed: {_last_line(ran.stderr)}", hint=hint)

    def _say(self, ctx: Context, text: str) -> None:
        say = getattr(ctx.reporter, "say", None)
        if say is not None:
            say(f"  {self.name}: {text}")

    def _upgrade(self, ctx: Context) -> None:
        s = ctx.settings
        release = self._release(ctx)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-", delete=True) as handle:
            yaml.safe_dump(self._values(ctx), handle)
            handle.flush()
            with ctx.reporter.waiting(f"helm upgrade --install {release}"):
                self._act(ctx, "upgrade", "--install", release, self.chart, "--repo", s.helm_repo_url,
                          "--version", self._version(ctx), "-n", s.namespace, "--create-namespace",
                          "-f", handle.name, "--wait", "--timeout", s.helm_timeout,
                          timeout=ctx.wait_timeout(self) + _seconds(s.helm_timeout))

    def _wait_out_other_helm(self, ctx: Context, meta: dict | None) -> dict | None:
        """A pending state set less than HELM_TIMEOUT ago may belong to a helm that is still running: poll until
        it leaves the pending state or has been pending for HELM_TIMEOUT. Returns the latest metadata."""
        limit = _seconds(ctx.settings.helm_timeout)
        while meta is not None and str(meta.get("status")) in PENDING:
            age = _age_seconds(meta.get("deployedAt"))
            if age is None or age >= limit:
                return meta
            with ctx.reporter.waiting(f"release {self._release(ctx)} ({meta.get('status')} for {age:.0f}s: "
                                      f"another helm may still be running, up to HELM_TIMEOUT)"):
                time.sleep(min(self.poll_interval, max(limit - age, 0.1)))
            meta = self._metadata(ctx)
        return meta

    def _rollback_target(self, ctx: Context, meta: dict | None) -> int:
        """The last deployed (or, failing that, superseded) revision before the pending one; else the previous."""
        release = self._release(ctx)
        current = int((meta or {}).get("revision") or 0)
        ran = self._helm(ctx, "history", release, "-n", ctx.settings.namespace, "-o", "json", check=False)
        history = []
        if ran.ok:
            try:
                history = json.loads(ran.stdout or "[]") or []
            except ValueError:
                history = []
        earlier = [h for h in history if int(h.get("revision") or 0) < current or not current]
        for wanted in ("deployed", "superseded"):
            revisions = [int(h["revision"]) for h in earlier if h.get("status") == wanted]
            if revisions:
                return max(revisions)
        if current > 1:
            return current - 1
        raise StepError(f"release {release} is {meta and meta.get('status')} with no earlier revision to roll back to",
                        hint=f"run `helm uninstall {release} -n {ctx.settings.namespace}`, then `invoke up`")

    # -- down -----------------------------------------------------------------------------------
    def remove_plan(self, ctx: Context) -> Outcome:
        return Outcome.OK if self._metadata(ctx) is None else Outcome.WOULD_CHANGE

    def remove(self, ctx: Context) -> Outcome:
        if self._metadata(ctx) is None:
            return Outcome.OK
        self._helm(ctx, "uninstall", self._release(ctx), "-n", ctx.settings.namespace, "--wait", timeout=600)
        return Outcome.CHANGED


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-200:] if lines else "no output"


def _age_seconds(stamp) -> float | None:
    """Seconds since helm's `deployedAt` (RFC 3339, e.g. 2026-12-01T21:05:10Z), or None if unreadable."""
    if not stamp:
        return None
    text = re.sub(r"\.\d+", "", str(stamp)).replace("Z", "+00:00")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((datetime.now(timezone.utc) - when).total_seconds(), 0.0)


def _seconds(duration: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+)([hms])", duration):
        total += int(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def _values_diff(desired, live, path: str = "") -> list[str]:
    if isinstance(desired, dict) and isinstance(live, dict):
        out = []
        for key in sorted(set(desired) | set(live)):
            if key not in desired:
                out.append(f"{path}.{key} (extra)")
            else:
                out += _values_diff(desired[key], live.get(key), f"{path}.{key}")
        return out
    return [] if desired == live else [path or "."]
