"""How the programs in the cluster end: one line naming the cause, and an exit code for Argo.

Every program here (`etl.py`, `agg.py`, `s3_etl.py`, `ftp_etl.py`) runs its work inside `run_main`,
so it never ends with a traceback: a failure is one line on stderr,

    <program>: error: <what failed>: <cause> (<retry may help | retrying will not help>)

and the exit code says whether running the same step again can succeed:

    0   EXIT_OK         done (bad rows are not a failure: they are in the rejects file)
    1   EXIT_FAILED     a failure a retry cannot fix: the object or file is missing, the key or
                        bucket is wrong, access is denied, the input cannot be converted, the
                        settings are wrong, or an unexpected error (a bug)
    2   EXIT_USAGE      wrong arguments (also not worth a retry)
    75  EXIT_RETRY      a failure that may pass by itself (EX_TEMPFAIL of sysexits.h): S3, MinIO or
                        FTP unreachable, a timeout or dropped connection, throttling (SlowDown,
                        503), a server error (500), an FTP 4xx reply

so a WorkflowTemplate retries only what a retry can help:

    retryStrategy:
      limit: "2"
      retryPolicy: Always
      expression: 'lastRetry.status == "Error" || asInt(lastRetry.exitCode) == 75'

(`lastRetry.status == "Error"`: the pod itself failed, e.g. it was deleted or evicted, which a retry
also helps.) The clients already retry a few times within one run (s3client.py, boto3's standard
mode, ftp_etl's download attempts); 75 is what is left when those retries ran out.

A program raises `Failure(message, retryable)` for a failure it understands; `classify` maps the
exceptions of the libraries (minio, urllib3, botocore, ftplib, sockets) to the same two kinds.
"""
from __future__ import annotations

import ftplib
import socket
import sys
from typing import Callable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RETRY = 75

# S3 error codes that a later attempt may not see (AWS and MinIO spellings).
RETRYABLE_S3_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "RequestThrottled", "ServiceUnavailable", "InternalError", "RequestTimeout",
    "RequestTimeTooSkewed", "XMinioServerNotInitialized", "XMinioReadQuorum",
    "XMinioWriteQuorum", "XMinioStorageFull", "OperationAborted",
})
RETRYABLE_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class Failure(Exception):
    """A failure the program understands, with whether a retry may help."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


def s3_code_retryable(code: str | None, status: int | None = None) -> bool:
    return (code or "") in RETRYABLE_S3_CODES or (status or 0) in RETRYABLE_HTTP_STATUS


def classify(exc: BaseException) -> tuple[str, bool]:
    """(one-line cause, whether a retry may help) for any exception."""
    if isinstance(getattr(exc, "retryable", None), bool):   # Failure, csv2parquet.ConvertError
        return str(exc), exc.retryable
    try:
        from minio.error import InvalidResponseError, S3Error, ServerError

        if isinstance(exc, ServerError):        # an error answer without an S3 error body
            return (f"S3 answered HTTP {exc.status_code}",
                    exc.status_code in RETRYABLE_HTTP_STATUS)
        if isinstance(exc, InvalidResponseError):   # not S3 at all (a proxy's error page?)
            code = getattr(exc, "_code", None)
            return f"S3 answered something that is not S3: {str(exc)[:120]}", \
                isinstance(code, int) and code in RETRYABLE_HTTP_STATUS
        if isinstance(exc, S3Error):
            where = "/".join(p for p in (exc.bucket_name, exc.object_name) if p)
            status = getattr(exc.response, "status", None)
            return (f"S3 {exc.code}{f' on {where}' if where else ''}",
                    s3_code_retryable(exc.code, status))
    except ImportError:  # pragma: no cover - minio is in the image
        pass
    try:
        import urllib3.exceptions as u3

        if isinstance(exc, u3.MaxRetryError):
            reason = exc.reason
            if isinstance(reason, u3.ResponseError):   # retries of 5xx answers ran out
                return f"S3 kept answering with errors ({reason}): throttled or unavailable", True
            return f"S3 unreachable: {_describe(reason)}", True
        if isinstance(exc, u3.HTTPError):   # timeouts, protocol errors, dropped connections
            return f"S3 connection failed: {_describe(exc)}", True
    except ImportError:  # pragma: no cover
        pass
    try:
        import botocore.exceptions as bce

        if isinstance(exc, bce.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return (f"S3 {code or status} ({exc.operation_name})",
                    s3_code_retryable(code, status))
        if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectionClosedError,
                            bce.ConnectTimeoutError, bce.ReadTimeoutError)):
            return f"S3 unreachable: {exc}", True
        if isinstance(exc, bce.NoCredentialsError):
            return "no AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)", False
        if isinstance(exc, bce.BotoCoreError):
            return f"S3 client error: {exc}", False
    except ImportError:
        pass
    if isinstance(exc, ftplib.error_temp):
        return f"FTP server answered {str(exc)[:80]}", True
    if isinstance(exc, ftplib.error_perm):
        return f"FTP server refused: {str(exc)[:80]}", False
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, socket.gaierror,
                        EOFError)):
        return f"connection failed: {_describe(exc)}", True
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{exc.strerror or type(exc).__name__}" + (f": {exc.filename}" if exc.filename
                                                           else ""), False
    return f"unexpected {type(exc).__name__}: {exc}"[:300], False


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    text = str(exc)
    # urllib3 wraps the OS error; its last part is the useful one ("[Errno 111] Connection refused")
    for marker in ("Failed to establish a new connection: ", "Failed to resolve "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return f"{type(exc).__name__}: {text}"[:200]


def run_main(program: str, work: Callable[[], int]) -> int:
    """Runs `work` (which returns an exit code); any exception becomes one line and its code."""
    try:
        return work()
    except KeyboardInterrupt:
        print(f"{program}: error: interrupted", file=sys.stderr)
        return EXIT_RETRY
    except Exception as exc:  # noqa: BLE001 - the point: one line, never a traceback
        cause, retryable = classify(exc)
        return fail(program, cause, retryable)


def fail(program: str, cause: str, retryable: bool) -> int:
    hint = "retry may help" if retryable else "retrying will not help"
    print(f"{program}: error: {cause} ({hint})", file=sys.stderr, flush=True)
    return EXIT_RETRY if retryable else EXIT_FAILED
