"""ETL of one uploaded CSV: `python /code/etl.py BUCKET KEY`.

Downloads `s3://BUCKET/KEY` to a temporary file, converts it with `csv2parquet.convert` (streaming,
bounded memory) and uploads
    the Parquet file to  OUTPUT_LAYOUT   (default `output/{date}/{name}.parquet`)
    rejected rows to     REJECTS_LAYOUT  (default `rejects/{date}/{name}.csv`, only when there are
                                          any; a stale rejects object from an earlier run is removed)
and prints one JSON line with the counts.

`name` is the file name without `.csv`. `date` is the folder holding the file when that folder is a
date `YYYYMMDD` (`input/20230414/1.csv` -> `20230414`, `1`); otherwise (`input/test.csv`) it is the
day the object was uploaded, in UTC, from the object's Last-Modified. The layouts are Python format
strings with only `{date}` and `{name}`; the aggregation (`agg.py`) reads OUTPUT_LAYOUT too, and
the agg Sensor derives the date from the folder above the file, so a custom layout must keep
`{date}` as the folder that holds `{name}`.

The key is used exactly as given: MinIO's listen API delivers keys raw (not URL-encoded), so a `+`
or a space in a file name is part of the name and is never decoded.

An empty input still produces a Parquet file (schema, 0 rows); see csv2parquet.py for every rule on
malformed input. S3 access comes from the S3_* variables (s3client.py).
"""
from __future__ import annotations

import json
import os
import re
import string
import sys
import tempfile
from datetime import datetime, timezone

from minio import Minio
from minio.error import S3Error

import csv2parquet
from s3client import S3ConfigError, client_from_env

DEFAULT_OUTPUT_LAYOUT = "output/{date}/{name}.parquet"
DEFAULT_REJECTS_LAYOUT = "rejects/{date}/{name}.csv"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
_DATE_RE = re.compile(r"\d{8}")


class EtlError(Exception):
    """A problem with the input or the configuration, reported as one line."""


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


def date_and_name(key: str, uploaded: datetime) -> tuple[str, str]:
    """(`YYYYMMDD`, name) for an input key; see the module docstring for the rule."""
    folder, _, base = key.rpartition("/")
    name = base[:-4] if base.lower().endswith(".csv") else base
    if not name:
        raise EtlError(f"key {key!r} has no file name")
    parent = folder.rpartition("/")[2]
    if is_date(parent):
        return parent, name
    return uploaded.astimezone(timezone.utc).strftime("%Y%m%d"), name


def run(bucket: str, key: str, client: Minio | None = None, env=None) -> dict:
    """ETL of s3://bucket/key; returns the summary that main() prints."""
    env = os.environ if env is None else env
    output_layout = layout_from_env("OUTPUT_LAYOUT", DEFAULT_OUTPUT_LAYOUT, env)
    rejects_layout = layout_from_env("REJECTS_LAYOUT", DEFAULT_REJECTS_LAYOUT, env)
    client = client or client_from_env(env)

    with tempfile.TemporaryDirectory(prefix="etl-") as work:
        src = os.path.join(work, "input.csv")
        try:
            stat = client.fget_object(bucket, key, src)
        except S3Error as exc:
            raise EtlError(f"cannot download s3://{bucket}/{key}: {exc.code}") from exc
        date, name = date_and_name(key, stat.last_modified)
        out_key = output_layout.format(date=date, name=name)
        rejects_key = rejects_layout.format(date=date, name=name)

        parquet = os.path.join(work, "output.parquet")
        rejects = os.path.join(work, "rejects.csv")
        result = csv2parquet.convert(src, parquet, rejects, metadata={
            "source": f"s3://{bucket}/{key}", "source_etag": stat.etag or ""})

        # Rejects first: the Parquet upload is what triggers the aggregation.
        if result["rejected"]:
            client.fput_object(bucket, rejects_key, rejects, content_type="text/csv")
        else:
            client.remove_object(bucket, rejects_key)
        client.fput_object(bucket, out_key, parquet, content_type=PARQUET_CONTENT_TYPE)

    summary = {
        "bucket": bucket, "key": key, "date": date, "name": name, "output": out_key,
        "rejects": rejects_key if result["rejected"] else None,
        **{k: result[k] for k in ("rows", "rejected", "empty", "header", "blank_lines",
                                  "source_bytes")},
    }
    if result["empty"]:
        summary["message"] = "input has no data rows: wrote a Parquet file with 0 rows"
    return summary


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: etl.py BUCKET KEY", file=sys.stderr)
        return 2
    try:
        summary = run(argv[0], argv[1])
    except (EtlError, S3ConfigError, csv2parquet.ConvertError) as exc:
        print(f"etl: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
