"""Daily aggregation of the ETL results: `python /code/agg.py DATE [--key KEY] [--bucket BUCKET]`.

Reads every Parquet file of the day at any depth (OUTPUT_LAYOUT with that date: by default
`output/DATE/**.parquet`, e.g. `output/DATE/1.parquet` and `output/DATE/teamA/x.parquet`, since
etl.py keeps the input's folders below the date) and writes `result/DATE/summary.json`: the
highest-score row (as in the tutorial; ties go to the first file in key order, then the first
row), the rows of every file and the total, and the input set it was computed from (agg_state.py:
inline for a day of up to 1,000 files, in parts of bounded size beyond). `result/DATE/agg.txt` is a
human-readable view made from the same data.

Two ways to run, both correct under concurrency (they replace the tutorial's "terminate the
previous aggregation" step):
- `--key KEY` (for the agg Sensor to start with each new result file's key): folds that one file
  into the result -- a GET of the head and of the file's part, a HEAD and a GET of the file, a PUT
  of the part, the head and agg.txt, a DELETE of the part replaced. No listing and no settle
  period (nothing to batch: each fold is the same small work), so a new file costs the same on a
  day of 1,000 files as on a day of 50,000. A replaced file (same key, new ETag) replaces its
  numbers; a file gone since the event is removed; a key whose ETag the result already holds is
  "up to date". Why no file is lost without a listing: it needs the Argo mutex `agg-DATE` that
  the `agg` WorkflowTemplate holds, so there is one writer per date, and every file that lands
  has its own run, queued behind the one before and folding its file into what that one wrote.
  What a fold cannot see is a file whose event never led to a finished run (the Sensor lost it,
  or all retries failed). So now and then a fold lists the day afterwards (mode "fold+listing"),
  with chance min(1, AGG_RECONCILE_FILES / files of the day), drawn from the file's key and ETag:
  on a day of up to AGG_RECONCILE_FILES (10) files every fold lists, as before; on a bigger day
  the expected listing work per fold stays AGG_RECONCILE_FILES files' worth, and a lost file is
  found after about files / AGG_RECONCILE_FILES more folds (or by a run without `--key`). As a guard against a
  writer without the mutex (a hand run), the head's ETag is checked again right before the PUT,
  and the fold starts over if it changed. A part the head names that is missing or unreadable
  makes the run fall back to the listing form below, which recomputes the day.
- without `--key` (by hand, or to repair a day whose events were lost): lists the whole day.
  * Settle: before the first listing it waits until the newest input is AGG_SETTLE_SECONDS old
    (at most 3x that in total), so a burst of uploads gives one aggregation; the listing found
    quiet is the first round's.
  * The input set is the (key, ETag) pairs of the day's files, its digest order-independent
    (agg_state.input_digest). If the result's `input-digest` metadata (a HEAD) is the same,
    nothing is written ("up to date"): one listing and two HEADs.
  * Otherwise, of the result, only the parts whose digest differs from that of the listed files
    of their prefix are read (one part for one new file), of the files only the new or replaced
    ones (`--full` reads all), and the result is written -- unless the current result is newer: it
    already covers every one of our inputs at least as recently and more (a strict superset, or
    newer versions of the same keys); an older, smaller aggregation never replaces a newer one.
  * After writing it lists again; if the input set changed while it ran, it goes round again (at
    most AGG_MAX_ROUNDS), so a file that lands during the run ends in a result even without the
    mutex: two hand runs that overwrite each other both re-list and write again, and the last
    write holds every file. With AGG_EXCLUSIVE=true (the caller holds the mutex, as the template
    does) the second listing is skipped: a file that landed meanwhile has its own run (started by
    its event) queued behind this one. If inputs were deleted, the listing stays smaller than the
    result on a second look, and the day is recomputed. A hand run whose second look finds
    another writer's result naming a part that is gone (each deletes the parts it replaced)
    recomputes the day from the files.
- The commit point is one PUT of summary.json (atomic); parts are written under fresh names
  first, so a reader never sees a head with parts of another version.

Reading (agg_files.py, agg_fetch.py): the files are fetched in parallel (AGG_WORKERS threads) by a
lean GET over kept-alive sockets (AGG_LEAN_GET=false uses the minio client for every GET). Every
GET carries If-Match with the listed ETag, so a file replaced mid-run restarts the round instead
of mixing versions. An unreadable file is recorded in `unreadable` (with the error) and left out
of the numbers, so one bad upload does not block the day; a read that failed because S3 was
unreachable or throttled fails the run instead (a retry will read it).

Ends with one JSON line, or one error line and an exit code (failures.py): 0 done, 1 a retry will
not help, 2 bad arguments or settings (DATE not YYYYMMDD, a KEY not of that date, AGG_* not
numbers), 75 S3 unreachable or throttled (a retry may help).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from minio import Minio

import agg_state
import failures
from agg_fetch import LeanGetter, ObjectChanged, minio_get
from agg_files import read_file_stats
from agg_result import (StateUnreadable, ensure_text_view, get_json, load_parts, load_state,
                        result_mark, stat_or_none, write_result)
from agg_state import DayState
from etl import DEFAULT_OUTPUT_LAYOUT, EtlError, is_date, layout_from_env
from failures import Failure
from s3client import client_from_env

DEFAULT_BUCKET = "etlproj"
DEFAULT_RESULT_PREFIX = "result"
DEFAULT_SETTLE_SECONDS = 20.0
DEFAULT_MAX_ROUNDS = 5
DEFAULT_WORKERS = 16
DEFAULT_RECONCILE_FILES = 10
SETTLE_LIMIT_FACTOR = 3
_TRUE = {"1", "true", "yes", "on"}


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
    exclusive: bool = False       # the caller holds the mutex agg-DATE: no listing after writing
    lean_get: bool = True         # agg_fetch's GET for the files; False: the minio client's
    reconcile_files: int = DEFAULT_RECONCILE_FILES   # see reconcile_due; 0: a fold never lists

    def summary_key(self, date: str) -> str:
        return f"{self.result_prefix}/{date}/summary.json"

    def text_key(self, date: str) -> str:
        return f"{self.result_prefix}/{date}/agg.txt"

    def part_key(self, date: str, prefix: str, part_id: str) -> str:
        return f"{self.result_prefix}/{date}/parts/{prefix}-{part_id}.json"


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
            exclusive=(env.get("AGG_EXCLUSIVE") or "").strip().lower() in _TRUE,
            lean_get=(env.get("AGG_LEAN_GET") or "true").strip().lower() in _TRUE,
            reconcile_files=int(env.get("AGG_RECONCILE_FILES") or DEFAULT_RECONCILE_FILES),
        )
    except ValueError as exc:
        raise AggError(f"AGG_* setting is not a number: {exc}") from exc
    except EtlError as exc:
        raise AggError(str(exc)) from exc
    for name, value in overrides.items():
        if value is not None:
            setattr(s, name, value)
    if s.max_rounds < 1 or s.workers < 1 or s.settle_seconds < 0 or s.reconcile_files < 0:
        raise AggError("AGG_MAX_ROUNDS and AGG_WORKERS must be >= 1, AGG_SETTLE_SECONDS and "
                       "AGG_RECONCILE_FILES >= 0")
    return s


# --- the input set ---------------------------------------------------------------------------


def _layout_bounds(layout: str, date: str) -> tuple[str, str]:
    head, _, tail = layout.partition("{name}")
    return head.format(date=date), tail.format(date=date)


def is_input_key(key: str, date: str, layout: str) -> bool:
    head, tail = _layout_bounds(layout, date)
    return key.startswith(head) and key.endswith(tail) and len(key) >= len(head) + len(tail) \
        and bool(key[len(head):len(key) - len(tail)].strip("/"))


def list_inputs(client: Minio, bucket: str, date: str, layout: str) -> list[Input]:
    """The day's result files at any depth below the date, sorted by key."""
    head, _ = _layout_bounds(layout, date)
    found = []
    for obj in client.list_objects(bucket, prefix=head, recursive=True):
        if obj.is_dir or not is_input_key(obj.object_name, date, layout):
            continue
        found.append(Input(obj.object_name, (obj.etag or "").strip('"'), obj.size or 0,
                           obj.last_modified))
    return sorted(found, key=lambda i: i.key)


def input_digest(inputs) -> str:
    return agg_state.input_digest(i.as_json() if isinstance(i, Input) else i for i in inputs)


def supersedes(theirs: list[dict], ours: list[Input]) -> bool:
    """Whether a result of the inputs `theirs` is newer than what we would write from `ours`: it
    covers all our keys, each at least as recently (same ETag, or a later Last-Modified), and
    differs from ours."""
    by_key = {i["key"]: i for i in theirs}
    if input_digest(theirs) == input_digest(ours):
        return False
    for mine in ours:
        other = by_key.get(mine.key)
        if other is None:
            return False
        if other["etag"] != mine.etag and \
                datetime.fromisoformat(other["last_modified"]) <= mine.last_modified:
            return False
    return True


# --- the run ---------------------------------------------------------------------------------


Hook = Callable[..., None]


def settle(client: Minio, settings: Settings, date: str,
           sleep: Callable[[float], None] = time.sleep,
           now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> float:
    """Waits until the newest input is settle_seconds old (bounded); returns the seconds waited."""
    return _settle(client, settings, date, sleep, now)[0]


def _settle(client, settings, date, sleep, now) -> tuple[float, list[Input] | None]:
    """The seconds waited, and the listing found quiet (None if none was: list again): the first
    round takes it instead of listing the day once more."""
    waited, limit = 0.0, settings.settle_seconds * SETTLE_LIMIT_FACTOR
    while settings.settle_seconds > 0 and waited < limit:
        inputs = list_inputs(client, settings.bucket, date, settings.output_layout)
        if not inputs:
            return waited, inputs
        age = (now() - max(i.last_modified for i in inputs)).total_seconds()
        if age >= settings.settle_seconds:
            return waited, inputs
        pause = min(settings.settle_seconds - age, limit - waited)
        sleep(pause)
        waited += pause
    return waited, None


def _reader(client: Minio, settings: Settings):
    """get(key, etag, offset, length) for agg_files, raising InputChanged for another version."""
    fetch = functools.partial(minio_get, client, settings.bucket)
    if settings.lean_get:
        try:
            fetch = LeanGetter(client, settings.bucket).get
        except (AttributeError, TypeError):
            pass   # the minio client's private helpers it borrows changed shape: the client's GET

    def get(key: str, etag: str, offset: int, length: int) -> bytes:
        try:
            return fetch(key, etag, offset, length)
        except ObjectChanged as exc:
            raise InputChanged(key) from exc
    return get


def read_files(client: Minio, settings: Settings, todo: list[dict]) -> list[dict]:
    if not todo:
        return []
    get = _reader(client, settings)
    with ThreadPoolExecutor(max_workers=min(settings.workers, len(todo))) as pool:
        return list(pool.map(lambda e: read_file_stats(get, e), todo))


def run(date: str, settings: Settings, client: Minio | None = None, hook: Hook | None = None,
        sleep: Callable[[float], None] = time.sleep, key: str | None = None) -> dict:
    """Aggregates one day (or folds the one file `key` in); returns what happened (`outcome`)."""
    if not is_date(date):
        raise AggError(f"DATE must be YYYYMMDD, got {date!r}")
    if key is not None and not is_input_key(key, date, settings.output_layout):
        raise AggError(f"KEY {key!r} is not a result file of {date} "
                       f"(OUTPUT_LAYOUT {settings.output_layout})")
    client = client or client_from_env()
    hook = hook or (lambda stage, **info: None)
    report = {"date": date, "bucket": settings.bucket, "run_id": uuid.uuid4().hex, "rounds": 0,
              "writes": 0, "superseded": 0, "files_read": 0, "result": settings.summary_key(date)}
    if key is not None and not settings.full:
        report["mode"] = "fold"
        try:
            report = _fold_one(client, settings, date, key, report, hook)
            if not reconcile_due(key, report.get("etag", ""), report.get("files") or 0,
                                 settings.reconcile_files):
                return report
            # now and then a fold lists the day too, so a file whose event was lost is not lost
            report["mode"] = "fold+listing"
            return _aggregate_listed(client, settings, date, report, hook)
        except StateUnreadable as exc:
            report["state_unreadable"] = str(exc)   # recomputed from a listing, below
    report["mode"] = "listing"
    report["settled_seconds"], quiet = _settle(client, settings, date, sleep,
                                               lambda: datetime.now(timezone.utc))
    return _aggregate_listed(client, settings, date, report, hook, quiet)


def reconcile_due(key: str, etag: str, files: int, every: int) -> bool:
    """Whether this fold also lists the day: with chance min(1, every / files), drawn from the
    file's (key, ETag), so a retry decides the same. A listing costs about as much as the day has
    files, so the expected listing work per fold is `every` files' worth whatever the day's size,
    and a file whose event was lost (the one thing a fold cannot see) is found after about
    files / every more folds -- on a day of up to `every` files, by the very next one."""
    if every <= 0:
        return False
    if files <= every:
        return True
    draw = int(hashlib.sha256(f"{key}\0{etag}".encode("utf-8")).hexdigest()[:8], 16) / 0x1_0000_0000
    return draw < every / files


def _fit(client: Minio, settings: Settings, state: DayState) -> None:
    """A split day that shrank to one part's size goes back to one inline part."""
    if not state.inline() and state.file_count() <= agg_state.PART_LIMIT:
        load_parts(client, settings, state.unloaded())
        state.collapse()


def _fold_one(client: Minio, settings: Settings, date: str, key: str, report: dict,
              hook: Hook) -> dict:
    """One file into the result, in requests that do not depend on the day's size."""
    for round_no in range(1, settings.max_rounds + 1):
        report["rounds"] = round_no
        head, head_etag = get_json(client, settings.bucket, settings.summary_key(date))
        if head is None and head_etag is not None:
            raise StateUnreadable("summary.json is not JSON")
        state = load_state(client, settings, head, only_key=key)
        stored = state.part_for(key).entries.get(key)
        stat = stat_or_none(client, settings.bucket, key)
        listed = None if stat is None else Input(key, (stat.etag or "").strip('"'), stat.size or 0,
                                                 stat.last_modified)
        report["etag"] = listed.etag if listed else ""
        hook("listed", round=round_no, inputs=[listed] if listed else [])
        if (listed is None and stored is None) or \
                (listed is not None and stored is not None and stored["etag"] == listed.etag):
            digest = (head or {}).get("input_digest", agg_state.input_digest([]))
            if head is not None and ensure_text_view(client, settings, digest, date):
                report["text_rewritten"] = True
            report.update(outcome="written" if report["writes"] else "up-to-date",
                          input_digest=digest, files=(head or {}).get("file_count", 0))
            return report
        if listed is None:
            state.remove(key)
        else:
            try:
                entry = read_files(client, settings, [listed.as_json()])[0]
            except InputChanged:
                continue
            state.put(entry)
            report["files_read"] += 1
        _fit(client, settings, state)
        hook("computed", round=round_no, state=state)
        if result_mark(client, settings, date)[0] != head_etag:
            continue    # another writer (one without the mutex) wrote meanwhile: fold again
        hook("before_put", round=round_no, state=state)
        written, _ = write_result(client, settings, date, state,
                                  {"run_id": report["run_id"], "files_read": report["files_read"]})
        report["writes"] += 1
        report.update(outcome="written", input_digest=written["input_digest"],
                      files=written["file_count"], max=written["max"],
                      total_rows=written["total_rows"])
        return report
    report["outcome"] = "unsettled"
    report["message"] = (f"the result kept changing for {settings.max_rounds} rounds; "
                         "the next aggregation of the day will fold this file in")
    return report


def _head_state(client, settings, date) -> tuple[DayState, dict | None, str | None]:
    """The current result's state from its head, parts not loaded yet (empty if absent or
    unreadable), the head and its ETag."""
    head, etag = get_json(client, settings.bucket, settings.summary_key(date))
    try:
        return (DayState.from_head(head) if head else DayState.empty()), head, etag
    except (KeyError, TypeError, ValueError):
        return DayState.empty(), None, etag


def _dirty_parts(client, settings, state: DayState, inputs: list[Input]):
    """The parts whose digest differs from the listing's files of their prefix, loaded, and the
    listed inputs by part. A part with the same digest holds exactly those (key, ETag) pairs, so
    only the others are read: one part for one new file, whatever the day's size."""
    by_part: dict[str, list[Input]] = {prefix: [] for prefix in state.parts}
    for i in inputs:
        by_part[state.part_for(i.key).prefix].append(i)
    dirty = [p for p in state.parts.values() if settings.full or
             p.digest() != input_digest(by_part[p.prefix])]
    load_parts(client, settings, dirty)
    return dirty, by_part


def _names_a_missing_part(client: Minio, settings: Settings, date: str) -> bool:
    head, _ = get_json(client, settings.bucket, settings.summary_key(date))
    return any(stat_or_none(client, settings.bucket, p.get("object") or "") is None
               for p in (head or {}).get("parts") or [])


def _aggregate_listed(client: Minio, settings: Settings, date: str, report: dict,
                      hook: Hook, listed: list[Input] | None = None) -> dict:
    written = None   # the digest of the result this run wrote last (its agg.txt is current)
    broken = False   # the result names a part that is gone: recompute from the files
    written_etag = None   # of the head this run wrote last: its parts are there
    for round_no in range(1, settings.max_rounds + 1):
        report["rounds"] = round_no
        inputs = listed if round_no == 1 and listed is not None else \
            list_inputs(client, settings.bucket, date, settings.output_layout)
        digest = input_digest(inputs)
        hook("listed", round=round_no, inputs=inputs)
        # the current result's digest by a HEAD first: the result itself is read only when it is
        # not already the result of this input set
        head_etag, head_digest = result_mark(client, settings, date)
        if head_digest == digest and not broken:
            if report["writes"] and head_etag != written_etag and not settings.exclusive and \
                    _names_a_missing_part(client, settings, date):
                # two writers without the mutex: the other one's head names a part this run
                # replaced and deleted; the day is recomputed from the files
                broken = True
                report["state_unreadable"] = "a part named by the result is missing"
                continue
            if digest != written and ensure_text_view(client, settings, digest, date):
                report["text_rewritten"] = True
            report.update(outcome="written" if report["writes"] else "up-to-date",
                          input_digest=digest, files=len(inputs))
            return report
        state, head, read_etag = (DayState.empty(), None, None) if head_etag is None else \
            _head_state(client, settings, date)
        if broken:
            state, head, broken = DayState.empty(), None, False
        if head is not None and head.get("input_digest") == digest:
            continue   # replaced between the HEAD and the GET: look again
        try:
            dirty, by_part = _dirty_parts(client, settings, state, inputs)
        except StateUnreadable:
            state, head = DayState.empty(), None
            dirty, by_part = _dirty_parts(client, settings, state, inputs)
        theirs = [e for p in dirty for e in p.entries.values()]
        ours = [i for p in dirty for i in by_part[p.prefix]]
        if head is not None and supersedes(theirs, ours):
            # A newer result exists. Either our listing is already stale (look again), or files
            # the result counted were deleted since (the listing stays the same: recompute).
            report["superseded"] += 1
            if input_digest(list_inputs(client, settings.bucket, date,
                                        settings.output_layout)) != digest:
                continue
        todo, kept = [], {}
        for part in dirty:
            stored = {} if settings.full else part.entries
            for i in by_part[part.prefix]:
                known = stored.get(i.key)
                if known is not None and known["etag"] == i.etag:
                    kept[i.key] = known
                else:
                    todo.append(i.as_json())
        try:
            fresh = {e["key"]: e for e in read_files(client, settings, todo)}
        except InputChanged:
            continue
        for part in dirty:
            state.set_entries(part, {i.key: fresh.get(i.key) or kept[i.key]
                                     for i in by_part[part.prefix]})
        report["files_read"] += len(todo)
        _fit(client, settings, state)
        hook("computed", round=round_no, state=state)
        # someone may have finished meanwhile: a HEAD tells, the result is read only if it changed
        if result_mark(client, settings, date)[0] != read_etag:
            latest, latest_head, _ = _head_state(client, settings, date)
            if latest_head is not None and latest_head.get("input_digest") == digest:
                report["superseded"] += 1
                continue
            if latest_head is not None:
                try:
                    load_parts(client, settings, latest.unloaded())
                except StateUnreadable:
                    latest = None
                if latest is not None and supersedes(list(latest.all_entries().values()), inputs):
                    report["superseded"] += 1
                    continue
        hook("before_put", round=round_no, state=state)
        head, written_etag = write_result(client, settings, date, state,
                                          {"run_id": report["run_id"], "files_read": len(todo)})
        report["writes"] += 1
        written = digest
        report.update(max=head["max"], total_rows=head["total_rows"])
        if settings.exclusive:
            # one writer per date: a file that landed meanwhile has its own run queued behind us
            report.update(outcome="written", input_digest=digest, files=len(inputs))
            return report
    report["outcome"] = "unsettled"
    report["message"] = (f"inputs still changing after {settings.max_rounds} rounds; the "
                         "aggregation triggered by the newest file will finish the day")
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agg.py", description="Aggregate one day of ETL results.")
    parser.add_argument("date", help="YYYYMMDD")
    parser.add_argument("--key", default=None,
                        help="fold only this result file into the day's result, without listing "
                             "the day (the agg Sensor passes the new file's key; needs the mutex)")
    parser.add_argument("--bucket", default=None, help="bucket (default: $ETL_BUCKET or etlproj)")
    parser.add_argument("--settle-seconds", type=float, default=None,
                        help="quiet period before the first listing (default: $AGG_SETTLE_SECONDS "
                             "or 20)")
    parser.add_argument("--max-rounds", type=int, default=None,
                        help="list-compute-write rounds at most (default: $AGG_MAX_ROUNDS or 5)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel file reads (default: $AGG_WORKERS or 16)")
    parser.add_argument("--full", action="store_true", default=None,
                        help="list the day and read every file again instead of reusing the "
                             "current result's per-file numbers for unchanged files")
    args = parser.parse_args(argv)

    def work() -> int:
        try:
            settings = settings_from_env(bucket=args.bucket, settle_seconds=args.settle_seconds,
                                         max_rounds=args.max_rounds, workers=args.workers,
                                         full=args.full)
            report = run(args.date, settings, key=args.key or None)
        except AggError as exc:
            failures.fail("agg", str(exc), retryable=False)
            return failures.EXIT_USAGE
        print(json.dumps(report, ensure_ascii=False, default=str))
        return failures.EXIT_OK

    return failures.run_main("agg", work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
