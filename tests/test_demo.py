"""`demo.upload` and `demo.verify` end to end on loopback.

The Argo Events + Workflows side is played by a small controller thread that does what the Sensors and
WorkflowTemplates in manifests/pipeline declare: a new input/*.csv in the bucket creates an `etl` Workflow
(labelled by the Sensor) that runs the real code/etl.py against the S3 server; a new output/*.parquet creates
an `agg` Workflow that runs the real code/agg.py. The tool under test only sees the Kubernetes API and S3.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from stack_harness import ROOT, World
from task_runner import run_task

sys.path.insert(0, str(ROOT / "code"))


class PipelineStandIn(threading.Thread):
    def __init__(self, world: World, env: dict, fail_etl: bool = False):
        super().__init__(daemon=True)
        self.world, self.env, self.fail_etl = world, env, fail_etl
        self.stop = threading.Event()
        self.seen: set[tuple[str, str]] = set()
        self.count = 0

    def _workflow(self, sensor: str, template: str, parameters: dict) -> str:
        self.count += 1
        name = f"{template}-{self.count:05d}"
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.world.emu.put_object({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": name, "namespace": "argo-etl", "creationTimestamp": now,
                         "labels": {"events.argoproj.io/sensor": sensor}},
            "spec": {"workflowTemplateRef": {"name": template},
                     "arguments": {"parameters": [{"name": k, "value": v} for k, v in parameters.items()]}},
            "status": {"phase": "Running", "startedAt": now}})
        return name

    def _finish(self, name: str, ok: bool, message: str = "") -> None:
        wf = self.world.emu.get("Workflow", name, "argo-etl")
        wf["status"].update(phase="Succeeded" if ok else "Failed", message=message,
                            finishedAt=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.world.emu.put_object(wf)

    def run(self):
        import agg
        import etl
        from s3client import client_from_env

        client = client_from_env(self.env)
        while not self.stop.wait(0.2):
            if not client.bucket_exists("etlproj"):
                continue
            for obj in client.list_objects("etlproj", recursive=True):
                marker = (obj.object_name, obj.etag)
                if marker in self.seen:
                    continue
                self.seen.add(marker)
                if obj.object_name.startswith("input/") and obj.object_name.endswith(".csv"):
                    name = self._workflow("etlproj", "etl", {"bucket": "etlproj", "key": obj.object_name})
                    if self.fail_etl:
                        self._finish(name, False, "Error (exit code 1)")
                        continue
                    etl.run("etlproj", obj.object_name, client=client, env=self.env)
                    self._finish(name, True)
                elif obj.object_name.startswith("output/") and obj.object_name.endswith(".parquet"):
                    date = obj.object_name.split("/")[1]
                    name = self._workflow("agg", "agg", {"bucket": "etlproj", "date": date})
                    settings = agg.settings_from_env(self.env, bucket="etlproj", settle_seconds=0)
                    agg.run(date, settings, client=client)
                    self._finish(name, True)


@pytest.fixture
def world(tmp_path, monkeypatch):
    w = World(tmp_path, monkeypatch)
    monkeypatch.setenv("WAIT_TIMEOUT_SECONDS", "60")
    code, out = w.run("up", only="platform")
    assert code == 0, out
    yield w
    w.close()


def s3_env(world: World) -> dict:
    from etlboot import config

    settings = config.load(world.env_file)
    host, port = world.moto.get_host_and_port()
    return {"S3_ENDPOINT": f"{host}:{port}", "S3_ACCESS_KEY": settings.minio_root_user,
            "S3_SECRET_KEY": settings.minio_root_password, "S3_SECURE": "false", "AGG_SETTLE_SECONDS": "0"}


def run_demo(task: str, **kwargs) -> int:
    from etlboot.tasks import demo

    return run_task(demo, task, **kwargs)


def test_multi_dataset_upload_follows_workflows_and_verifies(world, capsys):
    pipeline = PipelineStandIn(world, s3_env(world))
    pipeline.start()
    try:
        capsys.readouterr()
        assert run_demo("upload", dataset="multi", delay=0.2, timeout=60) == 0
        out = capsys.readouterr().out
        assert "verdict: the pipeline works" in out
        assert "result/20230414/summary.json: top scorer iii 100" in out
        for n in (1, 2, 3):
            assert f"output/20230414/{n}.parquet: 3 rows" in out
        # verify alone, later, agrees
        assert run_demo("verify", dataset="multi") == 0
        # and `trace` without a key starts from the last file sent
        from etlboot import config, demo
        assert demo.last_upload(config.load(world.env_file)) == ("minio", "input/20230414/3.csv")
    finally:
        pipeline.stop.set()
        pipeline.join(5)


def test_failed_workflow_gives_a_failed_verdict(world, capsys):
    pipeline = PipelineStandIn(world, s3_env(world), fail_etl=True)
    pipeline.start()
    try:
        assert run_demo("upload", dataset="single", timeout=30) == 1
        out = capsys.readouterr().out
        assert "Failed" in out and "verdict: FAILED" in out
    finally:
        pipeline.stop.set()
        pipeline.join(5)


def test_verify_fails_when_an_output_has_the_wrong_rows(world, capsys, tmp_path):
    pipeline = PipelineStandIn(world, s3_env(world))
    pipeline.start()
    try:
        assert run_demo("upload", dataset="single", timeout=60) == 0
    finally:
        pipeline.stop.set()
        pipeline.join(5)
    # someone overwrites the Parquet with one row fewer
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from s3client import client_from_env

    client = client_from_env(s3_env(world))
    key = next(o.object_name for o in client.list_objects("etlproj", prefix="output/", recursive=True)
               if o.object_name.endswith("/test.parquet"))
    table = pq.read_table(io.BytesIO(client.get_object("etlproj", key).read()))
    buffer = io.BytesIO()
    pq.write_table(table.slice(1), buffer)
    client.put_object("etlproj", key, io.BytesIO(buffer.getvalue()), len(buffer.getvalue()))
    capsys.readouterr()
    assert run_demo("verify", dataset="single") == 1
    assert "expected" in capsys.readouterr().out


def test_no_workflow_means_a_bounded_wait_and_a_clear_failure(world, capsys):
    # nothing plays the pipeline: the EventSource never fired
    assert run_demo("upload", dataset="single", timeout=3) == 1
    out = capsys.readouterr().out
    assert "timed out after 3s" in out and "EventSource" in out


def test_user_file_must_exist_and_be_csv(capsys, tmp_path):
    # a usage error: refused before settings, cluster or MinIO are looked at
    assert run_demo("upload", file=str(tmp_path / "nope.csv")) == 2
    (tmp_path / "data.txt").write_text("1,a,2\n")
    assert run_demo("upload", file=str(tmp_path / "data.txt")) == 2
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "no such file" in out and "input/*.csv" in out


def test_verify_names_outputs_as_the_etl_does():
    """demo.verify computes output keys on its own; they must be the ones code/etl.py writes."""
    import sys
    from datetime import datetime, timezone

    from etlboot import PROJECT_ROOT
    from etlboot.demo import date_and_name

    sys.path.insert(0, str(PROJECT_ROOT / "code"))
    try:
        import etl
    finally:
        sys.path.remove(str(PROJECT_ROOT / "code"))
    day = datetime(2023, 4, 14, 12, tzinfo=timezone.utc)
    for key in ("input/test.csv", "input/20230414/1.csv", "input/teamA/x.csv",
                "input/teamA/20230101/x.csv", "input/X.CSV", "input/a.csv.csv",
                "input/class 3+4 점수.csv",
                # eight digits that are not a day: a folder like any other, for both
                "input/20231399/a.csv", "input/teamA/20230230/x.csv", "input/00000000/z.csv",
                "input/٢٠٢٣٠٤١٤/u.csv"):
        assert date_and_name(key, day) == etl.date_and_name(key, day), key
