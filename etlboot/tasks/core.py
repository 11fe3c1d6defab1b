"""Root tasks: up, status, down, ui, render, doctor, trace."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import yaml
from invoke import Exit

from .. import PROJECT_ROOT, charts
from .. import manifests as m
from ..cli import COMMON_HELP, confirm, interruptible, load_settings, make_context, run_mode, task, usage_error
from ..engine import StepError
from ..stack import STACKS, down_steps, part_steps, up_steps


def _select(only: str):
    if not only:
        return up_steps
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in STACKS]
    if unknown:
        raise usage_error(f"unknown --only {', '.join(unknown)} (choose from {', '.join(STACKS)})")
    return part_steps(names)


@task(help={**COMMON_HELP, "only": "comma-separated parts: platform, pipeline, ftp (default: all)",
            "adopt": "take over objects with our names that the tool did not make (reported per object)"})
@interruptible
def up(c, dry_run=False, debug=False, verbose=False, only="", adopt=False):
    """Stand up the whole stack (idempotent): minikube, Argo Events/Workflows, MinIO, the pipelines."""
    steps = _select(only)  # a wrong --only is refused before anything, even .env, is written
    settings = load_settings(generate=not dry_run)
    run_mode("up", steps, title="up", dry_run=dry_run, debug=debug, verbose=verbose, adopt=adopt,
             settings=settings)
    if not dry_run and not only:
        _what_is_there(settings)


def _what_is_there(settings) -> None:
    """After a whole `up`: where the UIs are, how to log in, where the passwords live."""
    from ..report import Reporter

    say = Reporter().say
    say("what is there:")
    say("  Argo UI and MinIO console: `invoke ui` forwards http://localhost:2746 and http://localhost:9001")
    say("  Argo UI login: the token that `invoke ui --show-token` prints (paste it with its `Bearer ` prefix)")
    say(f"  MinIO console login: user {settings.minio_root_user}, password MINIO_ROOT_PASSWORD in "
        f"{settings.env_file.name} (mode 0600)")
    say("  try it: `invoke demo.upload`; check everything again any time: `invoke status`")


@task(help={"debug": COMMON_HELP["debug"], "only": "comma-separated parts: platform, pipeline, ftp",
            "json": "print the results as JSON on stdout (the step lines go to stderr)"})
@interruptible
def status(c, debug=False, only="", json=False):
    """Check every step: present / drifted / missing, healthy or not. Changes nothing."""
    run_mode("status", _select(only), title="status", debug=debug, settings=load_settings(), as_json=json)


@task(help={**COMMON_HELP, "yes": "do not ask for confirmation",
            "purge": "also delete data (MinIO volume), the namespace and the Argo CRDs",
            "minikube": "with --purge: also delete the minikube profile"})
@interruptible
def down(c, yes=False, purge=False, minikube=False, dry_run=False, debug=False, verbose=False):
    """Remove what `up` made (only objects carrying the tool's label), in reverse order."""
    if minikube and not purge:
        raise usage_error("--minikube only goes with --purge")
    settings = load_settings()  # deleting needs no secret: a refused down writes nothing
    if not dry_run:
        what = "everything the tool made, INCLUDING DATA" if purge else "what the tool made (data is kept)"
        confirm(f"Delete {what} in namespace {settings.namespace} on context {settings.kube_context}?", yes)
    run_mode("down", down_steps, title="down", dry_run=dry_run, debug=debug, verbose=verbose, settings=settings,
             purge=purge, purge_minikube=minikube)


@task(help={"show_token": "print the Argo UI bearer token (the only command that prints a secret)",
            "argo_port": "local port for the Argo UI", "minio_port": "local port for the MinIO console",
            "debug": COMMON_HELP["debug"]})
@interruptible
def ui(c, show_token=False, argo_port=2746, minio_port=9001, debug=False):
    """Print the Argo UI and MinIO console addresses and forward their ports until Ctrl-C."""
    from ..portforward import PortForward
    from ..steps import kube

    settings = load_settings()
    ctx = make_context(settings, debug=debug)
    services = {charts.argo_server(settings): (2746, argo_port), "minio": (9001, minio_port)}
    forwards = []
    try:
        # asked first through the API, so an unreachable cluster or a missing `up` is one line saying so
        missing = [name for name in services if kube(ctx).get("v1", "Service", name, settings.namespace) is None]
        if missing:
            raise StepError(f"service {', '.join(missing)} is not in namespace {settings.namespace}",
                            hint="run `invoke up` first")
        if show_token:
            # the UI login's own ServiceAccount: it reads and submits workflows in our namespace, nothing more
            secret = kube(ctx).get("v1", "Secret", f"{m.ARGO_UI_SA}.service-account-token", settings.namespace)
            token = ((secret or {}).get("data") or {}).get("token")
            if not token:
                raise StepError("the Argo UI token is not there (yet)", hint="run `invoke up`")
            print(f"Bearer {base64.b64decode(token).decode()}")  # deliberately not redacted: asked for
        for name, (remote, local) in services.items():
            forwards.append(PortForward(settings, f"svc/{name}", remote, local).start())
        ctx.reporter.say(f"Argo UI:       http://localhost:{forwards[0].local_port}  (log in with `invoke ui --show-token`)")
        ctx.reporter.say(f"MinIO console: http://localhost:{forwards[1].local_port}  (user {settings.minio_root_user}; "
                         "password MINIO_ROOT_PASSWORD in .env)")
        ctx.reporter.say("forwarding; Ctrl-C to stop")
        while all(f.process and f.process.poll() is None for f in forwards):
            time.sleep(0.5)
        raise StepError("a port-forward ended", hint="run `invoke ui` again")
    except KeyboardInterrupt:
        pass
    finally:
        for forward in forwards:
            forward.stop()
        ctx.close()


@task(help={"out": "directory for the rendered YAML (default build/manifests)", "debug": COMMON_HELP["debug"]})
@interruptible
def render(c, out="build/manifests", debug=False):
    """Write the rendered manifests (no Secrets) for reading or `kubectl apply -f`."""
    settings = load_settings()  # render writes no Secrets: it needs none generated
    values = m.variables(settings)
    target = PROJECT_ROOT / out if not Path(out).is_absolute() else Path(out)
    count = 0
    # manifests/aws needs the AWS account and the webhook path (a secret): `aws.setup --dry-run` shows its plan
    for folder in sorted(p for p in m.MANIFESTS.iterdir() if p.is_dir() and p.name != "aws"):
        for path in sorted(folder.glob("*.yaml")):
            docs = m.render(path, values)
            dest = target / folder.name / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            for doc in docs:
                if doc.get("kind") not in ("Namespace", "CustomResourceDefinition"):
                    doc.setdefault("metadata", {}).setdefault("namespace", settings.namespace)
            dest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            count += 1
    print(f"wrote {count} files under {target}")


@task(help={"debug": COMMON_HELP["debug"], "json": "print the results as JSON on stdout (the check lines go to stderr)"})
@interruptible
def doctor(c, debug=False, json=False):
    """Check the known failure modes (listeners, RBAC, EventBus, stuck pods, artifacts, clocks); each with its fix."""
    from ..doctor import doctor_steps

    run_mode("status", doctor_steps, title="doctor", debug=debug, settings=load_settings(generate=False),
             as_json=json)


@task(help={"key": "the input: a MinIO key (input/20230414/1.csv), an FTP path (/20230414/1.csv) or an S3 key "
                   "(input/demo/x.csv); default: the last one demo.upload sent",
            "target": "minio, ftp or aws (default: the last upload's target for its key; else ftp for a path "
                      "starting with /, minio otherwise)",
            "wait": "while a workflow of the journey runs, follow it (live tree), then trace again",
            "timeout": "seconds --wait waits at most (default: WAIT_TIMEOUT_SECONDS)",
            "debug": COMMON_HELP["debug"], "json": "print the journey as JSON"})
@interruptible
def trace(c, key="", target="", wait=False, timeout=0, debug=False, json=False):
    """Follow one input (MinIO, FTP or AWS) through the pipeline to its outputs; name where the chain broke."""
    import json as json_module

    from ..demo import last_upload
    from .. import TARGETS
    from ..trace import render
    from ..trace import trace as follow_input

    if target and target not in TARGETS:
        raise usage_error(f"unknown --target {target!r} (choose from {', '.join(TARGETS)})")
    settings = load_settings(generate=False)
    last_target, last_key = last_upload(settings)
    if not key:
        if not last_key or (target and target != last_target):
            raise usage_error("give the input's key: `invoke trace --key input/<name>.csv` (no demo.upload "
                              f"{'to ' + target + ' ' if target else ''}to start from yet)")
        key = last_key
    target = target or (last_target if key == last_key else ("ftp" if key.startswith("/") else "minio"))
    ctx = make_context(settings, debug=debug, to_stderr=json)
    try:
        from ..stack import gate_steps

        for gate in gate_steps(ctx):   # the tools, the cluster and the context guard, before any request
            if not gate.skip_reason(ctx):
                check = gate.check(ctx)
                if not check.converged:
                    raise StepError(f"{gate.name}: {check.detail or check.state.value}", hint="`invoke status`")
        journey = follow_input(ctx, key, target)
        if wait:
            journey = _wait_for_journey(ctx, journey, lambda: follow_input(ctx, key, target),
                                        float(timeout or settings.wait_timeout_seconds))
    finally:
        ctx.close()
    if json:
        print(ctx.reporter.redact(json_module.dumps(journey.as_json(), indent=1)))
    else:
        for line in render(journey):
            ctx.reporter.say(line)
    if journey.broken is not None or (wait and journey.running):
        raise Exit(code=1)


def _wait_for_journey(ctx, journey, again, timeout: float):
    """While the journey waits on running workflows, follow them with the shared follower, then trace again
    (an ETL that ended may start an aggregation); bounded by `timeout` in all."""
    from ..engine import WaitTimeout
    from ..follow import follow
    from ..steps import kube

    deadline = time.monotonic() + timeout
    while journey.running and journey.broken is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            ctx.reporter.say(f"✗ still in progress after {timeout:.0f}s: {', '.join(journey.running)}",
                             style="bold red")
            return journey
        try:
            follow(kube(ctx), ctx.settings.namespace, journey.running, timeout=remaining, reporter=ctx.reporter)
        except WaitTimeout:
            pass   # traced once more below, then said as still in progress
        journey = again()
    return journey
