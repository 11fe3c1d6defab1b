"""ETL of one file on the FTP server: `python /code/ftp_etl.py PATH [--bucket BUCKET]`.

PATH is the full path the FTP event server reported (`body.name` of the event). The file is
downloaded to a temporary folder, converted with `csv2parquet.convert` (streaming, bounded memory,
bad rows to a rejects CSV) and uploaded to the bucket (`--bucket`, else `ETL_BUCKET`):

    the Parquet file to  FTP_OUTPUT_LAYOUT   (default `ftp/output/{date}/{name}.parquet`)
    rejected rows to     FTP_REJECTS_LAYOUT  (default `ftp/rejects/{date}/{name}.csv`, only when
                                              there are any; a stale one from an earlier run is removed)

then one JSON line with the counts is printed. `name` and `date` follow etl.py's rule, with the path
below the FTP root in place of the path below `input/`: `name` is the file's path without `.csv`
(its folders kept, so files of the same name in different folders never share an output), less a
`YYYYMMDD` folder holding the file, which is then the date; otherwise the date is the day the file
was last modified on the FTP server in UTC (MDTM; today in UTC if the server has no MDTM):

    /in/20230414/1.csv   -> ftp/output/20230414/in/1.parquet
    /20230414/1.csv      -> ftp/output/20230414/1.parquet
    /in/2024/01/x.csv    -> ftp/output/<day>/in/2024/01/x.parquet
    /in/2024/02/x.csv    -> ftp/output/<day>/in/2024/02/x.parquet

As in etl.py, an output written from another path is never replaced (the run fails naming both).

FTP settings come from the environment (the password from Secret `ftp-secret`, never from
arguments): FTP_HOST, FTP_PORT (21), FTP_USER, FTP_PASSWORD, FTP_PASSIVE (true),
FTP_TIMEOUT_SECONDS (60). S3/MinIO access: the S3_* variables (see s3client.py). Error messages
name variables and paths, never a credential. A failure is one line and an exit code (failures.py):
75 when the FTP server or S3 was unreachable or answered "try later" (4xx), 1 when a retry cannot
help (no such file, login refused, bad settings), 2 for wrong arguments.
"""
from __future__ import annotations

import argparse
import ftplib
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

from minio import Minio

import csv2parquet
import failures
from etl import EtlError, date_and_name, layout_from_env, upload_outputs
from s3client import client_from_env

# outside output/: the MinIO aggregation listens on output/*.parquet and must not fire for FTP results
DEFAULT_OUTPUT_LAYOUT = "ftp/output/{date}/{name}.parquet"
DEFAULT_REJECTS_LAYOUT = "ftp/rejects/{date}/{name}.csv"
DOWNLOAD_ATTEMPTS = 3
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def ftp_settings(env) -> dict:
    """The FTP_* variables, checked; raises EtlError naming the variable that is wrong."""
    host = env.get("FTP_HOST", "").strip()
    if not host:
        raise EtlError("FTP_HOST is not set")
    if "FTP_USER" not in env or "FTP_PASSWORD" not in env:
        raise EtlError("FTP_USER and FTP_PASSWORD must be set (from Secret ftp-secret)")
    try:
        port = int(env.get("FTP_PORT") or 21)
        if not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise EtlError("FTP_PORT must be a port number 1-65535") from None
    passive_raw = (env.get("FTP_PASSIVE") or "true").strip().lower()
    if passive_raw not in _TRUE | _FALSE:
        raise EtlError("FTP_PASSIVE must be true or false")
    try:
        timeout = float(env.get("FTP_TIMEOUT_SECONDS") or 60)
        if timeout <= 0:
            raise ValueError
    except ValueError:
        raise EtlError("FTP_TIMEOUT_SECONDS must be a positive number") from None
    return {"host": host, "port": port, "user": env["FTP_USER"], "password": env["FTP_PASSWORD"],
            "passive": passive_raw in _TRUE, "timeout": timeout}


def modified_time(ftp: ftplib.FTP, path: str) -> datetime | None:
    """The file's modification time from MDTM (UTC per RFC 3659), or None if unsupported."""
    try:
        reply = ftp.sendcmd(f"MDTM {path}")
    except ftplib.error_perm:
        return None
    stamp = reply[4:].strip()[:14]
    try:
        return datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def download(path: str, dest: str, settings: dict) -> datetime | None:
    """RETR `path` into `dest`; return its MDTM time. A refused or dropped connection is retried
    (bounded: DOWNLOAD_ATTEMPTS, 1 s then 2 s apart); a missing file is not."""
    last_error: Exception | None = None
    for attempt in range(DOWNLOAD_ATTEMPTS):
        if attempt:
            time.sleep(2 ** (attempt - 1))
        ftp = ftplib.FTP(timeout=settings["timeout"])
        try:
            ftp.connect(settings["host"], settings["port"])
            ftp.login(settings["user"], settings["password"])
            ftp.set_pasv(settings["passive"])
            mtime = modified_time(ftp, path)
            with open(dest, "wb") as fh:
                ftp.retrbinary(f"RETR {path}", fh.write)
            return mtime
        except ftplib.error_perm as exc:
            code = str(exc)[:3]
            if code == "530":
                raise EtlError(f"FTP login to {settings['host']} refused ({code}): check Secret ftp-secret") from None
            raise EtlError(f"cannot download {path!r} from FTP {settings['host']}: {exc}") from None
        except ftplib.error_temp as exc:   # 4xx: the server says "try later"
            last_error = exc
            print(f"ftp_etl: download attempt {attempt + 1}/{DOWNLOAD_ATTEMPTS} of {path!r} failed: "
                  f"{exc}", file=sys.stderr)
        except ftplib.all_errors as exc:
            last_error = exc
            print(f"ftp_etl: download attempt {attempt + 1}/{DOWNLOAD_ATTEMPTS} of {path!r} failed: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            try:
                ftp.close()
            except OSError:
                pass
    raise EtlError(f"cannot download {path!r} from FTP {settings['host']}:{settings['port']} after "
                   f"{DOWNLOAD_ATTEMPTS} attempts: {type(last_error).__name__}: {last_error}",
                   retryable=True)


def run(path: str, bucket: str | None = None, client: Minio | None = None, env=None) -> dict:
    """ETL of one FTP file; returns the summary that main() prints."""
    env = os.environ if env is None else env
    bucket = bucket or env.get("ETL_BUCKET", "").strip()
    if not bucket:
        raise EtlError("no bucket: pass --bucket or set ETL_BUCKET")
    if not path or path.endswith("/"):
        raise EtlError(f"path {path!r} does not name a file")
    settings = ftp_settings(env)
    output_layout = layout_from_env("FTP_OUTPUT_LAYOUT", DEFAULT_OUTPUT_LAYOUT, env)
    rejects_layout = layout_from_env("FTP_REJECTS_LAYOUT", DEFAULT_REJECTS_LAYOUT, env)
    client = client or client_from_env(env)
    source = f"ftp://{settings['host']}:{settings['port']}{'' if path.startswith('/') else '/'}{path}"

    with tempfile.TemporaryDirectory(prefix="ftp-etl-") as work:
        src = os.path.join(work, "input.csv")
        mtime = download(path, src, settings)
        date, name = date_and_name(path, mtime or datetime.now(timezone.utc), prefix="")
        out_key = output_layout.format(date=date, name=name)
        rejects_key = rejects_layout.format(date=date, name=name)

        parquet = os.path.join(work, "output.parquet")
        rejects = os.path.join(work, "rejects.csv")
        result = csv2parquet.convert(src, parquet, rejects, metadata={
            "source": source, "source_mtime": mtime.isoformat() if mtime else ""})

        upload_outputs(client, bucket, path, out_key, parquet, rejects_key, rejects if result["rejected"] else None)

    summary = {
        "source": source, "bucket": bucket, "date": date, "name": name, "output": out_key,
        "rejects": rejects_key if result["rejected"] else None,
        **{k: result[k] for k in ("lines", "rows", "rejected", "blank_lines", "header", "empty",
                                  "source_bytes")},
    }
    if result["empty"]:
        summary["message"] = "input has no data rows: wrote a Parquet file with 0 rows"
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ftp_etl.py", description="CSV on FTP -> Parquet in S3/MinIO")
    parser.add_argument("path", help="full path of the file on the FTP server (the event's body.name)")
    parser.add_argument("--bucket", help="target bucket (default: env ETL_BUCKET)")
    args = parser.parse_args(argv)

    def work() -> int:
        summary = run(args.path, args.bucket)
        print(json.dumps(summary, ensure_ascii=False))
        return failures.EXIT_OK

    return failures.run_main("ftp_etl", work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
