"""`trace --target ftp` against the emulator: the FTP event server's log, the generic EventSource, the Sensor `ftp`,
its Workflows and the Parquet in MinIO, broken at each link in turn (the verdict names the right link and why),
and a whole journey complete. How the target is chosen: --target, the last demo upload's note, a path's `/`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from test_trace import BUCKET, NS, log, parquet, put

PATH = "/20230414/ftp1.csv"
OUTPUT = "ftp/output/20230414/ftp1.parquet"
REJECTS = "ftp/rejects/20230414/ftp1.csv"
EVENT_ID = "ftp-event-1"


@pytest.fixture
def stack(stack_after_up, monkeypatch):
    monkeypatch.setenv("FTP_ENABLED", "true")   # trace reads the settings only; nothing is installed
    yield stack_after_up
    for name in ("ftp-event-server-pod", "ftp-eventsource-pod", "ftp-sensor-pod"):
        stack_after_up.emu.delete_object("Pod", name, NS)
    for name in ("ftp-etl-ok", "ftp-etl-failed"):
        stack_after_up.emu.delete_object("Workflow", name, NS)


def pod(world, name: str, labels: dict, text: str) -> None:
    world.emu.put_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS,
                                                                          "labels": labels},
                          "status": {"phase": "Running"}})
    world.emu.set_pod_log(NS, name, text)


def event_server(world, *lines: str) -> None:
    """The event server's log, its lines of 10 s ago (the API server stamps the Workflows it stores now)."""
    at = (datetime.now(timezone.utc) - timedelta(seconds=10)).strftime("%Y-%m-%d %H:%M:%S,123")
    pod(world, "ftp-event-server-pod", {"app": "ftp-event-server"},
        f"{at} INFO ftp_stream: watching ftp://vsftpd:21/ every 5s\n" + "".join(f"{at} {line}\n" for line in lines))


def reported(world, path: str = PATH) -> None:
    event_server(world, f"INFO ftp_stream: reported new {path!r} (20 bytes, 2099-01-01T00:00:00Z)")


def published(world) -> None:
    pod(world, "ftp-eventsource-pod", {"eventsource-name": "ftp"},
        log({"msg": "Succeeded to publish an event", "eventName": "ftp-file", "eventID": EVENT_ID}))


def fired(world) -> None:
    pod(world, "ftp-sensor-pod", {"sensor-name": "ftp"},
        log({"msg": "Successfully processed trigger 'ftp-etl-workflow'", "triggeredByEvents": [EVENT_ID]}))


def workflow(world, name: str, phase: str, path: str = PATH) -> None:
    world.emu.put_object({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": "2099-01-01T00:00:01Z",
                     "labels": {"events.argoproj.io/sensor": "ftp"}},
        "spec": {"workflowTemplateRef": {"name": "ftp-etl"},
                 "arguments": {"parameters": [{"name": "path", "value": path}]}},
        "status": {"phase": phase, "message": "Error (exit code 1)" if phase == "Failed" else "",
                   "startedAt": "2099-01-01T00:00:01Z", "finishedAt": "2099-01-01T00:00:09Z", "nodes": {}}})


def journey(world, key: str = PATH, **options) -> tuple[int, dict]:
    world.emu.clear_log()
    code, out = world.run("trace", key=key, json=True, **options)
    assert world.emu.write_requests() == []
    return code, json.loads(out[out.index("{"):out.rindex("}") + 1])


def test_ftp_disabled_or_no_event_server_breaks_at_the_object(stack, monkeypatch):
    monkeypatch.setenv("FTP_ENABLED", "false")
    code, doc = journey(stack)
    assert code == 1 and doc["target"] == "ftp" and doc["broken_at"] == "object"
    assert "FTP_ENABLED is false" in doc["links"][0]["detail"]
    monkeypatch.setenv("FTP_ENABLED", "true")
    code, doc = journey(stack)
    assert doc["broken_at"] == "object" and "no running FTP event server" in doc["links"][0]["detail"]
    assert [link["link"] for link in doc["links"]] == ["object", "eventsource", "sensor", "workflow", "output"]


def test_a_file_not_reported_says_why(stack, monkeypatch):
    event_server(stack)  # polling, reported nothing
    code, doc = journey(stack, key="/20230414/ftp1.csv.part")
    assert doc["broken_at"] == "object" and "FTP_IGNORE pattern '*.part'" in doc["links"][0]["cause"]
    event_server(stack, "WARNING ftp_stream: FTP poll of vsftpd:21 failed (ConnectionRefusedError: [Errno 111] "
                        "Connection refused); reconnecting in 2.0s (failure 3)")
    code, doc = journey(stack)
    assert "cannot poll the FTP server" in doc["links"][0]["cause"] and "Connection refused" in doc["links"][0]["cause"]
    monkeypatch.setenv("FTP_DONE_FILE", "{name}.done")
    event_server(stack)
    code, doc = journey(stack)
    assert "ftp1.csv.done" in doc["links"][0]["cause"]
    monkeypatch.delenv("FTP_DONE_FILE")
    event_server(stack, "INFO ftp_stream: first start: 3 existing files recorded as the baseline, not reported")
    code, doc = journey(stack)
    assert "old by the FTP server's clock" in doc["links"][0]["cause"] and "baseline" in doc["links"][0]["cause"]


def test_reported_but_not_published_breaks_at_the_eventsource(stack):
    reported(stack)
    code, doc = journey(stack)
    assert code == 1 and doc["broken_at"] == "eventsource"
    assert doc["links"][0]["detail"] == f"{PATH}: 20 bytes, modified 2099-01-01T00:00:00Z (reported as new)"
    assert "generic EventSource is not connected" in doc["links"][1]["cause"]


def test_a_failed_workflow_breaks_at_the_workflow(stack):
    reported(stack)
    published(stack)
    fired(stack)
    workflow(stack, "ftp-etl-failed", "Failed")
    workflow(stack, "ftp-etl-ok", "Succeeded", path="/20230414/other.csv")  # another file's: not ours
    code, doc = journey(stack)
    assert doc["broken_at"] == "workflow" and doc["links"][3]["detail"] == "ftp-etl-failed: Failed in 8s"
    assert EVENT_ID in doc["links"][1]["detail"]


def test_missing_output_then_the_whole_journey(stack):
    reported(stack)
    published(stack)
    fired(stack)
    workflow(stack, "ftp-etl-ok", "Succeeded")
    code, doc = journey(stack)
    assert doc["broken_at"] == "output" and f"s3://{BUCKET}/{OUTPUT} is missing" == doc["links"][4]["detail"]
    put(stack, OUTPUT, parquet(4))
    put(stack, REJECTS, b"line,reason,text\n2,score is not a number,2,b,x\n")
    code, doc = journey(stack)
    assert code == 0 and doc["ok"] and [link["ok"] for link in doc["links"]] == [True] * 5
    assert doc["links"][4]["detail"].endswith(f"{OUTPUT}: 4 rows; 1 rejected row(s) in {REJECTS}")
    text = stack.run("trace", key=PATH)[1]
    assert text.startswith(f"trace {PATH} (ftp)") and "complete: every link holds" in text


def test_the_target_comes_from_the_flag_the_last_upload_or_the_path(stack):
    from etlboot import config, demo

    event_server(stack)
    settings = config.load(stack.env_file)
    demo.note_upload(settings, "ftp", "", ["/a.csv", PATH])
    try:
        code, doc = journey(stack, key="")            # the last upload's path and target
        assert doc["target"] == "ftp" and doc["key"] == PATH
        code, doc = journey(stack, key="/b.csv")      # a path: ftp
        assert doc["target"] == "ftp"
        code, doc = journey(stack, key="input/b.csv")  # a key: minio
        assert doc["target"] == "minio"
        code, out = stack.run("trace", key="", target="minio")  # the last upload was not to minio
        assert code == 2 and "give the input's key" in out
    finally:
        demo.last_upload_file(settings).unlink()
    code, out = stack.run("trace", key="x", target="sftp")
    assert code == 2 and "unknown --target 'sftp'" in out
