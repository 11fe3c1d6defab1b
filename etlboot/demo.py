"""`demo.upload` / `demo.verify` for the MinIO pipeline: upload sample CSVs, follow the workflows they
trigger, and check the outputs against the inputs (computed here independently of the ETL code)."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import PROJECT_ROOT, TARGETS
from .engine import Context, StepError
from .follow import follow_workflows
from .workflows import TERMINAL, WORKFLOW_API, WorkflowView, created, parameter
from .steps import kube, minio_client

DATA = PROJECT_ROOT / "demo" / "data"
DATASETS = {
    "single": [("test.csv", "input/test.csv")],
    "multi": [(f"20230414/{n}.csv", f"input/20230414/{n}.csv") for n in (1, 2, 3)],
}
#: what the tutorial's multi-file aggregation must name
EXPECTED_TOP = {"multi": ("iii", 100)}
ETL_SENSOR, AGG_SENSOR = "etlproj", "agg"
SENSOR_LABEL = "events.argoproj.io/sensor"
OUTPUT_LAYOUT = "output/{date}/{name}.parquet"
SUMMARY_KEY = "result/{date}/summary.json"


@dataclass
class Upload:
    local: Path
    key: str


def plan(dataset: str, file: str = "") -> list[Upload]:
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise StepError(f"--file {file}: no such file")
        if path.suffix.lower() != ".csv":
            raise StepError(f"--file {file}: the pipeline listens for input/*.csv only")
        with open(path, "rb") as handle:
            if b"\0" in handle.read(65536):
                raise StepError(f"--file {file}: this is not a text file (it holds NUL bytes)",
                                hint="the pipeline converts CSV text: no,name,score")
        # the EventSource's filter is `.csv`, case-sensitive: data.CSV is stored as input/data.csv
        return [Upload(path, f"input/{path.stem}.csv")]
    if dataset not in DATASETS:
        raise StepError(f"unknown --dataset {dataset!r} (choose from {', '.join(DATASETS)})")
    return [Upload(DATA / local, key) for local, key in DATASETS[dataset]]


# -- expected results, computed independently of code/etl.py ---------------------------------------


def expected_rows(path: Path) -> list[tuple[int, str, int]]:
    """The good rows of a `no,name,score` CSV: header, BOM, CRLF and blank lines tolerated, the rest rejected."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    rows = []
    for index, fields in enumerate(csv.reader(io.StringIO(text))):
        if not fields or all(not f.strip() for f in fields):
            continue
        if index == 0 and [f.strip().lower() for f in fields] == ["no", "name", "score"]:
            continue
        if len(fields) != 3:
            continue
        try:
            rows.append((int(fields[0]), fields[1], int(fields[2])))
        except ValueError:
            continue
    return rows


def date_and_name(key: str, uploaded: datetime) -> tuple[str, str]:
    """Output naming of the pipeline: the path below input/ without a final lower-case `.csv`
    (kept whole when the rest still ends in .csv); a YYYYMMDD folder holding the file is the date
    (and leaves the name) when it is a real day (20231399 is a folder like any other), else the upload
    day (UTC)."""
    folder, _, base = key.removeprefix("input/").lstrip("/").rpartition("/")
    name = base[:-4] if base.endswith(".csv") and not base[:-4].lower().endswith(".csv") else base
    above, _, parent = folder.rpartition("/")
    if _is_day(parent):
        date, folder = parent, above
    else:
        date = uploaded.astimezone(timezone.utc).strftime("%Y%m%d")
    return date, f"{folder}/{name}" if folder else name


def _is_day(text: str) -> bool:
    # code/etl.py's is_date, restated: the tool does not import the pod's programs (they bring
    # minio and pyarrow); tests/test_demo.py::test_verify_names_outputs_as_the_etl_does pins the two
    if not (len(text) == 8 and text.isascii() and text.isdigit()):
        return False
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


# -- upload ---------------------------------------------------------------------------------------


def running_minio(ctx: Context):
    """The MinIO client, once the API said MinIO is there: asked first through the API, an unreachable cluster
    or a missing `up` is one line saying so (not a port-forward that did not open)."""
    if kube(ctx).get("apps/v1", "Deployment", "minio", ctx.settings.namespace) is None:
        raise StepError(f"MinIO is not running in namespace {ctx.settings.namespace}",
                        hint="run `invoke up` first")
    return minio_client(ctx)


def last_upload_file(settings) -> Path:
    """Where demo.upload notes the keys it sent (beside .env, git-ignored): `trace` starts from the last one."""
    return settings.env_file.parent / ".state" / "last-upload.json"


def last_upload(settings) -> tuple[str, str | None]:
    """(target, the last key or path) that demo.upload sent, from its note; ("minio", None) without one."""
    try:
        note = json.loads(last_upload_file(settings).read_text(encoding="utf-8"))
        keys = note.get("keys") or []
    except (OSError, ValueError, AttributeError):
        return "minio", None
    target = note.get("target") if note.get("target") in TARGETS else "minio"
    return target, keys[-1] if keys and isinstance(keys[-1], str) else None


def note_upload(settings, target: str, bucket: str, keys: list[str]) -> None:
    """Note what demo.upload sent (written after each upload, so a partial run still names its last key)."""
    note = last_upload_file(settings)
    note.parent.mkdir(exist_ok=True)
    note.write_text(json.dumps({"target": target, "bucket": bucket, "keys": keys}) + "\n", encoding="utf-8")


def upload(ctx: Context, uploads: list[Upload], delay: float, sleep: Callable[[float], None] = time.sleep) -> None:
    client = running_minio(ctx)
    bucket = ctx.settings.etl_bucket
    sent = []
    try:
        for index, item in enumerate(uploads):
            if index and delay:
                sleep(delay)
            client.fput_object(bucket, item.key, str(item.local), content_type="text/csv")
            sent.append(item.key)
    finally:
        if sent:
            note_upload(ctx.settings, "minio", bucket, sent)
        ctx.reporter.say(f"uploaded {item.local.relative_to(PROJECT_ROOT) if item.local.is_relative_to(PROJECT_ROOT) else item.local}"
                         f" -> s3://{bucket}/{item.key}")


# -- follow the workflows the upload triggered ------------------------------------------------------


def triggered(workflows: list[dict], keys: set[str], dates: set[str], since: datetime) -> tuple[list[dict], list[dict]]:
    """The ETL workflows for our keys and the aggregations for our dates, created since the upload began."""
    etl, agg = [], []
    for workflow in sorted(workflows, key=created):
        if created(workflow) < since:
            continue
        sensor = (workflow["metadata"].get("labels") or {}).get(SENSOR_LABEL)
        if sensor == ETL_SENSOR and parameter(workflow, "key") in keys:
            etl.append(workflow)
        elif sensor == AGG_SENSOR and parameter(workflow, "date") in dates:
            agg.append(workflow)
    return etl, agg


def settled(etl: list[dict], agg: list[dict], keys: set[str], want_agg: bool) -> bool:
    """Every key's ETL ended, and (if wanted) an aggregation ran after them and none is still running."""
    done_keys = {parameter(w, "key") for w in etl if WorkflowView(w).phase in TERMINAL}
    if done_keys != keys or any(WorkflowView(w).phase not in TERMINAL for w in etl):
        return False
    written = sum(1 for w in etl if WorkflowView(w).phase == "Succeeded")
    if not want_agg or not written:
        return True  # no Parquet was written, so no aggregation will come
    # every Parquet written triggers one aggregation (the mutex runs them one at a time)
    return len(agg) >= written and all(WorkflowView(w).phase in TERMINAL for w in agg)


def follow(ctx: Context, uploads: list[Upload], since: datetime, timeout: float, want_agg: bool = True,
           interval: float = 2.0, clock=time.monotonic, sleep=time.sleep) -> tuple[list[dict], list[dict]]:
    """Follow the ETL workflows of our keys and the aggregations of their days until they have settled."""
    keys = {u.key for u in uploads}
    dates = {date_and_name(u.key, since)[0] for u in uploads}
    namespace = ctx.settings.namespace

    def read() -> list[dict]:
        etl, agg = triggered(kube(ctx).list(WORKFLOW_API, "Workflow", namespace,
                                            label_selector=f"{SENSOR_LABEL} in ({ETL_SENSOR},{AGG_SENSOR})"),
                             keys, dates, since)
        return etl + agg

    def split(workflows: list[dict]) -> tuple[list[dict], list[dict]]:
        by_sensor = [((w["metadata"].get("labels") or {}).get(SENSOR_LABEL), w) for w in workflows]
        return [w for s, w in by_sensor if s == ETL_SENSOR], [w for s, w in by_sensor if s != ETL_SENSOR]

    final = follow_workflows(read, lambda workflows: settled(*split(workflows), keys, want_agg), timeout=timeout,
                             reporter=ctx.reporter, what="waiting for the triggered workflows",
                             hint="is the EventSource listening? `invoke doctor`", interval=interval, clock=clock,
                             sleep=sleep)
    return split(final)


def verdict(etl: list[dict], agg: list[dict]) -> list[tuple[bool, str]]:
    lines = [(WorkflowView(w).phase == "Succeeded", f"{w['metadata']['name']} ({parameter(w, 'key')}): "
              f"{WorkflowView(w).phase}") for w in etl]
    if agg:
        last = agg[-1]
        lines.append((WorkflowView(last).phase == "Succeeded",
                      f"{last['metadata']['name']} (aggregation of {parameter(last, 'date')}): {WorkflowView(last).phase}"))
    return lines


# -- verify ---------------------------------------------------------------------------------------


def read_rows(client, bucket: str, key: str) -> list[tuple] | None:
    """The sorted (no, name, score) rows of a Parquet object, or None when it is not there."""
    import pyarrow.parquet as pq
    from minio.error import S3Error

    try:
        response = client.get_object(bucket, key)
    except S3Error:
        return None
    try:
        table = pq.read_table(io.BytesIO(response.read()))
    finally:
        response.close()
        response.release_conn()
    return sorted(zip(*(table.column(c).to_pylist() for c in ("no", "name", "score"))))


def verify(ctx: Context, uploads: list[Upload], dataset: str) -> list[tuple[bool, str]]:
    """Each Parquet holds exactly the input's good rows; the day's summary names the top scorer."""
    from minio.error import S3Error

    client = running_minio(ctx)
    bucket = ctx.settings.etl_bucket
    results: list[tuple[bool, str]] = []
    rows_by_date: dict[str, list[tuple[int, str, int]]] = {}
    for item in uploads:
        want = expected_rows(item.local)
        try:
            stat = client.stat_object(bucket, item.key)
        except S3Error:
            results.append((False, f"s3://{bucket}/{item.key} is not there: run demo.upload first"))
            continue
        date, name = date_and_name(item.key, stat.last_modified)
        out_key = OUTPUT_LAYOUT.format(date=date, name=name)
        rows_by_date.setdefault(date, []).extend(want)
        got = read_rows(client, bucket, out_key)
        if got is None:
            results.append((False, f"{out_key} is missing"))
            continue
        ok = got == sorted(want)
        results.append((ok, f"{out_key}: {len(got)} rows" + ("" if ok else f", expected {len(want)} good rows "
                                                                          f"of {item.local.name}")))
    for date, rows in rows_by_date.items():
        key = SUMMARY_KEY.format(date=date)
        try:
            response = client.get_object(bucket, key)
            try:
                summary = json.loads(response.read())
            finally:
                response.close()
                response.release_conn()
        except (S3Error, ValueError):
            results.append((False, f"{key} is missing or unreadable"))
            continue
        top = summary.get("max") or {}
        got = (top.get("name"), top.get("score"))
        total = summary.get("total_rows") or 0
        if dataset in EXPECTED_TOP:
            expected = EXPECTED_TOP[dataset]
            ok = got == expected
            why = f" (expected {expected[0]} {expected[1]})"
        else:  # the day may hold other files too: ours must be counted and cannot beat the top
            best = max((r[2] for r in rows), default=None)
            ok = total >= len(rows) and (best is None or (got[1] is not None and got[1] >= best))
            why = f" (expected at least {len(rows)} rows and a top score >= {best})"
        results.append((ok, f"{key}: top scorer {got[0]} {got[1]}, {total} rows" + ("" if ok else why)))
    return results
