"""`demo.upload --target ftp`: upload from inside the cluster, follow the ftp-etl workflows, check the Parquet.

Why inside the cluster: vsftpd's passive data connections go to ports 30020-30029, which a single
port-forward of port 21 does not carry; a short Job on the ETL image reaches them through the Service.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from . import manifests as m
from .demo import Upload, date_and_name, expected_rows, note_upload, read_rows
from .engine import Context, StepError, wait_until
from .follow import follow_workflows
from .workflows import TERMINAL, WORKFLOW_API, WorkflowView, created, parameter
from .kube import with_identity
from .steps import kube, minio_client

FTP_SENSOR = "ftp"
FILES_CONFIGMAP = "ftp-demo-files"
OUTPUT_LAYOUT = "ftp/output/{date}/{name}.parquet"


def remote_path(item: Upload) -> str:
    return "/" + item.key.removeprefix("input/")


def files_configmap(uploads: list[Upload]) -> dict:
    data = {f"file-{i}.csv": u.local.read_text(encoding="utf-8", errors="replace") for i, u in enumerate(uploads)}
    data["manifest.json"] = json.dumps({f"file-{i}.csv": remote_path(u) for i, u in enumerate(uploads)})
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": FILES_CONFIGMAP}, "data": data}


def upload_job(settings) -> dict:
    secret = {"name": m.FTP_SECRET}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"generateName": "ftp-demo-upload-"},
        "spec": {
            "backoffLimit": 1, "ttlSecondsAfterFinished": 600,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "upload", "image": m.etl_image(settings), "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "/code/ftp_upload.py", "/demo"],
                    "env": [{"name": "FTP_HOST", "value": "vsftpd"},
                            {"name": "FTP_USER", "valueFrom": {"secretKeyRef": {**secret, "key": "username"}}},
                            {"name": "FTP_PASSWORD", "valueFrom": {"secretKeyRef": {**secret, "key": "password"}}}],
                    "volumeMounts": [{"name": "code", "mountPath": "/code"}, {"name": "demo", "mountPath": "/demo"}],
                }],
                "volumes": [{"name": "code", "configMap": {"name": m.CODE_CONFIGMAP}},
                            {"name": "demo", "configMap": {"name": FILES_CONFIGMAP}}],
            }},
        },
    }


def _job_done(ctx: Context, name: str) -> tuple[bool, str]:
    job = kube(ctx).get("batch/v1", "Job", name, ctx.settings.namespace) or {}
    status = job.get("status") or {}
    if status.get("succeeded"):
        return True, "succeeded"
    if status.get("failed"):
        raise StepError(f"upload Job {name} failed", hint=f"kubectl -n {ctx.settings.namespace} logs job/{name}")
    return False, "running"


def upload_and_verify(ctx: Context, uploads: list[Upload], timeout: float, interval: float = 2.0) -> bool:
    settings = ctx.settings
    if not settings.ftp_enabled:
        raise StepError("FTP_ENABLED is false: the FTP event source is not installed", hint="set it and run up")
    namespace = settings.namespace
    since = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=5)
    client = kube(ctx)
    client.apply(with_identity(files_configmap(uploads), namespace))
    job = client.create(with_identity(upload_job(settings), namespace))
    name = job["metadata"]["name"]
    ctx.reporter.say(f"uploading {len(uploads)} file(s) to vsftpd from Job {name}")
    wait_until(lambda: _job_done(ctx, name), timeout=timeout, what=f"Job {name}", reporter=ctx.reporter,
               interval=interval)
    note_upload(settings, "ftp", "", [remote_path(u) for u in uploads])  # `invoke trace` starts from these
    paths = {remote_path(u) for u in uploads}

    def read() -> list[dict]:
        return [w for w in kube(ctx).list(WORKFLOW_API, "Workflow", namespace,
                                          label_selector=f"events.argoproj.io/sensor={FTP_SENSOR}")
                if parameter(w, "path") in paths and created(w) >= since]

    def done(found: list[dict]) -> bool:
        return {parameter(w, "path") for w in found} == paths and all(WorkflowView(w).phase in TERMINAL for w in found)

    found = follow_workflows(read, done, timeout=timeout, reporter=ctx.reporter,
                             what="waiting for the ftp-etl workflows",
                             hint="is the FTP event server polling? `invoke doctor`", interval=interval)
    ok = True
    for workflow in found:
        good = WorkflowView(workflow).phase == "Succeeded"
        ok &= good
        ctx.reporter.say(f"{'✓' if good else '✗'} {workflow['metadata']['name']} ({parameter(workflow, 'path')}): "
                         f"{WorkflowView(workflow).phase}")
    ok &= _verify_outputs(ctx, uploads, since)
    ctx.reporter.say("verdict: the FTP pipeline works" if ok else "verdict: FAILED")
    return ok


def _verify_outputs(ctx: Context, uploads: list[Upload], uploaded: datetime) -> bool:
    client = minio_client(ctx)
    ok = True
    for item in uploads:
        date, name = date_and_name(item.key, uploaded)
        key = OUTPUT_LAYOUT.format(date=date, name=name)
        got = read_rows(client, ctx.settings.etl_bucket, key)
        if got is None:
            ctx.reporter.say(f"✗ {key} is missing")
            ok = False
            continue
        want = sorted(expected_rows(item.local))
        good = got == want
        ok &= good
        ctx.reporter.say(f"{'✓' if good else '✗'} {key}: {len(got)} rows"
                         + ("" if good else f", expected {len(want)}"))
    return ok

