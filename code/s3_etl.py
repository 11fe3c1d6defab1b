"""The S3 ETL of the AWS variant: an S3 event that came through SNS in, Parquet in output/ out.

Usage: python /code/s3_etl.py MESSAGE

MESSAGE is what the Sensor passes as ONE workflow parameter: the SNS envelope's `Message` (a JSON
string holding the S3 event), or the whole envelope (`{"Type": "Notification", "Message": "...", ...}`).
One message may carry several Records; each is processed on its own.

- An `s3:TestEvent` (S3 sends one when the notification configuration is written) or a message without
  Records is ignored: exit 0, nothing written.
- Keys in S3 notifications are form-encoded (`a b.csv` arrives as `a+b.csv`): decoded with unquote_plus.
- Only objects of the expected bucket (env S3_ETL_BUCKET, when set) under `input/` ending in `.csv` are
  processed: a forged message cannot point the job anywhere else (its IAM user could not either).
- `input/<path>.csv` becomes `output/<path>.parquet` (the folders below `input/` kept, so files of
  the same name in different folders never share an output); bad rows go to
  `output/<path>.rejects.csv` (only when there are any; a stale one from an earlier run of the same
  file is deleted, which needs s3:DeleteObject on output/). Only a final lower-case `.csv` is
  dropped, as in etl.py (`input/X.CSV` -> `output/X.CSV.parquet`), so no two inputs share an output.
  The conversion is `csv2parquet.convert` (streaming, bounded memory).
- Credentials: boto3's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the Secret),
  AWS_REGION, and AWS_ENDPOINT_URL when set (tests). boto3 retries each call (standard mode,
  AWS_MAX_ATTEMPTS attempts, default 5).

Prints one JSON line per record; when a record failed, it ends with one line on stderr naming the
failures. Exit code (failures.py): 0 when every record was processed or skipped; 75 when a record
failed and a retry may help (S3 unreachable, throttled, 5xx: every record is processed again, which
is idempotent); 1 when records failed and no retry can help (no such object, access denied, ...);
2 when MESSAGE is not JSON or missing.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from urllib.parse import unquote_plus

import failures
from etl import stem

INPUT_PREFIX = "input/"
OUTPUT_PREFIX = "output/"
SUFFIX = ".csv"


class BadMessage(ValueError):
    """MESSAGE is not JSON at all."""


@dataclass(frozen=True)
class Record:
    bucket: str
    key: str          # decoded
    event: str


def s3_event(message: str) -> dict:
    """The S3 event inside MESSAGE, whichever of the accepted forms it is in."""
    try:
        data = json.loads(message)
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"the message is not JSON: {exc}") from None
    # the SNS envelope: Message is a JSON string
    if isinstance(data, dict) and isinstance(data.get("Message"), str) and ("Type" in data or "TopicArn" in data):
        if data.get("Type", "Notification") != "Notification":
            return {}
        try:
            data = json.loads(data["Message"])
        except ValueError:
            return {}
    # a JSON string holding JSON (a parameter quoted once more on the way)
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}


def records(message: str) -> tuple[list[Record], str]:
    """The ObjectCreated records of MESSAGE and, when there are none, why."""
    event = s3_event(message)
    if event.get("Event") == "s3:TestEvent":
        return [], "s3:TestEvent (sent when the bucket notification is configured): nothing to do"
    found = []
    for raw in event.get("Records") or []:
        try:
            name = str(raw.get("eventName") or "")
            s3 = raw["s3"]
            found.append(Record(s3["bucket"]["name"], unquote_plus(s3["object"]["key"]), name))
        except (KeyError, TypeError, AttributeError):
            print(json.dumps({"skipped": "a record without s3.bucket.name / s3.object.key"}), flush=True)
    if not found:
        return [], "no Records in the message: nothing to do"
    return found, ""


def output_key(key: str) -> str:
    rest = key[len(INPUT_PREFIX):] if key.startswith(INPUT_PREFIX) else key
    folder, slash, base = rest.rpartition("/")
    return f"{OUTPUT_PREFIX}{folder}{slash}{stem(base)}.parquet"


def rejects_key(key: str) -> str:
    return output_key(key)[: -len(".parquet")] + ".rejects.csv"


def why_skipped(record: Record, bucket: str | None) -> str | None:
    if not record.event.startswith("ObjectCreated:"):
        return f"event {record.event or '?'} is not ObjectCreated"
    if bucket and record.bucket != bucket:
        return f"bucket {record.bucket} is not {bucket}"
    if not record.key.startswith(INPUT_PREFIX) or not record.key.lower().endswith(SUFFIX):
        return f"key is not {INPUT_PREFIX}…{SUFFIX}"
    return None


def s3_client():
    import boto3
    from botocore.config import Config

    try:
        attempts = max(1, int(os.environ.get("AWS_MAX_ATTEMPTS") or 5))
    except ValueError:
        raise failures.Failure("AWS_MAX_ATTEMPTS must be a number") from None
    return boto3.client("s3", region_name=os.environ.get("AWS_REGION") or None,
                        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
                        config=Config(retries={"mode": "standard",
                                               "total_max_attempts": attempts}))


def process(s3, record: Record, workdir: str) -> dict:
    from csv2parquet import convert

    local = os.path.join(workdir, "input.csv")
    parquet = os.path.join(workdir, "output.parquet")
    rejects = os.path.join(workdir, "rejects.csv")
    s3.download_file(record.bucket, record.key, local)
    result = convert(local, parquet, rejects)
    out = output_key(record.key)
    summary = {"bucket": record.bucket, "key": record.key, "output": out,
               **{k: result[k] for k in ("lines", "rows", "rejected", "blank_lines", "header",
                                         "empty")}}
    # rejects first (as etl.py): when the Parquet file is there, its rejects are final
    if result.get("rejects_path"):
        summary["rejects"] = rejects_key(record.key)
        s3.upload_file(rejects, record.bucket, summary["rejects"])
    else:
        # a fixed file uploaded again: its earlier rejects must not stay behind
        s3.delete_object(Bucket=record.bucket, Key=rejects_key(record.key))
    s3.upload_file(parquet, record.bucket, out)
    return summary


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: s3_etl.py MESSAGE  (the SNS Message JSON string, or the whole SNS envelope)", file=sys.stderr)
        return failures.EXIT_USAGE
    try:
        found, reason = records(argv[0])
    except BadMessage as exc:
        failures.fail("s3_etl", str(exc), retryable=False)
        return failures.EXIT_USAGE
    if not found:
        print(json.dumps({"skipped": reason}), flush=True)
        return failures.EXIT_OK
    return failures.run_main("s3_etl", lambda: _process_all(found))


def _process_all(found: list[Record]) -> int:
    bucket = os.environ.get("S3_ETL_BUCKET") or None
    s3 = None
    failed: list[tuple[str, str, bool]] = []
    for record in found:
        reason = why_skipped(record, bucket)
        if reason:
            print(json.dumps({"key": record.key, "skipped": reason}), flush=True)
            continue
        s3 = s3 or s3_client()
        with tempfile.TemporaryDirectory(prefix="s3-etl-") as workdir:
            try:
                print(json.dumps(process(s3, record, workdir)), flush=True)
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the others
                cause, retryable = failures.classify(exc)
                failed.append((record.key, cause, retryable))
                print(json.dumps({"key": record.key, "error": cause, "retryable": retryable}),
                      flush=True)
    if not failed:
        return failures.EXIT_OK
    retryable = any(r for _, _, r in failed)
    listed = "; ".join(f"{key}: {cause}" for key, cause, _ in failed[:3])
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    return failures.fail("s3_etl", f"{len(failed)} of {len(found)} records failed: {listed}{more}",
                         retryable)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
