"""`trace KEY` against the emulator with recorded object states and pod logs for each link of the chain
(object → EventSource → Sensor → Workflow → output → aggregation), broken at each link in turn: the
verdict names the right link, and a whole journey is complete. Nothing is written."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

NS = "argo-etl"
BUCKET = "etlproj"
EVENT_ID = "6f1c0a9e-event"


def s3(world):
    from minio import Minio

    host = world.moto.get_host_and_port()
    return Minio(f"{host[0]}:{host[1]}", access_key="testing", secret_key="testing", secure=False)


def put(world, key: str, data: bytes) -> None:
    s3(world).put_object(BUCKET, key, io.BytesIO(data), len(data))


def parquet(rows: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"no": list(range(rows)), "name": [f"n{i}" for i in range(rows)],
                             "score": list(range(rows))}), sink)
    return sink.getvalue()


def log(*records: dict) -> str:
    return "\n".join(json.dumps({"level": "info", "ts": "2099-01-01T00:00:00.5Z", **r}) for r in records) + "\n"


def published_by_eventsource(world) -> None:
    world.emu.set_pod_log(NS, "etlproj-eventsource-pod", log(
        {"msg": "started listening to bucket notifications..."},
        {"msg": "dispatching the event on data channel..."},
        {"msg": "Succeeded to publish an event", "eventName": "put", "eventSourceType": "minio",
         "eventID": EVENT_ID}))


def sensor_pod(world, *records: dict) -> None:
    world.emu.put_object({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "etlproj-sensor-pod", "namespace": NS,
                                       "labels": {"sensor-name": "etlproj"}}, "status": {"phase": "Running"}})
    world.emu.set_pod_log(NS, "etlproj-sensor-pod", log(*records))


def fired(world) -> None:
    sensor_pod(world, {"msg": "Successfully processed trigger 'etl-workflow'", "triggeredBy": ["csv-uploaded"],
                       "triggeredByEvents": [EVENT_ID]})


def workflow(world, phase: str, key: str, message: str = "", name: str = "etl-abcde") -> None:
    nodes = {name: {"id": name, "name": name, "type": "Retry", "phase": phase,
                    "children": [f"{name}-1", f"{name}-2"]},
             f"{name}-1": {"id": f"{name}-1", "name": f"{name}(0)", "type": "Pod", "phase": "Failed",
                           "message": "Error (exit code 75)"},
             f"{name}-2": {"id": f"{name}-2", "name": f"{name}(1)", "type": "Pod", "phase": phase,
                           "message": message}}
    world.emu.put_object({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": "2099-01-01T00:00:01Z",
                     "labels": {"events.argoproj.io/sensor": "etlproj", "events.argoproj.io/trigger": "etl-workflow"}},
        "spec": {"workflowTemplateRef": {"name": "etl"},
                 "arguments": {"parameters": [{"name": "bucket", "value": BUCKET}, {"name": "key", "value": key}]}},
        "status": {"phase": phase, "message": message, "startedAt": "2099-01-01T00:00:01Z",
                   "finishedAt": "2099-01-01T00:00:13Z", "nodes": nodes}})
    if phase == "Failed":
        world.emu.put_object({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": f"{name}-etl-2", "namespace": NS,
                                           "labels": {"workflows.argoproj.io/workflow": name},
                                           "annotations": {"workflows.argoproj.io/node-id": f"{name}-2"}},
                              "status": {"phase": "Failed"}})
        world.emu.set_pod_log(NS, f"{name}-etl-2", "reading s3://etlproj/input/20230414/1.csv\n"
                                                   "etl: bad data: the header is not no,name,score\n")


def summary(world, out: str, etag: str) -> None:
    put(world, "result/20230414/summary.json", json.dumps({
        "date": "20230414", "inputs": [{"key": out, "etag": etag}], "total_rows": 3,
        "max": {"no": 2, "name": "n2", "score": 2}, "generated_at": "2099-01-01T00:00:20+00:00"}).encode())


@pytest.fixture
def stack(stack_after_up):
    return stack_after_up


@pytest.fixture
def key(request):
    """An input key of the test's own, in the tutorial's date folder (its output: output/20230414/<name>.parquet)."""
    return f"input/20230414/{request.node.name.split('[')[0].removeprefix('test_')[:40]}.csv"


def output_of(key: str) -> str:
    return "output/20230414/" + key.rsplit("/", 1)[1].removesuffix(".csv") + ".parquet"


def journey(world, key: str) -> tuple[int, dict, str]:
    world.emu.clear_log()
    code, out = world.run("trace", key=key, json=True)
    document = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert [r for r in world.emu.write_requests()] == []
    return code, document, out


def test_a_missing_object_breaks_at_the_object(stack, key):
    code, doc, _ = journey(stack, key)
    assert code == 1 and doc["broken_at"] == "object"
    assert [link["ok"] for link in doc["links"]] == [False, None, None, None, None, None]


def test_a_key_outside_the_filter_breaks_at_the_eventsource(stack):
    put(stack, "input/notes.txt", b"x")
    code, doc, _ = journey(stack, "input/notes.txt")
    assert doc["broken_at"] == "eventsource" and "filter (input/*.csv)" in doc["links"][1]["detail"]


def test_a_stopped_listener_breaks_at_the_eventsource_and_says_so(stack, key):
    put(stack, key, b"no,name,score\n1,a,1\n")
    stack.set_listener(NS, "etlproj", "stopped")
    try:
        code, doc, _ = journey(stack, key)
    finally:
        stack.set_listener(NS, "etlproj", "listening")
    assert doc["broken_at"] == "eventsource" and "stopped listening" in doc["links"][1]["cause"]


def test_a_forbidden_trigger_breaks_at_the_sensor_naming_rbac(stack, key):
    put(stack, key, b"no,name,score\n1,a,1\n")
    published_by_eventsource(stack)
    sensor_pod(stack, {"level": "error", "msg": "Failed to execute a trigger", "error":
                       'workflows.argoproj.io is forbidden: User "system:serviceaccount:argo-etl:operate-workflow-sa"'
                       ' cannot create resource "workflows"', "triggeredByEvents": [EVENT_ID]})
    code, doc, _ = journey(stack, key)
    assert doc["broken_at"] == "sensor"
    assert "forbidden" in doc["links"][2]["detail"] and "doctor" in doc["links"][2]["cause"]
    assert EVENT_ID in doc["links"][1]["detail"]


def test_a_failed_workflow_breaks_at_the_workflow_with_its_message_and_log(stack, key):
    put(stack, key, b"no,name,score\n1,a,1\n")
    published_by_eventsource(stack)
    fired(stack)
    workflow(stack, "Failed", key, "Error (exit code 1)", name="etl-failed")
    code, doc, out = journey(stack, key)
    link = doc["links"][3]
    assert doc["broken_at"] == "workflow" and "etl-failed: Failed in 12s, 1 retry" == link["detail"]
    assert "exit code 1" in link["cause"]
    assert "log: etl: bad data: the header is not no,name,score" in link["lines"]


def reached_the_workflow(world, phase: str, key: str) -> None:
    """The input, the EventSource's publish line, the Sensor's trigger line and a Workflow in `phase`."""
    put(world, key, b"no,name,score\n1,a,1\n")
    published_by_eventsource(world)
    fired(world)
    # another test's Workflow of that name would keep its creation time (an update): a fresh one is made
    world.emu.delete_object("Workflow", f"etl-{phase.lower()}", NS)
    workflow(world, phase, key, name=f"etl-{phase.lower()}")


def test_a_running_workflow_is_in_progress_not_broken(stack, key):
    reached_the_workflow(stack, "Running", key)
    code, doc, out = journey(stack, key)
    assert doc["broken_at"] is None and doc["ok"] and doc["links"][3]["ok"] is None
    assert "in progress" in out


def test_a_missing_output_then_a_missing_aggregation_then_the_whole_journey(stack, key):
    out_key, rejects_key = output_of(key), key.replace("input/", "rejects/")
    reached_the_workflow(stack, "Succeeded", key)
    code, doc, _ = journey(stack, key)
    assert doc["broken_at"] == "output"
    put(stack, out_key, parquet(3))
    put(stack, rejects_key, b"line,reason,text\n4,score is not a number,4,d,x\n")
    code, doc, _ = journey(stack, key)
    assert doc["broken_at"] == "aggregation" and "no aggregation of 20230414" in doc["links"][5]["cause"]
    assert doc["links"][4]["detail"].endswith(f"3 rows; 1 rejected row(s) in {rejects_key}")
    etag = s3(stack).stat_object(BUCKET, out_key).etag.strip('"')
    summary(stack, out_key, etag)
    code, doc, out = journey(stack, key)
    assert code == 0 and doc["ok"] and all(link["ok"] for link in doc["links"]), out
    text = stack.run("trace", key=key)[1]
    assert "complete: every link holds" in text and "└ ✓ aggregation" in text


def test_without_a_key_it_traces_the_last_demo_upload(stack, key):
    from etlboot import config, demo

    settings = config.load(stack.env_file)
    note = demo.last_upload_file(settings)
    note.parent.mkdir(exist_ok=True)
    note.write_text(json.dumps({"target": "minio", "keys": ["input/a.csv", key]}))
    code, doc, _ = journey(stack, key="")
    assert doc["key"] == key and doc["broken_at"] == "object"
    note.unlink()
    code, out = stack.run("trace")
    assert code == 2 and "give the input's key" in out


def test_wait_follows_the_running_workflow_then_traces_again(stack, key, monkeypatch):
    import threading

    from etlboot import follow

    monkeypatch.setattr(follow, "POLL_SECONDS", 0.1)
    out_key = output_of(key)
    reached_the_workflow(stack, "Running", key)

    def the_workflow_ends():  # what the controller and the ETL do meanwhile
        put(stack, out_key, parquet(2))
        etag = s3(stack).stat_object(BUCKET, out_key).etag.strip('"')
        summary(stack, out_key, etag)
        stack.emu.set_status("Workflow", "etl-running", {"phase": "Succeeded", "startedAt": "2099-01-01T00:00:01Z",
                                                         "finishedAt": "2099-01-01T00:00:05Z", "nodes": {}}, NS)

    timer = threading.Timer(0.5, the_workflow_ends)
    timer.start()
    try:
        code, out = stack.run("trace", key=key, wait=True, timeout=20)
    finally:
        timer.join()
    assert code == 0, out
    assert "etl-running: Succeeded" in out                     # drawn by the follower as it ended
    assert out.rstrip().endswith("complete: every link holds")  # and the journey traced again
    stack.emu.delete_object("Workflow", "etl-running", NS)


def test_wait_is_bounded_and_says_what_still_runs(stack, key):
    reached_the_workflow(stack, "Running", key)
    try:
        code, out = stack.run("trace", key=key, wait=True, timeout=1)
    finally:
        stack.emu.delete_object("Workflow", "etl-running", NS)
    assert code == 1 and "still in progress after 1s: etl-running" in out


def test_a_day_split_into_parts_is_read_through_the_part_of_the_key(stack, key):
    """A day of more than 1,000 files keeps its per-file rows in parts named by sha256 prefixes (agg_state.py)."""
    import hashlib

    out_key = output_of(key)
    reached_the_workflow(stack, "Succeeded", key)
    put(stack, out_key, parquet(3))
    etag = s3(stack).stat_object(BUCKET, out_key).etag.strip('"')
    first = hashlib.sha256(out_key.encode()).hexdigest()[0]
    other = "0" if first != "0" else "1"
    put(stack, f"result/20230414/parts/{first}-a.json", json.dumps(
        {"prefix": first, "inputs": [{"key": out_key, "etag": etag}]}).encode())
    put(stack, f"result/20230414/parts/{other}-b.json", json.dumps({"prefix": other, "inputs": []}).encode())
    head = {"date": "20230414", "file_count": 1500, "total_rows": 4500, "max": {"name": "n2", "score": 2},
            "parts": [{"prefix": first, "object": f"result/20230414/parts/{first}-a.json"},
                      {"prefix": other, "object": f"result/20230414/parts/{other}-b.json"}]}
    put(stack, "result/20230414/summary.json", json.dumps(head).encode())
    code, doc, _ = journey(stack, key)
    assert code == 0 and doc["ok"], doc
    assert "includes it (1500 files, 4500 rows" in doc["links"][5]["detail"]
    put(stack, f"result/20230414/parts/{first}-a.json", json.dumps({"prefix": first, "inputs": []}).encode())
    code, doc, _ = journey(stack, key)
    assert doc["broken_at"] == "aggregation"
