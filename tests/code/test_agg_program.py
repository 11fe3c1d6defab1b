"""code/agg.py against a real S3 endpoint (moto's server): results, skips, and the concurrency cases,
driven deterministically through agg.run's hook (called at "listed", "computed", "before_put")."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import pyarrow.parquet as pq

import agg
import agg_files
import etl
from agg_result import render_text

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "data"
DATE = "20230414"
WAIT = 30   # seconds; every wait in these tests is bounded


def put_parquet(s3, key: str, rows: list[tuple[int, str, int]], **extra_columns) -> None:
    table = pa.table({"no": [r[0] for r in rows], "name": [r[1] for r in rows],
                      "score": [r[2] for r in rows], **extra_columns})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=max(1, len(rows) // 3 or 1))
    data = sink.getvalue()
    s3.client.put_object(s3.bucket, key, io.BytesIO(data), len(data))


def tutorial_day(s3) -> None:
    for n in (1, 2, 3):
        data = (DEMO / DATE / f"{n}.csv").read_bytes()
        s3.client.put_object(s3.bucket, f"input/{DATE}/{n}.csv", io.BytesIO(data), len(data))
        etl.run(s3.bucket, f"input/{DATE}/{n}.csv")


def summary(s3) -> dict:
    response = s3.client.get_object(s3.bucket, f"result/{DATE}/summary.json")
    try:
        return json.loads(response.read())
    finally:
        response.close()
        response.release_conn()


def settings(s3, **kw) -> agg.Settings:
    return agg.settings_from_env(**{"bucket": s3.bucket, "settle_seconds": 0.0, **kw})


def test_tutorial_day(s3):
    tutorial_day(s3)
    report = agg.run(DATE, settings(s3))
    assert report["outcome"] == "written" and report["writes"] == 1
    result = summary(s3)
    assert result["max"] == {"no": 9, "name": "iii", "score": 100,
                             "file": f"output/{DATE}/3.parquet"}
    assert result["total_rows"] == 9
    assert [(f["key"], f["rows"]) for f in result["files"]] == \
        [(f"output/{DATE}/{n}.parquet", 3) for n in (1, 2, 3)]
    assert result["files"][2]["best"] == {"no": 9, "name": "iii", "score": 100}
    assert [i["key"] for i in result["inputs"]] == [f"output/{DATE}/{n}.parquet" for n in (1, 2, 3)]
    assert result["input_digest"] == agg.input_digest(result["inputs"])
    text = s3.client.get_object(s3.bucket, f"result/{DATE}/agg.txt").read().decode()
    assert "name     iii" in text and "score    100" in text and text == render_text(result)


def test_second_run_skips_and_changes_nothing(s3):
    tutorial_day(s3)
    agg.run(DATE, settings(s3))
    before = s3.client.stat_object(s3.bucket, f"result/{DATE}/summary.json").etag
    report = agg.run(DATE, settings(s3))
    assert (report["outcome"], report["writes"], report["rounds"]) == ("up-to-date", 0, 1)
    assert s3.client.stat_object(s3.bucket, f"result/{DATE}/summary.json").etag == before


def test_missing_text_view_is_restored_on_skip(s3):
    put_parquet(s3, f"output/{DATE}/1.parquet", [(1, "a", 5)])
    agg.run(DATE, settings(s3))
    s3.client.remove_object(s3.bucket, f"result/{DATE}/agg.txt")
    report = agg.run(DATE, settings(s3))
    assert report["outcome"] == "up-to-date" and report["text_rewritten"] is True
    assert "name     a" in s3.client.get_object(s3.bucket, f"result/{DATE}/agg.txt").read().decode()


def test_reaggregation_reads_only_new_or_replaced_files(s3):
    tutorial_day(s3)
    assert agg.run(DATE, settings(s3))["files_read"] == 3
    put_parquet(s3, f"output/{DATE}/4.parquet", [(10, "jjj", 95)])
    report = agg.run(DATE, settings(s3))
    assert report["files_read"] == 1 and report["writes"] == 1
    assert summary(s3)["max"]["name"] == "iii" and summary(s3)["total_rows"] == 10
    # a replaced file has a new ETag: it is read again, its old numbers are not reused
    put_parquet(s3, f"output/{DATE}/3.parquet", [(7, "ggg", 50)])
    report = agg.run(DATE, settings(s3))
    assert report["files_read"] == 1
    result = summary(s3)
    assert result["max"]["name"] == "jjj" and result["total_rows"] == 8
    # --full ignores the reusable numbers
    put_parquet(s3, f"output/{DATE}/5.parquet", [(11, "kkk", 1)])
    assert agg.run(DATE, settings(s3, full=True))["files_read"] == 5


def test_requests_per_aggregation_counted_at_the_server(s3):
    """From scratch one GET per file and no read of a result that is not there; nothing new: a LIST
    and two HEADs, and summary.json (which grows with the day) is not downloaded; one more file:
    summary.json once, the new file once."""
    from collections import Counter

    from helpers.counting_proxy import CountingProxy
    from s3client import client_from_env

    for n in range(20):
        put_parquet(s3, f"output/{DATE}/{n:02d}.parquet", [(n, f"n{n}", n)])
    with CountingProxy("http://" + s3.env["S3_ENDPOINT"]) as proxy:
        client = client_from_env({**s3.env, "S3_ENDPOINT": proxy.url})

        def requests_of(run) -> Counter:
            del proxy.calls[:]
            run()
            return Counter((c.method, "summary" if c.path.endswith("summary.json") else
                            "text" if c.path.endswith("agg.txt") else
                            "file" if c.path.endswith(".parquet") else "bucket")
                           for c in proxy.calls)

        def aggregate():
            agg.run(DATE, settings(s3), client=client)

        scratch = requests_of(aggregate)
        assert scratch[("GET", "file")] == 20 and scratch[("GET", "summary")] == 0
        assert scratch[("PUT", "summary")] == scratch[("PUT", "text")] == 1
        assert scratch[("GET", "bucket")] == 2          # the listing, and the one after writing
        assert requests_of(aggregate) == Counter({("GET", "bucket"): 1, ("HEAD", "summary"): 1,
                                                  ("HEAD", "text"): 1})
        put_parquet(s3, f"output/{DATE}/99.parquet", [(99, "new", 1000)])
        more = requests_of(aggregate)
        assert more[("GET", "file")] == 1 and more[("GET", "summary")] == 1
        assert summary(s3)["max"]["name"] == "new" and summary(s3)["total_rows"] == 21


def test_a_file_arriving_during_aggregation_is_in_the_final_result(s3):
    tutorial_day(s3)

    def hook(stage, round, **info):
        if stage == "computed" and round == 1:   # between listing and writing
            put_parquet(s3, f"output/{DATE}/4.parquet", [(10, "jjj", 101)])

    report = agg.run(DATE, settings(s3), hook=hook)
    assert report["outcome"] == "written" and report["writes"] == 2 and report["rounds"] == 3
    result = summary(s3)
    assert len(result["inputs"]) == 4 and result["total_rows"] == 10
    assert result["max"]["name"] == "jjj"


def _run_in_thread(target):
    box = {}

    def body():
        try:
            box["report"] = target()
        except BaseException as exc:   # surfaced by the test
            box["error"] = exc

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, box


def test_two_concurrent_aggregations_leave_only_the_newest(s3):
    put_parquet(s3, f"output/{DATE}/1.parquet", [(1, "aaa", 70)])
    put_parquet(s3, f"output/{DATE}/2.parquet", [(4, "ddd", 80)])
    a_computed, a_resume = threading.Event(), threading.Event()

    def a_hook(stage, round, **info):
        if stage == "computed" and round == 1:
            a_computed.set()
            assert a_resume.wait(WAIT)

    thread, a = _run_in_thread(lambda: agg.run(DATE, settings(s3), hook=a_hook))
    assert a_computed.wait(WAIT)            # A has its (older) summary of files 1 and 2
    put_parquet(s3, f"output/{DATE}/3.parquet", [(9, "iii", 100)])
    b = agg.run(DATE, settings(s3))        # B sees 1, 2, 3 and writes first
    assert b["writes"] == 1
    a_resume.set()
    thread.join(WAIT)
    assert not thread.is_alive() and "error" not in a
    a = a["report"]
    assert a["writes"] == 0 and a["superseded"] >= 1 and a["outcome"] == "up-to-date"
    result = summary(s3)
    assert result["run_id"] == b["run_id"]
    assert [i["key"] for i in result["inputs"]] == [f"output/{DATE}/{n}.parquet" for n in (1, 2, 3)]
    assert result["max"]["name"] == "iii"


def test_a_stale_write_in_the_last_instant_is_repaired_by_its_writer(s3):
    # Without the mutex (e.g. run by hand) A can overwrite B between its check and its PUT;
    # A then re-lists, sees the newer input set and writes again.
    put_parquet(s3, f"output/{DATE}/1.parquet", [(1, "aaa", 70)])
    a_ready, a_resume = threading.Event(), threading.Event()
    stale_written = []

    def a_hook(stage, round, **info):
        if stage == "before_put" and round == 1:
            a_ready.set()
            assert a_resume.wait(WAIT)
        if stage == "listed" and round == 2:
            stale_written.append(len(summary(s3)["inputs"]))

    thread, a = _run_in_thread(lambda: agg.run(DATE, settings(s3), hook=a_hook))
    assert a_ready.wait(WAIT)
    put_parquet(s3, f"output/{DATE}/2.parquet", [(2, "bbb", 99)])
    agg.run(DATE, settings(s3))
    a_resume.set()
    thread.join(WAIT)
    assert "error" not in a and a["report"]["writes"] == 2
    assert stale_written == [1]            # the stale result existed for a moment ...
    result = summary(s3)
    assert len(result["inputs"]) == 2      # ... and the final one is complete
    assert result["max"]["name"] == "bbb"


def test_newer_result_is_never_replaced_by_a_smaller_input_set(s3):
    put_parquet(s3, f"output/{DATE}/1.parquet", [(1, "aaa", 70)])
    put_parquet(s3, f"output/{DATE}/2.parquet", [(2, "bbb", 80)])
    agg.run(DATE, settings(s3))
    newer = summary(s3)
    older_listing = agg.list_inputs(s3.client, s3.bucket, DATE, etl.DEFAULT_OUTPUT_LAYOUT)[:1]
    assert agg.supersedes(newer["inputs"], older_listing)
    assert not agg.supersedes(newer["inputs"], agg.list_inputs(s3.client, s3.bucket, DATE,
                                                     etl.DEFAULT_OUTPUT_LAYOUT))
    # a replaced file: same keys, a later version in ours -> ours is newer
    replaced = [agg.Input(i.key, "other", i.size, i.last_modified + timedelta(seconds=5))
                for i in older_listing]
    assert not agg.supersedes(newer["inputs"], replaced)


def test_deleted_input_is_recomputed_not_stuck(s3):
    for n in (1, 2, 3):
        put_parquet(s3, f"output/{DATE}/{n}.parquet", [(n, f"n{n}", n * 10)])
    agg.run(DATE, settings(s3))
    s3.client.remove_object(s3.bucket, f"output/{DATE}/3.parquet")
    report = agg.run(DATE, settings(s3))
    assert report["writes"] == 1 and report["outcome"] == "written"
    assert summary(s3)["max"]["name"] == "n2"


def test_unreadable_file_is_recorded_and_the_rest_aggregated(s3):
    put_parquet(s3, f"output/{DATE}/1.parquet", [(1, "aaa", 70), (2, "bbb", 75)])
    s3.client.put_object(s3.bucket, f"output/{DATE}/junk.parquet", io.BytesIO(b"not parquet"), 11)
    agg.run(DATE, settings(s3))
    result = summary(s3)
    assert result["total_rows"] == 2 and result["max"]["name"] == "bbb"
    assert [u["key"] for u in result["unreadable"]] == [f"output/{DATE}/junk.parquet"]
    assert len(result["inputs"]) == 2   # still part of the input set: no endless recompute
    assert agg.run(DATE, settings(s3))["outcome"] == "up-to-date"


def test_ties_go_to_the_first_file_and_row(s3):
    put_parquet(s3, f"output/{DATE}/b.parquet", [(5, "late", 100)])
    put_parquet(s3, f"output/{DATE}/a.parquet", [(1, "x", 3), (2, "first", 100), (3, "second", 100)])
    agg.run(DATE, settings(s3))
    assert summary(s3)["max"] == {"no": 2, "name": "first", "score": 100,
                                  "file": f"output/{DATE}/a.parquet"}


@pytest.mark.parametrize("lean_get", [True, False], ids=["lean-get", "minio-get"])
def test_big_file_is_read_by_ranges_and_only_needed_columns(s3, monkeypatch, lean_get):
    rows = [(i, f"name{i}", i % 1000) for i in range(30_000)]
    payload = pa.array([os.urandom(200) for _ in rows], pa.binary())   # incompressible
    put_parquet(s3, f"output/{DATE}/big.parquet", rows, payload=payload)
    size = s3.client.stat_object(s3.bucket, f"output/{DATE}/big.parquet").size
    fetched = []
    original = agg._reader

    def counting_reader(client, settings):
        get = original(client, settings)

        def counted(key, etag, offset, length):
            data = get(key, etag, offset, length)
            fetched.append(len(data))
            return data
        return counted

    monkeypatch.setattr(agg, "_reader", counting_reader)
    monkeypatch.setattr(agg_files, "WHOLE_OBJECT_BYTES", 0)   # force the range reader
    agg.run(DATE, settings(s3, lean_get=lean_get), client=s3.client)
    result = summary(s3)
    assert result["total_rows"] == 30_000
    assert result["max"] == {"no": 999, "name": "name999", "score": 999,
                             "file": f"output/{DATE}/big.parquet"}
    assert len(fetched) > 1 and sum(fetched) < size / 3   # footer + name/score/no chunks only


def test_replaced_during_read_restarts_the_round(s3, monkeypatch):
    put_parquet(s3, f"output/{DATE}/1.parquet", [(1, "old", 1)])
    swapped = []

    def hook(stage, round, **info):
        if stage == "listed" and round == 1:
            put_parquet(s3, f"output/{DATE}/1.parquet", [(1, "new", 2)])   # new ETag
            swapped.append(True)

    report = agg.run(DATE, settings(s3), hook=hook)
    assert swapped and report["writes"] == 1 and report["rounds"] >= 2
    assert summary(s3)["max"]["name"] == "new"


def test_settle_waits_for_a_quiet_period(s3):
    put_parquet(s3, f"output/{DATE}/1.parquet", [(1, "a", 1)])
    newest = s3.client.stat_object(s3.bucket, f"output/{DATE}/1.parquet").last_modified
    clock = {"now": newest + timedelta(seconds=5)}
    slept = []

    def fake_sleep(seconds):
        slept.append(seconds)
        clock["now"] += timedelta(seconds=seconds)

    s = settings(s3, settle_seconds=20.0)
    assert agg.settle(s3.client, s, DATE, sleep=fake_sleep, now=lambda: clock["now"]) == 15
    assert slept == [15]
    slept.clear()   # already quiet: no wait at all
    assert agg.settle(s3.client, s, DATE, sleep=fake_sleep, now=lambda: clock["now"]) == 0
    # uploads that never stop: the wait is bounded by 3x the settle time
    busy = lambda: newest   # noqa: E731  (the newest file always looks brand new)
    assert agg.settle(s3.client, s, DATE, sleep=lambda _: None, now=busy) == 60


def test_runs_as_a_program(s3):
    put_parquet(s3, f"output/{DATE}/1.parquet", [(1, "aaa", 70), (2, "bbb", 80)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AGG_"))}
    env.update(s3.env, AGG_SETTLE_SECONDS="0")
    cmd = [sys.executable, str(ROOT / "code" / "agg.py"), DATE, "--bucket", s3.bucket]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["outcome"] == "written" and report["max"]["name"] == "bbb"
    bad = subprocess.run(cmd[:2] + ["2023-04-14", "--bucket", s3.bucket], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "DATE must be YYYYMMDD" in bad.stderr
    assert s3.env["S3_SECRET_KEY"] not in proc.stdout + proc.stderr + bad.stderr


def test_the_day_includes_outputs_in_subfolders(s3):
    # etl.py keeps the input's folders: input/teamA/x.csv and input/teamB/x.csv of one day
    for team, rows in (("teamA", b"1,aaa,10\n2,bbb,95\n"), ("teamB", b"3,ccc,99\n")):
        s3.client.put_object(s3.bucket, f"input/{team}/{DATE}/x.csv", io.BytesIO(rows), len(rows))
        assert etl.run(s3.bucket, f"input/{team}/{DATE}/x.csv")["output"] == \
            f"output/{DATE}/{team}/x.parquet"
    put_parquet(s3, f"output/{DATE}/top.parquet", [(4, "ddd", 50)])
    report = agg.run(DATE, settings(s3))
    assert report["outcome"] == "written" and report["files"] == 3
    result = summary(s3)
    assert [f["key"] for f in result["files"]] == [
        f"output/{DATE}/teamA/x.parquet", f"output/{DATE}/teamB/x.parquet",
        f"output/{DATE}/top.parquet"]
    assert result["total_rows"] == 4
    assert result["max"] == {"no": 3, "name": "ccc", "score": 99,
                             "file": f"output/{DATE}/teamB/x.parquet"}


def test_unreachable_s3_is_one_line_and_the_retry_code(s3):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AGG_"))}
    env.update(s3.env, AGG_SETTLE_SECONDS="0", S3_ENDPOINT=f"127.0.0.1:{port}")
    proc = subprocess.run([sys.executable, str(ROOT / "code" / "agg.py"), DATE, "--bucket",
                           s3.bucket], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 75
    assert proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("agg: error: S3 unreachable: ")
    assert proc.stderr.endswith("(retry may help)\n")
