"""Manifests under manifests/ are YAML templates with ${NAME} placeholders, rendered strictly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from string import Template

import yaml

from . import PROJECT_ROOT

MANIFESTS = PROJECT_ROOT / "manifests"
CODE = PROJECT_ROOT / "code"

# names the manifests and the steps agree on
MINIO_SECRET = "minio-credentials"
FTP_SECRET = "ftp-secret"
WORKFLOW_SA = "argo-workflow"
SENSOR_SA = "operate-workflow-sa"
ARGO_UI_SA = "argo-ui"  # the UI login's own ServiceAccount (manifests/platform/ui-access.yaml)
CODE_CONFIGMAP = "etl-code"
FTP_EVENT_SERVER_CONFIGMAP = "ftp-event-server-code"
IMAGE_NAME = "argo-etl"


def ftp_event_server_files() -> list[Path]:
    """What ConfigMap ftp-event-server-code holds: the server's files, flat."""
    folder = CODE / "ftp_event_server"
    return sorted(p for p in folder.glob("*") if p.is_file() and p.suffix in (".py", ".proto"))


def image_inputs() -> list[Path]:
    return [p for p in (CODE / "Dockerfile", CODE / "requirements.txt") if p.exists()]


def content_hash(paths: list[Path], base: Path | None = None) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        name = str(path.relative_to(base)) if base else path.name
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def etl_image(settings) -> str:
    """The image the workflows run: ETL_IMAGE, or the locally built one tagged with its inputs' hash."""
    if settings.values["ETL_IMAGE"]:
        return settings.values["ETL_IMAGE"]
    return f"{IMAGE_NAME}:{content_hash(image_inputs())[:12]}"


def variables(settings) -> dict[str, str]:
    v = settings.values
    return {
        "NAMESPACE": v["NAMESPACE"],
        "ETL_IMAGE": etl_image(settings),
        "ETL_IMAGE_PULL_POLICY": "IfNotPresent",
        "MINIO_IMAGE": v["MINIO_IMAGE"],
        "MINIO_STORAGE_SIZE": v["MINIO_STORAGE_SIZE"],
        "MINIO_ENDPOINT": "minio:9000",
        "MINIO_SECRET": MINIO_SECRET,
        "ETL_BUCKET": v["ETL_BUCKET"],
        "ARTIFACT_BUCKET": v["ARTIFACT_BUCKET"],
        "WORKFLOW_SA": WORKFLOW_SA,
        "SENSOR_SA": SENSOR_SA,
        "CODE_CONFIGMAP": CODE_CONFIGMAP,
        "AGG_SETTLE_SECONDS": v["AGG_SETTLE_SECONDS"],
        "FTP_IMAGE": v["FTP_IMAGE"],
        "FTP_SECRET": FTP_SECRET,
        "FTP_EVENT_SERVER_CONFIGMAP": FTP_EVENT_SERVER_CONFIGMAP,
        # in the event server's pod template, so a code change restarts the pod
        "FTP_EVENT_SERVER_CODE_HASH": content_hash(ftp_event_server_files())[:16],
        "FTP_POLL_SECONDS": v["FTP_POLL_SECONDS"],
        # the event server's defaults for what makes a file complete, as YAML (JSON) strings; empty = its default
        **{name: json.dumps(v[name]) for name in
           ("FTP_MIN_AGE_SECONDS", "FTP_DONE_FILE", "FTP_IGNORE", "FTP_CONFIRM_SECONDS")},
        "EVENTBUS_NATS_VERSION": v["EVENTBUS_NATS_VERSION"],
        "EVENTBUS_REPLICAS": v["EVENTBUS_REPLICAS"],
        "EVENTBUS_STREAM_REPLICAS": "1" if int(v["EVENTBUS_REPLICAS"]) < 3 else "3",
        "ARGO_UI_SA": ARGO_UI_SA,
    }


def render_text(text: str, values: dict[str, str], source: str = "<text>") -> list[dict]:
    try:
        rendered = Template(text).substitute(values)
    except KeyError as exc:
        raise ValueError(f"{source}: unknown placeholder ${{{exc.args[0]}}}") from None
    except ValueError as exc:
        raise ValueError(f"{source}: {exc} (write a literal $ as $$)") from None
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def render(path: Path, values: dict[str, str]) -> list[dict]:
    return render_text(path.read_text(encoding="utf-8"), values, str(path.relative_to(PROJECT_ROOT)))


def render_group(group: str, values: dict[str, str]) -> list[dict]:
    folder = MANIFESTS / group
    docs: list[dict] = []
    for path in sorted(folder.glob("*.yaml")):
        docs.extend(render(path, values))
    return docs
