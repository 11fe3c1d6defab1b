"""`demo.upload --target ftp` end to end on loopback.

The upload Job is carried out for real: when the tool creates it, the real code/ftp_upload.py runs with the
files from the tool's ConfigMap against a real FTP server (pyftpdlib). The FTP Sensor/WorkflowTemplate side
is played by a thread that sees the new file, creates the `ftp-etl` Workflow the Sensor would, and runs the
real code/ftp_etl.py against the FTP server and the S3 server.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
from datetime import datetime, timezone

import pytest

from stack_harness import ROOT, World
from task_runner import run_task

sys.path.insert(0, str(ROOT / "code"))
sys.path.insert(0, str(ROOT / "tests" / "ftp"))


@pytest.fixture
def world(tmp_path, monkeypatch):
    from ftp_support import FtpServerThread

    w = World(tmp_path, monkeypatch)
    monkeypatch.setenv("WAIT_TIMEOUT_SECONDS", "40")
    monkeypatch.setenv("ETL_IMAGE", "registry.example/argo-etl:1.0")
    code, out = w.run("up", only="platform")
    assert code == 0, out
    monkeypatch.setenv("FTP_ENABLED", "true")
    root = tmp_path / "ftp-root"
    root.mkdir()
    user, password = "etl", secrets.token_urlsafe(16)
    w.ftp = FtpServerThread(root, user, password).start()
    w.ftp_root = root
    w.ftp_env = {"FTP_HOST": "127.0.0.1", "FTP_PORT": str(w.ftp.port), "FTP_USER": user, "FTP_PASSWORD": password}
    w.emu.on_write("Job", lambda job: run_upload_job(w, job))
    yield w
    w.ftp.stop()
    w.close()


def run_upload_job(world: World, job: dict) -> dict:
    import ftp_upload

    files = world.emu.get("ConfigMap", "ftp-demo-files", "argo-etl")
    folder = world.tmp / f"job-{job['metadata']['name']}"
    folder.mkdir(exist_ok=True)
    for key, value in files["data"].items():
        (folder / key).write_text(value)
    import os

    saved = {k: os.environ.get(k) for k in world.ftp_env}
    os.environ.update(world.ftp_env)
    try:
        code = ftp_upload.main([str(folder)])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    job["status"] = {"succeeded": 1} if code == 0 else {"failed": 1}
    return job


class FtpPipelineStandIn(threading.Thread):
    def __init__(self, world: World):
        super().__init__(daemon=True)
        self.world = world
        self.stop = threading.Event()
        self.done: set[str] = set()

    def run(self):
        import ftp_etl
        from s3client import client_from_env

        from test_demo import s3_env

        env = {**s3_env(self.world), **self.world.ftp_env}
        client = client_from_env(env)
        while not self.stop.wait(0.2):
            for path in self.world.ftp_root.rglob("*.csv"):
                remote = "/" + str(path.relative_to(self.world.ftp_root))
                if remote in self.done:
                    continue
                self.done.add(remote)
                name = f"ftp-etl-{len(self.done):05d}"
                now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                self.world.emu.put_object({
                    "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                    "metadata": {"name": name, "namespace": "argo-etl", "creationTimestamp": now,
                                 "labels": {"events.argoproj.io/sensor": "ftp"}},
                    "spec": {"workflowTemplateRef": {"name": "ftp-etl"},
                             "arguments": {"parameters": [{"name": "path", "value": remote}]}},
                    "status": {"phase": "Running", "startedAt": now}})
                ftp_etl.run(remote, bucket="etlproj", client=client, env=env)
                wf = self.world.emu.get("Workflow", name, "argo-etl")
                wf["status"]["phase"] = "Succeeded"
                self.world.emu.put_object(wf)


def test_ftp_demo_uploads_in_cluster_and_verifies_parquet(world, capsys):
    from etlboot.tasks import demo

    pipeline = FtpPipelineStandIn(world)
    pipeline.start()
    try:
        assert run_task(demo, "upload", target="ftp", dataset="multi", timeout=40) == 0
    finally:
        pipeline.stop.set()
        pipeline.join(5)
    out = capsys.readouterr().out
    assert "verdict: the FTP pipeline works" in out
    for n in (1, 2, 3):
        assert f"ftp/output/20230414/{n}.parquet: 3 rows" in out
    # files were written completely before they got their .csv name
    assert sorted(p.name for p in (world.ftp_root / "20230414").iterdir()) == ["1.csv", "2.csv", "3.csv"]
    job = [o for o in world.emu.objects("Job") if o["metadata"]["name"].startswith("ftp-demo-upload-")]
    assert job and job[0]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "argo-etl-bootstrap"
    manifest = json.loads(world.emu.get("ConfigMap", "ftp-demo-files", "argo-etl")["data"]["manifest.json"])
    assert sorted(manifest.values()) == ["/20230414/1.csv", "/20230414/2.csv", "/20230414/3.csv"]
    assert world.ftp_env["FTP_PASSWORD"] not in out
    # `invoke trace` starts from the last path sent, as an FTP path
    from etlboot import config
    from etlboot.demo import last_upload
    assert last_upload(config.load(world.env_file)) == ("ftp", "/20230414/3.csv")


def test_ftp_demo_without_workflows_fails_after_a_bounded_wait(world, capsys):
    from etlboot.tasks import demo

    assert run_task(demo, "upload", target="ftp", dataset="single", timeout=3) == 1
    out = capsys.readouterr().out
    assert "timed out after 3s" in out
