"""`doctor` against the emulator: healthy after `up`, and each known failure mode, broken in turn, is named
by its own check (and only by it), with its fix; RBAC is asked of the emulator's authorizer with
SubjectAccessReviews, and doctor writes nothing."""

from __future__ import annotations

import json
import re

import pytest

NS = "argo-etl"
DOCTOR_CHECKS = ["doctor/minio-listeners", "doctor/sensor-rbac", "doctor/workflow-rbac", "doctor/eventbus",
                 "doctor/pods", "doctor/artifact-repository"]


def failed_checks(out: str) -> list[str]:
    return re.findall(r"failed\s+(doctor/\S+)", out)


def hint_after(out: str, check: str) -> str:
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if check in line and "failed" in line:
            return lines[i + 1].strip() if i + 1 < len(lines) and "hint:" in lines[i + 1] else ""
    return ""


@pytest.fixture
def healthy(stack_after_up):
    return stack_after_up


def test_a_healthy_stack_passes_every_check_and_doctor_writes_nothing(healthy):
    healthy.emu.clear_log()
    code, out = healthy.run("doctor")
    assert code == 0, out
    for check in DOCTOR_CHECKS:
        assert re.search(rf"ok\s+{check}\b", out), (check, out)
    assert "allowed by RoleBinding" in out           # the authorizer's own words, not our guess
    writes = healthy.emu.write_requests()
    assert writes and all(r["path"].endswith("/subjectaccessreviews") for r in writes), writes


def _break_listener(world):
    world.set_listener(NS, "etlproj", "stopped")
    return lambda: world.set_listener(NS, "etlproj", "listening")


def _put_back(world, *objects):
    return lambda: [world.emu.put_object(o) for o in objects]


def _deleted(world, kind, name):
    return lambda: world.emu.delete_object(kind, name, NS)


def _break_sensor_rbac(world):
    binding = world.emu.get("RoleBinding", "operate-workflow-role-binding", NS)
    world.emu.delete_object("RoleBinding", "operate-workflow-role-binding", NS)
    return _put_back(world, binding)


def _break_workflow_rbac(world):
    role = world.emu.get("Role", "argo-workflow-executor", NS)
    world.emu.put_object({**role, "rules": [{**role["rules"][0], "verbs": ["create"]}]})
    return _put_back(world, role)


def _break_eventbus(world):
    pod = world.emu.get("Pod", "eventbus-default-js-0", NS)
    world.emu.put_object({**pod, "status": {**pod["status"], "conditions": [{"type": "Ready", "status": "False"}]}})
    return _put_back(world, pod)


def _break_image(world):
    world.emu.put_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "etl-abc", "namespace": NS},
                          "status": {"phase": "Pending", "containerStatuses": [{
                              "name": "main", "ready": False, "restartCount": 0,
                              "state": {"waiting": {"reason": "ImagePullBackOff",
                                                    "message": 'Back-off pulling image "argo-etl:nope"'}}}]}})
    return _deleted(world, "Pod", "etl-abc")


def _break_memory(world):
    world.emu.put_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agg-xyz", "namespace": NS},
                          "status": {"phase": "Running", "containerStatuses": [{
                              "name": "main", "ready": True, "restartCount": 2, "state": {"running": {}},
                              "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}})
    return _deleted(world, "Pod", "agg-xyz")


def _break_artifacts(world):
    cm = world.emu.get("ConfigMap", "artifact-repositories", NS)
    annotations = {**cm["metadata"]["annotations"], "workflows.argoproj.io/default-artifact-repository": "gone"}
    world.emu.put_object({**cm, "metadata": {**cm["metadata"], "annotations": annotations}})
    return _put_back(world, cm)


@pytest.mark.parametrize("breakage,check,detail,fix", [
    (_break_listener, "doctor/minio-listeners", "etlproj stopped listening", "restarts its pod"),
    (_break_sensor_rbac, "doctor/sensor-rbac", "may not create workflows", "manifests/platform/rbac.yaml"),
    (_break_workflow_rbac, "doctor/workflow-rbac", "may not patch workflowtaskresults", "--only platform"),
    (_break_eventbus, "doctor/eventbus", "0/1 JetStream pods ready", "eventbus-name=default"),
    (_break_image, "doctor/pods", 'etl-abc container main: ImagePullBackOff (Back-off pulling image', "ETL_IMAGE"),
    (_break_memory, "doctor/pods", "agg-xyz container main: OOMKilled (2 restarts)", "memory limit"),
    (_break_artifacts, "doctor/artifact-repository", "no entry 'gone'", "artifact-repositories"),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_each_failure_is_named_by_its_own_check_with_its_fix(healthy, breakage, check, detail, fix):
    undo = breakage(healthy)
    try:
        code, out = healthy.run("doctor")
    finally:
        undo()
    assert code == 1, out
    assert failed_checks(out) == [check], out
    line = next(l for l in out.splitlines() if check in l and "failed" in l)
    assert detail in line, line
    assert fix in hint_after(out, check), out
    assert "Traceback" not in out


def test_doctor_json_names_the_problem_and_its_fix(healthy):
    undo = _break_sensor_rbac(healthy)
    try:
        code, out = healthy.run("doctor", json=True)
    finally:
        undo()
    assert code == 1
    document = json.loads(out[out.index("{"):out.rindex("}") + 1])
    [failed] = [s for s in document["steps"] if s["outcome"] == "failed"]
    assert failed["step"] == "doctor/sensor-rbac" and "rbac.yaml" in failed["hint"]


def test_ftp_clock_off_by_more_than_the_minimum_age(healthy, monkeypatch):
    world = healthy
    monkeypatch.setenv("FTP_ENABLED", "true")
    world.emu.put_object({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "ftp-event-server-1", "namespace": NS,
                                       "labels": {"app": "ftp-event-server"}},
                          "status": {"phase": "Running"}})
    world.emu.set_pod_log(NS, "ftp-event-server-1",
                          "INFO stream for event 'ftp' started\n"
                          "INFO the FTP server's clock is about +95s off ours (from files seen changing)\n")
    code, out = world.run("doctor")
    line = next(l for l in out.splitlines() if "doctor/ftp-clock" in l)
    assert "failed" in line and "+95s" in line and "minimum age of 30s" in line, out
    assert "FTP_DONE_FILE" in hint_after(out, "doctor/ftp-clock")
    world.emu.set_pod_log(NS, "ftp-event-server-1", "INFO the FTP server's clock is about +12s off ours\n")
    code, out = world.run("doctor")
    world.emu.delete_object("Pod", "ftp-event-server-1", NS)
    line = next(l for l in out.splitlines() if "doctor/ftp-clock" in l)
    assert "ok" in line and "+12s" in line, out
