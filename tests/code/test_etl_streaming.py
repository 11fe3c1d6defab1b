"""code/etl.py's streamed S3 path against moto, counted at the server (a loopback proxy in front):
one GET for the input, the Parquet uploaded in parts while it is written, the same rows and rejects
as the local conversion, and nothing left behind when the conversion fails half-way."""
from __future__ import annotations

import io
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import csv2parquet
import csv2parquet_parse
import etl
import s3stream
from helpers.counting_proxy import CountingProxy
from s3client import client_from_env

KEY = "input/20230414/big.csv"
MIN_PART = 5 << 20        # S3's smallest part: several parts from a file of a few tens of MB


def big_csv_with_bad_rows(rows: int) -> bytes:
    rng = np.random.default_rng(5)
    score = pa.array(rng.integers(0, 101, rows)).cast(pa.string()).to_pylist()
    for i in rng.choice(rows, rows // 100, replace=False):   # 1% bad scores
        score[i] = "95.5"
    table = pa.table({"no": pa.array(np.arange(1, rows + 1)),
                      # random names: the Parquet stays big enough for several parts
                      "name": pa.array([f"n{v:x}" for v in rng.integers(0, 1 << 60, rows)]),
                      "score": pa.array(score)})
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


def s3_calls(proxy) -> list[str]:
    return [f"{c.method} {c.operation.split(' ', 1)[1]}" for c in proxy.calls]


@pytest.fixture
def counted(s3, monkeypatch):
    """A client whose every request is counted where it arrives."""
    monkeypatch.setattr(etl, "PART_SIZE", MIN_PART)
    with CountingProxy("http://" + s3.env["S3_ENDPOINT"]) as proxy:
        yield proxy, client_from_env({**s3.env, "S3_ENDPOINT": proxy.url})


def test_streamed_run_gives_the_local_result_in_one_get_and_a_multipart_upload(s3, counted,
                                                                                  tmp_path):
    proxy, client = counted
    data = big_csv_with_bad_rows(1_500_000)
    s3.client.put_object(s3.bucket, KEY, io.BytesIO(data), len(data))
    src = tmp_path / "big.csv"
    src.write_bytes(data)
    local = csv2parquet.convert(str(src), str(tmp_path / "local.parquet"),
                                str(tmp_path / "local.rejects.csv"))
    proxy.clear()

    summary = etl.run(s3.bucket, KEY, client=client)

    out = f"/{s3.bucket}/output/20230414/big.parquet"
    rejects = f"/{s3.bucket}/rejects/20230414/big.csv"
    calls = s3_calls(proxy)
    counts = Counter(calls)
    # the input: one GET, no HEAD, no second read
    assert [c for c in calls if KEY in c] == [f"GET /{s3.bucket}/{KEY}"]
    # the Parquet: one multipart upload of several parts, completed after the rejects went up
    parts = counts[f"PUT {out}?partNumber&uploadId"]
    assert counts[f"POST {out}?uploads"] == 1 and parts >= 2
    assert counts[f"POST {out}?uploadId"] == 1 and counts[f"PUT {out}"] == 0
    assert calls.index(f"PUT {rejects}") < calls.index(f"POST {out}?uploadId")
    # the same rows and rejects as the local conversion
    for k in ("lines", "rows", "rejected", "blank_lines", "header", "source_bytes"):
        assert summary[k] == local[k], k
    got = pq.read_table(pa.BufferReader(s3.client.get_object(s3.bucket, summary["output"]).read()))
    want = pq.read_table(tmp_path / "local.parquet")
    assert got.equals(want)
    assert got.schema.metadata[b"source"] == f"s3://{s3.bucket}/{KEY}".encode()
    assert s3.client.get_object(s3.bucket, summary["rejects"]).read() == \
        (tmp_path / "local.rejects.csv").read_bytes()
    assert summary["rejected"] == 15_000


def test_parts_reach_the_server_before_the_input_has_been_read_to_its_end(s3, counted, monkeypatch):
    """Download, conversion and upload overlap: the input's last MiB is held back until the server
    has received a part of the Parquet. A program that read its whole input before uploading (or
    uploaded only at the end) would never get it, and the run would stop here."""
    proxy, client = counted
    data = big_csv_with_bad_rows(1_500_000)
    s3.client.put_object(s3.bucket, KEY, io.BytesIO(data), len(data))
    out = f"/{s3.bucket}/output/20230414/big.parquet"
    parts_seen_at_the_end = []

    def parts_received() -> int:
        return Counter(s3_calls(proxy))[f"PUT {out}?partNumber&uploadId"]

    class TailHeldBack:
        def __init__(self, response):
            self._response, self._left = response, int(response.headers["Content-Length"])

        def read(self, size):
            if self._left <= 1 << 20 and not parts_seen_at_the_end:
                deadline = time.monotonic() + 30
                while not parts_received() and time.monotonic() < deadline:
                    time.sleep(0.01)
                parts_seen_at_the_end.append(parts_received())
            chunk = self._response.read(min(size, max(self._left - (1 << 20), 1))
                                        if self._left > 1 << 20 else size)
            self._left -= len(chunk)
            return chunk

    prefetch = s3stream.Prefetch
    monkeypatch.setattr(s3stream, "Prefetch", lambda response: prefetch(TailHeldBack(response)))
    proxy.clear()
    summary = etl.run(s3.bucket, KEY, client=client)
    assert parts_seen_at_the_end and parts_seen_at_the_end[0] >= 1   # before the last MiB was read
    assert summary["rows"] + summary["rejected"] == 1_500_000
    assert pq.read_metadata(io.BytesIO(s3.client.get_object(s3.bucket, summary["output"]).read())
                            ).num_rows == summary["rows"]


def test_a_small_output_is_one_put(s3, counted):
    proxy, client = counted
    s3.client.put_object(s3.bucket, "input/20230414/s.csv", io.BytesIO(b"1,a,1\n"), 6)
    proxy.clear()
    etl.run(s3.bucket, "input/20230414/s.csv", client=client)
    out = f"/{s3.bucket}/output/20230414/s.parquet"
    counts = Counter(s3_calls(proxy))
    assert counts[f"PUT {out}"] == 1 and counts[f"POST {out}?uploads"] == 0


def test_a_failure_half_way_aborts_the_upload_and_leaves_no_output(s3, counted, monkeypatch):
    proxy, client = counted
    data = big_csv_with_bad_rows(1_500_000)
    s3.client.put_object(s3.bucket, KEY, io.BytesIO(data), len(data))
    parse_piece, seen = csv2parquet_parse.parse_piece, []

    def failing_late(piece, *args):
        seen.append(1)
        if len(seen) > 8:            # parts have gone up by then
            raise pa.ArrowInvalid("broken on purpose")
        return parse_piece(piece, *args)

    monkeypatch.setattr(csv2parquet_parse, "parse_piece", failing_late)
    proxy.clear()
    with pytest.raises(csv2parquet.ConvertError, match="broken on purpose"):
        etl.run(s3.bucket, KEY, client=client)
    out = f"/{s3.bucket}/output/20230414/big.parquet"
    counts = Counter(s3_calls(proxy))
    assert counts[f"PUT {out}?partNumber&uploadId"] >= 1
    assert counts[f"DELETE {out}?uploadId"] == 1 and counts[f"POST {out}?uploadId"] == 0
    assert [o.object_name for o in s3.client.list_objects(s3.bucket, "output/", recursive=True)] == []
    assert list(s3.client.list_objects(s3.bucket, "rejects/", recursive=True)) == []
