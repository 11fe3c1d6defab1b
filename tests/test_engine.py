"""The step contract, exercised with in-memory steps (no cluster involved)."""

import io
from pathlib import Path

import pytest
from rich.console import Console

from etlboot.engine import Check, Context, Outcome, Runner, State, Step, StepError, WaitTimeout, exit_code, wait_until
from etlboot.kube import subset_diff
from etlboot.report import Redactor, Reporter


class Settings:
    wait_timeout_seconds = 1


class MemoryStep(Step):
    """Desired value `want` in a dict `world`; becomes healthy after `ready_after` checks."""

    def __init__(self, name, world, want, ready_after=0, apply_error=None, converge=True):
        self.name, self.world, self.want = name, world, want
        self.ready_after, self.apply_error, self.converge = ready_after, apply_error, converge
        self.applied = 0
        self.checks = 0
        self.poll_interval = 0.01

    def check(self, ctx):
        self.checks += 1
        live = self.world.get(self.name)
        if live is None:
            return Check(State.MISSING)
        if live != self.want:
            return Check(State.DRIFTED, diff=[f"value {live!r}"])
        return Check(State.PRESENT, healthy=self.checks > self.ready_after)

    def apply(self, ctx, check):
        self.applied += 1
        if self.apply_error:
            raise self.apply_error
        if self.converge:
            self.world[self.name] = self.want

    def remove(self, ctx):
        return Outcome.CHANGED if self.world.pop(self.name, None) is not None else Outcome.OK

    def remove_plan(self, ctx):
        return Outcome.WOULD_CHANGE if self.name in self.world else Outcome.OK


def make_ctx(dry_run=False, **options):
    out = io.StringIO()
    reporter = Reporter(Console(file=out, force_terminal=False, width=200), Redactor(["s3cr3t-value"]))
    return Context(Settings(), reporter, dry_run=dry_run, **options), out


def outcomes(results):
    return [r.outcome for r in results]


def test_four_run_idempotency_shape():
    world = {}
    steps = [MemoryStep("a", world, 1), MemoryStep("b", world, 2)]
    assert outcomes(Runner(make_ctx(dry_run=True)[0]).up(steps)) == [Outcome.WOULD_CHANGE] * 2
    assert world == {}
    assert outcomes(Runner(make_ctx()[0]).up(steps)) == [Outcome.CHANGED] * 2
    assert outcomes(Runner(make_ctx(dry_run=True)[0]).up(steps)) == [Outcome.OK] * 2
    before = [s.applied for s in steps]
    assert outcomes(Runner(make_ctx()[0]).up(steps)) == [Outcome.OK] * 2
    assert [s.applied for s in steps] == before


def test_drift_is_reported_with_what_differs_and_fixed():
    world = {"a": 5}
    ctx, out = make_ctx(dry_run=True)
    [result] = Runner(ctx).up([MemoryStep("a", world, 1)])
    assert result.outcome is Outcome.WOULD_CHANGE and "value 5" in result.detail
    [result] = Runner(make_ctx()[0]).up([MemoryStep("a", world, 1)])
    assert result.outcome is Outcome.CHANGED and world["a"] == 1


def test_failure_stops_later_steps_and_sets_exit_code():
    world = {}
    steps = [MemoryStep("a", world, 1, apply_error=StepError("boom", hint="do x")), MemoryStep("b", world, 2)]
    ctx, out = make_ctx()
    results = Runner(ctx).up(steps)
    assert outcomes(results) == [Outcome.FAILED, Outcome.SKIPPED]
    assert results[0].detail == "boom" and results[0].hint == "do x"
    assert steps[1].applied == 0
    assert exit_code(results) == 1
    assert "hint: do x" in out.getvalue()


def test_step_that_acts_but_never_converges_fails_with_last_state():
    world = {}
    ctx, _ = make_ctx()
    [result] = Runner(ctx).up([MemoryStep("a", world, 1, converge=False)])
    assert result.outcome is Outcome.FAILED
    assert "timed out" in result.detail and "last state: missing" in result.detail


def test_present_but_unready_waits_without_acting():
    world = {"a": 1}
    step = MemoryStep("a", world, 1, ready_after=2)
    [result] = Runner(make_ctx()[0]).up([step])
    assert result.outcome is Outcome.OK and step.applied == 0


def test_status_changes_nothing_and_fails_on_missing():
    world = {"a": 1}
    steps = [MemoryStep("a", world, 1), MemoryStep("b", world, 2)]
    results = Runner(make_ctx()[0]).status(steps)
    assert outcomes(results) == [Outcome.OK, Outcome.FAILED]
    assert "missing" in results[1].detail
    assert world == {"a": 1} and all(s.applied == 0 for s in steps)


def test_down_runs_in_reverse_and_twice_is_fine():
    world = {"a": 1, "b": 2}
    steps = [MemoryStep("a", world, 1), MemoryStep("b", world, 2)]
    results = Runner(make_ctx()[0]).down(steps)
    assert [r.step for r in results] == ["b", "a"] and outcomes(results) == [Outcome.CHANGED] * 2
    assert outcomes(Runner(make_ctx()[0]).down(steps)) == [Outcome.OK] * 2


def test_unexpected_exception_is_one_line_and_redacted():
    world = {}
    ctx, out = make_ctx()
    results = Runner(ctx).up([MemoryStep("a", world, 1, apply_error=RuntimeError("token s3cr3t-value leaked"))])
    assert results[0].outcome is Outcome.FAILED
    text = out.getvalue()
    assert "s3cr3t-value" not in text and "***" in text
    assert "Traceback" not in text


def test_wait_until_is_bounded_and_reports_last_state():
    now = [0.0]
    states = iter(["pending", "pending", "still pending"] * 10)
    with pytest.raises(WaitTimeout) as err:
        wait_until(lambda: (False, next(states)), timeout=5, what="thing", interval=2,
                   clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert "thing" in str(err.value) and "last state:" in str(err.value)


def test_subset_diff_ignores_server_fields_and_names_paths_not_values():
    desired = {"metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "secret"}}
    live = {"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}, "resourceVersion": "7", "uid": "u"},
            "data": {"k": "secret"}, "status": {}}
    assert subset_diff(desired, live) == []
    live["data"]["k"] = "other"
    assert subset_diff(desired, live) == [".data.k"]
    assert subset_diff({"spec": {"replicas": 1}}, {"spec": {"replicas": "1"}}) == []
    assert subset_diff({"l": [1, 2]}, {"l": [1]}) == [".l"]


def test_the_engine_reads_failures_through_the_context_and_imports_no_client_library():
    """A failing step's line comes from ctx.explain (the CLI sets etlboot/errors.py's); the engine itself knows
    only StepError, so importing it loads neither etlboot.errors nor the client libraries."""
    import subprocess
    import sys

    class Boom(Step):
        name = "x/boom"

        def check(self, ctx):
            raise ConnectionError("no route")

    ctx, out = make_ctx()
    assert Runner(ctx).status([Boom()])[0].detail == "no route"
    ctx.explain = lambda exc: (f"explained: {exc}", "try again")
    [result] = Runner(ctx).status([Boom()])
    assert (result.detail, result.hint) == ("explained: no route", "try again")
    loaded = subprocess.run([sys.executable, "-c", "import sys, etlboot.engine; print(sorted(m for m in sys.modules "
                             "if m in ('etlboot.errors', 'kubernetes', 'urllib3', 'botocore')))"],
                            capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    assert loaded == "[]"
