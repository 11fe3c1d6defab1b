"""code/agg.py's per-day state in parts, the one-file fold (`--key`), the exclusive run, and the lean
GET, against moto's server. PART_LIMIT is made small so that days of tens of files already have
the shape of days of tens of thousands (parts split by hash prefix, one or two digits deep)."""
from __future__ import annotations

import io
import json
from collections import Counter

import pytest

import agg
import agg_state
from helpers.counting_proxy import CountingProxy
from test_agg_program import DATE, put_parquet, settings, summary

PART_LIMIT = 10


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    monkeypatch.setattr(agg_state, "PART_LIMIT", PART_LIMIT)
    # the fold alone; the listing a fold now and then adds (reconcile_due) is tested at the end
    monkeypatch.setenv("AGG_RECONCILE_FILES", "0")


def key_of(n: int) -> str:
    return f"output/{DATE}/{n:04d}.parquet"


def seed(s3, numbers) -> None:
    for n in numbers:
        put_parquet(s3, key_of(n), [(n, f"n{n}", n % 97), (n + 1, f"m{n}", -1)])


def get_json(s3, key: str) -> dict:
    response = s3.client.get_object(s3.bucket, key)
    try:
        return json.loads(response.read())
    finally:
        response.close()
        response.release_conn()


def every_file(s3, head: dict) -> dict[str, dict]:
    """The per-file rows a reader finds: inline, or in the parts the head names."""
    docs = [head] if not head["parts"] else [get_json(s3, p["object"]) for p in head["parts"]]
    return {f["key"]: f for doc in docs for f in doc["files"]}


def expected(numbers) -> tuple[int, dict]:
    """Total rows and the top row of seed(numbers), computed without agg."""
    best = None
    for n in sorted(numbers):
        if best is None or n % 97 > best["score"]:
            best = {"no": n, "name": f"n{n}", "score": n % 97, "file": key_of(n)}
    return 2 * len(numbers), best


def kind_of(path: str) -> str:
    if path.endswith("summary.json"):
        return "summary"
    if path.endswith("agg.txt"):
        return "text"
    if "/parts/" in path:
        return "part"
    return "file" if path.endswith(".parquet") else "bucket"


def requests_of(proxy, work) -> Counter:
    proxy.clear()
    work()
    return Counter((c.method, kind_of(c.path)) for c in proxy.calls)


def assert_complete(s3, numbers) -> dict:
    head = summary(s3)
    files = every_file(s3, head)
    assert sorted(files) == [key_of(n) for n in sorted(numbers)]
    total, best = expected(numbers)
    assert head["total_rows"] == total == sum(f["rows"] for f in files.values())
    assert head["max"] == best and head["file_count"] == len(numbers)
    assert head["input_digest"] == agg.input_digest(
        agg.list_inputs(s3.client, s3.bucket, DATE, "output/{date}/{name}.parquet"))
    return head


@pytest.mark.parametrize("mode", ["fold", "listing"])
def test_one_more_file_costs_the_same_requests_on_a_day_ten_times_bigger(s3, mode):
    """Counted at the server: folding one more file into a day of 30 and of 300 files is the same
    requests of each kind (the head, one part, the file). A listing run also lists the day; at
    these sizes that is one page either way (S3 pages hold 1,000 keys)."""
    with CountingProxy("http://" + s3.env["S3_ENDPOINT"]) as proxy:
        from s3client import client_from_env
        client = client_from_env({**s3.env, "S3_ENDPOINT": proxy.url})
        counts, day = [], []
        for start, size, new in ((0, 30, 9000), (30, 300, 9001)):
            seed(s3, range(start, size))
            day += range(start, size)
            agg.run(DATE, settings(s3, exclusive=True), client=client)
            head = assert_complete(s3, day)
            assert len(head["parts"]) >= 16              # split: the day is in parts
            seed(s3, [new])
            day.append(new)
            key = key_of(new) if mode == "fold" else None
            counts.append(requests_of(proxy, lambda: agg.run(
                DATE, settings(s3, exclusive=True), client=client, key=key)))
            assert_complete(s3, day)
        small, big = counts
        assert small == big, (small, big)
        assert small[("GET", "file")] == 1 and small[("PUT", "part")] == 1
        assert small[("GET", "part")] == 1 and small[("GET", "summary")] == 1
        assert small[("PUT", "summary")] == small[("PUT", "text")] == 1
        assert small[("DELETE", "part")] == 1         # the part it replaced
        assert small[("GET", "bucket")] == (0 if mode == "fold" else 1)


def test_a_day_built_by_folds_equals_the_day_aggregated_at_once(s3):
    seed(s3, range(40))
    for n in range(40):
        report = agg.run(DATE, settings(s3), key=key_of(n))
        assert report["outcome"] == "written" and report["files_read"] == 1
    folded = assert_complete(s3, range(40))
    assert agg.run(DATE, settings(s3))["outcome"] == "up-to-date"   # listing agrees: same digest
    assert agg.run(DATE, settings(s3), key=key_of(3))["outcome"] == "up-to-date"
    folded_files = every_file(s3, folded)
    for obj in s3.client.list_objects(s3.bucket, f"result/{DATE}/", recursive=True):
        s3.client.remove_object(s3.bucket, obj.object_name)
    assert agg.run(DATE, settings(s3))["files_read"] == 40            # from scratch
    again = assert_complete(s3, range(40))
    assert (again["input_digest"], again["max"]) == (folded["input_digest"], folded["max"])
    assert every_file(s3, again) == folded_files
    assert [p["prefix"] for p in again["parts"]] == [p["prefix"] for p in folded["parts"]]


def test_fold_replaces_and_removes_and_moves_the_top_row(s3):
    seed(s3, range(30))
    agg.run(DATE, settings(s3))
    top = summary(s3)["max"]
    assert top["score"] == 29
    put_parquet(s3, key_of(29), [(1, "lower", 2)])          # the top file, replaced
    assert agg.run(DATE, settings(s3), key=key_of(29))["writes"] == 1
    head = summary(s3)
    assert head["max"]["name"] == "n28" and head["total_rows"] == 59
    assert every_file(s3, head)[key_of(29)]["rows"] == 1
    s3.client.remove_object(s3.bucket, key_of(28))          # the new top file, deleted
    assert agg.run(DATE, settings(s3), key=key_of(28))["writes"] == 1
    head = summary(s3)
    assert key_of(28) not in every_file(s3, head)
    assert head["max"]["name"] == "n27" and head["total_rows"] == 57 and head["file_count"] == 29
    assert agg.run(DATE, settings(s3))["outcome"] == "up-to-date"


def test_a_fold_that_another_writer_overtakes_folds_again(s3):
    seed(s3, range(20))
    agg.run(DATE, settings(s3))
    seed(s3, [100, 101])

    def hook(stage, round, **info):
        if stage == "computed" and round == 1:   # a hand run writes between our read and PUT
            agg.run(DATE, settings(s3))

    report = agg.run(DATE, settings(s3), key=key_of(100), hook=hook)
    assert report["rounds"] == 2 and report["outcome"] == "up-to-date"   # the hand run had it
    assert_complete(s3, [*range(20), 100, 101])


def test_exclusive_run_lists_once_and_the_queued_fold_takes_a_late_file(s3):
    """Under the mutex the run does not list again: the file that lands meanwhile is folded in by
    its own run, which the mutex queues behind this one."""
    seed(s3, range(12))
    with CountingProxy("http://" + s3.env["S3_ENDPOINT"]) as proxy:
        from s3client import client_from_env
        client = client_from_env({**s3.env, "S3_ENDPOINT": proxy.url})

        def hook(stage, round, **info):
            if stage == "computed":
                seed(s3, [500])

        calls = requests_of(proxy, lambda: agg.run(DATE, settings(s3, exclusive=True),
                                                   client=client, hook=hook))
    assert calls[("GET", "bucket")] == 1
    assert key_of(500) not in every_file(s3, summary(s3))
    assert agg.run(DATE, settings(s3, exclusive=True), key=key_of(500))["writes"] == 1
    assert_complete(s3, [*range(12), 500])


def test_a_missing_part_is_recomputed_not_stuck(s3):
    seed(s3, range(30))
    agg.run(DATE, settings(s3))
    lost = next(p for p in summary(s3)["parts"] if p["files"])
    s3.client.remove_object(s3.bucket, lost["object"])
    seed(s3, [700])
    # a file of the lost part replaced: the fold needs that part, finds it gone, and the listing
    # run it falls back to recomputes the day
    victim = next(n for n in range(30)
                  if agg_state.key_hash(key_of(n)).startswith(lost["prefix"]))
    put_parquet(s3, key_of(victim), [(victim, f"n{victim}", victim % 97), (victim + 1, "x", -1)])
    report = agg.run(DATE, settings(s3), key=key_of(victim))
    assert report["mode"] == "listing" and "state_unreadable" in report
    assert_complete(s3, [*range(30), 700])


def test_a_day_that_shrinks_below_one_part_is_inline_again(s3):
    seed(s3, range(15))
    agg.run(DATE, settings(s3))
    parts = [p["object"] for p in summary(s3)["parts"]]
    assert parts
    for n in range(5, 15):
        s3.client.remove_object(s3.bucket, key_of(n))
    agg.run(DATE, settings(s3, full=True))
    head = assert_complete(s3, range(5))
    assert head["parts"] == [] and len(head["files"]) == 5
    leftovers = [o.object_name for o in s3.client.list_objects(s3.bucket, f"result/{DATE}/parts/",
                                                               recursive=True)]
    assert leftovers == []                    # the replaced parts were deleted


@pytest.mark.parametrize("lean_get", [True, False], ids=["lean-get", "minio-get"])
def test_both_get_paths_give_the_same_result(s3, lean_get):
    seed(s3, range(25))
    agg.run(DATE, settings(s3, lean_get=lean_get))
    assert_complete(s3, range(25))


def test_lean_get_falls_back_to_the_client_on_an_answer_it_does_not_handle(s3, monkeypatch):
    import agg_fetch

    seed(s3, range(3))
    answers = []
    original = agg_fetch.LeanGetter._read_answer

    def refuse_first(self, sock):
        data = original(self, sock)
        if not answers:
            answers.append("fallback")
            raise agg_fetch._Fallback("as if chunked")
        return data

    monkeypatch.setattr(agg_fetch.LeanGetter, "_read_answer", refuse_first)
    agg.run(DATE, settings(s3))
    assert answers == ["fallback"]
    assert_complete(s3, range(3))


def test_fold_refuses_a_key_of_another_day(s3):
    with pytest.raises(agg.AggError, match="not a result file of"):
        agg.run(DATE, settings(s3), key="output/20990101/x.parquet")


def test_the_settle_periods_quiet_listing_is_the_first_rounds(s3):
    """Under the mutex a run after a quiet period lists the day once, not once to settle and
    once more to aggregate."""
    import time

    seed(s3, range(5))
    time.sleep(2.1)      # the files are older than the settle period (1 s, whole-second stamps)
    with CountingProxy("http://" + s3.env["S3_ENDPOINT"]) as proxy:
        from s3client import client_from_env
        client = client_from_env({**s3.env, "S3_ENDPOINT": proxy.url})
        calls = requests_of(proxy, lambda: agg.run(
            DATE, settings(s3, exclusive=True, settle_seconds=1.0), client=client))
    assert calls[("GET", "bucket")] == 1
    assert_complete(s3, range(5))


def test_a_hand_run_that_finds_its_result_naming_a_deleted_part_recomputes(s3):
    """Two writers without the mutex can leave a head naming a part the other one replaced and
    deleted; the hand run's look after writing finds it and writes the day again."""
    seed(s3, range(30))

    def hook(stage, round, **info):
        if stage == "listed" and round == 2:     # after our write, the other writer's head (the
            other = summary(s3)                  # same input set) names a part that is gone
            other["run_id"] = "the other writer"
            body = json.dumps(other).encode()
            s3.client.put_object(s3.bucket, f"result/{DATE}/summary.json", io.BytesIO(body),
                                 len(body), metadata={"input-digest": other["input_digest"]})
            part = next(p for p in other["parts"] if p["files"])
            s3.client.remove_object(s3.bucket, part["object"])

    report = agg.run(DATE, settings(s3), hook=hook)
    assert report["writes"] == 2 and report["outcome"] == "written"
    assert_complete(s3, range(30))


def test_key_on_the_command_line(s3):
    import os
    import subprocess
    import sys

    from test_agg_program import ROOT

    seed(s3, range(3))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AGG_"))}
    env.update(s3.env, AGG_SETTLE_SECONDS="0")
    cmd = [sys.executable, str(ROOT / "code" / "agg.py"), DATE, "--bucket", s3.bucket, "--key"]
    proc = subprocess.run(cmd + [key_of(1)], env={**env, "AGG_RECONCILE_FILES": "0"}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (report["mode"], report["outcome"], report["files_read"]) == ("fold", "written", 1)
    assert every_file(s3, summary(s3)).keys() == {key_of(1)}
    # by default a fold on a day of up to 10 files lists the day too: the files without a fold are in
    proc = subprocess.run(cmd + [key_of(2)], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["mode"] == "fold+listing"
    assert_complete(s3, range(3))
    # an empty key (a workflow submitted by hand without one): the day is listed
    proc = subprocess.run(cmd + [""], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["mode"] == "listing"
    assert_complete(s3, range(3))
    bad = subprocess.run(cmd + ["output/20990101/x.parquet"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "not a result file of" in bad.stderr


# -- the listing a fold now and then adds: a file whose event was lost is not lost ------------------


def test_reconcile_is_certain_on_a_small_day_and_rare_on_a_big_one():
    assert all(agg.reconcile_due(key_of(n), "e", files=10, every=10) for n in range(50))
    assert not any(agg.reconcile_due(key_of(n), "e", files=10, every=0) for n in range(50))
    # on a day of 1,000 files about 1 fold in 100 lists: the expected listing work per fold stays
    # 10 files' worth; the same file and ETag always decide the same (a retried fold too)
    draws = [agg.reconcile_due(f"output/{DATE}/{n}.parquet", "etag", files=1000, every=10) for n in range(20000)]
    assert 150 <= sum(draws) <= 250
    assert draws == [agg.reconcile_due(f"output/{DATE}/{n}.parquet", "etag", files=1000, every=10)
                     for n in range(20000)]


def test_a_file_whose_event_was_lost_is_found_by_a_later_fold(s3):
    seed(s3, range(6))
    agg.run(DATE, settings(s3))
    seed(s3, [6])                       # its event was lost: no fold of it ever runs
    seed(s3, [7])
    report = agg.run(DATE, settings(s3, exclusive=True, reconcile_files=10), key=key_of(7))
    assert report["mode"] == "fold+listing" and report["outcome"] == "written"
    assert_complete(s3, range(8))       # 6 is in, by the listing after the fold of 7
    # a fold with reconcile off would have left it out
    seed(s3, [8])
    seed(s3, [9])
    agg.run(DATE, settings(s3, exclusive=True), key=key_of(9))
    assert key_of(8) not in every_file(s3, summary(s3))
