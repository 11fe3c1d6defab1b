"""Rich output: one line per step, a spinner on waits, a summary table. Secrets are redacted here."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable

from rich.console import Console
from rich.table import Table

from .engine import Outcome, Result

STYLE = {
    Outcome.OK: ("✓", "green"),
    Outcome.CHANGED: ("●", "yellow"),
    Outcome.WOULD_CHANGE: ("○", "cyan"),
    Outcome.FAILED: ("✗", "bold red"),
    Outcome.SKIPPED: ("-", "dim"),
}


def launcher() -> str:
    """How the user starts the tool: `./etl` exports ETLBOOT_LAUNCHER; run as `invoke`, it is `invoke`."""
    return os.environ.get("ETLBOOT_LAUNCHER") or "invoke"


def as_typed(text: str) -> str:
    """Hints are written as `invoke up`; they name the command the user actually types."""
    start = launcher()
    return text if start == "invoke" else text.replace("`invoke ", f"`{start} ")


class Redactor:
    """The filter every text passes on its way out: known secret values become ***, and hints name the
    command the user typed (`as_typed`)."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *values: str) -> None:
        for value in values:
            if value and len(value) >= 6:
                self._secrets.add(value)

    def __call__(self, text: str) -> str:
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, "***")
        return as_typed(text)


class Reporter:
    def __init__(self, console: Console | None = None, redactor: Redactor | None = None, verbose: bool = False):
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.redact = redactor or Redactor()
        self.verbose = verbose
        self._interactive = self.console.is_terminal

    def say(self, text: str, style: str | None = None) -> None:
        self.console.print(self.redact(text), style=style, markup=False)

    def step_started(self, step) -> None:
        pass

    def step_finished(self, result: Result) -> None:
        mark, style = STYLE[result.outcome]
        line = f"{mark} {result.outcome.value:<12} {result.step:<34} {result.detail}"
        if result.seconds >= 1:
            line += f" ({result.seconds:.1f}s)"
        self.console.print(self.redact(line), style=style if result.outcome is not Outcome.OK else None,
                           markup=False, highlight=False)
        if result.outcome is Outcome.FAILED and result.hint:
            self.console.print(self.redact(f"  hint: {result.hint}"), style="dim", markup=False)

    @contextlib.contextmanager
    def waiting(self, what: str):
        if self._interactive:
            with self.console.status(self.redact(f"waiting for {what}")) as status:
                yield _Status(status, what, self.redact)
        else:
            yield None

    def traceback(self, text: str) -> None:
        self.console.print(self.redact(text), style="dim", markup=False)

    def summary(self, title: str, results: list[Result]) -> None:
        counts: dict[Outcome, int] = {}
        for result in results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        table = Table(title=title, show_lines=False)
        table.add_column("outcome")
        table.add_column("steps", justify="right")
        for outcome in Outcome:
            if counts.get(outcome):
                table.add_row(f"[{STYLE[outcome][1]}]{outcome.value}[/]", str(counts[outcome]))
        self.console.print(table)
        failed = [r for r in results if r.outcome is Outcome.FAILED]
        if failed:
            first = failed[0]
            self.say(f"FAILED: {first.step}: {first.detail}", style="bold red")


class _Status:
    def __init__(self, status, what, redact):
        self._status, self._what, self._redact = status, what, redact

    def update(self, state: str) -> None:
        self._status.update(self._redact(f"waiting for {self._what}: {state}"))


def plain_reporter(redactor: Redactor | None = None, file=None) -> Reporter:
    return Reporter(Console(file=file or sys.stdout, highlight=False, soft_wrap=True, force_terminal=False),
                    redactor)
