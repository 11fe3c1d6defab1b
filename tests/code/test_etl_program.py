"""code/etl.py against a real S3 endpoint (moto's server): run as a function and as `python code/etl.py`."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etl
import s3client

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "data"


def put(s3, key: str, data: bytes) -> None:
    s3.client.put_object(s3.bucket, key, io.BytesIO(data), len(data))


def read_parquet(s3, key: str) -> pa.Table:
    response = s3.client.get_object(s3.bucket, key)
    try:
        return pq.read_table(pa.BufferReader(response.read()))
    finally:
        response.close()
        response.release_conn()


def read_text(s3, key: str) -> str:
    response = s3.client.get_object(s3.bucket, key)
    try:
        return response.read().decode("utf-8")
    finally:
        response.close()
        response.release_conn()


def keys(s3, prefix: str = "") -> list[str]:
    return sorted(o.object_name for o in s3.client.list_objects(s3.bucket, prefix=prefix,
                                                                 recursive=True))


def test_tutorial_test_csv_goes_to_the_upload_day(s3):
    put(s3, "input/test.csv", (DEMO / "test.csv").read_bytes())
    uploaded = s3.client.stat_object(s3.bucket, "input/test.csv").last_modified
    day = uploaded.astimezone(timezone.utc).strftime("%Y%m%d")
    summary = etl.run(s3.bucket, "input/test.csv")
    assert summary["output"] == f"output/{day}/test.parquet"
    assert (summary["rows"], summary["rejected"], summary["rejects"]) == (3, 0, None)
    table = read_parquet(s3, summary["output"])
    assert table.to_pydict() == {"no": [1, 2, 3], "name": ["aaa", "bbb", "ccc"],
                                 "score": [100, 80, 90]}
    assert table.schema.metadata[b"source"] == f"s3://{s3.bucket}/input/test.csv".encode()
    assert keys(s3, "rejects/") == []


def test_the_three_dated_files(s3):
    for n in (1, 2, 3):
        put(s3, f"input/20230414/{n}.csv", (DEMO / "20230414" / f"{n}.csv").read_bytes())
        summary = etl.run(s3.bucket, f"input/20230414/{n}.csv")
        assert (summary["date"], summary["name"]) == ("20230414", str(n))
    assert keys(s3, "output/") == [f"output/20230414/{n}.parquet" for n in (1, 2, 3)]
    assert read_parquet(s3, "output/20230414/3.parquet").to_pydict() == {
        "no": [7, 8, 9], "name": ["ggg", "hhh", "iii"], "score": [50, 90, 100]}


@pytest.mark.parametrize("key,out", [
    ("input/20230414/class 3+4 점수.csv", "output/20230414/class 3+4 점수.parquet"),
    ("input/20230414/a%20b.csv", "output/20230414/a%20b.parquet"),   # raw: never decoded
    ("input/team a/20230415/x+y.csv", "output/20230415/team a/x+y.parquet"),
])
def test_raw_keys_are_kept_as_given(s3, key, out):
    put(s3, key, b"1,aaa,1\n")
    summary = etl.run(s3.bucket, key)
    assert summary["output"] == out
    assert keys(s3, "output/") == [out]


def test_rejects_object_has_line_numbers_and_is_cleared_on_a_good_rerun(s3):
    put(s3, "input/20230414/bad.csv", b"no,name,score\n1,aaa,100\n2,bbb\n3,ccc,x\n4,ddd,40\n")
    summary = etl.run(s3.bucket, "input/20230414/bad.csv")
    assert (summary["rows"], summary["rejected"], summary["header"]) == (2, 2, True)
    assert summary["rejects"] == "rejects/20230414/bad.csv"
    lines = read_text(s3, "rejects/20230414/bad.csv").splitlines()
    assert lines == ["line,reason,text", '3,"expected 3 fields, got 2","2,bbb"',
                     "4,score is not an integer: 'x',\"3,ccc,x\""]
    # the user fixes the file and uploads it again: no stale rejects remain
    put(s3, "input/20230414/bad.csv", b"1,aaa,100\n2,bbb,20\n")
    summary = etl.run(s3.bucket, "input/20230414/bad.csv")
    assert (summary["rows"], summary["rejects"]) == (2, None)
    assert keys(s3, "rejects/") == []


def test_empty_file_gives_an_empty_parquet(s3):
    put(s3, "input/20230414/empty.csv", b"")
    summary = etl.run(s3.bucket, "input/20230414/empty.csv")
    assert summary["empty"] is True and summary["rows"] == 0
    assert "0 rows" in summary["message"]
    table = read_parquet(s3, "output/20230414/empty.parquet")
    assert table.num_rows == 0 and table.column_names == ["no", "name", "score"]


def test_bom_crlf_and_non_utf8_through_the_program(s3):
    data = b"\xef\xbb\xbfno,name,score\r\n1,aaa,100\r\n2,b\xffb,80\r\n"
    put(s3, "input/20230414/win.csv", data)
    summary = etl.run(s3.bucket, "input/20230414/win.csv")
    assert (summary["rows"], summary["rejected"], summary["header"]) == (1, 1, True)
    assert read_text(s3, "rejects/20230414/win.csv").splitlines()[1] == \
        '3,not valid UTF-8,"2,b\\xffb,80"'


def test_output_layout_is_configurable(s3, monkeypatch):
    monkeypatch.setenv("OUTPUT_LAYOUT", "parquet/day={date}/{name}.parquet")
    put(s3, "input/20230414/1.csv", b"1,aaa,1\n")
    assert etl.run(s3.bucket, "input/20230414/1.csv")["output"] == "parquet/day=20230414/1.parquet"
    monkeypatch.setenv("OUTPUT_LAYOUT", "output/{day}/{name}.parquet")
    with pytest.raises(etl.EtlError, match="OUTPUT_LAYOUT must use"):
        etl.run(s3.bucket, "input/20230414/1.csv")


def test_date_rule():
    day = datetime(2023, 4, 14, 23, 30, tzinfo=timezone.utc)
    assert etl.date_and_name("input/20230414/1.csv", day) == ("20230414", "1")
    assert etl.date_and_name("input/test.csv", day) == ("20230414", "test")
    assert etl.date_and_name("test.csv", day) == ("20230414", "test")
    # not a real date: the upload day is used, and the folder stays part of the name
    assert etl.date_and_name("input/20231399/a.csv", day) == ("20230414", "20231399/a")
    # the input's folders below input/ are kept; a date folder holding the file gives the date
    assert etl.date_and_name("input/teamA/x.csv", day) == ("20230414", "teamA/x")
    assert etl.date_and_name("input/teamA/20230101/x.csv", day) == ("20230101", "teamA/x")
    assert etl.date_and_name("input/20230101/teamA/x.csv", day) == ("20230414", "20230101/teamA/x")
    # FTP paths: below the root
    assert etl.date_and_name("/in/2024/01/x.csv", day, prefix="") == ("20230414", "in/2024/01/x")
    # only a final lower-case .csv is dropped, so no two names share a stem
    assert etl.date_and_name("input/X.CSV", day) == ("20230414", "X.CSV")
    assert etl.date_and_name("input/X.CSV.csv", day) == ("20230414", "X.CSV.csv")
    assert etl.date_and_name("input/x.csv.csv", day) == ("20230414", "x.csv.csv")
    with pytest.raises(etl.EtlError, match="no file name"):
        etl.date_and_name("input/20230414/.csv", day)


def _subprocess_env(s3) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "OUTPUT_", "REJECTS_"))}
    env.update(s3.env)
    return env


def test_runs_as_a_program(s3):
    put(s3, "input/20230414/2.csv", (DEMO / "20230414" / "2.csv").read_bytes())
    proc = subprocess.run([sys.executable, str(ROOT / "code" / "etl.py"), s3.bucket,
                           "input/20230414/2.csv"], env=_subprocess_env(s3), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["output"] == "output/20230414/2.parquet" and summary["rows"] == 3
    assert read_parquet(s3, "output/20230414/2.parquet").column("name").to_pylist() == \
        ["ddd", "eee", "fff"]


def test_program_errors_are_one_line_without_secrets(s3):
    env = _subprocess_env(s3)
    proc = subprocess.run([sys.executable, str(ROOT / "code" / "etl.py"), s3.bucket,
                           "input/missing.csv"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"etl: error: cannot download s3://{s3.bucket}/input/missing.csv:"
                                   " NoSuchKey (retrying will not help)")
    for secret in (s3.env["S3_SECRET_KEY"], s3.env["S3_ACCESS_KEY"]):
        assert secret not in proc.stderr + proc.stdout
    proc = subprocess.run([sys.executable, str(ROOT / "code" / "etl.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_s3_settings_from_env():
    s = s3client.settings_from_env({"S3_ENDPOINT": "minio:9000", "S3_ACCESS_KEY": "a",
                                    "S3_SECRET_KEY": "b", "S3_SECURE": "false"})
    assert (s["endpoint"], s["secure"], s["region"]) == ("minio:9000", False, None)
    s = s3client.settings_from_env({"S3_ENDPOINT": "https://s3.example:9443", "S3_ACCESS_KEY": "a",
                                    "S3_SECRET_KEY": "b", "S3_REGION": "eu-west-1"})
    assert (s["endpoint"], s["secure"], s["region"]) == ("s3.example:9443", True, "eu-west-1")
    aws = s3client.settings_from_env({})
    assert aws["endpoint"] == "s3.amazonaws.com" and "credentials" in aws
    for bad, message in [({"S3_ENDPOINT": "minio:9000"},
                          "S3_ACCESS_KEY and S3_SECRET_KEY are required"),
                         ({"S3_ACCESS_KEY": "only-one"}, "both"),
                         ({"S3_SECURE": "maybe"}, "S3_SECURE"),
                         ({"S3_ENDPOINT": "minio:9000/path"}, "host:port")]:
        with pytest.raises(s3client.S3ConfigError, match=message) as err:
            s3client.settings_from_env(bad)
        assert "only-one" not in str(err.value)


# --- outputs never collide -------------------------------------------------------------------------


def test_same_file_name_in_two_folders_gives_two_outputs(s3):
    put(s3, "input/teamA/x.csv", b"1,aaa,10\n2,bbb\n")
    put(s3, "input/teamB/x.csv", b"3,ccc,30\n")
    a = etl.run(s3.bucket, "input/teamA/x.csv")
    b = etl.run(s3.bucket, "input/teamB/x.csv")
    day = a["date"]
    assert (a["output"], b["output"]) == (f"output/{day}/teamA/x.parquet",
                                          f"output/{day}/teamB/x.parquet")
    assert keys(s3, "output/") == [f"output/{day}/teamA/x.parquet", f"output/{day}/teamB/x.parquet"]
    assert read_parquet(s3, a["output"]).to_pydict() == {"no": [1], "name": ["aaa"], "score": [10]}
    assert read_parquet(s3, b["output"]).to_pydict() == {"no": [3], "name": ["ccc"], "score": [30]}
    assert keys(s3, "rejects/") == [f"rejects/{day}/teamA/x.csv"]


def test_an_output_made_from_another_input_is_never_replaced(s3):
    # input/P/x.csv, uploaded today, and input/P/<today>/x.csv both name output/<today>/P/x.parquet
    put(s3, "input/P/x.csv", b"1,undated,1\n")
    day = s3.client.stat_object(s3.bucket, "input/P/x.csv").last_modified.strftime("%Y%m%d")
    put(s3, f"input/P/{day}/x.csv", b"2,dated,2\n")
    first = etl.run(s3.bucket, f"input/P/{day}/x.csv")
    assert first["output"] == f"output/{day}/P/x.parquet"
    proc = subprocess.run([sys.executable, str(ROOT / "code" / "etl.py"), s3.bucket,
                           "input/P/x.csv"], env=_subprocess_env(s3), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert f"holds the rows of 'input/P/{day}/x.csv'" in proc.stderr
    assert "'input/P/x.csv' maps to the same output" in proc.stderr
    # nothing was replaced: the first file's rows are still there
    assert read_parquet(s3, first["output"]).to_pydict() == {"no": [2], "name": ["dated"],
                                                              "score": [2]}
    # the same input uploaded again replaces its own output
    put(s3, f"input/P/{day}/x.csv", b"3,again,3\n")
    assert etl.run(s3.bucket, f"input/P/{day}/x.csv")["rows"] == 1
    assert read_parquet(s3, first["output"]).column("name").to_pylist() == ["again"]


def test_summary_accounts_for_every_line(s3):
    put(s3, "input/20230414/mix.csv", b'no,name,score\n1,"Kim, Y",50\n,,\n\n2,"open,1\n3,c,3')
    summary = etl.run(s3.bucket, "input/20230414/mix.csv")
    assert (summary["lines"], summary["rows"], summary["rejected"], summary["blank_lines"],
            summary["header"]) == (6, 2, 2, 1, True)
    assert read_parquet(s3, summary["output"]).column("name").to_pylist() == ["Kim, Y", "c"]
    assert [line.split(",")[0] for line in
            read_text(s3, summary["rejects"]).splitlines()[1:]] == ["3", "5"]


# --- errors a workflow can act on --------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_program(s3, *args, **env_overrides) -> subprocess.CompletedProcess:
    env = dict(_subprocess_env(s3), **env_overrides)
    return subprocess.run([sys.executable, str(ROOT / "code" / "etl.py"), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_unreachable_s3_is_one_line_and_the_retry_code(s3):
    proc = run_program(s3, s3.bucket, "input/a.csv", S3_ENDPOINT=f"127.0.0.1:{free_port()}")
    assert proc.returncode == 75
    assert proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("etl: error: S3 unreachable: ")
    assert "Connection refused" in proc.stderr and proc.stderr.endswith("(retry may help)\n")


class _Throttling:
    """An S3 endpoint that answers every request with one status and S3 error code."""

    def __init__(self, status: int, code: str):
        import http.server
        import threading

        body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                f"<Message>slow down</Message><RequestId>1</RequestId></Error>").encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status,code", [(503, "SlowDown"), (429, "SlowDown"),
                                         (500, "InternalError")])
def test_throttled_s3_is_the_retry_code(s3, status, code):
    server = _Throttling(status, code)
    try:
        proc = run_program(s3, s3.bucket, "input/a.csv", S3_ENDPOINT=server.endpoint)
    finally:
        server.close()
    assert proc.returncode == 75, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("etl: error: ")
    assert proc.stderr.endswith("(retry may help)\n")


def test_what_a_retry_cannot_fix_is_the_other_code(s3):
    # a key that does not exist, settings that are wrong
    for args, env, message in [
        ((s3.bucket, "input/nope.csv"), {}, "NoSuchKey"),
        ((s3.bucket, "input/a.csv"), {"S3_SECURE": "maybe"}, "S3_SECURE must be true or false"),
        ((s3.bucket, "input/a.csv"), {"OUTPUT_LAYOUT": "out/{day}.parquet"}, "OUTPUT_LAYOUT"),
    ]:
        proc = run_program(s3, *args, **env)
        assert proc.returncode == 1, (args, env, proc.stderr)
        assert proc.stderr.count("\n") == 1 and message in proc.stderr
        assert proc.stderr.endswith("(retrying will not help)\n")
