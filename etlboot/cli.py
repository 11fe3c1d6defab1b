"""Glue between Invoke tasks and the engine: settings, reporter, runner, summary, exit code."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from typing import Callable, Sequence

import invoke
from invoke import Exit
from invoke.exceptions import ParseError
from invoke.parser import Argument
from rich.console import Console

from . import config
from .engine import Context, Outcome, Result, Runner, Step, StepError, exit_code
from .errors import explain
from .report import Redactor, Reporter, as_typed

COMMON_HELP = {
    "dry_run": "show what would change; change nothing",
    "debug": "show tracebacks on failure",
    "verbose": "show more detail",
}


class NumberArgument(Argument):
    """An int or float flag: a value that is not a number is a usage error naming the flag (Invoke's own
    cast raises a bare ValueError, a traceback), for `./etl` (exit 2) and `invoke` (exit 1) alike."""

    def set_value(self, value, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
        except ValueError:
            what = "a whole number" if self.kind is int else "a number"
            raise ParseError(f"--{self.name.replace('_', '-')} takes {what}, not {value!r}") from None


class EtlTask(invoke.Task):
    """Invoke's Task with number flags that refuse what is not a number, and short flags only where named
    (`short={"parameters": "p"}`)."""

    def __init__(self, *args, short: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.short = short or {}

    def get_arguments(self, ignore_unknown_help=None) -> list[Argument]:
        arguments = super().get_arguments(ignore_unknown_help)
        return [(NumberArgument if a.kind in (int, float) else Argument)(
                    names=(*a.names, *filter(None, [self.short.get(a.name)])), kind=a.kind, default=a.default,
                    help=a.help, positional=a.positional, optional=a.optional, incrementable=a.incrementable,
                    attr_name=a.attr_name)
                for a in arguments]


def task(*args, **kwargs):
    """Invoke's @task for this tool: no automatic short flags (`-d` would be --dry-run on one task and --debug
    on the next); `short=` names the few there are."""
    return invoke.task(*args, klass=EtlTask, auto_shortflags=False, **kwargs)


def usage_error(message: str) -> Exit:
    """A flag or argument the task cannot take: one line, exit 2 (as `./etl`'s own usage errors)."""
    return Exit(as_typed(f"✗ {message}"), code=2)


@contextlib.contextmanager
def as_usage_error():
    """A StepError raised while reading the task's own arguments (a file, a name) is a usage error."""
    try:
        yield
    except StepError as exc:
        raise usage_error(f"{exc} — {exc.hint}" if exc.hint else str(exc)) from None


def load_settings(generate: bool = False, **overrides) -> config.Settings:
    """The settings; `generate`: also generate missing passwords into .env (only tasks that apply need them)."""
    try:
        settings = config.load(generate=generate, save=False)  # saved before the first write: make_context
        overrides = {k: v for k, v in overrides.items() if v not in (None, "")}
        return settings.with_overrides(**overrides) if overrides else settings
    except config.ConfigError as exc:
        Reporter().say(f"✗ config: {exc}", style="bold red")
        raise Exit(code=2) from None


def make_context(settings: config.Settings, *, dry_run=False, debug=False, verbose=False, to_stderr=False,
                 **options) -> Context:
    console = Console(stderr=True, highlight=False, soft_wrap=True) if to_stderr else None
    reporter = Reporter(console=console, redactor=Redactor(settings.secret_values()), verbose=verbose)
    ctx = Context(settings, reporter, dry_run=dry_run, debug=debug, verbose=verbose, **options)
    ctx.explain = explain

    def save_generated() -> None:
        for name in config.save_generated(settings):
            reporter.say(f"generated {name} into {settings.env_file.name} (mode 0600)")

    ctx.before_first_write = save_generated
    return ctx


def run_mode(mode: str, steps_for: Callable[[Context], Sequence[Step]], *, title: str, dry_run=False, debug=False,
             verbose=False, settings: config.Settings | None = None, as_json: bool = False, **options) -> list[Result]:
    """Run the steps in `mode` (up/status/down). `as_json`: the human lines go to stderr, and stdout gets one
    JSON document of the results, for scripts."""
    # only a run that applies generates the passwords it is about to use (a dry run, status, down: none)
    settings = settings or load_settings(generate=mode == "up" and not dry_run)
    ctx = make_context(settings, dry_run=dry_run, debug=debug, verbose=verbose, to_stderr=as_json, **options)
    try:
        steps = steps_for(ctx)
        runner = Runner(ctx)
        results = getattr(runner, mode)(steps)
    finally:
        ctx.close()
    ctx.reporter.summary(title + (" (dry run)" if dry_run else ""), results)
    code = exit_code(results)
    if code and mode in ("up", "status") and title in ("up", "status") and _past_the_gates(ctx, results):
        ctx.reporter.say("  next: `invoke doctor` checks the known failure modes, each with its fix",
                         style="dim")
    if as_json:
        document = {"command": title, "ok": not code,
                    "steps": [{"step": r.step, "outcome": r.outcome.value, "detail": r.detail, "hint": r.hint}
                              for r in results]}
        print(ctx.reporter.redact(json.dumps(document, indent=1)))
    if code:
        raise Exit(code=code)
    return results


def _past_the_gates(ctx: Context, results: Sequence[Result]) -> bool:
    """A step failed that is not one of the gates (tools, cluster, context): what `doctor` can look into."""
    from .stack import gate_steps

    gates = {step.name for step in gate_steps(ctx)}
    return any(r.outcome is Outcome.FAILED and r.step not in gates for r in results)


def confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        Reporter().say(f"✗ {question} — refusing without a terminal to ask; pass --yes", style="bold red")
        raise Exit(code=2)
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise Exit("aborted", code=1)


def report_failure(reporter: Reporter, exc: BaseException, *, debug: bool = False, prefix: str = "") -> None:
    """Any exception as one line naming its cause, and a hint; the traceback only with --debug."""
    if debug:
        import traceback

        reporter.traceback("".join(traceback.format_exception(exc)))
    message, hint = explain(exc)
    reporter.say(f"✗ {prefix}{message}", style="bold red")
    if hint:
        reporter.say(f"  hint: {hint}", style="dim")


def interruptible(body: Callable) -> Callable:
    """Every task ends a failure with one line: Ctrl-C says "interrupted" and exits 130 (what shells expect
    of SIGINT); any other exception raised outside the engine (the context guard, a port-forward that did
    not open, an unreachable cluster, a kubeconfig the client cannot read) is one line naming its cause and
    a hint, exit 1, and its traceback only with --debug. The steps' own clean-up has run by then."""
    @functools.wraps(body)
    def task_body(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except KeyboardInterrupt:
            Reporter().say("✗ interrupted", style="bold red")
            raise Exit(code=130) from None
        except (Exit, ParseError):
            raise
        except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback without --debug
            report_failure(Reporter(), exc, debug=bool(kwargs.get("debug")))
            raise Exit(code=1) from None

    return task_body
