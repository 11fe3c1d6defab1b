"""CSV (`no,name,score`) to Parquet, streamed with bounded memory; bad rows go to a rejects CSV.

Shared core of every ETL program (`etl.py`, the S3 and FTP ETLs): they call `convert()` and never
reimplement it.

Input format (the tutorial's): three comma-separated fields per line, `no` (integer), `name` (text),
`score` (integer). Output schema: `no: int64, name: string, score: int64` -- the same types pandas
inferred for the tutorial's files, so readers of the tutorial's Parquet keep working. A decimal score
such as `95.5` is rejected ("not an integer"), never silently truncated.

Defined behaviour:
- Empty input (0 bytes, only a BOM, only blank lines or only the header): a Parquet file with the schema
  and 0 rows is still written, and the result says `"empty": true`. Downstream (aggregation) then sees
  the file as processed with 0 rows instead of "missing".
- A header `no,name,score` on line 1 is skipped (`"header": true`), not rejected. Anywhere else it is an
  ordinary bad row.
- A UTF-8 BOM is ignored; CRLF, LF and CR line ends are all accepted.
- Blank (or whitespace-only) lines are ignored and counted in `blank_lines`.
- Bytes that are not valid UTF-8: the line is rejected with reason "not valid UTF-8" (its bytes are kept
  in the rejects file with backslash escapes); it never aborts the run.
- No quoting: `"` is an ordinary character. The format has no quoted fields, and a quote that never
  closes would otherwise swallow the rest of the file (or break block-wise streaming). A name holding a
  comma therefore gives a wrong field count and is rejected.
- Surrounding spaces in `no` and `score` are ignored; `+5` is accepted.

The rejects file is a CSV `line,reason,text` (1-based physical line numbers, BOM not counted). It is
written only when there is at least one reject.

How it streams: a reader thread runs pyarrow's streaming CSV reader (`open_csv`) over the file,
block by block, every column read as a string, and casts `no`/`score` of each batch in one go; when
that cast fails for a batch, the calling thread casts it again with masks, so a bad row is removed
and reported with its line number while the rest of the batch goes on. Good rows go to a
`ParquetWriter` in row groups of `row_group_rows`. Memory is bounded by a few blocks plus one row
group, whatever the file size. `arrow_bytes_high_water` in the result is
the most Arrow memory seen in use (sampled after every batch), which shows that bound.
"""
from __future__ import annotations

import bisect
import csv
import io
import json
import os
import queue
import re
import sys
import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

COLUMNS = ("no", "name", "score")
SCHEMA = pa.schema([("no", pa.int64()), ("name", pa.string()), ("score", pa.int64())])
INTEGER_COLUMNS = ("no", "score")

DEFAULT_BLOCK_SIZE = 1 << 20          # bytes parsed per batch
DEFAULT_ROW_GROUP_ROWS = 1 << 20      # rows per Parquet row group
DEFAULT_COMPRESSION = "snappy"

_BOM = b"\xef\xbb\xbf"
_MAX_LINE_BYTES = 64 << 20            # a "line" longer than this is cut (it will be rejected anyway)
_QUEUE_DEPTH = 2                      # parsed batches waiting for the writer
_QUEUE_POLL_SECONDS = 0.5
_INT_RE = r"^-?[0-9]{1,18}$"          # 18 digits always fit int64; longer ones are checked one by one
_LONG_INT_RE = r"-?[0-9]{19,}"
_REPLACEMENT = "\ufffd"
_NOT_UTF8 = "not valid UTF-8"


class ConvertError(Exception):
    """The input could not be converted at all (not a per-row problem)."""


def convert(src_path: str, parquet_path: str, rejects_path: str, *,
            block_size: int = DEFAULT_BLOCK_SIZE,
            row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
            compression: str = DEFAULT_COMPRESSION,
            use_dictionary: bool = False,
            metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Convert `src_path` to `parquet_path`; write rejected rows to `rejects_path` if there are any.

    Returns a dict with at least `rows` (rows written), `rejected`, `empty`; also `header`,
    `blank_lines`, `batches`, `row_groups`, `arrow_bytes_high_water`, `source_bytes` and `rejects_path`
    (None when nothing was rejected; a stale file at that path is removed).
    """
    pool = pa.default_memory_pool()
    schema = SCHEMA.with_metadata(metadata) if metadata else SCHEMA
    rejects = _RejectsWriter(rejects_path)
    stats = {"rows": 0, "rejected": 0, "header": False, "blank_lines": 0, "batches": 0,
             "row_groups": 0, "arrow_bytes_high_water": 0}
    try:
        source_bytes = os.path.getsize(src_path)
    except OSError as exc:
        raise ConvertError(f"cannot read input {src_path}: {exc.strerror}") from exc

    # Dictionary encoding is off by default: `no` is unique per row, and trying (then abandoning) a
    # dictionary per column chunk doubled the write time in bench/bench_etl.py. The integers are
    # delta-encoded instead: same CPU, and a file ~45% smaller than plain encoding (all common
    # Parquet readers, pandas, DuckDB and Spark included, read DELTA_BINARY_PACKED).
    encoding = None if use_dictionary else {c: "DELTA_BINARY_PACKED" for c in INTEGER_COLUMNS}
    with pq.ParquetWriter(parquet_path, schema, compression=compression,
                          use_dictionary=use_dictionary, column_encoding=encoding,
                          memory_pool=pool) as writer:
        pending: list[pa.Table] = []
        pending_rows = 0

        def flush() -> None:
            nonlocal pending, pending_rows
            if pending_rows:
                writer.write_table(pa.concat_tables(pending), row_group_size=pending_rows)
                stats["row_groups"] += 1
            pending, pending_rows = [], 0

        try:
            if not _only_bom_or_nothing(src_path, source_bytes):
                for table in _good_tables(src_path, block_size, pool, rejects, stats):
                    pending.append(table)
                    pending_rows += table.num_rows
                    stats["arrow_bytes_high_water"] = max(stats["arrow_bytes_high_water"],
                                                          pool.bytes_allocated())
                    if pending_rows >= row_group_rows:
                        flush()
                flush()
        finally:
            rejects.close()

    return {
        "rows": stats["rows"],
        "rejected": stats["rejected"],
        "empty": stats["rows"] == 0 and stats["rejected"] == 0,
        "header": stats["header"],
        "blank_lines": stats["blank_lines"],
        "batches": stats["batches"],
        "row_groups": stats["row_groups"],
        "arrow_bytes_high_water": stats["arrow_bytes_high_water"],
        "source_bytes": source_bytes,
        "rejects_path": rejects_path if stats["rejected"] else None,
    }


def _only_bom_or_nothing(path: str, size: int) -> bool:
    # pyarrow refuses a file without any line ("Empty CSV file"), so these are handled up front.
    if size > len(_BOM):
        return False
    with open(path, "rb") as fh:
        return fh.read() in (b"", _BOM)


# --- reading ---------------------------------------------------------------------------------


class _Utf8GuardedFile(io.RawIOBase):
    """Serves the file to Arrow in whole lines; a line that is not UTF-8 is served repaired.

    Arrow's invalid-row callback cannot even be called for a line that is not UTF-8 (pyarrow decodes
    the text first, and the whole read fails), so such a line is repaired here (invalid bytes become
    U+FFFD) and remembered: `repaired[repaired text] = [raw bytes, ...]`. Whoever meets a row with
    U+FFFD looks it up there to tell a repaired line from one that really holds U+FFFD.
    Checking is Arrow's UTF-8 validation of each piece (fast); only a failing piece is split up.
    """

    def __init__(self, path: str, chunk_size: int):
        super().__init__()
        self._fh = open(path, "rb", buffering=0)
        self._chunk_size = max(chunk_size, 1 << 16)
        self._carry = b""
        self._ready = b""
        self._eof = False
        self._at_start = True
        self.repaired: dict[str, list[bytes]] = {}

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()
        super().close()

    def read(self, size: int = -1) -> bytes:
        while not self._ready and not (self._eof and not self._carry):
            self._fill()
        if size < 0 or size >= len(self._ready):
            out, self._ready = self._ready, b""
        else:
            out, self._ready = self._ready[:size], self._ready[size:]
        return out

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def _fill(self) -> None:
        data = self._carry
        while not self._eof:
            chunk = self._fh.read(self._chunk_size)
            if not chunk:
                self._eof = True
                break
            data = data + chunk if data else chunk
            cut = _last_line_end(data)
            if cut:
                self._carry = data[cut:]
                self._ready = self._checked(data[:cut] if cut < len(data) else data)
                return
            if len(data) >= _MAX_LINE_BYTES:
                break
        self._carry = b""
        self._ready = self._checked(data)

    def _checked(self, piece: bytes) -> bytes:
        at_start, self._at_start = self._at_start, False
        if _is_utf8(piece):
            return piece
        out = []
        for i, line in enumerate(piece.splitlines(keepends=True)):
            body = line.rstrip(b"\r\n")
            end = line[len(body):]
            bom = b""
            if at_start and i == 0 and body.startswith(_BOM):
                bom, body = _BOM, body[len(_BOM):]
            if not _is_utf8(body):
                fixed = body.decode("utf-8", "replace")
                self.repaired.setdefault(fixed, []).append(body)
                line = bom + fixed.encode("utf-8") + end
            out.append(line)
        return b"".join(out)

    def take_repaired(self, text: str) -> bytes | None:
        """The raw bytes of a repaired line with this text, or None if no line was repaired so."""
        raws = self.repaired.get(text)
        if not raws:
            return None
        raw = raws.pop(0)
        if not raws:
            del self.repaired[text]
        return raw


def _is_utf8(data: bytes) -> bool:
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int32))
    try:
        pa.StringArray.from_buffers(1, offsets, pa.py_buffer(data)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _last_line_end(data: bytes) -> int:
    """Offset just after the last complete line end in `data` (0 if none is certain yet)."""
    lf = data.rfind(b"\n")
    # A CR at the very end may be the first half of CRLF, so only a CR before the last byte counts.
    cr = data.rfind(b"\r", 0, len(data) - 1)
    return max(lf, cr) + 1


class _Producer(threading.Thread):
    """Parses blocks on its own thread and queues ("batch", (batch, int columns), skipped lines),
    then ("end", None, skipped lines) or ("error", exception, None), for the writer."""

    def __init__(self, src: _Utf8GuardedFile, block_size: int, pool: pa.MemoryPool):
        super().__init__(name="csv2parquet-reader", daemon=True)
        self.src = src
        self.block_size = block_size
        self.pool = pool
        self.queue: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)
        self.stop = threading.Event()
        self._skipped: list[tuple[int, str]] = []

    def _on_invalid_row(self, row) -> str:
        # Wrong field count. use_threads=False is what makes `row.number` (the line) available.
        self._skipped.append((row.number, row.text))
        return "skip"

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_QUEUE_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            reader = pacsv.open_csv(
                pa.PythonFile(self.src, mode="r"),
                read_options=pacsv.ReadOptions(column_names=list(COLUMNS), use_threads=False,
                                               block_size=self.block_size),
                parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False,
                                                 invalid_row_handler=self._on_invalid_row),
                convert_options=pacsv.ConvertOptions(
                    # _Utf8GuardedFile has already validated (and repaired) every byte.
                    column_types={c: pa.string() for c in COLUMNS}, check_utf8=False,
                    strings_can_be_null=False, quoted_strings_can_be_null=False),
                memory_pool=self.pool)
            while not self.stop.is_set():
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                skipped, self._skipped = self._skipped, []
                # The optimistic cast runs here, so parsing+casting and writing share the two
                # threads about evenly (bench/bench_etl.py).
                if not self._put(("batch", (batch, _try_int_casts(batch, self.pool)), skipped)):
                    return
            # Rows skipped after the last batch (a file ending in bad lines) still need reporting.
            self._put(("end", None, self._skipped))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(("error", exc, None))


def _good_tables(src_path: str, block_size: int, pool: pa.MemoryPool,
                 rejects: "_RejectsWriter", stats: dict):
    src = _Utf8GuardedFile(src_path, block_size)
    producer = _Producer(src, block_size, pool)
    lines = _LineCounter()
    producer.start()
    try:
        while True:
            try:
                kind, payload, skipped = producer.queue.get(timeout=_QUEUE_POLL_SECONDS)
            except queue.Empty:
                if producer.is_alive():
                    continue
                raise ConvertError(f"reader of {src_path} stopped without a result") from None
            if kind == "error":
                raise ConvertError(f"cannot parse {src_path}: "
                                   f"{type(payload).__name__}: {payload}") from payload
            for number, text in skipped:
                lines.add_skipped(number)
                _report_skipped_line(number, text, src, rejects, stats)
            if kind == "end":
                rejects.flush()
                return
            stats["batches"] += 1
            batch, ints = payload
            if batch.num_rows:
                table = _cast_batch(batch, ints, lines.next_rows(batch.num_rows), src, pool,
                                    rejects, stats)
                if table.num_rows:
                    stats["rows"] += table.num_rows
                    yield table
            rejects.flush(upto=lines.last_line)
    finally:
        producer.stop.set()
        producer.join(timeout=30)
        src.close()


def _report_skipped_line(number: int, text: str, src: _Utf8GuardedFile, rejects, stats) -> None:
    raw = src.take_repaired(text) if src.repaired and _REPLACEMENT in text else None
    if raw is not None:
        rejects.add(number, _NOT_UTF8, _escaped(raw))
    elif text.strip() == "":
        stats["blank_lines"] += 1
    else:
        rejects.add(number, f"expected {len(COLUMNS)} fields, got {text.count(',') + 1}", text)
    stats["rejected"] = rejects.count


class _LineCounter:
    """Maps rows of the stream to physical lines: every line is either a row or a skipped line."""

    def __init__(self):
        self.last_line = 0
        self._skipped: list[int] = []   # skipped lines after last_line, ascending

    def add_skipped(self, number: int) -> None:
        self._skipped.append(number)

    def next_rows(self, n: int) -> np.ndarray:
        idx = np.arange(n, dtype=np.int64)
        if self._skipped:
            skipped = np.asarray(self._skipped, dtype=np.int64)
            # free[j]: how many rows fit between last_line and the j-th skipped line
            free = skipped - self.last_line - np.arange(1, len(skipped) + 1)
            line_numbers = self.last_line + 1 + idx + np.searchsorted(free, idx, side="right")
        else:
            line_numbers = self.last_line + 1 + idx
        self.last_line = int(line_numbers[-1])
        self._skipped = [s for s in self._skipped if s > self.last_line]
        return line_numbers


# --- casting -----------------------------------------------------------------------------------


def _try_int_casts(batch: pa.RecordBatch, pool) -> dict:
    """The integer columns cast as a whole; None for a column where any row is not an integer."""
    ints = {}
    for c in INTEGER_COLUMNS:
        try:
            ints[c] = pc.cast(batch.column(c), pa.int64(), memory_pool=pool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            ints[c] = None
    return ints


def _cast_batch(batch: pa.RecordBatch, ints: dict, line_numbers: np.ndarray,
                src: _Utf8GuardedFile, pool: pa.MemoryPool, rejects: "_RejectsWriter",
                stats: dict) -> pa.Table:
    """The batch's good rows in SCHEMA; every other row is dropped and, unless it is the header or
    a blank line, reported with its line number. `ints` holds the columns _try_int_casts managed."""
    cols = {c: batch.column(c) for c in COLUMNS}
    dropped: dict[int, tuple[str, str] | None] = {}   # row -> (reason, text); None: drop silently

    if src.repaired:
        _find_repaired_rows(cols, src, dropped, pool)
    if line_numbers[0] == 1 and _is_header(cols):
        stats["header"] = True
        dropped.setdefault(0, None)

    ints = dict(ints)
    if ints["no"] is None or ints["score"] is None:
        for i in np.flatnonzero(_blank_rows(cols, pool)):
            if int(i) not in dropped:
                dropped[int(i)] = None
                stats["blank_lines"] += 1
        for c in INTEGER_COLUMNS:
            if ints[c] is None:
                ints[c] = _cast_ints_masked(cols, c, dropped, pool)

    table = pa.Table.from_arrays([ints["no"], cols["name"], ints["score"]], schema=SCHEMA)
    if not dropped:
        return table
    for i, why in dropped.items():
        if why is not None:
            rejects.add(int(line_numbers[i]), *why)
    stats["rejected"] = rejects.count
    keep = np.ones(batch.num_rows, dtype=bool)
    keep[list(dropped)] = False
    return table.filter(pa.array(keep))


def _row_text(cols: dict, i: int) -> str:
    return ",".join(cols[c][i].as_py() for c in COLUMNS)


def _find_repaired_rows(cols: dict, src: _Utf8GuardedFile, dropped: dict, pool) -> None:
    suspect = None
    for c in COLUMNS:
        has = pc.match_substring(cols[c], _REPLACEMENT, memory_pool=pool)
        suspect = has if suspect is None else pc.or_(suspect, has, memory_pool=pool)
    for i in np.flatnonzero(suspect.to_numpy(zero_copy_only=False)):
        raw = src.take_repaired(_row_text(cols, int(i)))
        if raw is not None:
            dropped[int(i)] = (_NOT_UTF8, _escaped(raw))


def _is_header(cols: dict) -> bool:
    return tuple(cols[c][0].as_py().strip().lower() for c in COLUMNS) == COLUMNS


def _blank_rows(cols: dict, pool) -> np.ndarray:
    blank = None
    for c in COLUMNS:
        empty = pc.equal(pc.utf8_trim_whitespace(cols[c], memory_pool=pool), "",
                         memory_pool=pool)
        blank = empty if blank is None else pc.and_(blank, empty, memory_pool=pool)
    return blank.to_numpy(zero_copy_only=False)


def _cast_ints_masked(cols: dict, name: str, dropped: dict, pool) -> pa.Array:
    """Casts the rows of column `name` that hold an integer; a reason for every row that does not."""
    text = pc.utf8_trim_whitespace(cols[name], memory_pool=pool)
    text = pc.replace_substring_regex(text, r"^\+", "", memory_pool=pool)
    ok = pc.match_substring_regex(text, _INT_RE, memory_pool=pool)
    values = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string()), memory_pool=pool),
                     pa.int64(), memory_pool=pool)
    bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    if len(bad) == 0:
        return values
    fixed: dict[int, int] = {}
    for i in (int(i) for i in bad):
        raw = text[i].as_py()
        long_int = re.fullmatch(_LONG_INT_RE, raw) is not None
        if long_int and -(1 << 63) <= int(raw) < (1 << 63):
            fixed[i] = int(raw)
        elif i in dropped:
            continue
        elif raw == "":
            dropped[i] = (f"{name} is empty", _row_text(cols, i))
        elif long_int:
            dropped[i] = (f"{name} is out of the int64 range: {raw!r}", _row_text(cols, i))
        else:
            dropped[i] = (f"{name} is not an integer: {raw!r}", _row_text(cols, i))
    if fixed:
        py = values.to_pylist()
        for i, v in fixed.items():
            py[i] = v
        values = pa.array(py, pa.int64())
    return values


def _escaped(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


# --- rejects -----------------------------------------------------------------------------------


class _RejectsWriter:
    """CSV `line,reason,text`, opened on the first reject; a stale file is removed when none.

    Rejects are held and written in line order by `flush(upto)`: the reader reports the bad lines of a
    block before the rows of the block before it are cast, so a reject is written only once every
    line before it has been decided.
    """

    def __init__(self, path: str):
        self.path = path
        self.count = 0
        self._held: list[tuple[int, str, str]] = []
        self._fh = None
        self._csv = None

    def add(self, line: int, reason: str, text: str) -> None:
        self._held.append((line, reason, text))
        self.count += 1

    def flush(self, upto: int | None = None) -> None:
        self._held.sort()
        cut = len(self._held) if upto is None else bisect.bisect_right(self._held, (upto + 1,))
        if not cut:
            return
        if self._fh is None:
            self._fh = open(self.path, "w", encoding="utf-8", newline="")
            self._csv = csv.writer(self._fh, lineterminator="\n")
            self._csv.writerow(["line", "reason", "text"])
        self._csv.writerows(self._held[:cut])
        del self._held[:cut]

    def close(self) -> None:
        self.flush()
        if self._fh is not None:
            self._fh.close()
        elif os.path.exists(self.path):
            os.remove(self.path)


def read_rejects(path: str) -> list[dict[str, str]]:
    """The rows of a rejects file, for callers that report them."""
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: csv2parquet.py SRC.csv OUT.parquet REJECTS.csv", file=sys.stderr)
        return 2
    try:
        result = convert(*argv)
    except ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
