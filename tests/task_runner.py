"""Run Invoke tasks in-process from tests."""

from __future__ import annotations


def run_task(module, name: str, **kwargs) -> int:
    """Run the task `name` of a task module in-process; its exit code."""
    from invoke import Context, Exit

    try:
        getattr(module, name)(Context(), **kwargs)
    except Exit as exc:
        return exc.code
    return 0
