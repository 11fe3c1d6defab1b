"""An S3 endpoint that costs next to no CPU, for timing what a client costs itself.

    python bench/lean_s3_server.py DIR PORT

On a machine of 2 cores the S3 server of a benchmark shares the cores with the program measured:
s3rver spends ~1.2 s of CPU serving a 300 MB GET and taking in 93 MB of parts, and ~0.5 s more
concatenating them on CompleteMultipartUpload, so its cost is in the program's wall time, as it
would not be in a cluster, where MinIO or S3 runs elsewhere. This server serves a GET with
sendfile(2) (the kernel copies the file to the socket), writes each part to a file as it arrives
and joins the parts with copy_file_range(2), so nearly all its work is the kernel's copying.

Only what bench_etl_s3.py's programs ask for: PUT/DELETE of a bucket, PUT/GET/HEAD/DELETE of
an object, and the multipart calls (create, upload part, complete, abort). Objects are files under
DIR/<bucket>/<key>. Signatures are not checked (a benchmark on loopback); a request it does not
know is answered 501, so a client that needs more fails loudly instead of being timed wrongly.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sys
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

_CHUNK = 1 << 20
_PART_RE = re.compile(rb"<PartNumber>(\d+)</PartNumber>")


class LeanS3(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, port: int):
        self.root = root
        self.uploads: dict[str, Path] = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LeanS3

    def log_message(self, *args) -> None:     # quiet: a benchmark prints its own table
        pass

    # --- routing ---

    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        return bucket, key, parse_qs(parts.query, keep_blank_values=True)

    def _object_path(self, bucket: str, key: str) -> Path:
        path = (self.server.root / bucket / key).resolve()
        if self.server.root.resolve() not in path.parents:
            raise PermissionError(key)
        return path

    def do_PUT(self) -> None:
        bucket, key, query = self._target()
        if not key:
            (self.server.root / bucket).mkdir(parents=True, exist_ok=True)
            self._drain()
            return self._reply(200)
        if "uploadId" in query:
            upload = self.server.uploads.get(query["uploadId"][0])
            if upload is None:
                self._drain()
                return self._error(404, "NoSuchUpload")
            etag = self._receive(upload / f"{int(query['partNumber'][0]):05d}")
            return self._reply(200, headers={"ETag": f'"{etag}"'})
        path = self._object_path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        etag = self._receive(path)
        self._reply(200, headers={"ETag": f'"{etag}"'})

    def do_POST(self) -> None:
        bucket, key, query = self._target()
        if "uploads" in query:
            self._drain()
            upload_id = secrets.token_hex(8)
            folder = self.server.root / ".uploads" / upload_id
            folder.mkdir(parents=True)
            self.server.uploads[upload_id] = folder
            return self._xml("InitiateMultipartUploadResult",
                             f"<Bucket>{bucket}</Bucket><Key>{key}</Key><UploadId>{upload_id}</UploadId>")
        if "uploadId" in query:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            folder = self.server.uploads.pop(query["uploadId"][0], None)
            if folder is None:
                return self._error(404, "NoSuchUpload")
            numbers = [int(n) for n in _PART_RE.findall(body)]
            path = self._object_path(bucket, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as out:
                for number in numbers:
                    with open(folder / f"{number:05d}", "rb") as part:
                        size = os.fstat(part.fileno()).st_size
                        while size:
                            size -= os.copy_file_range(part.fileno(), out.fileno(), size)
            shutil.rmtree(folder)
            etag = f"{secrets.token_hex(16)}-{len(numbers)}"
            return self._xml("CompleteMultipartUploadResult",
                             f"<Bucket>{bucket}</Bucket><Key>{key}</Key><ETag>\"{etag}\"</ETag>")
        self._drain()
        self._error(501, "NotImplemented")

    def do_GET(self) -> None:
        bucket, key, query = self._target()
        if not key or query:
            return self._error(501, "NotImplemented")
        path = self._object_path(bucket, key)
        if not path.is_file():
            return self._error(404, "NoSuchKey")
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            self._head(path, size)
            offset = 0
            while offset < size:        # the kernel copies the file to the socket
                offset += os.sendfile(self.connection.fileno(), fh.fileno(), offset, size - offset)

    def do_HEAD(self) -> None:
        bucket, key, _ = self._target()
        path = self._object_path(bucket, key) if key else None
        if path is None or not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            return self.end_headers()
        self._head(path, path.stat().st_size)

    def do_DELETE(self) -> None:
        bucket, key, query = self._target()
        if "uploadId" in query:
            folder = self.server.uploads.pop(query["uploadId"][0], None)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        elif key:
            self._object_path(bucket, key).unlink(missing_ok=True)
        self._reply(204)

    # --- bodies and answers ---

    def _receive(self, path: Path) -> str:
        """The request body written to `path`; an ETag (the MD5 of the size, not of the bytes:
        hashing them would be CPU this server is here not to spend)."""
        size = int(self.headers.get("Content-Length") or 0)
        buffer = memoryview(bytearray(_CHUNK))
        with open(path, "wb") as out:
            left = size
            while left:
                n = self.rfile.readinto(buffer[:min(left, _CHUNK)])
                if not n:
                    raise ConnectionError("body ended early")
                out.write(buffer[:n])
                left -= n
        return hashlib.md5(f"{path.name}:{size}".encode()).hexdigest()

    def _drain(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        if size:
            self.rfile.read(size)

    def _head(self, path: Path, size: int) -> None:
        stat = path.stat()
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Last-Modified", formatdate(stat.st_mtime, usegmt=True))
        self.send_header("ETag", f'"{hashlib.md5(f"{stat.st_mtime_ns}:{size}".encode()).hexdigest()}"')
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _xml(self, root: str, inner: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} '
                f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</{root}>').encode()
        self._reply(200, body, {"Content-Type": "application/xml"})

    def _error(self, status: int, code: str) -> None:
        self._reply(status, f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode(),
                    {"Content-Type": "application/xml"})


def main(argv: list[str]) -> int:
    root, port = Path(argv[0]), int(argv[1])
    root.mkdir(parents=True, exist_ok=True)
    LeanS3(root, port).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
