"""code/ftp_etl.py against a real FTP server (pyftpdlib) and moto's S3 server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import csv2parquet
import ftp_etl
from ftp_support import CODE, free_port, write_file


@pytest.fixture
def etl_env(ftp_server, ftp_credentials, s3):
    user, password = ftp_credentials
    env = dict(os.environ)
    env.update(s3["env"])
    env.update({"FTP_HOST": "127.0.0.1", "FTP_PORT": str(ftp_server.port), "FTP_USER": user,
                "FTP_PASSWORD": password, "FTP_PASSIVE": "true", "ETL_BUCKET": s3["bucket"],
                "FTP_TIMEOUT_SECONDS": "10"})
    return env


def read_parquet(s3, key):
    data = s3["client"].get_object(s3["bucket"], key).read()
    return pq.read_table(io.BytesIO(data))


def keys(s3):
    return sorted(o.object_name for o in s3["client"].list_objects(s3["bucket"], recursive=True))


def test_dated_folder_gives_the_output_key(ftp_root, etl_env, s3):
    write_file(ftp_root / "in" / "20230414" / "1.csv", "1,aaa,80\n2,bbb,90\n3,ccc,100\n")
    summary = ftp_etl.run("/in/20230414/1.csv", env=etl_env)
    # the folders above the date folder stay part of the name
    assert summary["output"] == "ftp/output/20230414/in/1.parquet"
    assert (summary["rows"], summary["rejected"], summary["empty"], summary["rejects"]) == (3, 0, False, None)
    table = read_parquet(s3, "ftp/output/20230414/in/1.parquet")
    assert table.to_pylist() == [
        {"no": 1, "name": "aaa", "score": 80},
        {"no": 2, "name": "bbb", "score": 90},
        {"no": 3, "name": "ccc", "score": 100},
    ]
    meta = table.schema.metadata
    assert meta[b"source"].decode().endswith("/in/20230414/1.csv")
    assert keys(s3) == ["ftp/output/20230414/in/1.parquet"]


def test_undated_file_uses_its_ftp_modification_day(ftp_root, etl_env, s3):
    path = write_file(ftp_root / "test.csv", "1,a,1\n")
    stamp = time.mktime((2022, 7, 1, 12, 0, 0, 0, 0, -1))
    os.utime(path, (stamp, stamp))
    day = time.strftime("%Y%m%d", time.gmtime(stamp))
    summary = ftp_etl.run("/test.csv", env=etl_env)
    assert summary["output"] == f"ftp/output/{day}/test.parquet"
    assert read_parquet(s3, summary["output"]).num_rows == 1


def test_bad_rows_go_to_rejects_with_line_numbers(ftp_root, etl_env, s3):
    write_file(ftp_root / "20230415" / "mixed name 한.csv", "no,name,score\n1,a,10\n2,b\n3,c,x\n4,d,40\n")
    summary = ftp_etl.run("/20230415/mixed name 한.csv", env=etl_env)
    assert (summary["rows"], summary["rejected"], summary["header"]) == (2, 2, True)
    assert summary["output"] == "ftp/output/20230415/mixed name 한.parquet"
    assert summary["rejects"] == "ftp/rejects/20230415/mixed name 한.csv"
    rejects = s3["client"].get_object(s3["bucket"], summary["rejects"]).read().decode()
    lines = [row.split(",")[0] for row in rejects.strip().splitlines()[1:]]
    assert lines == ["3", "4"]
    assert [r["no"] for r in read_parquet(s3, summary["output"]).to_pylist()] == [1, 4]


def test_rerun_without_rejects_removes_the_stale_rejects_object(ftp_root, etl_env, s3):
    path = write_file(ftp_root / "20230416" / "f.csv", "1,a,1\nbad\n")
    assert ftp_etl.run("/20230416/f.csv", env=etl_env)["rejected"] == 1
    path.write_text("1,a,1\n")
    assert ftp_etl.run("/20230416/f.csv", env=etl_env)["rejects"] is None
    assert keys(s3) == ["ftp/output/20230416/f.parquet"]


def test_empty_file_still_gives_a_parquet_file(ftp_root, etl_env, s3):
    write_file(ftp_root / "20230417" / "empty.csv", b"")
    summary = ftp_etl.run("/20230417/empty.csv", env=etl_env)
    assert summary["empty"] is True and summary["rows"] == 0
    assert read_parquet(s3, summary["output"]).schema.names == list(csv2parquet.COLUMNS)


def test_missing_file_is_a_clear_error(etl_env):
    with pytest.raises(ftp_etl.EtlError, match="cannot download '/nope.csv'"):
        ftp_etl.run("/nope.csv", env=etl_env)


def test_unreachable_ftp_is_retried_a_bounded_number_of_times(etl_env, monkeypatch):
    monkeypatch.setattr(ftp_etl.time, "sleep", lambda s: None)
    env = dict(etl_env, FTP_PORT=str(free_port()))
    with pytest.raises(ftp_etl.EtlError, match="after 3 attempts"):
        ftp_etl.run("/a.csv", env=env)


def test_wrong_password_names_the_secret_not_the_value(etl_env):
    env = dict(etl_env, FTP_PASSWORD="definitely-wrong-pw")
    with pytest.raises(ftp_etl.EtlError) as info:
        ftp_etl.run("/a.csv", env=env)
    assert "ftp-secret" in str(info.value) and "definitely-wrong-pw" not in str(info.value)


@pytest.mark.parametrize("missing,message", [
    ("FTP_HOST", "FTP_HOST is not set"),
    ("FTP_PASSWORD", "FTP_USER and FTP_PASSWORD must be set"),
    ("ETL_BUCKET", "no bucket"),
])
def test_missing_settings_are_named(etl_env, missing, message):
    env = {k: v for k, v in etl_env.items() if k != missing}
    with pytest.raises(ftp_etl.EtlError, match=message):
        ftp_etl.run("/a.csv", env=env)


def test_as_a_program(ftp_root, etl_env, s3):
    """The way the WorkflowTemplate runs it: python /code/ftp_etl.py -- PATH."""
    write_file(ftp_root / "20230418" / "prog run.csv", "1,a,1\n2,b,2\n")
    result = subprocess.run([sys.executable, str(CODE / "ftp_etl.py"), "--", "/20230418/prog run.csv"],
                            env=etl_env, capture_output=True, text=True, timeout=60, cwd=str(CODE))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["output"], summary["rows"]) == ("ftp/output/20230418/prog run.parquet", 2)
    assert etl_env["FTP_PASSWORD"] not in result.stdout + result.stderr
    assert etl_env["S3_SECRET_KEY"] not in result.stdout + result.stderr

    failed = subprocess.run([sys.executable, str(CODE / "ftp_etl.py"), "/missing.csv"],
                            env=etl_env, capture_output=True, text=True, timeout=60, cwd=str(CODE))
    assert failed.returncode == 1
    assert "ftp_etl: error: cannot download '/missing.csv'" in failed.stderr


def test_same_file_name_in_two_folders_gives_two_outputs(ftp_root, etl_env, s3):
    stamp = time.mktime((2024, 3, 1, 12, 0, 0, 0, 0, -1))
    for month, rows in (("01", "1,jan,1\n"), ("02", "2,feb,2\n3,feb,3\n")):
        path = write_file(ftp_root / "in" / "2024" / month / "x.csv", rows)
        os.utime(path, (stamp, stamp))
    day = time.strftime("%Y%m%d", time.gmtime(stamp))
    jan = ftp_etl.run("/in/2024/01/x.csv", env=etl_env)
    feb = ftp_etl.run("/in/2024/02/x.csv", env=etl_env)
    assert (jan["output"], feb["output"]) == (f"ftp/output/{day}/in/2024/01/x.parquet",
                                              f"ftp/output/{day}/in/2024/02/x.parquet")
    assert read_parquet(s3, jan["output"]).column("name").to_pylist() == ["jan"]
    assert read_parquet(s3, feb["output"]).column("name").to_pylist() == ["feb", "feb"]
    assert (jan["lines"], feb["lines"]) == (1, 2)


def test_an_output_made_from_another_path_is_never_replaced(ftp_root, etl_env, s3):
    stamp = time.mktime((2024, 3, 1, 12, 0, 0, 0, 0, -1))
    day = time.strftime("%Y%m%d", time.gmtime(stamp))
    write_file(ftp_root / "p" / day / "x.csv", "1,dated,1\n")
    undated = write_file(ftp_root / "p" / "x.csv", "2,undated,2\n")
    os.utime(undated, (stamp, stamp))
    assert ftp_etl.run(f"/p/{day}/x.csv", env=etl_env)["output"] == f"ftp/output/{day}/p/x.parquet"
    with pytest.raises(ftp_etl.EtlError, match="maps to the same output") as info:
        ftp_etl.run("/p/x.csv", env=etl_env)
    assert info.value.retryable is False and f"/p/{day}/x.csv" in str(info.value)
    assert read_parquet(s3, f"ftp/output/{day}/p/x.parquet").column("name").to_pylist() == ["dated"]


def test_exit_codes_tell_a_retry_from_a_lost_cause(etl_env):
    def program(*args, **env):
        return subprocess.run([sys.executable, str(CODE / "ftp_etl.py"), *args],
                              env=dict(etl_env, **env), capture_output=True, text=True, timeout=60,
                              cwd=str(CODE))

    down = program("/a.csv", FTP_PORT=str(free_port()), FTP_TIMEOUT_SECONDS="2")
    assert down.returncode == 75
    last = down.stderr.strip().splitlines()[-1]
    assert last.startswith("ftp_etl: error: cannot download '/a.csv'") and "after 3 attempts" in last
    assert last.endswith("(retry may help)")
    for args, env in [(("/missing.csv",), {}), (("/a.csv",), {"FTP_PASSWORD": "wrong-pw"}),
                      (("/a.csv",), {"FTP_PORT": "x"})]:
        proc = program(*args, **env)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("(retrying will not help)\n")
    assert program().returncode == 2
