"""Plan first, then execute: a step's check returns the calls it intends; a run executes exactly those.

`--dry-run` prints the same list, so what a dry run shows is what a run does. Each intended call names
the API operation and its target, never a secret (`describe` is what is shown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Intended:
    operation: str            # e.g. "sns:CreateTopic"
    target: str               # what it acts on, e.g. the topic name
    run: Callable[[], Any] = field(repr=False, compare=False, default=lambda: None)
    note: str = ""            # why, e.g. "statement ArgoEtlBootstrapS3Publish added"

    def describe(self) -> str:
        text = f"{self.operation} {self.target}"
        return f"{text} ({self.note})" if self.note else text


class Plan(list):
    """An ordered list of `Intended` calls."""

    def add(self, operation: str, target: str, run: Callable[[], Any], note: str = "") -> "Plan":
        self.append(Intended(operation, target, run, note))
        return self

    def describe(self) -> list[str]:
        return [i.describe() for i in self]

    def execute(self) -> None:
        for intended in self:
            intended.run()


def plan_of(check) -> Plan:
    """The plan a step's check attached (empty when there is nothing to do)."""
    live = getattr(check, "live", None)
    if isinstance(live, dict) and isinstance(live.get("plan"), Plan):
        return live["plan"]
    return Plan()


def format_plan(results) -> list[str]:
    """Numbered lines of every intended call in the results of a dry run, in order."""
    lines: list[str] = []
    for result in results:
        check = getattr(result, "check", None)
        if check is None:
            continue
        plan = plan_of(check)
        entries = plan.describe() if plan else ([f"(kubernetes) {d}" for d in check.diff]
                                                 if result.outcome.value == "would-change" else [])
        if result.outcome.value == "would-change" and not entries:
            entries = ["(kubernetes) create"] if check.state.value == "missing" else []
        for entry in entries:
            lines.append(f"{len(lines) + 1:>3}. {result.step}: {entry}")
    return lines
