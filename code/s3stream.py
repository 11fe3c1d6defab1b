"""Objects read and written as streams, so that a program's download, work and upload overlap.

`Prefetch` reads an object's body (one GET) on its own thread a little ahead of the consumer.
`StreamingUpload` is a writable file whose bytes are uploaded while they are still being written:
minio's `put_object` of unknown length sends them as a multipart upload, part by part, and as a
single PUT when they fit in one part. The object appears only when `complete()` is called, so a
caller decides when it becomes visible (etl.py uploads the rejects first), and on any failure the
upload is aborted and nothing appears. Memory: a few parts, whatever the object's size.
"""
from __future__ import annotations

import collections
import queue
import threading

from minio import Minio

PART_SIZE = 8 << 20                   # bytes per part (S3's minimum is 5 MiB)
_POLL_SECONDS = 0.5
_READ_CHUNK = 1 << 20


class Prefetch:
    """`read(n)` and `readinto(buffer)` over a response body that a thread reads ahead (at most
    `ahead` chunks). `readinto` copies each byte once, from the chunk the thread read into the
    caller's buffer (csv2parquet reads each block straight into its own buffer with it); the
    chunks are never joined to one another."""

    def __init__(self, response, ahead: int = 8):
        self._response = response
        self._chunks: queue.Queue = queue.Queue(maxsize=ahead)
        self._current = memoryview(b"")     # what is left of the chunk being handed out
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s3-download", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._response.read(_READ_CHUNK)
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as exc:   # handed to the reader, which raises it
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _next(self) -> bool:
        """Makes the next chunk current; False at the end of the body."""
        while not self._current and not self._done:
            item = self._chunks.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
            self._current = memoryview(item)
        return bool(self._current)

    def readinto(self, buffer) -> int:
        """Copies into `buffer` what is left of the chunk at hand, waiting for the next chunk only
        when none is at hand: at least one byte, 0 only at the end of the body."""
        out = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(out) and (self._current or (filled == 0 and self._next())):
            n = min(len(out) - filled, len(self._current))
            out[filled:filled + n] = self._current[:n]
            self._current = self._current[n:]
            filled += n
        return filled

    def read(self, size: int = -1) -> bytes:
        parts = []
        while (size < 0 or size > 0) and self._next():
            take = len(self._current) if size < 0 else min(size, len(self._current))
            parts.append(self._current[:take])
            self._current = self._current[take:]
            if size > 0:
                size -= take
        return b"".join(parts)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class UploadFailed(Exception):
    """Raised into the writer when the upload thread has stopped with an error."""


class StreamingUpload:
    """A writable binary file uploaded to s3://bucket/key as it is written (see the module)."""

    def __init__(self, client: Minio, bucket: str, key: str, *, content_type: str,
                 metadata: dict[str, str], part_size: int = PART_SIZE):
        self._part_size = part_size
        self._limit = 2 * part_size          # bytes written but not yet taken by the uploader
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._position = 0
        self._finished = False
        self._failed: BaseException | None = None
        self._cond = threading.Condition()
        self.error: BaseException | None = None
        self.result = None
        self._thread = threading.Thread(
            target=self._upload, name="s3-upload", daemon=True,
            args=(client, bucket, key, content_type, metadata))
        self._thread.start()

    # --- the writer's side (ParquetWriter) ---

    def write(self, data) -> int:
        data = bytes(data)
        with self._cond:
            while self._pending_bytes >= self._limit and self.error is None:
                self._cond.wait(_POLL_SECONDS)
            if self.error is not None:
                raise UploadFailed(f"upload stopped: {self.error}") from self.error
            self._pending.append(data)
            self._pending_bytes += len(data)
            self._position += len(data)
            self._cond.notify_all()
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:
        """What ParquetWriter calls when done: the object still waits for complete()."""

    def complete(self):
        """No more bytes: the last part goes up and the object appears. Raises what the upload
        raised."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def abort(self, why: BaseException) -> None:
        """Stops the upload; a multipart upload already begun is aborted, nothing appears."""
        with self._cond:
            self._failed = why
            self._cond.notify_all()
        self._thread.join(timeout=60)

    # --- the uploader's side (minio's put_object reads from here) ---

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while (self._failed is None and not self._finished
                   and (size < 0 or self._pending_bytes < size)):
                self._cond.wait(_POLL_SECONDS)
            if self._failed is not None:
                raise UploadFailed("the writer failed") from self._failed
            taken, out = 0, []
            while self._pending and (size < 0 or taken < size):
                chunk = self._pending.popleft()
                if size >= 0 and taken + len(chunk) > size:
                    cut = size - taken
                    self._pending.appendleft(chunk[cut:])
                    chunk = chunk[:cut]
                out.append(chunk)
                taken += len(chunk)
            self._pending_bytes -= taken
            self._cond.notify_all()
            return b"".join(out)

    def _upload(self, client: Minio, bucket: str, key: str, content_type: str,
                metadata: dict[str, str]) -> None:
        try:
            # one part at a time: parts in parallel would each hold a part in memory
            self.result = client.put_object(bucket, key, self, length=-1,
                                            part_size=self._part_size,
                                            content_type=content_type, metadata=metadata,
                                            num_parallel_uploads=1)
        except BaseException as exc:
            with self._cond:
                self.error = exc
                self._cond.notify_all()
