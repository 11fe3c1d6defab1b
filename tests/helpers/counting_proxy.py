"""A counting HTTP proxy on loopback: every request a client sends to an S3/AWS endpoint, recorded
where it arrives (independently of the client's own bookkeeping), then forwarded."""
from __future__ import annotations

import http.client
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Served:
    """A loopback HTTP server (`self.server`) run by `self.thread` while the `with` block lasts."""

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


READ_PREFIXES = ("Get", "List", "Head", "Describe")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect",
               "proxy-authorization", "proxy-authenticate", "content-length"}


@dataclass(frozen=True)
class ServerCall:
    """One HTTP request as it reached the endpoint: which service, which operation, whether it changes."""

    service: str
    operation: str
    method: str
    path: str

    @property
    def writes(self) -> bool:
        if self.service == "s3":  # REST: reads are GET and HEAD; everything else creates, changes or deletes
            return self.method not in ("GET", "HEAD")
        return not self.operation.startswith(READ_PREFIXES)

    def __str__(self) -> str:
        return f"{self.service}:{self.operation}"


def _service_of(headers) -> str:
    # SigV4: "AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/<service>/aws4_request, ..."
    match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request", headers.get("Authorization") or "")
    return match.group(1) if match else "?"


def _operation_of(service: str, method: str, target: str, headers, body: bytes) -> str:
    if headers.get("X-Amz-Target"):  # JSON protocols
        return headers["X-Amz-Target"].rsplit(".", 1)[-1]
    if service != "s3":  # query protocol (IAM, SNS, STS): the form field Action
        form = parse_qs(body.decode("utf-8", "replace"))
        action = form.get("Action") or parse_qs(urlsplit(target).query).get("Action")
        return action[0] if action else "?"
    sub = sorted(k for k in parse_qs(urlsplit(target).query, keep_blank_values=True) if not k.startswith("x-"))
    return f"{method} {urlsplit(target).path}" + (f"?{'&'.join(sub)}" if sub else "")


class CountingProxy(Served):
    """An HTTP proxy on loopback in front of moto's server that records every request it forwards.

    Point AWS_ENDPOINT_URL at it and the tool's traffic is counted where it arrives, independently of
    the tool's own bookkeeping (its call record, botocore hooks)."""

    def __init__(self, target: str):
        self.target = urlsplit(target)
        self.calls: list[ServerCall] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers `Expect: 100-continue` as S3 clients expect

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self):
                body = self._body()
                service = _service_of(self.headers)
                call = ServerCall(service, _operation_of(service, self.command, self.path, self.headers, body),
                                  self.command, urlsplit(self.path).path)
                with proxy._lock:
                    proxy.calls.append(call)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    self.send_response(answer.status, answer.reason)
                    for key, value in answer.getheaders():
                        if key.lower() not in _HOP_BY_HOP:
                            self.send_header(key, value)
                    if self.command == "HEAD":
                        self.send_header("Content-Length", answer.getheader("Content-Length") or "0")
                    else:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # noqa: N815 - http.server's naming

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def writes(self) -> list[str]:
        with self._lock:
            return [str(c) for c in self.calls if c.writes]

    def reads(self) -> list[str]:
        with self._lock:
            return [str(c) for c in self.calls if not c.writes]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()
