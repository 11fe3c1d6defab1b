"""The step engine: every unit of work observes, compares, acts, and checks again.

One contract serves `up`, `status`, `--dry-run` and `down`:

- ``check(ctx)`` reads the live state (read-only) and returns a :class:`Check`:
  present / drifted (with what differs) / missing, and whether it is healthy.
- ``apply(ctx, check)`` makes it so. The runner then checks again, waiting (bounded) until the
  step is present and healthy; a step that acted but does not converge fails with the last state seen.
- ``remove(ctx)`` deletes only what carries the tool's label (for `down`).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Sequence


class Outcome(str, Enum):
    OK = "ok"
    CHANGED = "changed"
    WOULD_CHANGE = "would-change"
    FAILED = "failed"
    SKIPPED = "skipped"


class State(str, Enum):
    PRESENT = "present"
    DRIFTED = "drifted"
    MISSING = "missing"
    UNKNOWN = "unknown"


class StepError(Exception):
    """A step could not do its work. `hint` says what the user can do about it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class WaitTimeout(StepError):
    pass


@dataclass
class Check:
    state: State
    diff: list[str] = field(default_factory=list)
    healthy: bool | None = None  # None: no health notion for this step
    detail: str = ""
    live: Any = None
    hint: str = ""  # what the user can do about it, shown when the step is not in place

    @property
    def converged(self) -> bool:
        return self.state is State.PRESENT and self.healthy is not False


@dataclass
class Result:
    step: str
    outcome: Outcome
    detail: str = ""
    seconds: float = 0.0
    check: Check | None = None
    hint: str = ""


class Step:
    """Base class. Subclasses set `name` (unique, `area/thing`) and `title` (one line)."""

    name: str = "step"
    title: str = ""
    #: seconds to wait for convergence after acting (None: settings.WAIT_TIMEOUT_SECONDS)
    timeout: float | None = None
    #: whether `down` handles this step
    removable: bool = True
    #: names of steps that must be in place before this one can even be checked
    depends_on: tuple[str, ...] = ()
    #: every later step depends on this one (the cluster itself)
    gates_all: bool = False

    def skip_reason(self, ctx: "Context") -> str | None:
        return None

    def check(self, ctx: "Context") -> Check:
        raise NotImplementedError

    def apply(self, ctx: "Context", check: Check) -> None:
        raise NotImplementedError

    def remove(self, ctx: "Context") -> "Outcome | tuple[Outcome, str]":
        """Delete what this step made. Returns CHANGED (removed), OK (nothing there) or SKIPPED, optionally
        with a detail saying exactly what was deleted."""
        return Outcome.SKIPPED

    def remove_plan(self, ctx: "Context") -> Outcome:
        """Dry-run of remove: WOULD_CHANGE if remove() would delete something."""
        return Outcome.SKIPPED

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Context:
    """What every step may use: settings, clients (lazy), the reporter, the mode flags."""

    def __init__(self, settings, reporter, *, dry_run: bool = False, debug: bool = False, verbose: bool = False,
                 **options: Any):
        self.settings = settings
        self.options = options
        self.reporter = reporter
        self.dry_run = dry_run
        self.debug = debug
        self.verbose = verbose
        self._cache: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []
        #: one clear line and a hint for any exception a step may raise
        self.explain: Callable[[BaseException], tuple[str, str]] = plain_explanation
        #: called once, before the run's first write (cli: the generated passwords go into .env then)
        self.before_first_write: Callable[[], None] = lambda: None

    def option(self, name: str) -> Any:
        """A task flag such as `purge` (False when not given)."""
        return self.options.get(name, False)

    def cached(self, key: str, factory: Callable[[], Any], close: Callable[[Any], None] | None = None) -> Any:
        if key not in self._cache:
            value = factory()
            self._cache[key] = value
            if close is not None:
                self._closers.append(lambda: close(value))
        return self._cache[key]

    def forget(self, key: str) -> None:
        """Drop a cached read (not a client with a closer) so the next `cached` reads again."""
        self._cache.pop(key, None)

    def close(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # closing must never hide the real outcome
                pass

    def wait_timeout(self, step: Step | None = None) -> float:
        if step is not None and step.timeout is not None:
            return step.timeout
        return float(self.settings.wait_timeout_seconds)


def wait_until(
    probe: Callable[[], tuple[bool, str]],
    *,
    timeout: float,
    what: str,
    interval: float = 2.0,
    reporter=None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Call `probe` until it returns (True, state) or `timeout` passes; raise WaitTimeout with the last state.

    The pause between probes starts short and doubles up to `interval`: most things (a token filled, a CRD
    established, a small Deployment rolled out) are ready within a second, and slow ones are not polled hard."""
    deadline = clock() + timeout
    last = "not checked yet"
    pause = min(0.1, interval)
    with (reporter.waiting(what) if reporter else _null()) as status:
        while True:
            done, last = probe()
            if done:
                return last
            if status is not None:
                status.update(last)
            remaining = deadline - clock()
            if remaining <= 0:
                raise WaitTimeout(
                    f"timed out after {timeout:.0f}s waiting for {what}; last state: {last}",
                    hint="raise WAIT_TIMEOUT_SECONDS, or look at the object with kubectl describe",
                )
            sleep(min(pause, max(remaining, 0.01)))
            pause = min(pause * 2, interval)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def plain_explanation(exc: BaseException) -> tuple[str, str]:
    """The engine's own reading of an exception: its text and, for a StepError, its hint. The CLI gives the
    context a richer one (etlboot/errors.py, which knows the client libraries), so the engine imports none."""
    return str(exc) or type(exc).__name__, getattr(exc, "hint", "")


class Runner:
    """Runs steps in order (or reverse for down), collects results, never prints secrets."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.reporter = ctx.reporter

    # -- up ---------------------------------------------------------------------------------
    def up(self, steps: Sequence[Step]) -> list[Result]:
        results: list[Result] = []
        failed = False
        pending: dict[str, str] = {}  # dry run: steps that would change, which later steps wait for
        gate: str | None = None
        failed_step = ""
        for step in steps:
            if failed:
                # one line for all of them, not one per step: the output of a failed run stays readable
                results.append(Result(step.name, Outcome.SKIPPED, f"not run: {failed_step} failed"))
                continue
            blocker = gate or next((d for d in step.depends_on if d in pending), None)
            if blocker:
                result = self._report(Result(step.name, Outcome.WOULD_CHANGE, f"would be checked after {blocker}"))
            else:
                result = self._guarded(step, self._up_one)
            results.append(result)
            failed = result.outcome is Outcome.FAILED
            failed_step = step.name
            if result.outcome is Outcome.WOULD_CHANGE:
                pending[step.name] = result.detail
                if step.gates_all and gate is None:
                    gate = step.name
        self._report_unrun(results, "not run: ")
        return results

    def _report_unrun(self, results: list[Result], detail_prefix: str) -> None:
        """One line for the steps behind a failure or a failed gate (they are in `results`, not printed)."""
        unrun = [r for r in results if r.outcome is Outcome.SKIPPED and r.detail.startswith(detail_prefix)]
        if unrun:
            words, reason = unrun[0].detail.split(": ", 1)
            self.reporter.say(f"- {len(unrun)} later step{'s' if len(unrun) > 1 else ''} {words}: {reason}")

    def _up_one(self, step: Step) -> Result:
        reason = step.skip_reason(self.ctx)
        if reason:
            return Result(step.name, Outcome.SKIPPED, reason)
        check = step.check(self.ctx)
        if check.converged:
            return Result(step.name, Outcome.OK, check.detail, check=check)
        if check.state is State.PRESENT and check.healthy is False:
            # in place but not ready (yet): nothing to change, only wait
            if self.ctx.dry_run:
                return Result(step.name, Outcome.OK, f"in place, not ready: {check.detail}", check=check)
            self._wait_converged(step)
            return Result(step.name, Outcome.OK, "in place; became ready", check=check)
        what = "create" if check.state is State.MISSING else "update"
        detail = f"would {what}" + (f": {'; '.join(check.diff)}" if check.diff else "")
        if self.ctx.dry_run:
            return Result(step.name, Outcome.WOULD_CHANGE, detail, check=check)
        self.ctx.before_first_write()
        self.ctx.before_first_write = lambda: None
        step.apply(self.ctx, check)
        after = self._wait_converged(step)
        return Result(step.name, Outcome.CHANGED, f"{what}d" + (f" ({after.detail})" if after.detail else ""), check=after)

    def _wait_converged(self, step: Step) -> Check:
        holder: dict[str, Check] = {}

        def probe() -> tuple[bool, str]:
            check = step.check(self.ctx)
            holder["check"] = check
            state = check.state.value + (f", {check.detail}" if check.detail else "")
            if check.diff:
                state += f"; differs: {'; '.join(check.diff)}"
            return check.converged, state

        wait_until(probe, timeout=self.ctx.wait_timeout(step), what=f"{step.name} to be ready", reporter=self.reporter,
                   interval=getattr(step, "poll_interval", 2.0))
        return holder["check"]

    # -- status -----------------------------------------------------------------------------
    def status(self, steps: Sequence[Step]) -> list[Result]:
        results: list[Result] = []
        down: set[str] = set()  # steps not in place, which dependent steps cannot be checked without
        gate: str | None = None
        for step in steps:
            if gate:  # nothing behind a failed gate (tools, cluster, context) can be checked: one line for all
                results.append(Result(step.name, Outcome.SKIPPED, f"not checked: {gate} is not in place"))
                continue
            blocker = next((d for d in step.depends_on if d in down), None)
            if blocker:
                result = self._report(Result(step.name, Outcome.SKIPPED, f"not checked: needs {blocker}"))
                down.add(step.name)
            else:
                result = self._guarded(step, self._status_one)
            results.append(result)
            if result.outcome is Outcome.FAILED:
                down.add(step.name)
                if step.gates_all and gate is None:
                    gate = step.name
        if gate:
            self._report_unrun(results, f"not checked: {gate} ")
        return results

    def _status_one(self, step: Step) -> Result:
        reason = step.skip_reason(self.ctx)
        if reason:
            return Result(step.name, Outcome.SKIPPED, reason)
        check = step.check(self.ctx)
        outcome = Outcome.OK if check.converged else Outcome.FAILED
        detail = check.state.value
        if check.healthy is False:
            detail += ", unhealthy"
        if check.detail:
            detail += f": {check.detail}"
        if check.diff:
            detail += f" (differs: {'; '.join(check.diff)})"
        return Result(step.name, outcome, detail, check=check, hint="" if check.converged else check.hint)

    # -- down -------------------------------------------------------------------------------
    def down(self, steps: Sequence[Step]) -> list[Result]:
        # first the gates (tools, cluster, context): nothing can be deleted from a cluster we cannot reach
        for step in steps:
            if not step.gates_all or step.skip_reason(self.ctx):
                continue
            try:
                check = step.check(self.ctx)
            except Exception as exc:  # noqa: BLE001
                message, hint = self.ctx.explain(exc)
                return [self._report(Result(step.name, Outcome.FAILED, message, hint=hint))]
            if check.state is State.MISSING:
                return [self._report(Result(step.name, Outcome.OK, "nothing to delete: it does not exist"))]
            if not check.converged:
                return [self._report(Result(step.name, Outcome.FAILED, f"cannot delete anything: {check.detail}",
                                            hint="start it, then run down again"))]
        results = []
        for step in reversed(list(steps)):
            if not step.removable:
                continue
            results.append(self._guarded(step, self._down_one))
        return results

    def _down_one(self, step: Step) -> Result:
        if self.ctx.dry_run:
            outcome = step.remove_plan(self.ctx)
            return Result(step.name, outcome, "would delete" if outcome is Outcome.WOULD_CHANGE else "nothing to delete"
                          if outcome is Outcome.OK else "kept")
        outcome = step.remove(self.ctx)
        detail = None
        if isinstance(outcome, tuple):  # (outcome, what exactly was deleted)
            outcome, detail = outcome
        if detail is None:
            detail = {Outcome.CHANGED: "deleted", Outcome.OK: "nothing to delete", Outcome.SKIPPED: "kept"}.get(outcome, "")
        return Result(step.name, outcome, detail)

    # -- shared -----------------------------------------------------------------------------
    def _guarded(self, step: Step, body: Callable[[Step], Result]) -> Result:
        started = time.monotonic()
        self.reporter.step_started(step)
        try:
            result = body(step)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure becomes one clear line
            message, hint = self.ctx.explain(exc)
            if self.ctx.debug:
                self.reporter.traceback("".join(traceback.format_exception(exc)))
            result = Result(step.name, Outcome.FAILED, message, hint=hint)
        result.seconds = time.monotonic() - started
        return self._report(result)

    def _report(self, result: Result) -> Result:
        self.reporter.step_finished(result)
        return result


def exit_code(results: Iterable[Result]) -> int:
    return 1 if any(r.outcome is Outcome.FAILED for r in results) else 0
