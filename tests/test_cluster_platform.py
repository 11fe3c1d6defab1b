"""The real thing: `up` → `status` → `up` again (all ok) → `down`, on a real cluster. Opt-in: pytest -m cluster."""

import pytest

from task_runner import run_task

pytestmark = pytest.mark.cluster


def test_up_status_up_down(real_cluster, capsys):
    from etlboot.tasks import core

    assert run_task(core, "up") == 0
    assert run_task(core, "status") == 0
    capsys.readouterr()
    assert run_task(core, "up") == 0
    second = capsys.readouterr().out
    assert " changed " not in second and " failed " not in second
    assert run_task(core, "down", yes=True) == 0
    assert run_task(core, "down", yes=True) == 0


def test_demo_multi_dataset_end_to_end(real_cluster):
    from etlboot.tasks import core, demo

    assert run_task(core, "up") == 0
    assert run_task(demo, "upload", dataset="multi") == 0
    assert run_task(demo, "verify", dataset="multi") == 0
