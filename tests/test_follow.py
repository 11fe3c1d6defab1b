"""The one workflow follower (etlboot/follow.py): what it draws, when it stops, and what a timeout says."""

from __future__ import annotations

import io

import pytest

from etlboot.engine import WaitTimeout
from etlboot.follow import follow_workflows
from etlboot.report import plain_reporter


def workflow(name: str, phase: str, progress: str = "") -> dict:
    status = {"phase": phase} | ({"progress": progress} if progress else {})
    return {"metadata": {"name": name}, "status": status}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_it_draws_each_change_once_and_returns_the_reading_that_was_done():
    readings = iter([[workflow("etl-a", "Pending")], [workflow("etl-a", "Running")], [workflow("etl-a", "Running")],
                     [workflow("etl-a", "Succeeded"), workflow("agg-b", "Running")],
                     [workflow("etl-a", "Succeeded"), workflow("agg-b", "Succeeded")]])
    out, clock = io.StringIO(), Clock()
    final = follow_workflows(lambda: next(readings), lambda ws: len(ws) == 2 and all(
        w["status"]["phase"] == "Succeeded" for w in ws), timeout=60, reporter=plain_reporter(file=out),
        what="waiting", hint="", interval=1, clock=clock, sleep=clock.sleep)
    assert [w["metadata"]["name"] for w in final] == ["etl-a", "agg-b"]
    lines = out.getvalue().splitlines()
    assert lines[:5] == ["etl-a: Pending", "etl-a: Running", "etl-a: Succeeded", "agg-b: Running", "agg-b: Succeeded"]
    assert clock.now == 4  # four sleeps between five readings


def test_a_timeout_names_what_was_awaited_and_the_last_state_of_each_workflow():
    clock = Clock()
    with pytest.raises(WaitTimeout) as err:
        follow_workflows(lambda: [workflow("etl-a", "Running", "1/2"), workflow("agg-b", "Pending")],
                         lambda ws: False, timeout=3, reporter=plain_reporter(file=io.StringIO()),
                         what="waiting for the triggered workflows", hint="`invoke doctor`", interval=1,
                         clock=clock, sleep=clock.sleep)
    assert str(err.value) == ("timed out after 3s waiting for the triggered workflows; last state: "
                              "etl-a Running (1/2); agg-b Pending")
    assert err.value.hint == "`invoke doctor`"
    assert clock.now == 3  # bounded: it never sleeps past the deadline


def test_a_timeout_with_nothing_seen_says_so():
    clock = Clock()
    with pytest.raises(WaitTimeout, match="last state: none seen"):
        follow_workflows(list, lambda ws: False, timeout=1, reporter=plain_reporter(file=io.StringIO()),
                         what="waiting", hint="", interval=1, clock=clock, sleep=clock.sleep)
