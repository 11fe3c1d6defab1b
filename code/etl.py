"""ETL of one uploaded CSV: `python /code/etl.py BUCKET KEY`.

Reads `s3://BUCKET/KEY` in one streamed GET, converts it as it arrives with
`csv2parquet.convert_stream` (bounded memory) and uploads
    the Parquet file to  OUTPUT_LAYOUT   (default `output/{date}/{name}.parquet`; multipart, while
                                          it is written; it appears last)
    rejected rows to     REJECTS_LAYOUT  (default `rejects/{date}/{name}.csv`, only when there are
                                          any; a stale rejects object from an earlier run is removed)
and prints one JSON line with the counts (`lines = rows + rejected + blank_lines + header`).

`name` is the key's path below `input/`, without `.csv`, so files of the same name in different
folders never share an output; `date` is the folder holding the file when that folder is a date
`YYYYMMDD` (the folder is then not part of `name`), otherwise the day the object was uploaded, in
UTC, from the object's Last-Modified:

    input/20230414/1.csv          -> output/20230414/1.parquet
    input/test.csv                -> output/<upload day>/test.parquet
    input/teamA/x.csv             -> output/<upload day>/teamA/x.parquet
    input/teamB/x.csv             -> output/<upload day>/teamB/x.parquet
    input/teamA/20230414/x.csv    -> output/20230414/teamA/x.parquet
    input/teamA/X.CSV             -> output/<upload day>/teamA/X.CSV.parquet

Only a final `.csv` in lower case is dropped, and not when the rest still ends in `.csv` (any
case): `x.CSV` and `x.csv.csv` keep their whole name, so no two names map to one output. One case
remains where two keys could name the same output: `input/P/<day>/x.csv` and `input/P/x.csv`
uploaded on that day. Every output carries its input key (object metadata `source-key`, and
`source` in the Parquet metadata), and a run refuses to replace an output written from another
key: it fails, writes nothing, and names both keys (exit code 1, see failures.py).

The layouts are Python format strings with only `{date}` and `{name}` (`name` may hold `/`); the
aggregation (`agg.py`) reads OUTPUT_LAYOUT too and takes every file of the day at any depth. The
agg Sensor must derive the date from the key's folder right below `output/`, not from the folder
holding the file.

The key is used exactly as given: MinIO's listen API delivers keys raw (not URL-encoded), so a `+`
or a space in a file name is part of the name and is never decoded.

An empty input still produces a Parquet file (schema, 0 rows); see csv2parquet.py for every rule on
malformed input. S3 access comes from the S3_* variables (s3client.py). A failure ends the run with
one line on stderr and an exit code that tells a retry apart from a lost cause (failures.py).
"""
from __future__ import annotations

import json
import os
import re
import string
import sys
import tempfile
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

from minio import Minio
from minio.error import S3Error

import csv2parquet
import failures
import s3stream
from failures import Failure
from s3client import client_from_env

DEFAULT_OUTPUT_LAYOUT = "output/{date}/{name}.parquet"
DEFAULT_REJECTS_LAYOUT = "rejects/{date}/{name}.csv"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
INPUT_PREFIX = "input/"
SUFFIX = ".csv"
SOURCE_META = "source-key"        # object metadata of every output: the input it was made from
PART_SIZE = s3stream.PART_SIZE    # the Parquet's multipart upload
_DATE_RE = re.compile(r"\d{8}")


class EtlError(Failure):
    """A problem with the input, the configuration or the store, reported as one line."""


def s3_failure(action: str, exc: S3Error) -> EtlError:
    return EtlError(f"{action}: {exc.code}",
                    retryable=failures.s3_code_retryable(exc.code,
                                                         getattr(exc.response, "status", None)))


def layout_from_env(var: str, default: str, env=None) -> str:
    env = os.environ if env is None else env
    layout = env.get(var) or default
    check_layout(layout, var)
    return layout


def check_layout(layout: str, var: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(layout) if f is not None}
    except ValueError as exc:
        raise EtlError(f"{var} is not a valid format string: {exc}") from exc
    if not fields <= {"date", "name"} or "name" not in fields or "date" not in fields:
        raise EtlError(f"{var} must use {{date}} and {{name}} and no other field")
    if layout.startswith("/"):
        raise EtlError(f"{var} must be a relative object key")


def is_date(text: str) -> bool:
    if not _DATE_RE.fullmatch(text):
        return False
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


def stem(base: str) -> str:
    """The file name without `.csv`: only a lower-case `.csv` goes, and only when what is left does
    not end in `.csv` itself (any case), so that two names never give the same stem."""
    if base.endswith(SUFFIX) and not base[:-len(SUFFIX)].lower().endswith(SUFFIX):
        return base[:-len(SUFFIX)]
    return base


def date_and_name(key: str, uploaded: datetime, prefix: str = INPUT_PREFIX) -> tuple[str, str]:
    """(`YYYYMMDD`, name) for an input key: name is the path below `prefix` (or below `/` for an
    FTP path) without `.csv`, less a date folder holding the file, which gives the date; see the
    module docstring."""
    rel = key[len(prefix):] if prefix and key.startswith(prefix) else key
    folder, _, base = rel.lstrip("/").rpartition("/")
    name = stem(base)
    if not name:
        raise EtlError(f"key {key!r} has no file name")
    above, _, parent = folder.rpartition("/")
    if is_date(parent):
        date, folder = parent, above
    else:
        date = uploaded.astimezone(timezone.utc).strftime("%Y%m%d")
    return date, f"{folder}/{name}" if folder else name


def upload_outputs(client: Minio, bucket: str, source_key: str, out_key: str, parquet: str, rejects_key: str,
                   rejects: str | None) -> None:
    """Store one input's Parquet (and its rejects, or remove stale ones), never over another input's output.

    Rejects go first: the Parquet upload is what triggers the aggregation (and what downstream listens for).
    """
    meta = source_metadata(source_key)
    try:
        check_output_is_ours(client, bucket, out_key, source_key)
        if rejects:
            client.fput_object(bucket, rejects_key, rejects, content_type="text/csv", metadata=meta)
        else:
            client.remove_object(bucket, rejects_key)
        client.fput_object(bucket, out_key, parquet, content_type=PARQUET_CONTENT_TYPE, metadata=meta)
    except S3Error as exc:
        raise s3_failure(f"cannot upload to s3://{bucket}/{out_key}", exc) from exc


def source_metadata(source_key: str) -> dict[str, str]:
    """Object metadata naming the input (S3 metadata is ASCII: the key is percent-encoded)."""
    return {SOURCE_META: quote(source_key, safe="/")}


def check_output_is_ours(client: Minio, bucket: str, out_key: str, source_key: str) -> None:
    """Refuses to replace an output that was written from another input (see the docstring)."""
    try:
        meta = client.stat_object(bucket, out_key).metadata
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NotFound", "ResourceNotFound"):
            return
        raise s3_failure(f"cannot check s3://{bucket}/{out_key}", exc) from exc
    theirs = meta.get(f"x-amz-meta-{SOURCE_META}")
    if theirs is not None and unquote(theirs) != source_key:
        raise EtlError(f"s3://{bucket}/{out_key} holds the rows of {unquote(theirs)!r}, and "
                       f"{source_key!r} maps to the same output: nothing written; rename one of "
                       "the two files")


def run(bucket: str, key: str, client: Minio | None = None, env=None) -> dict:
    """ETL of s3://bucket/key; returns the summary that main() prints.

    Streamed: the input is read in one GET while it is converted, and the Parquet is uploaded
    (multipart) while it is written, so download, conversion and upload overlap and memory stays
    flat (s3stream.py). Only the rejects, usually small, go through a temporary file."""
    env = os.environ if env is None else env
    output_layout = layout_from_env("OUTPUT_LAYOUT", DEFAULT_OUTPUT_LAYOUT, env)
    rejects_layout = layout_from_env("REJECTS_LAYOUT", DEFAULT_REJECTS_LAYOUT, env)
    client = client or client_from_env(env)

    try:
        response = client.get_object(bucket, key)
    except S3Error as exc:
        raise s3_failure(f"cannot download s3://{bucket}/{key}", exc) from exc
    try:
        date, name = date_and_name(key, parsedate_to_datetime(response.headers["Last-Modified"]))
        out_key = output_layout.format(date=date, name=name)
        rejects_key = rejects_layout.format(date=date, name=name)
        etag = (response.headers.get("ETag") or "").replace('"', "")
        try:
            check_output_is_ours(client, bucket, out_key, key)
        except S3Error as exc:
            raise s3_failure(f"cannot upload to s3://{bucket}/{out_key}", exc) from exc
        with tempfile.TemporaryDirectory(prefix="etl-") as work:
            rejects = os.path.join(work, "rejects.csv")
            result = convert_and_upload(client, bucket, key, response, out_key, rejects_key,
                                        rejects, etag)
    finally:
        response.close()
        response.release_conn()

    summary = {
        "bucket": bucket, "key": key, "date": date, "name": name, "output": out_key,
        "rejects": rejects_key if result["rejected"] else None,
        **{k: result[k] for k in ("lines", "rows", "rejected", "blank_lines", "header", "empty",
                                  "source_bytes")},
    }
    if result["empty"]:
        summary["message"] = "input has no data rows: wrote a Parquet file with 0 rows"
    return summary


def convert_and_upload(client: Minio, bucket: str, key: str, response, out_key: str,
                       rejects_key: str, rejects: str, etag: str) -> dict:
    """Converts the GET's body while the Parquet goes up part by part; the rejects (or the removal
    of stale ones) go first and the Parquet appears last: its upload is what triggers the
    aggregation (and what downstream listens for)."""
    meta = source_metadata(key)
    download = s3stream.Prefetch(response)
    upload = s3stream.StreamingUpload(client, bucket, out_key, content_type=PARQUET_CONTENT_TYPE,
                                      metadata=meta, part_size=PART_SIZE)
    try:
        result = csv2parquet.convert_stream(download, upload, rejects, name=f"s3://{bucket}/{key}",
                                            metadata={"source": f"s3://{bucket}/{key}",
                                                      "source_etag": etag})
        try:
            if result["rejected"]:
                client.fput_object(bucket, rejects_key, rejects, content_type="text/csv",
                                   metadata=meta)
            else:
                client.remove_object(bucket, rejects_key)
            upload.complete()
        except S3Error as exc:
            raise s3_failure(f"cannot upload to s3://{bucket}/{out_key}", exc) from exc
    except BaseException as exc:
        upload.abort(exc)
        if isinstance(exc, s3stream.UploadFailed) and isinstance(upload.error, S3Error):
            raise s3_failure(f"cannot upload to s3://{bucket}/{out_key}", upload.error) from exc
        if isinstance(exc, s3stream.UploadFailed) and upload.error is not None:
            raise upload.error from exc
        raise
    finally:
        download.close()
    return result


def main(argv: list[str]) -> int:
    """Exit codes: failures.py (0 done, 1 a retry will not help, 2 usage, 75 a retry may help)."""
    if len(argv) != 2:
        print("usage: etl.py BUCKET KEY", file=sys.stderr)
        return failures.EXIT_USAGE

    def work() -> int:
        summary = run(argv[0], argv[1])
        print(json.dumps(summary, ensure_ascii=False))
        return failures.EXIT_OK

    return failures.run_main("etl", work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
