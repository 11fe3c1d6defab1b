"""code/s3_etl.py: what it accepts, what it ignores, and what it writes (against moto's S3)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys

import pyarrow.parquet as pq
import pytest

from etlboot import PROJECT_ROOT

from aws_testkit import REGION

CODE = PROJECT_ROOT / "code"


@pytest.fixture(scope="module")
def s3_etl():
    sys.path.insert(0, str(CODE))  # as in the pod: csv2parquet.py sits next to it
    spec = importlib.util.spec_from_file_location("s3_etl_under_test", CODE / "s3_etl.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)
    sys.path.remove(str(CODE))


def record(key: str, bucket: str = "bkt", event: str = "ObjectCreated:Put") -> dict:
    return {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def envelope(message: dict, kind: str = "Notification") -> str:
    return json.dumps({"Type": kind, "TopicArn": "arn:aws:sns:eu-west-1:1:t", "Message": json.dumps(message)})


def test_test_event_and_bodies_without_records_are_ignored(s3_etl):
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "bkt"}
    for message in (json.dumps(test_event), envelope(test_event), json.dumps({}), envelope({"Records": []}),
                    envelope({"Records": [record("input/a.csv")]}, kind="SubscriptionConfirmation"),
                    json.dumps("not an object")):
        found, reason = s3_etl.records(message)
        assert found == [] and reason
    assert "TestEvent" in s3_etl.records(envelope(test_event))[1]


def test_several_records_keys_decoded(s3_etl):
    message = {"Records": [record("input/a+b%2Bc.csv"), record("input%2Fday+1%2Fx.csv"), record("input/%EC%A0%90.csv")]}
    for form in (json.dumps(message), envelope(message), json.dumps(json.dumps(message))):
        found, _ = s3_etl.records(form)
        assert [r.key for r in found] == ["input/a b+c.csv", "input/day 1/x.csv", "input/점.csv"]


def test_output_names(s3_etl):
    assert s3_etl.output_key("input/day 1/x.csv") == "output/day 1/x.parquet"
    # only a final lower-case .csv is dropped: X.CSV and X.csv never share an output
    assert s3_etl.output_key("input/X.CSV") == "output/X.CSV.parquet"
    assert s3_etl.output_key("input/X.csv") == "output/X.parquet"
    assert s3_etl.output_key("input/X.CSV.csv") == "output/X.CSV.csv.parquet"
    assert s3_etl.output_key("input/teamA/x.csv") == "output/teamA/x.parquet"
    assert s3_etl.output_key("input/teamB/x.csv") == "output/teamB/x.parquet"
    assert s3_etl.rejects_key("input/a.csv") == "output/a.rejects.csv"


def test_what_is_skipped(s3_etl):
    Record = s3_etl.Record
    assert s3_etl.why_skipped(Record("bkt", "input/a.csv", "ObjectCreated:Put"), "bkt") is None
    assert "not ObjectCreated" in s3_etl.why_skipped(Record("bkt", "input/a.csv", "ObjectRemoved:Delete"), None)
    assert "is not bkt" in s3_etl.why_skipped(Record("other", "input/a.csv", "ObjectCreated:Put"), "bkt")
    assert s3_etl.why_skipped(Record("bkt", "output/a.csv", "ObjectCreated:Put"), None)
    assert s3_etl.why_skipped(Record("bkt", "input/a.txt", "ObjectCreated:Put"), None)


def test_main_processes_each_record_and_reports_a_failed_one(s3_etl, admin, moto, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("S3_ETL_BUCKET", "bkt")
    admin.s3.create_bucket(Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": REGION})
    admin.s3.put_object(Bucket="bkt", Key="input/ok 1.csv", Body=b"1,aaa,70\n2,bbb,oops\n")
    message = {"Records": [record("input/gone.csv"), record("input/ok+1.csv"), record("input/x.csv", bucket="evil")]}
    assert s3_etl.main([envelope(message)]) == 1  # one record failed: the workflow fails visibly
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "error" in lines[0] and lines[0]["key"] == "input/gone.csv"
    assert lines[1]["output"] == "output/ok 1.parquet" and lines[1]["rows"] == 1 and lines[1]["rejected"] == 1
    assert "skipped" in lines[2]
    table = pq.read_table(io.BytesIO(admin.s3.get_object(Bucket="bkt", Key="output/ok 1.parquet")["Body"].read()))
    assert table.to_pylist() == [{"no": 1, "name": "aaa", "score": 70}]
    rejects = admin.s3.get_object(Bucket="bkt", Key="output/ok 1.rejects.csv")["Body"].read().decode()
    assert "2,score is not an integer" in rejects
    assert "evil" not in [b["Name"] for b in admin.s3.list_buckets()["Buckets"]]


def test_main_exit_codes(s3_etl, capsys):
    assert s3_etl.main(["{not json"]) == 2
    assert s3_etl.main([]) == 2
    assert s3_etl.main([json.dumps({"Event": "s3:TestEvent"})]) == 0
    assert "TestEvent" in capsys.readouterr().out


def _bucket(admin, monkeypatch, moto, name="bkt"):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("S3_ETL_BUCKET", name)
    admin.s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})


def _read(admin, key, bucket="bkt"):
    return admin.s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _keys(admin, bucket="bkt"):
    return sorted(o["Key"] for o in admin.s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_a_fixed_file_uploaded_again_leaves_no_stale_rejects(s3_etl, admin, moto, monkeypatch, capsys):
    _bucket(admin, monkeypatch, moto, "fixbkt")
    admin.s3.put_object(Bucket="fixbkt", Key="input/f.csv", Body=b"1,a,1\n2,b,oops\n")
    message = envelope({"Records": [record("input/f.csv", bucket="fixbkt")]})
    assert s3_etl.main([message]) == 0
    assert _keys(admin, "fixbkt") == ["input/f.csv", "output/f.parquet", "output/f.rejects.csv"]
    admin.s3.put_object(Bucket="fixbkt", Key="input/f.csv", Body=b"1,a,1\n2,b,2\n")
    assert s3_etl.main([message]) == 0
    assert _keys(admin, "fixbkt") == ["input/f.csv", "output/f.parquet"]
    table = pq.read_table(io.BytesIO(_read(admin, "output/f.parquet", "fixbkt")))
    assert table.column("no").to_pylist() == [1, 2]
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (last["lines"], last["rows"], last["rejected"], last["blank_lines"]) == (2, 2, 0, 0)


def test_same_name_in_two_folders_and_case_variants_give_separate_outputs(s3_etl, admin, moto,
                                                                           monkeypatch):
    _bucket(admin, monkeypatch, moto, "twobkt")
    bodies = {"input/teamA/x.csv": b"1,a,1\n", "input/teamB/x.csv": b"2,b,2\n",
              "input/teamA/X.CSV": b"3,c,3\n"}
    for key, body in bodies.items():
        admin.s3.put_object(Bucket="twobkt", Key=key, Body=body)
    message = envelope({"Records": [record(k, bucket="twobkt") for k in bodies]})
    assert s3_etl.main([message]) == 0
    outputs = {"output/teamA/x.parquet": 1, "output/teamB/x.parquet": 2,
               "output/teamA/X.CSV.parquet": 3}
    for key, no in outputs.items():
        assert pq.read_table(io.BytesIO(_read(admin, key, "twobkt"))).column("no").to_pylist() == [no]


def _program(env_overrides: dict, message: str):
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": REGION, "AWS_MAX_ATTEMPTS": "2", **env_overrides})
    return subprocess.run([sys.executable, str(CODE / "s3_etl.py"), message], env=env,
                          capture_output=True, text=True, timeout=120, cwd=str(CODE))


def test_exit_codes_tell_a_retry_from_a_lost_cause(admin, moto):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = envelope({"Records": [record("input/a.csv", bucket="codebkt")]})
    down = _program({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}, message)
    assert down.returncode == 75
    assert down.stderr.count("\n") == 1
    assert down.stderr.startswith("s3_etl: error: 1 of 1 records failed: input/a.csv: S3 unreachable")
    assert down.stderr.endswith("(retry may help)\n")
    admin.s3.create_bucket(Bucket="codebkt", CreateBucketConfiguration={"LocationConstraint": REGION})
    missing = _program({"AWS_ENDPOINT_URL": moto}, message)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "input/a.csv: S3 404" in missing.stderr
    assert missing.stderr.endswith("(retrying will not help)\n")
    bad = _program({"AWS_ENDPOINT_URL": moto}, "{not json")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
