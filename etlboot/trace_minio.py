"""`trace --key KEY` for the MinIO pipeline: object → eventsource → sensor → workflow → output → aggregation.

- object       the input in MinIO (size, time);
- eventsource  the `etlproj` EventSource: its filter matches the key, its listener still runs (FACTS.md §2),
               and it published an event after the upload;
- sensor, workflow  as every target (trace.py); the Workflows are those of Sensor `etlproj` with the
               `key` parameter;
- output       the Parquet file at the output layout (its rows, from the footer) and the rejects, if any;
- aggregation  result/<date>/summary.json lists the Parquet file with the ETag it has now.
The store helpers (`MinioStore`) serve the FTP trace too: its outputs are in MinIO.
"""

from __future__ import annotations

import hashlib

from . import manifests as m
from .demo import AGG_SENSOR, ETL_SENSOR, OUTPUT_LAYOUT, SENSOR_LABEL, SUMMARY_KEY, date_and_name, running_minio
from .engine import Context
from .steps import kube, listener_state_in
from .trace import CLOCK_SLACK, Journey, Link, ObjectStore, event_links, failure_cause, output_link, pod_log
from .workflows import WORKFLOW_API, WorkflowView, created, parameter

REJECTS_LAYOUT = "rejects/{date}/{name}.csv"


class MinioStore(ObjectStore):
    """The objects of one MinIO bucket, through the minio client."""

    def read(self, key: str) -> tuple[bytes, str] | None:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NotFound"):
                return None
            raise
        try:
            return response.read(), (response.headers.get("ETag") or "").strip('"')
        finally:
            response.close()
            response.release_conn()


def _recorded_etag(store: MinioStore, summary: dict, out_key: str) -> str | None:
    """The ETag the day's result holds for `out_key`: in summary.json itself (a day of up to 1,000 files), or in
    the part of the result whose prefix starts the key's sha256 (code/agg_state.py: bigger days are split so)."""
    inputs = summary.get("inputs") or []
    parts = summary.get("parts") or []
    if parts:
        digest = hashlib.sha256(out_key.encode("utf-8")).hexdigest()
        ours = [p for p in parts if digest.startswith(str(p.get("prefix", "")))]
        part = store.json_object(max(ours, key=lambda p: len(p["prefix"]))["object"]) if ours else None
        inputs = (part or {}).get("inputs") or []
    return next((i.get("etag") for i in inputs if i.get("key") == out_key), None)


def _filter(ctx: Context) -> tuple[str, str]:
    docs = m.render_group("pipeline", m.variables(ctx.settings))
    source = next(d for d in docs if d["kind"] == "EventSource" and d["metadata"]["name"] == ETL_SENSOR)
    spec = next(iter(source["spec"]["minio"].values()))
    return (spec.get("filter") or {}).get("prefix", ""), (spec.get("filter") or {}).get("suffix", "")


def trace_minio(ctx: Context, key: str) -> Journey:
    from minio.error import S3Error

    journey = Journey(key, [], "minio")
    rest = ("output", "aggregation")
    client = running_minio(ctx)
    bucket = ctx.settings.etl_bucket
    try:
        stat = client.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code not in ("NoSuchKey", "NotFound"):
            raise
        journey.add(Link("object", False, f"s3://{bucket}/{key} is not in MinIO",
                         "check the key (`invoke demo.upload` prints the keys it sends); keys are case-sensitive"))
        return journey.unreached("eventsource", "sensor", "workflow", *rest)
    uploaded = stat.last_modified
    journey.add(Link("object", True, f"s3://{bucket}/{key}: {stat.size} bytes", at=uploaded.isoformat()))

    prefix, suffix = _filter(ctx)
    if not (key.startswith(prefix) and key.endswith(suffix)):
        journey.add(Link("eventsource", False, f"the key does not match the EventSource's filter ({prefix}*{suffix})",
                         f"upload it as {prefix}<name>{suffix}: other keys never fire"))
        return journey.unreached("sensor", "workflow", *rest)
    # one read of the EventSource's log tells both whether it listens and what it published
    source_log = pod_log(ctx, f"eventsource-name={ETL_SENSOR}")
    listening, state = (None, "no running pod yet") if source_log is None else listener_state_in(source_log)
    if listening is False:
        not_published = "it stopped listening before the upload (MinIO was down or the bucket missing when it " \
                        "started): `invoke doctor` names it, `invoke up` restarts it; then upload again"
    else:
        not_published = f"no event published after the upload ({state}): is MinIO notifying? `invoke doctor`"
    workflows = sorted((w for w in kube(ctx).list(WORKFLOW_API, "Workflow", ctx.settings.namespace,
                                                 label_selector=f"{SENSOR_LABEL}={ETL_SENSOR}")
                        if parameter(w, "key") == key and created(w) >= uploaded - CLOCK_SLACK), key=created)
    if event_links(ctx, journey, source=ETL_SENSOR, sensor=ETL_SENSOR, since=uploaded, workflows=workflows,
                   source_log=source_log, not_published=not_published, source_state=state, rest=rest) is None:
        return journey

    date, name = date_and_name(key, uploaded)
    out_key = OUTPUT_LAYOUT.format(date=date, name=name)
    store = MinioStore(client, bucket)
    etag = output_link(journey, store, out_key, REJECTS_LAYOUT.format(date=date, name=name),
                       missing_cause="the workflow succeeded but wrote nothing there: was OUTPUT_LAYOUT changed?",
                       rest=("aggregation",))
    if etag is None:
        return journey
    journey.add(_aggregation_link(ctx, journey, store, date, out_key, etag))
    return journey


def _aggregation_link(ctx: Context, journey: Journey, store: MinioStore, date: str, out_key: str, etag: str) -> Link:
    summary_key = SUMMARY_KEY.format(date=date)
    summary = store.json_object(summary_key) or {}
    if _recorded_etag(store, summary, out_key) == etag:
        best = summary.get("max") or {}
        files = summary.get("file_count", len(summary.get("inputs") or []))
        return Link("aggregation", True, f"{summary_key} includes it ({files} files, "
                    f"{summary.get('total_rows')} rows; top {best.get('name')} {best.get('score')})",
                    at=str(summary.get("generated_at") or ""))
    aggs = [w for w in kube(ctx).list(WORKFLOW_API, "Workflow", ctx.settings.namespace,
                                      label_selector=f"{SENSOR_LABEL}={AGG_SENSOR}") if parameter(w, "date") == date]
    pending = [w for w in aggs if WorkflowView(w).phase in ("Pending", "Running")]
    if pending:
        journey.running = [w["metadata"]["name"] for w in pending]
        return Link("aggregation", None, f"not yet: {len(pending)} aggregation(s) of {date} running or queued")
    failed = [w for w in aggs if WorkflowView(w).phase in ("Failed", "Error")]
    return Link("aggregation", False, f"{summary_key} does not include {out_key} (yet)",
                failure_cause(WorkflowView(failed[-1])) if failed else
                f"no aggregation of {date} ran after it: is the agg EventSource listening? `invoke doctor`")
