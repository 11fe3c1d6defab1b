"""Daily aggregation of the ETL results: `python /code/agg.py DATE [--bucket BUCKET]`.

Reads every Parquet file of the day at any depth (OUTPUT_LAYOUT with that date: by default
`output/DATE/**.parquet`, e.g. `output/DATE/1.parquet` and `output/DATE/teamA/x.parquet`, since
etl.py keeps the input's folders below the date) and writes `result/DATE/summary.json`: the highest-score row (as in the tutorial; ties go to the first
file in key order, then the first row), the rows of every file and the total, and the input set it
was computed from. `result/DATE/agg.txt` is a human-readable view made from the same data.

Correct under concurrency (replaces the tutorial's "terminate the previous aggregation" step):
- At most one writer per date: the `agg` WorkflowTemplate holds the Argo mutex `agg-DATE`.
- Settle: before the first listing it waits until the newest input is AGG_SETTLE_SECONDS old (at most
  3x that in total), so a burst of uploads gives one aggregation. A quiet period rather than a fixed
  sleep, so the aggregations queued behind the mutex do not each sleep again.
- The input set is the sorted (key, ETag) pairs of the day's files; its sha256 is the digest. If the
  current result was computed from the same digest, nothing is written ("up to date"). The digest
  is compared with the result's `input-digest` metadata by a HEAD, so summary.json (which grows
  with the day) is downloaded only when it is not already the result of this input set: an
  up-to-date run is one listing and two HEADs.
- Otherwise the summary is computed and written, unless the current result is newer: it already
  covers every one of our inputs at least as recently and more (a strict superset, or newer versions
  of the same keys) -- an older, smaller aggregation never replaces a newer one.
- After writing it lists again; if the input set changed while it ran, it goes round again (at most
  AGG_MAX_ROUNDS), so a file that lands during an aggregation always makes it into a fresh result.
  Each new file also triggers its own aggregation, which continues where a run that gave up stopped.
  Without the mutex (a run by hand) a run may still replace a newer result in the instant between
  its check and its PUT; its re-list then sees the newer input set and it writes again, so the final
  result is complete all the same. If inputs were deleted, the listing stays smaller than the result
  on a second look, and the day is recomputed.
- The result is one PUT of the final object (S3 PUTs are atomic), never a partial file.

Incremental: the result keeps each file's numbers with its ETag, so a re-aggregation (one runs for
every new result file) reads only the files that are new or replaced since; `--full` reads all.

Reading: the day's files are fetched in parallel (AGG_WORKERS threads); a file up to 8 MiB in one GET,
its three columns decoded at once; a bigger one by range GETs of its footer and of the `name`/`score`
columns only (plus `no` of the winning row's row group). Rows per file come from the Parquet footer. Every GET carries If-Match
with the listed ETag, so a file replaced mid-run restarts the round instead of mixing versions. An
unreadable file is recorded in `unreadable` (with the error) and left out of the numbers, so one bad
upload does not block the day; a read that failed because S3 was unreachable or throttled fails the
run instead (a retry will read it).

Ends with one JSON line, or one error line and an exit code (failures.py): 0 done, 1 a retry will
not help, 2 bad arguments or settings (DATE not YYYYMMDD, AGG_* not numbers), 75 S3 unreachable or
throttled (a retry may help).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from minio import Minio
from minio.error import S3Error

import failures
from etl import DEFAULT_OUTPUT_LAYOUT, EtlError, is_date, layout_from_env
from failures import Failure
from s3client import client_from_env

DEFAULT_BUCKET = "etlproj"
DEFAULT_RESULT_PREFIX = "result"
DEFAULT_SETTLE_SECONDS = 20.0
DEFAULT_MAX_ROUNDS = 5
DEFAULT_WORKERS = 16
WHOLE_OBJECT_BYTES = 8 << 20
SETTLE_LIMIT_FACTOR = 3
DIGEST_META = "input-digest"


class AggError(Failure):
    """A problem with the arguments or the configuration, reported as one line (exit code 2)."""


class InputChanged(Exception):
    """An input was replaced between listing and reading it."""


@dataclass(frozen=True)
class Input:
    key: str
    etag: str
    size: int
    last_modified: datetime

    def as_json(self) -> dict:
        return {"key": self.key, "etag": self.etag, "size": self.size,
                "last_modified": self.last_modified.isoformat()}


@dataclass
class Settings:
    bucket: str = DEFAULT_BUCKET
    output_layout: str = DEFAULT_OUTPUT_LAYOUT
    result_prefix: str = DEFAULT_RESULT_PREFIX
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    max_rounds: int = DEFAULT_MAX_ROUNDS
    workers: int = DEFAULT_WORKERS
    full: bool = False            # read every file, not only those the current result lacks

    def summary_key(self, date: str) -> str:
        return f"{self.result_prefix}/{date}/summary.json"

    def text_key(self, date: str) -> str:
        return f"{self.result_prefix}/{date}/agg.txt"


def settings_from_env(env=None, **overrides) -> Settings:
    env = os.environ if env is None else env
    try:
        s = Settings(
            bucket=env.get("ETL_BUCKET") or DEFAULT_BUCKET,
            output_layout=layout_from_env("OUTPUT_LAYOUT", DEFAULT_OUTPUT_LAYOUT, env),
            result_prefix=(env.get("RESULT_PREFIX") or DEFAULT_RESULT_PREFIX).strip("/"),
            settle_seconds=float(env.get("AGG_SETTLE_SECONDS") or DEFAULT_SETTLE_SECONDS),
            max_rounds=int(env.get("AGG_MAX_ROUNDS") or DEFAULT_MAX_ROUNDS),
            workers=int(env.get("AGG_WORKERS") or DEFAULT_WORKERS),
        )
    except ValueError as exc:
        raise AggError(f"AGG_* setting is not a number: {exc}") from exc
    except EtlError as exc:
        raise AggError(str(exc)) from exc
    for name, value in overrides.items():
        if value is not None:
            setattr(s, name, value)
    if s.max_rounds < 1 or s.workers < 1 or s.settle_seconds < 0:
        raise AggError("AGG_MAX_ROUNDS and AGG_WORKERS must be >= 1, AGG_SETTLE_SECONDS >= 0")
    return s


# --- the input set ---------------------------------------------------------------------------


def list_inputs(client: Minio, bucket: str, date: str, layout: str) -> list[Input]:
    """The day's result files at any depth below the date, sorted by key."""
    head, _, tail = layout.partition("{name}")
    head, tail = head.format(date=date), tail.format(date=date)
    found = []
    for obj in client.list_objects(bucket, prefix=head, recursive=True):
        key = obj.object_name
        name = key[len(head):len(key) - len(tail)] if key.endswith(tail) else ""
        if obj.is_dir or not name.strip("/") or len(key) < len(head) + len(tail):
            continue
        found.append(Input(key, (obj.etag or "").strip('"'), obj.size or 0, obj.last_modified))
    return sorted(found, key=lambda i: i.key)


def input_digest(inputs: list[Input] | list[dict]) -> str:
    h = hashlib.sha256()
    for key, etag in sorted(_pairs(inputs)):
        h.update(key.encode("utf-8") + b"\0" + etag.encode("ascii", "replace") + b"\n")
    return h.hexdigest()


def _pairs(inputs) -> list[tuple[str, str]]:
    return [(i.key, i.etag) if isinstance(i, Input) else (i["key"], i["etag"]) for i in inputs]


def supersedes(current: dict, ours: list[Input]) -> bool:
    """Whether the current result is newer than what we would write from `ours`: it covers all our
    keys, each at least as recently (same ETag, or a later Last-Modified), and differs from ours."""
    theirs = {i["key"]: i for i in current.get("inputs", [])}
    if input_digest(current.get("inputs", [])) == input_digest(ours):
        return False
    for mine in ours:
        other = theirs.get(mine.key)
        if other is None:
            return False
        if other["etag"] != mine.etag and \
                datetime.fromisoformat(other["last_modified"]) <= mine.last_modified:
            return False
    return True


# --- reading the files -----------------------------------------------------------------------


class _RangeReader(io.RawIOBase):
    """A seekable read-only file over one S3 object, each read a range GET pinned to its ETag."""

    def __init__(self, client: Minio, bucket: str, item: Input):
        super().__init__()
        self._client, self._bucket, self._item = client, bucket, item
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._item.size}[whence]
        self._pos = base + offset
        return self._pos

    def size(self) -> int:
        return self._item.size

    def read(self, size: int = -1) -> bytes:
        end = self._item.size if size is None or size < 0 else min(self._item.size, self._pos + size)
        if end <= self._pos:
            return b""
        data = _get(self._client, self._bucket, self._item, self._pos, end - self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)


def _get(client: Minio, bucket: str, item: Input, offset: int = 0, length: int = 0) -> bytes:
    response = None
    try:
        response = client.get_object(bucket, item.key, offset=offset, length=length,
                                     request_headers={"If-Match": f'"{item.etag}"'})
        return response.read()
    except S3Error as exc:
        if exc.code in ("PreconditionFailed", "NoSuchKey"):
            raise InputChanged(item.key) from exc
        raise
    finally:
        if response is not None:
            response.close()
            response.release_conn()


def read_file_stats(client: Minio, bucket: str, item: Input) -> dict:
    """Rows (from the footer) and the highest-score row of one result file."""
    stats = {"key": item.key, "etag": item.etag, "size": item.size,
             "last_modified": item.last_modified.isoformat()}
    try:
        if item.size <= WHOLE_OBJECT_BYTES:
            # small: one GET, and the three columns decoded at once on this thread (Arrow's thread
            # pool costs more than it saves on a file this size: 0.16 ms against 0.06 ms a file)
            pf = pq.ParquetFile(pa.BufferReader(_get(client, bucket, item)))
            stats["rows"] = pf.metadata.num_rows
            stats["best"] = _best_row(pf.read(columns=["no", "name", "score"], use_threads=False))
        else:
            pf = pq.ParquetFile(pa.PythonFile(_RangeReader(client, bucket, item), mode="r"))
            stats["rows"] = pf.metadata.num_rows
            stats["best"] = _best_row_by_groups(pf)
    except InputChanged:
        raise
    except S3Error as exc:
        if failures.s3_code_retryable(exc.code, getattr(exc.response, "status", None)):
            raise                        # throttled or unavailable: the run fails, a retry reads it
        stats.pop("rows", None)
        stats["error"] = f"{type(exc).__name__}: {exc}"[:300]
    except (pa.ArrowException, KeyError, ValueError, OSError) as exc:
        stats.pop("rows", None)
        stats["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return stats


def _top(score: pa.ChunkedArray) -> tuple[int, object] | None:
    """The position and value of the first highest score, or None when there is none."""
    top = pc.max(score)
    if not top.is_valid:
        return None
    return pc.index(score, top).as_py(), top.as_py()


def _best_row(table: pa.Table) -> dict | None:
    found = _top(table.column("score"))
    if found is None:
        return None
    row, top = found
    return {"no": table.column("no")[row].as_py(), "name": table.column("name")[row].as_py(),
            "score": top}


def _best_row_by_groups(pf: pq.ParquetFile) -> dict | None:
    """For a big file: `name` and `score` whole, the row's `no` from its row group only."""
    table = pf.read(columns=["name", "score"])
    found = _top(table.column("score"))
    if found is None:
        return None
    row, top = found
    offset, no = 0, None
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if row < offset + n:
            no = pf.read_row_group(rg, columns=["no"]).column("no")[row - offset].as_py()
            break
        offset += n
    return {"no": no, "name": table.column("name")[row].as_py(), "score": top}


def reusable_file_stats(previous: dict | None) -> dict[tuple[str, str], dict]:
    """Per-file results of an earlier summary, by (key, ETag): an unchanged object (same ETag) has
    the same rows and best row, so only new or replaced files need reading."""
    if not previous:
        return {}
    found = {}
    for f in previous.get("files", []):
        if {"key", "etag", "rows", "best"} <= set(f):
            found[(f["key"], f["etag"])] = f
    return found


def compute_summary(client: Minio, settings: Settings, date: str, inputs: list[Input],
                    previous: dict | None = None) -> dict:
    known = reusable_file_stats(previous)
    todo = [i for i in inputs if (i.key, i.etag) not in known]
    with ThreadPoolExecutor(max_workers=min(settings.workers, max(1, len(todo)))) as pool:
        fresh = {f["key"]: f for f in
                 pool.map(lambda item: read_file_stats(client, settings.bucket, item), todo)}
    files = [fresh.get(i.key) or known[(i.key, i.etag)] for i in inputs]
    best = None
    for f in files:   # key order, so ties go to the first file
        b = f.get("best")
        if b is not None and (best is None or b["score"] > best["score"]):
            best = {**b, "file": f["key"]}
    readable = [f for f in files if "error" not in f]
    return {
        "date": date,
        "bucket": settings.bucket,
        "input_digest": input_digest(inputs),
        "inputs": [i.as_json() for i in inputs],
        "files": [{"key": f["key"], "etag": f["etag"], "rows": f["rows"], "best": f["best"]}
                  for f in readable],
        "unreadable": [{"key": f["key"], "error": f["error"]} for f in files if "error" in f],
        "total_rows": sum(f["rows"] for f in readable),
        "max": best,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_id": None,
        "files_read": len(todo),
    }


def render_text(summary: dict) -> str:
    """The tutorial-style text view, made from the summary only."""
    lines = [f"date     {summary['date']}", f"files    {len(summary['files'])}",
             f"rows     {summary['total_rows']}", ""]
    best = summary.get("max")
    if best:
        lines += ["highest score:", f"no       {best['no']}", f"name     {best['name']}",
                  f"score    {best['score']}", f"file     {best['file']}", ""]
    else:
        lines += ["highest score: (no rows)", ""]
    lines.append("rows per file:")
    lines += [f"{f['rows']:>10}  {f['key']}" for f in summary["files"]]
    for f in summary["unreadable"]:
        lines.append(f"{'unread':>10}  {f['key']}  ({f['error']})")
    return "\n".join(lines) + "\n"


# --- the result ------------------------------------------------------------------------------


def read_result(client: Minio, settings: Settings, date: str) -> dict | None:
    response = None
    try:
        response = client.get_object(settings.bucket, settings.summary_key(date))
        return json.loads(response.read())
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            return None
        raise
    except ValueError:
        return None   # unreadable result: treat as absent, it will be rewritten
    finally:
        if response is not None:
            response.close()
            response.release_conn()


def result_digest(client: Minio, settings: Settings, date: str) -> str | None:
    """The input digest the current result was computed from, from its metadata: one HEAD, however
    big summary.json has grown. None when there is no result, "" for one without the mark."""
    try:
        meta = client.stat_object(settings.bucket, settings.summary_key(date)).metadata
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NotFound"):
            return None
        raise
    return meta.get(f"x-amz-meta-{DIGEST_META}") or ""


def _put(client: Minio, settings: Settings, key: str, body: bytes, content_type: str,
         digest: str) -> None:
    client.put_object(settings.bucket, key, io.BytesIO(body), len(body),
                      content_type=content_type, metadata={DIGEST_META: digest})


def write_result(client: Minio, settings: Settings, summary: dict) -> None:
    date, digest = summary["date"], summary["input_digest"]
    # summary.json is the result and the commit point; agg.txt is only a view of it.
    _put(client, settings, settings.summary_key(date),
         json.dumps(summary, ensure_ascii=False, indent=1).encode("utf-8"),
         "application/json", digest)
    _put(client, settings, settings.text_key(date), render_text(summary).encode("utf-8"),
         "text/plain; charset=utf-8", digest)


def ensure_text_view(client: Minio, settings: Settings, digest: str, date: str) -> bool:
    """Rewrites agg.txt if it is missing or from another input set; True if it did."""
    try:
        meta = client.stat_object(settings.bucket, settings.text_key(date)).metadata
        if meta.get(f"x-amz-meta-{DIGEST_META}") == digest:
            return False
    except S3Error as exc:
        if exc.code not in ("NoSuchKey", "NotFound"):
            raise
    summary = read_result(client, settings, date)
    if summary is None or summary.get("input_digest") != digest:
        return False      # the result changed meanwhile; its writer writes its own view
    _put(client, settings, settings.text_key(date), render_text(summary).encode("utf-8"),
         "text/plain; charset=utf-8", digest)
    return True


# --- the run ---------------------------------------------------------------------------------


Hook = Callable[..., None]


def settle(client: Minio, settings: Settings, date: str,
           sleep: Callable[[float], None] = time.sleep,
           now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> float:
    """Waits until the newest input is settle_seconds old (bounded); returns the seconds waited."""
    waited, limit = 0.0, settings.settle_seconds * SETTLE_LIMIT_FACTOR
    while settings.settle_seconds > 0 and waited < limit:
        inputs = list_inputs(client, settings.bucket, date, settings.output_layout)
        if not inputs:
            break
        age = (now() - max(i.last_modified for i in inputs)).total_seconds()
        if age >= settings.settle_seconds:
            break
        pause = min(settings.settle_seconds - age, limit - waited)
        sleep(pause)
        waited += pause
    return waited


def run(date: str, settings: Settings, client: Minio | None = None, hook: Hook | None = None,
        sleep: Callable[[float], None] = time.sleep) -> dict:
    """Aggregates one day; returns what happened (see `outcome`)."""
    if not is_date(date):
        raise AggError(f"DATE must be YYYYMMDD, got {date!r}")
    client = client or client_from_env()
    hook = hook or (lambda stage, **info: None)
    run_id = uuid.uuid4().hex
    report = {"date": date, "bucket": settings.bucket, "run_id": run_id, "rounds": 0,
              "writes": 0, "superseded": 0, "result": settings.summary_key(date)}
    report["settled_seconds"] = settle(client, settings, date, sleep=sleep)

    written = None   # the digest of the result this run wrote last (its agg.txt is current)
    for round_no in range(1, settings.max_rounds + 1):
        report["rounds"] = round_no
        inputs = list_inputs(client, settings.bucket, date, settings.output_layout)
        digest = input_digest(inputs)
        hook("listed", round=round_no, inputs=inputs)
        # the current result's digest by a HEAD first: summary.json itself is read only when it
        # is not already the result of this input set
        head = result_digest(client, settings, date)
        if head == digest:
            if digest != written and ensure_text_view(client, settings, digest, date):
                report["text_rewritten"] = True
            report.update(outcome="written" if report["writes"] else "up-to-date",
                          input_digest=digest, files=len(inputs))
            return report
        current = None if head is None else read_result(client, settings, date)
        if current is not None and current.get("input_digest") == digest:
            continue   # replaced between the HEAD and the GET: look again
        if current is not None and supersedes(current, inputs):
            # A newer result exists. Either our listing is already stale (look again), or files
            # the result counted were deleted since (the listing stays the same: recompute).
            report["superseded"] += 1
            if input_digest(list_inputs(client, settings.bucket, date,
                                        settings.output_layout)) != digest:
                continue
        try:
            summary = compute_summary(client, settings, date, inputs,
                                      previous=None if settings.full else current)
        except InputChanged:
            continue
        summary["run_id"] = run_id
        report["files_read"] = report.get("files_read", 0) + summary["files_read"]
        hook("computed", round=round_no, summary=summary)
        # someone may have finished meanwhile: a HEAD tells, the result is read only if it changed
        if result_digest(client, settings, date) != (current or {}).get("input_digest"):
            latest = read_result(client, settings, date)
            if latest is not None and (latest.get("input_digest") == digest
                                       or supersedes(latest, inputs)):
                report["superseded"] += 1
                continue
        hook("before_put", round=round_no, summary=summary)
        write_result(client, settings, summary)
        report["writes"] += 1
        written = digest
        report.update(max=summary["max"], total_rows=summary["total_rows"])
    report["outcome"] = "unsettled"
    report["message"] = (f"inputs still changing after {settings.max_rounds} rounds; the "
                         "aggregation triggered by the newest file will finish the day")
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agg.py", description="Aggregate one day of ETL results.")
    parser.add_argument("date", help="YYYYMMDD")
    parser.add_argument("--bucket", default=None, help="bucket (default: $ETL_BUCKET or etlproj)")
    parser.add_argument("--settle-seconds", type=float, default=None,
                        help="quiet period before the first listing (default: $AGG_SETTLE_SECONDS "
                             "or 20)")
    parser.add_argument("--max-rounds", type=int, default=None,
                        help="list-compute-write rounds at most (default: $AGG_MAX_ROUNDS or 5)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel file reads (default: $AGG_WORKERS or 16)")
    parser.add_argument("--full", action="store_true", default=None,
                        help="read every file again instead of reusing the current result's "
                             "per-file numbers for unchanged files")
    args = parser.parse_args(argv)

    def work() -> int:
        try:
            settings = settings_from_env(bucket=args.bucket, settle_seconds=args.settle_seconds,
                                         max_rounds=args.max_rounds, workers=args.workers,
                                         full=args.full)
            report = run(args.date, settings)
        except AggError as exc:
            failures.fail("agg", str(exc), retryable=False)
            return failures.EXIT_USAGE
        print(json.dumps(report, ensure_ascii=False, default=str))
        return failures.EXIT_OK

    return failures.run_main("agg", work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
