"""CSV (`no,name,score`) to Parquet, streamed with bounded memory; bad rows go to a rejects CSV.

Shared core of every ETL program (`etl.py`, the S3 and FTP ETLs): they call `convert()` and never
reimplement it.

Input format (the tutorial's): three comma-separated fields per line, `no` (integer), `name` (text),
`score` (integer). Output schema: `no: int64, name: string, score: int64` -- the same types pandas
inferred for the tutorial's files, so readers of the tutorial's Parquet keep working. A decimal score
such as `95.5` is rejected ("not an integer"), never silently truncated.

Defined behaviour (every line of the input is accounted for: the result's `lines` is
`rows + rejected + blank_lines + header`, header being 1 when line 1 was a header):
- Empty input (0 bytes, only a BOM, only blank lines or only the header): a Parquet file with the schema
  and 0 rows is still written, and the result says `"empty": true`. Downstream (aggregation) then sees
  the file as processed with 0 rows instead of "missing".
- A header `no,name,score` on line 1 is skipped (`"header": true`), not rejected. Anywhere else it is an
  ordinary bad row.
- A UTF-8 BOM is ignored; CRLF, LF and CR line ends are all accepted.
- Blank lines (empty, or only spaces/tabs) are ignored and counted in `blank_lines`. A line of empty
  fields such as `,,` is not blank: it is rejected ("no is empty").
- Bytes that are not valid UTF-8: the line is rejected with reason "not valid UTF-8" (its bytes are kept
  in the rejects file with backslash escapes); it never aborts the run.
- Quoting as in RFC 4180, read as pandas (the tutorial's reader) reads it: `1,"Kim, Y",50` is one row
  with the name `Kim, Y`; `""` inside a quoted field is a quote; a quote inside an unquoted field
  (`x"y`) is text. A line is a row: a quoted field never runs past the end of its line, so a quote that
  does not close on its line rejects that line only ("quote not closed on its line"), never the lines
  after it (a quoted line break therefore gives two rejected lines).
- A line longer than half the block (`max_line_bytes(block_size)`, 512 KiB by default) is rejected
  on its own ("line is longer than ..."; the rejects file keeps its first 200 bytes), however long it
  is, without ever holding it in memory; the rest of the file is converted.
- Surrounding spaces in `no` and `score` are ignored; `+5` is accepted.

The rejects file is a CSV `line,reason,text` (1-based physical line numbers, BOM not counted). It is
written only when there is at least one reject. The text of a row rejected for its values is the row
written back as CSV (fields holding a comma quoted).

How it streams: a reader thread runs pyarrow's streaming CSV reader (`open_csv`) over the file
(served by `_GuardedFile`, which holds back the lines Arrow cannot take; see there), block by block, every column read as a string, and casts `no`/`score` of each batch in one go; when
that cast fails for a batch, the calling thread casts it again with masks, so a bad row is removed
and reported with its line number while the rest of the batch goes on. Good rows go to a
`ParquetWriter` in row groups of `row_group_rows`. Memory is bounded by a few blocks plus one row
group, whatever the file size. `arrow_bytes_high_water` in the result is
the most Arrow memory seen in use (sampled after every batch), which shows that bound.
"""
from __future__ import annotations

import bisect
import collections
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
_QUEUE_DEPTH = 2                      # parsed batches waiting for the writer
_QUEUE_POLL_SECONDS = 0.5
_INT_RE = r"^-?[0-9]{1,18}$"          # 18 digits always fit int64; longer ones are checked one by one
_LONG_INT_RE = r"-?[0-9]{19,}"
_NOT_UTF8 = "not valid UTF-8"


def max_line_bytes(block_size: int) -> int:
    """The longest line converted: half a block, so that a line always ends within the block Arrow
    reads it in (a longer one is rejected on its own)."""
    return max(block_size // 2, 1)


class ConvertError(Exception):
    """The input could not be converted at all (not a per-row problem; a retry will not help)."""

    retryable = False


def convert(src_path: str, parquet_path: str, rejects_path: str, *,
            block_size: int = DEFAULT_BLOCK_SIZE,
            row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
            compression: str = DEFAULT_COMPRESSION,
            use_dictionary: bool = False,
            metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Convert `src_path` to `parquet_path`; write rejected rows to `rejects_path` if there are any.

    Returns a dict with at least `lines`, `rows` (rows written), `rejected`, `empty`; also `header`,
    `blank_lines`, `batches`, `row_groups`, `arrow_bytes_high_water`, `source_bytes` and `rejects_path`
    (None when nothing was rejected; a stale file at that path is removed).
    """
    pool = pa.default_memory_pool()
    schema = SCHEMA.with_metadata(metadata) if metadata else SCHEMA
    rejects = _RejectsWriter(rejects_path)
    stats = {"lines": 0, "rows": 0, "rejected": 0, "header": False, "blank_lines": 0, "batches": 0,
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
        "lines": stats["lines"],
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

# One field as pandas and Arrow read it (RFC 4180): quoted ("" is a quote inside; whatever
# follows the closing quote up to the comma is appended as text) or unquoted (a quote inside it
# is text). A quoted field here never holds a line end: a line is a row.
_FIELD = rb'(?:"(?:[^"\r\n]|"")*+"[^,\r\n]*+|[^,"\r\n][^,\r\n]*+|)'
_LINE = _FIELD + rb'(?:,' + _FIELD + rb')*+'
_GOOD_LINES = re.compile(rb'(?:' + _LINE + rb'(?:\r\n|\n|\r))*+')
_GOOD_LINE = re.compile(_LINE)
_EMPTY_LINE = re.compile(rb'(?:(?<=\n)|(?<=\r)(?!\n))(?=[\r\n])')
# what a line Arrow must not see is served as: a skipped row (one field), see _GuardedFile
_PLACEHOLDER = b"\0"
_PLACEHOLDER_TEXT = _PLACEHOLDER.decode()
_LONG_SAMPLE_BYTES = 200              # what the rejects file keeps of a line that is too long


class _GuardedFile(io.RawIOBase):
    """Serves the file to Arrow in whole lines, each of which Arrow can parse on its own.

    A line Arrow must not see is served as the line `_PLACEHOLDER` (its line end kept, so every
    line keeps its number) and its (reason, text) is queued in `flagged`, in line order:
    - a line that is not UTF-8 (Arrow's invalid-row callback cannot even be called for one: the
      whole read fails), its bytes kept with backslash escapes;
    - a line with a quote that does not close on that line (Arrow would carry the quoted field on
      into the following lines);
    - a line longer than `max_line_bytes` (Arrow fails the whole file on a row longer than its
      block); only its first bytes are kept, so memory stays bounded whatever its length;
    - a line that is the placeholder itself, so that every placeholder Arrow reports has its entry.
    Arrow reports each placeholder as a skipped row (one field) with its line number; the consumer
    takes the next entry of `flagged` for it. An empty line is served as one space: Arrow reads an
    empty line as a row of empty fields, the same as `,,`, and a line of one space as a skipped
    row, which the consumer counts as blank.
    Checking is a few fast passes over each piece (Arrow's UTF-8 validation, byte searches, a
    regular expression only when the piece holds a quote); only a piece that fails is split into
    lines.
    """

    def __init__(self, path: str, max_line_bytes: int, quoting: bool = True):
        super().__init__()
        self._fh = open(path, "rb", buffering=0)
        self.max_line = max(max_line_bytes, 1)
        self._chunk_size = self.max_line
        self._quoting = quoting
        self._carry = b""
        self._ready = b""
        self._eof = False
        self._first = True
        self.flagged: collections.deque[tuple[str, str]] = collections.deque()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()
        super().close()

    def read(self, size: int = -1) -> bytes:
        while not self._ready and not (self._eof and not self._carry):
            self._ready = self._fill()
        if size < 0 or size >= len(self._ready):
            out, self._ready = self._ready, b""
        else:
            out, self._ready = self._ready[:size], self._ready[size:]
        return out

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def take(self) -> tuple[str, str]:
        """(reason, text) of the next line that was served as the placeholder."""
        return self.flagged.popleft()

    def _fill(self) -> bytes:
        data, self._carry = self._carry, b""
        while not self._eof:
            chunk = self._fh.read(self._chunk_size)
            if not chunk:
                self._eof = True
                break
            data = data + chunk if data else chunk
            cut = _last_line_end(data)
            if cut:
                self._carry = data[cut:]
                return self._scrub(data[:cut])
            if len(data) > self.max_line:
                # The first line has no end yet and is already too long: read on to its end.
                return self._skip_long_line(data)
        return self._scrub(data)

    def _skip_long_line(self, data: bytes) -> bytes:
        """Reads past a line that is too long, keeping a sample; returns its placeholder. What
        follows the line in the chunk it ended in goes round again as the carry."""
        sample, length, buf = data[:_LONG_SAMPLE_BYTES], 0, data
        while True:
            end = _first_line_end(buf)
            if end >= 0:
                length += end
                if buf[end] == 13 and end + 1 == len(buf):   # a CR last: is an LF next?
                    more = self._fh.read(self._chunk_size)
                    self._eof = not more
                    buf += more
                self._carry = buf[end + (2 if buf[end:end + 2] == b"\r\n" else 1):]
                break
            length += len(buf)
            buf = self._fh.read(self._chunk_size)
            if not buf:
                self._eof = True
                break
        if self._first:
            self._first = False
            if sample.startswith(_BOM):
                sample, length = sample[len(_BOM):], length - len(_BOM)
        self.flagged.append((f"line is longer than {self.max_line} bytes ({length} bytes)",
                             _escaped(sample) + "..."))
        return _PLACEHOLDER + b"\n"

    def _scrub(self, piece: bytes) -> bytes:
        # Arrow skips a BOM at the start of the file, so the checks do too.
        start = 0
        if self._first:
            self._first = False
            start = len(_BOM) if piece.startswith(_BOM) else 0
        if ((len(piece) <= self.max_line or _first_line_end(piece) in range(self.max_line + 1))
                and _is_utf8(piece)
                and piece.find(b"\0") < 0
                and (not self._quoting or piece.find(b'"') < 0 or _quotes_close(piece, start))):
            return _mark_empty_lines(piece, start)
        out = []
        for number, line in enumerate(piece.splitlines(keepends=True)):
            body = line.rstrip(b"\r\n")
            text = body[start:] if number == 0 else body
            why = None
            if len(body) > self.max_line:
                why = (f"line is longer than {self.max_line} bytes ({len(text)} bytes)",
                       _escaped(text[:_LONG_SAMPLE_BYTES]) + "...")
            elif not (text.isascii() or _decodes(text)):
                why = (_NOT_UTF8, _escaped(text))
            elif self._quoting and b'"' in text and not _GOOD_LINE.fullmatch(text):
                why = ("quote not closed on its line", text.decode("utf-8"))
            elif text == _PLACEHOLDER:
                why = (f"expected {len(COLUMNS)} fields, got 1", text.decode("utf-8"))
            if why is None:
                out.append(line)
            else:
                self.flagged.append(why)
                out.append(_PLACEHOLDER + (line[len(body):] or b"\n"))
                if number == 0:
                    start = 0    # the BOM went with the line
        return _mark_empty_lines(b"".join(out), start)


def _mark_empty_lines(piece: bytes, start: int) -> bytes:
    """Each empty line made a single space (see _GuardedFile)."""
    if not piece:
        return piece
    arr = np.frombuffer(piece, dtype=np.uint8)
    lf = arr == 10
    if piece.find(b"\r") < 0:
        empty = bool(np.any(lf[1:] & lf[:-1]))
    else:
        cr = arr == 13
        end = lf | cr
        empty = bool(np.any(end[1:] & end[:-1] & ~(cr[:-1] & lf[1:])))
    if empty:
        piece = _EMPTY_LINE.sub(b" ", piece)
    if piece[start:start + 1] in (b"\n", b"\r"):   # a piece starts at the start of a line
        piece = piece[:start] + b" " + piece[start:]
    return piece


def _quotes_close(piece: bytes, start: int = 0) -> bool:
    end = _GOOD_LINES.match(piece, start).end()
    return end == len(piece) or _GOOD_LINE.fullmatch(piece, end) is not None


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_utf8(data: bytes) -> bool:
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int32))
    try:
        pa.StringArray.from_buffers(1, offsets, pa.py_buffer(data)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _first_line_end(data: bytes) -> int:
    """Offset of the first CR or LF in `data`, -1 if there is none."""
    lf = data.find(b"\n")
    cr = data.find(b"\r", 0, lf if lf >= 0 else len(data))
    return cr if cr >= 0 else lf


def _last_line_end(data: bytes) -> int:
    """Offset just after the last complete line end in `data` (0 if none is certain yet)."""
    lf = data.rfind(b"\n")
    # A CR at the very end may be the first half of CRLF, so only a CR before the last byte counts.
    cr = data.rfind(b"\r", 0, len(data) - 1)
    return max(lf, cr) + 1


class _Producer(threading.Thread):
    """Parses blocks on its own thread and queues ("batch", (batch, int columns), skipped lines),
    then ("end", None, skipped lines) or ("error", exception, None), for the writer."""

    def __init__(self, src: _GuardedFile, block_size: int, pool: pa.MemoryPool):
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
                # _GuardedFile serves only lines whose quotes close on the line: no value spans
                # lines, so Arrow may split blocks at any line end.
                parse_options=pacsv.ParseOptions(quote_char='"', double_quote=True,
                                                 newlines_in_values=False,
                                                 ignore_empty_lines=False,
                                                 invalid_row_handler=self._on_invalid_row),
                convert_options=pacsv.ConvertOptions(
                    # _GuardedFile has already validated every byte.
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
    src = _GuardedFile(src_path, max_line_bytes(block_size))
    producer = _Producer(src, block_size, pool)
    lines = _LineCounter()
    last_skipped = 0
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
                last_skipped = number
                _report_skipped_line(number, text, src, rejects, stats)
            if kind == "end":
                rejects.flush()
                # every line is a row or a skipped line, so the last of either is the count
                stats["lines"] = max(lines.last_line, last_skipped)
                return
            stats["batches"] += 1
            batch, ints = payload
            if batch.num_rows:
                table = _cast_batch(batch, ints, lines.next_rows(batch.num_rows), pool,
                                    rejects, stats)
                if table.num_rows:
                    stats["rows"] += table.num_rows
                    yield table
            rejects.flush(upto=lines.last_line)
    finally:
        producer.stop.set()
        producer.join(timeout=30)
        src.close()


def _report_skipped_line(number: int, text: str, src: _GuardedFile, rejects, stats) -> None:
    if text == _PLACEHOLDER_TEXT:
        rejects.add(number, *src.take())
    elif text.strip() == "":
        stats["blank_lines"] += 1
    else:
        rejects.add(number, f"expected {len(COLUMNS)} fields, got {_field_count(text)}", text)
    stats["rejected"] = rejects.count


def _field_count(text: str) -> int:
    if '"' not in text:
        return text.count(",") + 1
    return len(next(csv.reader([text]), [""]))


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
                pool: pa.MemoryPool, rejects: "_RejectsWriter", stats: dict) -> pa.Table:
    """The batch's good rows in SCHEMA; every other row is dropped and, unless it is the header,
    reported with its line number. `ints` holds the columns _try_int_casts managed."""
    cols = {c: batch.column(c) for c in COLUMNS}
    dropped: dict[int, tuple[str, str] | None] = {}   # row -> (reason, text); None: the header

    if line_numbers[0] == 1 and _is_header(cols):
        stats["header"] = True
        dropped[0] = None

    ints = dict(ints)
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


def _quoted(field: str) -> str:
    # As a CSV writer would (so the text reads back as the same fields)
    if "," in field or field.startswith('"'):
        return '"' + field.replace('"', '""') + '"'
    return field


def _row_text(cols: dict, i: int) -> str:
    return ",".join(_quoted(cols[c][i].as_py()) for c in COLUMNS)


def _is_header(cols: dict) -> bool:
    return tuple(cols[c][0].as_py().strip().lower() for c in COLUMNS) == COLUMNS


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
