"""A lean GET of small S3 objects for the aggregation, beside the minio client it is built from.

Why: aggregating a day from scratch is thousands of GETs of small Parquet files, and the minio ->
urllib3 -> http.client stack spends ~0.47 ms of CPU on each (header parsing goes through the
`email` package), about as much as the S3 server itself; under the GIL that caps 16 threads at
~1,000 GETs a second. This path sends the request bytes itself over one kept-alive socket per
thread and parses only the status line and the headers it needs (~0.12 ms a GET).

What it keeps from the client (`client_from_env` in s3client.py): the endpoint, TLS when
configured (the system's CAs, or SSL_CERT_FILE as minio uses it), the credentials as the client's
provider returns them (static keys, or the AWS chain with a session token), the region, the URL
style (path or virtual host) and the SigV4 signature, all through minio's own helpers. It handles
only the plain answers: 200/206 with a Content-Length body, 412 and 404 (the object changed or is
gone: InputChanged for the caller). Anything else -- an error status, a chunked body, a dropped
or refused connection -- is retried once through the minio client itself, which has the
retries, the timeouts and the S3Error/urllib3 exceptions that failures.py maps to exit codes.
"""
from __future__ import annotations

import os
import socket
import ssl
import threading

from minio import Minio
from minio.signer import sign_v4_s3

from s3client import CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS

MAX_HEADER_BYTES = 64 << 10


class ObjectChanged(Exception):
    """The object is not the version asked for (412) or is gone (404)."""


class _Fallback(Exception):
    """An answer this path does not handle; the minio client repeats the request."""


class LeanGetter:
    """GET of a whole object or a byte range, pinned to an ETag; one socket per thread."""

    def __init__(self, client: Minio, bucket: str):
        self._client, self._bucket = client, bucket
        self._base = client._base_url     # noqa: SLF001 - the client's own endpoint and URL style
        self._region = client._get_region(bucket)   # noqa: SLF001 - cached after the first call
        # the host to connect to is the bucket's (a virtual-host URL on AWS), the same for all keys
        url = self._base.build(method="GET", region=self._region, bucket_name=bucket,
                               object_name="x")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._tls = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None) \
            if url.scheme == "https" else None
        self._local = threading.local()

    def get(self, key: str, etag: str, offset: int = 0, length: int = 0) -> bytes:
        try:
            return self._lean_get(key, etag, offset, length)
        except ObjectChanged:
            raise
        except (_Fallback, OSError, ValueError, AttributeError, TypeError):
            # AttributeError/TypeError: the minio client's private helpers this path borrows changed
            # shape (another minio version); the client's own GET still works
            self._drop_socket()
            return self._minio_get(key, etag, offset, length)

    # --- the lean path ------------------------------------------------------------------

    def _lean_get(self, key: str, etag: str, offset: int, length: int) -> bytes:
        url = self._base.build(method="GET", region=self._region, bucket_name=self._bucket,
                               object_name=key)
        creds = self._client._provider.retrieve() if self._client._provider else None  # noqa: SLF001
        headers, date = self._client._build_headers(url.netloc, {"If-Match": f'"{etag}"'},  # noqa: SLF001
                                                    None, creds)
        if offset or length:
            headers["Range"] = f"bytes={offset}-{offset + length - 1 if length else ''}"
        if creds:
            headers = sign_v4_s3(method="GET", url=url, region=self._region, headers=headers,
                                 credentials=creds,
                                 content_sha256=headers["x-amz-content-sha256"], date=date)
        target = url.path + (f"?{url.query}" if url.query else "")   # already quoted
        request = f"GET {target} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock, reused = self._socket()
        try:
            sock.sendall(request.encode("latin-1"))
            return self._read_answer(sock)
        except ConnectionError:
            if not reused:
                raise
            # a kept-alive socket the server closed meanwhile: one more try on a new one
            self._drop_socket()
            sock, _ = self._socket()
            sock.sendall(request.encode("latin-1"))
            return self._read_answer(sock)

    def _read_answer(self, sock) -> bytes:
        buf = self._local.buf
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_HEADER_BYTES:
                raise _Fallback("header too long")
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the answer")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" not in fields or "chunked" in fields.get("transfer-encoding", ""):
            self._local.buf = b""
            raise _Fallback("no content length")
        size = int(fields["content-length"])
        body = bytearray(rest)
        while len(body) < size:
            chunk = sock.recv(max(65536, size - len(body)))
            if not chunk:
                raise ConnectionError("closed inside the body")
            body += chunk
        self._local.buf = bytes(body[size:])
        if fields.get("connection", "").lower() == "close":
            self._drop_socket()
        if status in (200, 206):
            return bytes(body[:size])
        if status in (404, 412):
            raise ObjectChanged(status)
        raise _Fallback(f"HTTP {status}")

    def _socket(self):
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            return sock, True
        sock = socket.create_connection((self._host, self._port), timeout=CONNECT_TIMEOUT_SECONDS)
        sock.settimeout(READ_TIMEOUT_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self._host)
        self._local.sock, self._local.buf = sock, b""
        return sock, False

    def _drop_socket(self) -> None:
        sock = getattr(self._local, "sock", None)
        self._local.sock, self._local.buf = None, b""
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _minio_get(self, key: str, etag: str, offset: int, length: int) -> bytes:
        return minio_get(self._client, self._bucket, key, etag, offset, length)


def minio_get(client: Minio, bucket: str, key: str, etag: str, offset: int = 0,
              length: int = 0) -> bytes:
    """The same GET through the minio client: its retries, timeouts and exceptions."""
    from minio.error import S3Error

    response = None
    try:
        response = client.get_object(bucket, key, offset=offset, length=length,
                                     request_headers={"If-Match": f'"{etag}"'})
        return response.read()
    except S3Error as exc:
        if exc.code in ("PreconditionFailed", "NoSuchKey"):
            raise ObjectChanged(exc.code) from exc
        raise
    finally:
        if response is not None:
            response.close()
            response.release_conn()
