"""`invoke trace --key KEY`: where did my file go? The journey of one input, link by link, and where it broke.

Three targets, one chain. Each starts from where the input lands and ends at the outputs:
- minio (trace_minio.py): object → eventsource → sensor → workflow → output → aggregation;
- ftp (trace_ftp.py): object (as the FTP event server reported it) → eventsource → sensor → workflow → output;
- aws (aws/trace.py): object (in S3) → delivery (the SQS queue or the SNS subscription) → eventsource →
  sensor → workflow → output.
The links from the EventSource to the Workflow are the same for all three and are read here (read-only;
nothing is guessed where the cluster can say):
- eventsource  its pod's log has a "Succeeded to publish an event" line after the input landed (its eventID);
- sensor       the Sensor's log: "Successfully processed trigger" for that eventID, or "Failed to execute a
               trigger" with the error (a `forbidden` there is RBAC);
- workflow     the Workflow(s) the Sensor created for the input: phase, duration, retries, and for a failure
               the failing step's message and the last lines of its log.
A link that holds is ✓; the first that does not is where the chain broke, with its likely cause.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .engine import Context
from .steps import kube
from .workflows import WorkflowView, pods_by_node

PUBLISHED = "Succeeded to publish an event"
TRIGGERED = "Successfully processed trigger"
TRIGGER_FAILED = "Failed to execute a trigger"
#: the EventSource's and the Sensor's clocks are the cluster's, the object's time is the store's
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
    target: str = "minio"
    running: list[str] = field(default_factory=list)   # the workflows it waits on when "in progress"

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

    def add(self, link: Link) -> None:
        self.links.append(link)

    def unreached(self, *names: str) -> Journey:
        """The links after a broken (or unfinished) one: not reached."""
        self.links.extend(Link(n, None, "not reached") for n in names)
        return self

    def as_json(self) -> dict:
        broken = self.broken
        return {"target": self.target, "key": self.key, "ok": broken is None,
                "broken_at": broken.name if broken else None, "verdict": self.verdict,
                "links": [link.as_json() for link in self.links]}


def trace(ctx: Context, key: str, target: str) -> Journey:
    if target == "ftp":
        from .trace_ftp import trace_ftp

        return trace_ftp(ctx, key)
    if target == "aws":
        from aws.trace import trace_aws

        return trace_aws(ctx, key)
    from .trace_minio import trace_minio

    return trace_minio(ctx, key)


# -- pod logs --------------------------------------------------------------------------------------


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


def record_time(record: dict) -> datetime | None:
    stamp = record.get("ts")
    if isinstance(stamp, (int, float)):
        return datetime.fromtimestamp(stamp, timezone.utc)
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def stamp(record: dict) -> str:
    moment = record_time(record)
    return moment.isoformat() if moment else ""


def pod_log(ctx: Context, selector: str) -> str | None:
    """The log of the first running pod the selector finds; None when none runs."""
    pods = [p for p in kube(ctx).list("v1", "Pod", ctx.settings.namespace, label_selector=selector)
            if (p.get("status") or {}).get("phase") == "Running"]
    if not pods:
        return None
    return kube(ctx).pod_log(ctx.settings.namespace, pods[0]["metadata"]["name"], container="main", tail=5000)


# -- EventSource → Sensor → Workflow: the same for every target ----------------------------------------


def event_links(ctx: Context, journey: Journey, *, source: str, sensor: str, since: datetime,
                workflows: list[dict], source_log: str | None, not_published: str, source_state: str = "",
                rest: tuple[str, ...] = ()) -> WorkflowView | None:
    """Add the eventsource, sensor and workflow links; the last Workflow when it succeeded, else None.

    `workflows`: the Workflows the Sensor created for this input (oldest first); `source_log`: the
    EventSource pod's log (None: no pod runs); `not_published`: the likely cause when the EventSource
    published nothing and no Workflow exists; `rest`: the links after the workflow, marked not reached
    when the chain stops here.
    """
    namespace = ctx.settings.namespace
    published = [r for r in log_records(source_log or "")
                 if r.get("msg") == PUBLISHED and (record_time(r) or since) >= since - CLOCK_SLACK]
    sensor_records = [r for r in log_records(pod_log(ctx, f"sensor-name={sensor}") or "")
                      if (record_time(r) or since) >= since - CLOCK_SLACK]
    fired = [r for r in sensor_records if str(r.get("msg", "")).startswith(TRIGGERED)]
    failed = [r for r in sensor_records if r.get("msg") == TRIGGER_FAILED]

    if not published and not workflows:
        state = source_state or ("no running pod" if source_log is None else "nothing published since")
        journey.add(Link("eventsource", False, f"EventSource {source}: {state}", not_published))
        journey.unreached("sensor", "workflow", *rest)
        return None
    event_ids = [str(r.get("eventID")) for r in published if r.get("eventID")]
    journey.add(Link("eventsource", True, f"EventSource {source} published {len(published)} event(s) since then"
                     + (f" (first {event_ids[0]})" if event_ids else ""),
                     at=stamp(published[0]) if published else ""))

    ours = [r for r in fired if set(map(str, r.get("triggeredByEvents") or [])) & set(event_ids)] or fired
    if not workflows:
        if failed:
            error = str(failed[-1].get("error", ""))
            cause = ("its ServiceAccount may not create Workflows: `invoke doctor`, then `invoke up --only platform`"
                     if "forbidden" in error.lower() else
                     f"see the Sensor's log: `kubectl logs -n {namespace} -l sensor-name={sensor}`")
            journey.add(Link("sensor", False, f"Sensor {sensor}: trigger failed: {error[:200]}", cause,
                             at=stamp(failed[-1])))
        else:
            journey.add(Link("sensor", False, f"Sensor {sensor} created no Workflow for it",
                             "the event did not reach the Sensor: is the EventBus ready? `invoke doctor`"))
        journey.unreached("workflow", *rest)
        return None
    journey.add(Link("sensor", True, f"Sensor {sensor} fired its trigger"
                     + (f" ({len(ours)} time(s) since then)" if ours else ""), at=stamp(ours[0]) if ours else ""))

    last = WorkflowView(workflows[-1])
    rows = [workflow_line(w) for w in workflows]
    if last.phase != "Succeeded":
        running = last.phase in ("Pending", "Running")
        link = Link("workflow", None if running else False, rows[-1], "" if running else failure_cause(last),
                    lines=rows[:-1])
        if running:
            journey.running = [w["metadata"]["name"] for w in workflows
                               if WorkflowView(w).phase in ("Pending", "Running")]
        else:
            link.lines += failing_step(ctx, last)
        journey.add(link)
        journey.unreached(*rest)
        return None
    journey.add(Link("workflow", True, rows[-1], lines=rows[:-1], at=(last.status.get("finishedAt") or "")))
    return last


def workflow_line(workflow: dict) -> str:
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


def failure_cause(view: WorkflowView) -> str:
    nodes = _failed_nodes(view)
    message = (nodes[-1].get("message") if nodes else "") or view.message or view.phase
    return f"{view.name} {view.phase}: {message}"[:300]


def failing_step(ctx: Context, view: WorkflowView) -> list[str]:
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


class ObjectStore:
    """Read-only looks at the objects of one bucket, each absent object an answer (not an error). A store says
    how to `read` an object (its bytes and ETag, None when absent); the rest is the same for MinIO and S3."""

    def __init__(self, client, bucket: str):
        self.client, self.bucket = client, bucket

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def read(self, key: str) -> tuple[bytes, str] | None:
        raise NotImplementedError

    def parquet_rows(self, key: str) -> tuple[int | None, str]:
        """The file's rows (from the Parquet footer) and its ETag; (None, "") when it is not there."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        found = self.read(key)
        if found is None:
            return None, ""
        data, etag = found
        return pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows, etag

    def line_count(self, key: str) -> int:
        """The rows of a rejects CSV (a header line, then one line per rejected row); 0 when absent."""
        found = self.read(key)
        return 0 if found is None else max(0, len(found[0].decode("utf-8", "replace").splitlines()) - 1)

    def json_object(self, key: str) -> dict | None:
        found = self.read(key)
        if found is None:
            return None
        try:
            return json.loads(found[0])
        except ValueError:
            return None


def output_link(journey: Journey, store: ObjectStore, out_key: str, rejects_key: str, *, missing_cause: str,
                rest: tuple[str, ...] = ()) -> str | None:
    """Add the output link (the Parquet's rows from its footer, the rejects' count); its ETag, or None."""
    rows, etag = store.parquet_rows(out_key)
    if rows is None:
        journey.add(Link("output", False, f"{store.url(out_key)} is missing", missing_cause))
        journey.unreached(*rest)
        return None
    rejects = store.line_count(rejects_key)
    journey.add(Link("output", True, f"{store.url(out_key)}: {rows} rows"
                     + (f"; {rejects} rejected row(s) in {rejects_key}" if rejects else "; no rejects")))
    return etag


MARKS = {True: "✓", False: "✗", None: "·"}


def render(journey: Journey) -> list[str]:
    """The journey as an indented tree, one link per level, and the verdict."""
    out = [f"trace {journey.key}" + (f" ({journey.target})" if journey.target != "minio" else "")]
    for depth, link in enumerate(journey.links):
        pad = "  " * depth
        when = f"  [{link.at}]" if link.at else ""
        out.append(f"{pad}└ {MARKS[link.ok]} {link.name}: {link.detail}{when}")
        out += [f"{pad}    {line}" for line in link.lines]
    out.append(journey.verdict)
    return out
