"""`demo.upload --target aws`: put the sample CSV into the bucket's input/ and prove the Parquet arrives.

The expected table is what `code/csv2parquet.py` makes of the same file locally, so the check is
"the pipeline in the cluster produced exactly this", rows and types, not just "a file appeared".
The uploaded key has a space in it on purpose: S3 form-encodes keys in its notifications, and the
workflow must decode them to find the object.
"""

from __future__ import annotations

import importlib.util
import secrets
import tempfile
import time
from pathlib import Path
from typing import Callable

from etlboot import PROJECT_ROOT, config
from etlboot.demo import note_upload
from etlboot.engine import StepError, WaitTimeout
from etlboot.follow import follow_workflows
from etlboot.workflows import WORKFLOW_API, parameter

from .clients import AwsClients, absent, aws_error

SAMPLE = PROJECT_ROOT / "demo" / "data" / "test.csv"
CODE = PROJECT_ROOT / "code"
#: the Sensors that run the S3 ETL, one per AWS_DELIVERY (manifests/aws/sensor.yaml, sensor-sqs.yaml)
ETL_SENSORS = ("aws-s3-etl", "aws-sqs-etl")


def cluster_workflows(ctx) -> Callable[[str], list[dict]]:
    """A reader of the S3 ETL Workflows whose S3 event names a key holding `mark` (shown while waiting).

    The event in the `message` parameter carries the key form-encoded, so the mark must be URL-safe.
    A cluster that cannot be read does not fail the demo (its verdict is the object in S3): the
    workflows are then not shown, and the reason is said once.
    """
    from etlboot.steps import kube

    failed: list[str] = []

    def read(mark: str) -> list[dict]:
        if failed:
            return []
        try:
            found = kube(ctx).list(WORKFLOW_API, "Workflow", ctx.settings.namespace,
                                   label_selector=f"events.argoproj.io/sensor in ({','.join(ETL_SENSORS)})")
        except Exception as exc:  # noqa: BLE001 - said once, the wait goes on
            failed.append(ctx.explain(exc)[0])
            ctx.reporter.say(f"(the workflows are not shown: {failed[0]})")
            return []
        return [w for w in found if mark in parameter(w, "message")]

    return read


def _code_module(name: str):
    """A program from code/ (flat files, not a package), loaded by path."""
    import sys

    if str(CODE) not in sys.path:
        sys.path.insert(0, str(CODE))  # s3_etl imports csv2parquet as its neighbour, as in the pod
    qualified = f"_etl_code_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, CODE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[qualified]
        raise
    return module


def demo_upload(settings, reporter, *, source: str | Path | None = None, timeout: float | None = None,
                interval: float = 2.0, workflows: Callable[[str], list[dict]] | None = None) -> bool:
    """Upload the sample to s3://AWS_BUCKET/input/demo/… and wait (bounded) for the matching Parquet in
    output/ with the right rows. True when it arrived and matches; every problem is reported, never raised.

    `workflows(mark)` (see `cluster_workflows`) gives the S3 ETL Workflows of this upload, drawn by the shared
    follower while it waits."""
    try:
        config.require_aws(settings)
    except config.ConfigError as exc:
        reporter.say(f"✗ config: {exc}", style="bold red")
        return False
    src = Path(source) if source else SAMPLE
    if not src.is_file():
        reporter.say(f"✗ sample file {src} not found", style="bold red")
        return False
    s3_etl = _code_module("s3_etl")
    csv2parquet = _code_module("csv2parquet")
    bucket = settings.values["AWS_BUCKET"]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
    key = f"{s3_etl.INPUT_PREFIX}demo/{src.stem} {stamp}.csv"
    out_key = s3_etl.output_key(key)
    clients = AwsClients(settings)
    s3 = clients.s3
    try:
        with tempfile.TemporaryDirectory(prefix="aws-demo-") as tmp:
            expected_path = Path(tmp) / "expected.parquet"
            expected = csv2parquet.convert(str(src), str(expected_path), str(Path(tmp) / "expected.rejects.csv"))
            try:
                s3.upload_file(str(src), bucket, key)
            except Exception as exc:  # noqa: BLE001
                raise aws_error(exc, f"upload {src.name} to s3://{bucket}/{key}") from None
            note_upload(settings, "aws", bucket, [key])  # `invoke trace` starts from it
            reporter.say(f"uploaded {src.name} to s3://{bucket}/{key}; waiting for s3://{bucket}/{out_key}")

            def arrived(_workflows: list[dict]) -> bool:
                return absent(f"look for s3://{bucket}/{out_key}", {"404", "NoSuchKey", "NotFound"},
                              s3.head_object, Bucket=bucket, Key=out_key) is not None

            limit = float(timeout if timeout is not None else settings.wait_timeout_seconds)
            try:
                follow_workflows(lambda: workflows(stamp) if workflows else [], arrived, timeout=limit,
                                 reporter=reporter, what=f"waiting for s3://{bucket}/{out_key}",
                                 hint="`invoke doctor`", interval=interval)
            except WaitTimeout:
                reporter.say(f"✗ no output after {limit:.0f}s: check `invoke aws.status` (subscription confirmed?) "
                             "and the workflows (`kubectl get wf`)", style="bold red")
                return False
            got_path = Path(tmp) / "got.parquet"
            s3.download_file(bucket, out_key, str(got_path))
            return _compare(reporter, expected_path, got_path, expected, out_key)
    except StepError as exc:
        reporter.say(f"✗ {exc}", style="bold red")
        if exc.hint:
            reporter.say(f"  hint: {exc.hint}")
        return False
    finally:
        clients.close()


def _compare(reporter, expected_path: Path, got_path: Path, expected: dict, out_key: str) -> bool:
    import pyarrow.parquet as pq

    want = pq.read_table(expected_path)
    try:
        got = pq.read_table(got_path)
    except Exception as exc:  # noqa: BLE001 - a broken file is a failed demo, reported
        reporter.say(f"✗ {out_key} is not a readable Parquet file: {type(exc).__name__}", style="bold red")
        return False
    if got.schema.remove_metadata() != want.schema.remove_metadata():
        reporter.say(f"✗ {out_key} has schema {got.schema.names} {[str(t) for t in got.schema.types]}, "
                     f"expected {want.schema.names} {[str(t) for t in want.schema.types]}", style="bold red")
        return False
    if not got.equals(want):
        reporter.say(f"✗ {out_key} has {got.num_rows} rows that differ from the {want.num_rows} expected",
                     style="bold red")
        return False
    reporter.say(f"✓ {out_key}: {got.num_rows} rows as expected"
                 + (f" ({expected['rejected']} rejected row(s) in the rejects file)" if expected.get("rejected") else ""))
    return True
