"""`invoke trace KEY`: where did my file go? The journey of one MinIO input, link by link, and where it broke.

The links, and how each is found (read-only; nothing is guessed where the cluster can say):
1. object      the input in MinIO (size, time, ETag);
2. eventsource the `etlproj` EventSource: its filter matches the key, its listener still runs, and its log
               has a "Succeeded to publish an event" line after the upload (its eventID);
3. sensor      the `etlproj` Sensor's log: "Successfully processed trigger" for that eventID, or "Failed
               to execute a trigger" with the error (a `forbidden` there is RBAC);
4. workflow    the Workflow(s) the Sensor created for the key (label events.argoproj.io/sensor and the
               `key` parameter): phase, duration, retries, and for a failure the failing step's message
               and the last lines of its log;
5. output      the Parquet file at the output layout (its rows, from the footer) and the rejects, if any;
6. aggregation result/<date>/summary.json lists the Parquet file with the ETag it has now.
A link that holds is ✓; the first that does not is where the chain broke, with its likely cause.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from . import manifests as m
from .demo import AGG_SENSOR, ETL_SENSOR, OUTPUT_LAYOUT, SENSOR_LABEL, SUMMARY_KEY, date_and_name, running_minio
from .engine import Context
from .workflows import WORKFLOW_API, WorkflowView, created, parameter, pods_by_node
from .steps import kube, listener_state_in

PUBLISHED = "Succeeded to publish an event"
TRIGGERED = "Successfully processed trigger"
TRIGGER_FAILED = "Failed to execute a trigger"
REJECTS_LAYOUT = "rejects/{date}/{name}.csv"
#: the EventSource's and the Sensor's clocks are the cluster's, the object's time is MinIO's
CLOCK_SLACK = timedelta(seconds=5)


@dataclass
class Link:
    name: str
    ok: bool | None               # None: not reached, because an earlier link broke
    detail: str
    cause: str = ""               # for a broken link: the likely cause and what to do, one line
    at: str = ""                  # when it happened (ISO time), where known
    lines: list[str] = field(default_factory=list)   # supporting lines (log tail, per-workflow rows)

    def as_json(self) -> dict:
        return {"link": self.name, "ok": self.ok, "detail": self.detail, "cause": self.cause, "at": self.at,
                "lines": self.lines}


@dataclass
class Journey:
    key: str
    links: list[Link]

    @property
    def broken(self) -> Link | None:
        return next((link for link in self.links if link.ok is False), None)

    @property
    def verdict(self) -> str:
        broken = self.broken
        if broken:
            return f"broken at {broken.name}: {broken.cause}"
        if any(link.ok is None for link in self.links):
            return "in progress: run trace again in a moment"
        return "complete: every link holds"

    def as_json(self) -> dict:
        broken = self.broken
        return {"key": self.key, "ok": broken is None, "broken_at": broken.name if broken else None,
                "verdict": self.verdict, "links": [link.as_json() for link in self.links]}


def log_records(text: str) -> list[dict]:
    """The JSON lines of an Argo Events pod log (zap: msg, ts in RFC 3339); other lines are skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
    return out


def _time(record: dict) -> datetime | None:
    stamp = record.get("ts")
    if isinstance(stamp, (int, float)):
        return datetime.fromtimestamp(stamp, timezone.utc)
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _pod_log(ctx: Context, selector: str) -> str | None:
    """The log of the first running pod the selector finds; None when none runs."""
    pods = [p for p in kube(ctx).list("v1", "Pod", ctx.settings.namespace, label_selector=selector)
            if (p.get("status") or {}).get("phase") == "Running"]
    if not pods:
        return None
    return kube(ctx).pod_log(ctx.settings.namespace, pods[0]["metadata"]["name"], container="main", tail=5000)


def _filter(ctx: Context) -> tuple[str, str]:
    docs = m.render_group("pipeline", m.variables(ctx.settings))
    source = next(d for d in docs if d["kind"] == "EventSource" and d["metadata"]["name"] == ETL_SENSOR)
    spec = next(iter(source["spec"]["minio"].values()))
    return (spec.get("filter") or {}).get("prefix", ""), (spec.get("filter") or {}).get("suffix", "")


def trace_minio(ctx: Context, key: str) -> Journey:
    links: list[Link] = []
    journey = Journey(key, links)

    def unreached(*names: str) -> Journey:
        links.extend(Link(n, None, "not reached") for n in names)
        return journey

    rest = ("eventsource", "sensor", "workflow", "output", "aggregation")
    from minio.error import S3Error

    client = running_minio(ctx)
    bucket = ctx.settings.etl_bucket
    try:
        stat = client.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code not in ("NoSuchKey", "NotFound"):
            raise
        links.append(Link("object", False, f"s3://{bucket}/{key} is not in MinIO",
                          "check the key (`invoke demo.upload` prints the keys it sends); keys are case-sensitive"))
        return unreached(*rest)
    uploaded = stat.last_modified
    links.append(Link("object", True, f"s3://{bucket}/{key}: {stat.size} bytes", at=uploaded.isoformat()))

    # -- the EventSource
    prefix, suffix = _filter(ctx)
    if not (key.startswith(prefix) and key.endswith(suffix)):
        links.append(Link("eventsource", False, f"the key does not match the EventSource's filter "
                                                 f"({prefix}*{suffix})",
                          f"upload it as {prefix}<name>{suffix}: other keys never fire"))
        return unreached(*rest[1:])
    # one read of the EventSource's log tells both whether it listens and what it published
    source_log = _pod_log(ctx, f"eventsource-name={ETL_SENSOR}")
    listening, state = (None, "no running pod yet") if source_log is None else listener_state_in(source_log)
    published = [r for r in log_records(source_log or "")
                 if r.get("msg") == PUBLISHED and (_time(r) or uploaded) >= uploaded - CLOCK_SLACK]

    # the Workflows for the key say which event it was, through the Sensor's log
    workflows = [w for w in kube(ctx).list(WORKFLOW_API, "Workflow", ctx.settings.namespace,
                                           label_selector=f"{SENSOR_LABEL}={ETL_SENSOR}")
                 if parameter(w, "key") == key and created(w) >= uploaded - CLOCK_SLACK]
    workflows.sort(key=created)
    sensor_records = [r for r in log_records(_pod_log(ctx, f"sensor-name={ETL_SENSOR}") or "")
                      if (_time(r) or uploaded) >= uploaded - CLOCK_SLACK]
    fired = [r for r in sensor_records if str(r.get("msg", "")).startswith(TRIGGERED)]
    failed = [r for r in sensor_records if r.get("msg") == TRIGGER_FAILED]

    if not published and not workflows:
        if listening is False:
            cause = "it stopped listening before the upload (MinIO was down or the bucket missing when it " \
                    "started): `invoke doctor` names it, `invoke up` restarts it; then upload again"
        else:
            cause = f"no event published after the upload ({state}): is MinIO notifying? `invoke doctor`"
        links.append(Link("eventsource", False, f"EventSource {ETL_SENSOR}: {state}", cause))
        return unreached(*rest[1:])
    event_ids = [str(r.get("eventID")) for r in published if r.get("eventID")]
    links.append(Link("eventsource", True, f"EventSource {ETL_SENSOR} published "
                      f"{len(published)} event(s) since the upload" + (f" (first {event_ids[0]})" if event_ids else ""),
                      at=(_time(published[0]).isoformat() if published and _time(published[0]) else "")))

    # -- the Sensor
    ours = [r for r in fired if set(map(str, r.get("triggeredByEvents") or [])) & set(event_ids)] or fired
    if not workflows:
        if failed:
            error = str(failed[-1].get("error", ""))
            cause = ("its ServiceAccount may not create Workflows: `invoke doctor`, then `invoke up --only platform`"
                     if "forbidden" in error.lower() else "see the Sensor's log: `kubectl logs -n "
                     f"{ctx.settings.namespace} -l sensor-name={ETL_SENSOR}`")
            links.append(Link("sensor", False, f"Sensor {ETL_SENSOR}: trigger failed: {error[:200]}", cause,
                              at=_stamp(failed[-1])))
        else:
            links.append(Link("sensor", False, f"Sensor {ETL_SENSOR} created no Workflow for the key",
                              "the event did not reach the Sensor: is the EventBus ready? `invoke doctor`"))
        return unreached(*rest[2:])
    links.append(Link("sensor", True, f"Sensor {ETL_SENSOR} fired its trigger"
                      + (f" ({len(ours)} time(s) since the upload)" if ours else ""),
                      at=_stamp(ours[0]) if ours else ""))

    # -- the Workflow(s)
    last = WorkflowView(workflows[-1])
    rows = [_workflow_line(w) for w in workflows]
    if last.phase != "Succeeded":
        running = last.phase in ("Pending", "Running")
        link = Link("workflow", None if running else False, rows[-1],
                    "" if running else _failure_cause(ctx, last), lines=rows[:-1])
        if not running:
            link.lines += _failing_step(ctx, last)
        links.append(link)
        return unreached(*rest[3:])
    links.append(Link("workflow", True, rows[-1], lines=rows[:-1], at=(last.status.get("finishedAt") or "")))

    # -- the output
    date, name = date_and_name(key, uploaded)
    out_key = OUTPUT_LAYOUT.format(date=date, name=name)
    rows_found, etag = _parquet_rows(client, bucket, out_key)
    if rows_found is None:
        links.append(Link("output", False, f"s3://{bucket}/{out_key} is missing",
                          "the workflow succeeded but wrote nothing there: was OUTPUT_LAYOUT changed?"))
        return unreached("aggregation")
    rejects_key = REJECTS_LAYOUT.format(date=date, name=name)
    rejects = _line_count(client, bucket, rejects_key)
    links.append(Link("output", True, f"s3://{bucket}/{out_key}: {rows_found} rows"
                      + (f"; {rejects} rejected row(s) in {rejects_key}" if rejects else "; no rejects")))

    # -- the aggregation
    summary_key = SUMMARY_KEY.format(date=date)
    summary = _json_object(client, bucket, summary_key)
    inputs = {i.get("key"): i.get("etag") for i in (summary or {}).get("inputs") or []}
    if inputs.get(out_key) == etag:
        best = (summary or {}).get("max") or {}
        links.append(Link("aggregation", True, f"{summary_key} includes it ({len(inputs)} files, "
                          f"{summary.get('total_rows')} rows; top {best.get('name')} {best.get('score')})",
                          at=str(summary.get("generated_at") or "")))
        return journey
    aggs = [w for w in kube(ctx).list(WORKFLOW_API, "Workflow", ctx.settings.namespace,
                                      label_selector=f"{SENSOR_LABEL}={AGG_SENSOR}") if parameter(w, "date") == date]
    pending = [w for w in aggs if WorkflowView(w).phase in ("Pending", "Running")]
    if pending:
        links.append(Link("aggregation", None, f"not yet: {len(pending)} aggregation(s) of {date} running or queued"))
    else:
        failed_aggs = [w for w in aggs if WorkflowView(w).phase in ("Failed", "Error")]
        links.append(Link("aggregation", False, f"{summary_key} does not include {out_key} (yet)",
                          _failure_cause(ctx, WorkflowView(failed_aggs[-1])) if failed_aggs else
                          f"no aggregation of {date} ran after it: is the agg EventSource listening? `invoke doctor`"))
    return journey


def _stamp(record: dict) -> str:
    moment = _time(record)
    return moment.isoformat() if moment else ""


def _workflow_line(workflow: dict) -> str:
    view = WorkflowView(workflow)
    started, finished = view.status.get("startedAt"), view.status.get("finishedAt")
    took = ""
    if started and finished:
        seconds = (datetime.fromisoformat(finished.replace("Z", "+00:00"))
                   - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds()
        took = f" in {seconds:.0f}s"
    # a Retry node holds one child per attempt
    retries = sum(max(0, len(n.get("children") or []) - 1) for n in view.nodes.values() if n.get("type") == "Retry")
    return f"{view.name}: {view.phase}{took}" + (f", {retries} retr{'y' if retries == 1 else 'ies'}"
                                                 if retries > 0 else "")


def _failed_nodes(view: WorkflowView) -> list[dict]:
    return [n for n in view.nodes.values() if n.get("type") == "Pod" and n.get("phase") in ("Failed", "Error")]


def _failure_cause(ctx: Context, view: WorkflowView) -> str:
    nodes = _failed_nodes(view)
    message = (nodes[-1].get("message") if nodes else "") or view.message or view.phase
    return f"{view.name} {view.phase}: {message}"[:300]


def _failing_step(ctx: Context, view: WorkflowView) -> list[str]:
    """The last lines the failing step's container logged."""
    nodes = _failed_nodes(view)
    if not nodes:
        return []
    pod = pods_by_node(kube(ctx), ctx.settings.namespace, view).get(nodes[-1]["id"])
    if pod is None:
        return []
    try:
        text = kube(ctx).pod_log(ctx.settings.namespace, pod["metadata"]["name"], container="main", tail=5)
    except Exception:  # noqa: BLE001 - a pod already gone has no log; the message above still stands
        return []
    return [f"log: {line}" for line in text.splitlines()[-5:]]


def _parquet_rows(client, bucket: str, key: str) -> tuple[int | None, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from minio.error import S3Error

    try:
        response = client.get_object(bucket, key)
    except S3Error:
        return None, ""
    try:
        data = response.read()
        etag = (response.headers.get("ETag") or "").strip('"')
    finally:
        response.close()
        response.release_conn()
    return pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows, etag


def _line_count(client, bucket: str, key: str) -> int:
    from minio.error import S3Error

    try:
        response = client.get_object(bucket, key)
    except S3Error:
        return 0
    try:
        lines = response.read().decode("utf-8", "replace").splitlines()
    finally:
        response.close()
        response.release_conn()
    return max(0, len(lines) - 1)   # a header line, then one line per rejected row


def _json_object(client, bucket: str, key: str) -> dict | None:
    from minio.error import S3Error

    try:
        response = client.get_object(bucket, key)
    except S3Error:
        return None
    try:
        return json.load(io.BytesIO(response.read()))
    except ValueError:
        return None
    finally:
        response.close()
        response.release_conn()


MARKS = {True: "✓", False: "✗", None: "·"}


def render(journey: Journey) -> list[str]:
    """The journey as an indented tree, one link per level, and the verdict."""
    out = [f"trace {journey.key}"]
    for depth, link in enumerate(journey.links):
        pad = "  " * depth
        when = f"  [{link.at}]" if link.at else ""
        out.append(f"{pad}└ {MARKS[link.ok]} {link.name}: {link.detail}{when}")
        out += [f"{pad}    {line}" for line in link.lines]
    out.append(journey.verdict)
    return out
