"""Glue between Invoke tasks and the engine: settings, reporter, runner, summary, exit code."""

from __future__ import annotations

import functools
import json
import sys
from typing import Callable, Sequence

from invoke import Exit
from rich.console import Console

from . import config
from .engine import Context, Result, Runner, Step, exit_code
from .report import Redactor, Reporter

COMMON_HELP = {
    "dry_run": "show what would change; change nothing",
    "debug": "show tracebacks on failure",
    "verbose": "show more detail",
}


def load_settings(generate: bool = True, **overrides) -> config.Settings:
    try:
        settings = config.load(generate=generate)
        overrides = {k: v for k, v in overrides.items() if v not in (None, "")}
        return settings.with_overrides(**overrides) if overrides else settings
    except config.ConfigError as exc:
        Reporter().say(f"✗ config: {exc}", style="bold red")
        raise Exit(code=2) from None


def make_context(settings: config.Settings, *, dry_run=False, debug=False, verbose=False, to_stderr=False,
                 **options) -> Context:
    console = Console(stderr=True, highlight=False, soft_wrap=True) if to_stderr else None
    reporter = Reporter(console=console, redactor=Redactor(settings.secret_values()), verbose=verbose)
    for name in settings.generated:
        reporter.say(f"generated {name} into {settings.env_file.name} (mode 0600)")
    return Context(settings, reporter, dry_run=dry_run, debug=debug, verbose=verbose, **options)


def run_mode(mode: str, steps_for: Callable[[Context], Sequence[Step]], *, title: str, dry_run=False, debug=False,
             verbose=False, settings: config.Settings | None = None, as_json: bool = False, **options) -> list[Result]:
    """Run the steps in `mode` (up/status/down). `as_json`: the human lines go to stderr, and stdout gets one
    JSON document of the results, for scripts."""
    settings = settings or load_settings()
    ctx = make_context(settings, dry_run=dry_run, debug=debug, verbose=verbose, to_stderr=as_json, **options)
    try:
        steps = steps_for(ctx)
        runner = Runner(ctx)
        results = getattr(runner, mode)(steps)
    finally:
        ctx.close()
    ctx.reporter.summary(title + (" (dry run)" if dry_run else ""), results)
    code = exit_code(results)
    if as_json:
        document = {"command": title, "ok": not code,
                    "steps": [{"step": r.step, "outcome": r.outcome.value, "detail": r.detail, "hint": r.hint}
                              for r in results]}
        print(ctx.reporter.redact(json.dumps(document, indent=1)))
    if code:
        raise Exit(code=code)
    return results


def confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        Reporter().say(f"✗ {question} — refusing without a terminal to ask; pass --yes", style="bold red")
        raise Exit(code=2)
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise Exit("aborted", code=1)


def interruptible(body: Callable) -> Callable:
    """Every task ends a failure with one line: Ctrl-C says "interrupted" and exits 130 (what shells expect
    of SIGINT); a StepError raised outside the engine (the context guard, a port-forward that did not open)
    is its message and hint, exit 1. The steps' own clean-up (port-forwards, temporary files) has run by then."""
    @functools.wraps(body)
    def task_body(*args, **kwargs):
        from .engine import StepError

        try:
            return body(*args, **kwargs)
        except KeyboardInterrupt:
            Reporter().say("✗ interrupted", style="bold red")
            raise Exit(code=130) from None
        except StepError as exc:
            Reporter().say(f"✗ {exc}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), style="bold red")
            raise Exit(code=1) from None

    return task_body
