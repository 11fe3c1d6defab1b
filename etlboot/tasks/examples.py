"""The tutorial's walkthrough: `examples.list`, `examples.run NAME`, `examples.all`, `examples.webhook`,
`examples.clean`. Logic lives in etlboot/examples.py; these tasks parse flags, run and report."""

from __future__ import annotations

import secrets
import time

from invoke import Collection, Exit
from rich.table import Table

from .. import examples as ex
from .. import webhook as walkthrough
from ..cli import (COMMON_HELP, as_usage_error, confirm, interruptible, load_settings, make_context, report_failure,
                   task, usage_error)
from ..engine import Context, Outcome, Result, Runner, exit_code
from ..errors import explain
from ..portforward import PortForward
from ..report import Reporter

RUN_HELP = {
    "name": "the example to run (`invoke examples.list`); `all` runs every one",
    "parameters": "override a workflow argument, key=value (repeatable), as `argo submit -p`",
    "logs": "print the main container log of every pod",
    "timeout": "seconds to follow each workflow (default: WAIT_TIMEOUT_SECONDS)",
    "debug": COMMON_HELP["debug"],
}


@task(name="list")
@interruptible
def list_examples(c):
    """List the tutorial's examples: name, what each teaches, and the tutorial section it comes from."""
    table = Table(title="examples (invoke examples.run NAME)", show_lines=False)
    table.add_column("name", no_wrap=True)
    table.add_column("teaches")
    table.add_column("tutorial section")
    for example in ex.CATALOG:
        table.add_row(example.name, example.teaches, f"{example.section}\n[dim]{example.gist}[/]")
    table.add_row("[dim](examples.webhook)[/]", "a webhook EventSource and a log Sensor: POST → event → Sensor log",
                  "Argo Events 소개\n[dim]Introducing Argo Events[/]")
    Reporter().console.print(table)


def _timeout(settings, timeout: int) -> float:
    return float(timeout or settings.wait_timeout_seconds)


def _run_one(ctx: Context, example: ex.Example, overrides: dict[str, str], *, timeout: float,
             logs: bool) -> ex.RunResult:
    """Run one example; any error becomes a failed result with one clear line and a hint."""
    began = time.monotonic()
    try:
        return ex.run(ctx, example, overrides, timeout=timeout, show_logs=logs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - reported as the example's failure
        report_failure(ctx.reporter, exc, debug=ctx.debug, prefix=f"{example.name}: ")
        return ex.RunResult(example.name, [], [], ex.Verdict(False, explain(exc)[0]), time.monotonic() - began)


def _summary(ctx: Context, results: list[ex.RunResult]) -> None:
    table = Table(title="examples", show_lines=False)
    for column in ("example", "workflow", "phase", "time", "verdict", "detail"):
        table.add_column(column, justify="right" if column == "time" else "left")
    for r in results:
        verdict = "[green]pass[/]" if r.verdict.ok else "[bold red]FAIL[/]"
        table.add_row(r.example, "\n".join(r.workflows) or "-", "\n".join(r.phases) or "-", f"{r.seconds:.0f}s",
                      verdict, ctx.reporter.redact(r.verdict.detail))
    ctx.reporter.console.print(table)
    failed = [r.example for r in results if not r.verdict.ok]
    ctx.reporter.say(f"{len(results) - len(failed)}/{len(results)} examples passed"
                     + (f"; failed: {', '.join(failed)}" if failed else ""),
                     style="bold red" if failed else "green")


def _run_all(timeout: int, logs: bool, debug: bool) -> list[ex.RunResult]:
    settings = load_settings()
    ctx = make_context(settings, debug=debug)
    results = []
    try:
        # once, before any example: a cluster without Argo is one line, not every example failing in turn
        ex.preflight(ctx, ["Workflow"])
        for example in ex.CATALOG:
            ctx.reporter.say(f"── {example.name}: {example.teaches}", style="bold")
            results.append(_run_one(ctx, example, {}, timeout=_timeout(settings, timeout), logs=logs))
    finally:
        ctx.close()
    _summary(ctx, results)
    if any(not r.verdict.ok for r in results):
        raise Exit(code=1)
    return results


@task(name="run", positional=["name"], iterable=["parameters"], short={"parameters": "p"}, help=RUN_HELP)
@interruptible
def run_example(c, name, parameters=None, logs=False, timeout=0, debug=False):
    """Submit one example workflow, follow it as a live tree, and check what it should show."""
    if name.startswith("-"):
        raise usage_error(f"examples.run takes the example's name first, not {name!r}; `invoke --help examples.run` "
                          "shows the options")
    if name == "all":
        if parameters:
            raise usage_error("-p applies to one example, not to `all`")
        _run_all(timeout, logs, debug)
        return
    with as_usage_error():
        example = ex.get(name)
        overrides = ex.parse_parameters(parameters or [])
    settings = load_settings()
    ctx = make_context(settings, debug=debug)
    try:
        result = _run_one(ctx, example, overrides, timeout=_timeout(settings, timeout), logs=logs)
    finally:
        ctx.close()
    if not result.verdict.ok:
        raise Exit(code=1)


@task(name="all", help={k: v for k, v in RUN_HELP.items() if k in ("logs", "timeout", "debug")})
@interruptible
def run_all(c, logs=False, timeout=0, debug=False):
    """Run every example in tutorial order and print a summary table (exit 1 if any check failed)."""
    _run_all(timeout, logs, debug)


@task(help={"message": "the text to post (default: a fresh, recognisable one)",
            "timeout": "seconds to wait for the Sensor's log line (default: WAIT_TIMEOUT_SECONDS)",
            **COMMON_HELP})
@interruptible
def webhook(c, message="", timeout=0, dry_run=False, debug=False, verbose=False):
    """The tutorial's webhook EventSource + log Sensor: apply them, POST a JSON message, find it in the Sensor log."""
    settings = load_settings()
    ctx = make_context(settings, dry_run=dry_run, debug=debug, verbose=verbose)
    message = message or f"this is my first webhook {secrets.token_hex(4)}"
    results: list[Result] = []
    try:
        results = Runner(ctx).up(walkthrough.webhook_steps(ctx))
        if exit_code(results) == 0 and not dry_run:
            results.append(_post_and_confirm(ctx, message, _timeout(settings, timeout)))
    finally:
        ctx.close()
    ctx.reporter.summary("examples.webhook" + (" (dry run)" if dry_run else ""), results)
    if exit_code(results):
        raise Exit(code=1)


def _post_and_confirm(ctx: Context, message: str, timeout: float) -> Result:
    began = time.monotonic()
    name = "webhook/event-logged"
    try:
        with PortForward(ctx.settings, f"svc/{walkthrough.WEBHOOK_SERVICE}", walkthrough.WEBHOOK_PORT) as forward:
            ctx.reporter.say(f"POST {{\"message\": \"{message}\"}} to http://{forward.endpoint}{walkthrough.WEBHOOK_PATH}")
            posts, line = walkthrough.webhook_roundtrip(ctx, forward.endpoint, message, timeout=timeout)
        shown = line if len(line) <= 300 else line[:300] + "…"
        ctx.reporter.say(f"Sensor log: {shown}")
        result = Result(name, Outcome.OK, f"the Sensor logged the message (posted {posts}×)")
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - one clear line and a hint
        text, hint = explain(exc)
        result = Result(name, Outcome.FAILED, text, hint=hint)
    result.seconds = time.monotonic() - began
    ctx.reporter.step_finished(result)
    return result


@task(help={"yes": "do not ask for confirmation", "dry_run": COMMON_HELP["dry_run"], "debug": COMMON_HELP["debug"]})
@interruptible
def clean(c, yes=False, dry_run=False, debug=False):
    """Delete what the examples made: their Workflows, CronWorkflow, WorkflowTemplate, the webhook and Sensor."""
    settings = load_settings()
    if not dry_run:
        confirm(f"Delete the examples' objects in namespace {settings.namespace} on context {settings.kube_context}?",
                yes)
    ctx = make_context(settings, dry_run=dry_run, debug=debug)
    try:
        from ..cluster_steps import KubeContextStep

        KubeContextStep().check(ctx)
        results = Runner(ctx).down(walkthrough.webhook_steps(ctx))
        found = ex.cleanup(ctx, dry_run=dry_run)
        if found:
            outcome, verb = (Outcome.WOULD_CHANGE, "would delete") if dry_run else (Outcome.CHANGED, "deleted")
            results.append(Result("examples/workflows", outcome, f"{verb} {len(found)}: {', '.join(found)}"))
        else:
            results.append(Result("examples/workflows", Outcome.OK, "nothing to delete"))
        ctx.reporter.step_finished(results[-1])
    finally:
        ctx.close()
    ctx.reporter.summary("examples.clean" + (" (dry run)" if dry_run else ""), results)
    if exit_code(results):
        raise Exit(code=1)


ns = Collection("examples")
ns.add_task(list_examples)
ns.add_task(run_example)
ns.add_task(run_all)
ns.add_task(webhook)
ns.add_task(clean)
