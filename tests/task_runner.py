"""Run Invoke tasks in-process from tests."""

from __future__ import annotations


def run_task(module, name: str, **kwargs) -> int:
    """Run the task `name` of a task module in-process; its exit code. An Exit's message goes to stderr,
    as Invoke prints it."""
    import sys

    from invoke import Context, Exit

    try:
        getattr(module, name)(Context(), **kwargs)
    except Exit as exc:
        if exc.message:
            print(exc.message, file=sys.stderr)
        return exc.code
    return 0
