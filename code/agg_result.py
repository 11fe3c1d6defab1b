"""The aggregation's result in S3: reading the head and its parts, writing them, the text view.

The layout of the state is agg_state.py's; this module only moves it. Reads treat a missing object
as None; a part the head names that is missing raises StateUnreadable (the caller recomputes).
"""
from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from minio import Minio
from minio.error import S3Error

import agg_state
from agg_state import DayState

if TYPE_CHECKING:
    from agg import Settings

DIGEST_META = "input-digest"


class StateUnreadable(Exception):
    """A part the head names is missing or unreadable: the day is recomputed from a listing."""


def get_json(client: Minio, bucket: str, key: str) -> tuple[dict | None, str | None]:
    """The JSON object at `key` and its ETag; (None, None) when absent, (None, etag) if unparsable."""
    response = None
    try:
        response = client.get_object(bucket, key)
        etag = (response.headers.get("ETag") or "").strip('"')
        try:
            doc = json.loads(response.read())
        except ValueError:
            return None, etag
        return (doc, etag) if isinstance(doc, dict) else (None, etag)
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            return None, None
        raise
    finally:
        if response is not None:
            response.close()
            response.release_conn()


def read_result(client: Minio, settings: Settings, date: str) -> dict | None:
    return get_json(client, settings.bucket, settings.summary_key(date))[0]


def stat_or_none(client: Minio, bucket: str, key: str):
    try:
        return client.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NotFound"):
            return None
        raise


def result_mark(client: Minio, settings: Settings, date: str) -> tuple[str | None, str | None]:
    """(ETag, input digest) of the current result by one HEAD, however big the day; (None, None)
    when there is no result, digest "" for one without the mark."""
    stat = stat_or_none(client, settings.bucket, settings.summary_key(date))
    if stat is None:
        return None, None
    return (stat.etag or "").strip('"'), stat.metadata.get(f"x-amz-meta-{DIGEST_META}") or ""


def load_state(client: Minio, settings: Settings, head: dict | None,
               only_key: str | None = None) -> DayState:
    """The day's state from a head: every part, or only the part of `only_key`."""
    if head is None:
        return DayState.empty()
    try:
        state = DayState.from_head(head)
        todo = [state.part_for(only_key)] if only_key else state.unloaded()
    except (KeyError, TypeError, ValueError) as exc:
        raise StateUnreadable(f"head: {exc}") from exc
    load_parts(client, settings, todo)
    return state


def load_parts(client: Minio, settings: Settings, parts) -> None:
    """Reads the entries of those parts that are not loaded yet, in parallel."""
    todo = [p for p in parts if p.entries is None]

    def load(part):
        doc, _ = get_json(client, settings.bucket, part.object_key or "")
        if doc is None or doc.get("prefix") != part.prefix:
            raise StateUnreadable(f"part {part.object_key} is missing or unreadable")
        part.entries = agg_state.entries_from_arrays(doc)

    if todo:
        with ThreadPoolExecutor(max_workers=min(settings.workers, len(todo))) as pool:
            list(pool.map(load, todo))


def render_text(summary: dict) -> str:
    """The tutorial-style text view, made from the summary (the head) only."""
    lines = [f"date     {summary['date']}", f"files    {summary['file_count']}",
             f"rows     {summary['total_rows']}", ""]
    best = summary.get("max")
    if best:
        lines += ["highest score:", f"no       {best['no']}", f"name     {best['name']}",
                  f"score    {best['score']}", f"file     {best['file']}", ""]
    else:
        lines += ["highest score: (no rows)", ""]
    if summary.get("parts"):    # a big day: the rows per file are in the parts, not repeated here
        lines.append(f"rows per file: in the {len(summary['parts'])} parts listed in "
                     "summary.json (`parts`, each an object with `files` and `unreadable`)")
        return "\n".join(lines) + "\n"
    lines.append("rows per file:")
    lines += [f"{f['rows']:>10}  {f['key']}" for f in summary["files"]]
    for f in summary["unreadable"]:
        lines.append(f"{'unread':>10}  {f['key']}  ({f['error']})")
    return "\n".join(lines) + "\n"


def _put(client: Minio, settings: Settings, key: str, body: bytes, content_type: str,
         digest: str | None = None) -> str:
    result = client.put_object(settings.bucket, key, io.BytesIO(body), len(body),
                               content_type=content_type,
                               metadata={DIGEST_META: digest} if digest else None)
    return (result.etag or "").strip('"')


def write_result(client: Minio, settings: Settings, date: str, state: DayState,
                 run_fields: dict) -> dict:
    """Parts first (fresh names), then the head (the commit point), the text view, and the parts
    the new head no longer names are deleted. Returns the head written and its ETag."""
    for key, body in state.parts_to_write(lambda prefix, pid: settings.part_key(date, prefix, pid)):
        _put(client, settings, key, body, "application/json")
    head = {"date": date, "bucket": settings.bucket, **state.head_fields(),
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **run_fields}
    digest = head["input_digest"]
    etag = _put(client, settings, settings.summary_key(date),
                json.dumps(head, ensure_ascii=False, indent=1).encode("utf-8"), "application/json",
                digest)
    _put(client, settings, settings.text_key(date), render_text(head).encode("utf-8"),
         "text/plain; charset=utf-8", digest)
    for key in state.replaced:
        client.remove_object(settings.bucket, key)
    return head, etag


def ensure_text_view(client: Minio, settings: Settings, digest: str, date: str) -> bool:
    """Rewrites agg.txt if it is missing or from another input set; True if it did."""
    stat = stat_or_none(client, settings.bucket, settings.text_key(date))
    if stat is not None and stat.metadata.get(f"x-amz-meta-{DIGEST_META}") == digest:
        return False
    summary = read_result(client, settings, date)
    if summary is None or summary.get("input_digest") != digest:
        return False      # the result changed meanwhile; its writer writes its own view
    _put(client, settings, settings.text_key(date), render_text(summary).encode("utf-8"),
         "text/plain; charset=utf-8", digest)
    return True
