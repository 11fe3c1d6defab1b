"""Helm releases of the pinned argo-helm charts: checked as real helm reports them, repaired when left broken."""

from __future__ import annotations

import json
import tempfile
from typing import Callable

import yaml

from .engine import Check, Context, Outcome, State, Step, StepError
from .steps import kube, readiness
from . import shell


# -- helm -----------------------------------------------------------------------------------------


class HelmReleaseStep(Step):
    """A pinned argo-helm chart release; upgraded only when the chart version or values differ."""

    def __init__(self, name: str, release: Callable[[Context], str], chart: str,
                 version: Callable[[Context], str], values: Callable[[Context], dict], title: str = ""):
        self.name = name
        self.title = title
        self._release = release
        self.chart = chart
        self._version = version
        self._values = values
        self.poll_interval = 3.0

    def _helm(self, ctx: Context, *args: str, check: bool = True, timeout: float = 120):
        return shell.run("helm", ctx.settings, "--kube-context", ctx.settings.kube_context, *args,
                         check=check, timeout=timeout)

    def _status(self, ctx: Context) -> dict | None:
        ran = self._helm(ctx, "status", self._release(ctx), "-n", ctx.settings.namespace, "-o", "json", check=False)
        if not ran.ok:
            if "not found" in ran.stderr:
                return None
            raise StepError(f"helm status {self._release(ctx)} failed: {ran.stderr.strip()[-200:]}")
        return json.loads(ran.stdout)

    def check(self, ctx: Context) -> Check:
        status = self._status(ctx)
        if status is None:
            return Check(State.MISSING)
        diff = []
        chart_meta = (status.get("chart") or {}).get("metadata") or {}
        want = self._version(ctx)
        if chart_meta.get("name") not in (None, self.chart):
            raise StepError(f"release {self._release(ctx)} exists but runs chart {chart_meta.get('name')!r}, "
                            f"not {self.chart!r}: not ours", hint="pick another release name in .env")
        if chart_meta.get("version") != want:
            diff.append(f"chart version {chart_meta.get('version')} -> {want}")
        diff += [f"values{p}" for p in _values_diff(self._values(ctx), status.get("config") or {})]
        phase = (status.get("info") or {}).get("status")
        healthy, detail = phase == "deployed", f"{phase}, chart {chart_meta.get('version')}"
        if healthy:
            healthy, ready = self._workloads_ready(ctx)
            detail += f", {ready}"
        return Check(State.DRIFTED if diff else State.PRESENT, diff=diff, healthy=healthy, detail=detail)

    def _workloads_ready(self, ctx: Context) -> tuple[bool, str]:
        deployments = kube(ctx).list("apps/v1", "Deployment", ctx.settings.namespace,
                                     label_selector=f"app.kubernetes.io/instance={self._release(ctx)}")
        if not deployments:
            return False, "no deployments yet"
        waiting = [d["metadata"]["name"] for d in deployments if readiness(d)[0] is not True]
        return not waiting, "deployments ready" if not waiting else f"waiting for {', '.join(waiting)}"

    def apply(self, ctx: Context, check: Check) -> None:
        s = ctx.settings
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-", delete=True) as handle:
            yaml.safe_dump(self._values(ctx), handle)
            handle.flush()
            with ctx.reporter.waiting(f"helm upgrade --install {self._release(ctx)}"):
                self._helm(ctx, "upgrade", "--install", self._release(ctx), self.chart, "--repo", s.helm_repo_url,
                           "--version", self._version(ctx), "-n", s.namespace, "--create-namespace",
                           "-f", handle.name, "--wait", "--timeout", s.helm_timeout,
                           timeout=ctx.wait_timeout(self) + _seconds(s.helm_timeout))

    def remove_plan(self, ctx: Context) -> Outcome:
        return Outcome.OK if self._status(ctx) is None else Outcome.WOULD_CHANGE

    def remove(self, ctx: Context) -> Outcome:
        if self._status(ctx) is None:
            return Outcome.OK
        self._helm(ctx, "uninstall", self._release(ctx), "-n", ctx.settings.namespace, "--wait", timeout=600)
        return Outcome.CHANGED


def _seconds(duration: str) -> float:
    import re

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
