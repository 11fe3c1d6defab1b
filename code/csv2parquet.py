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
- A line longer than half the block, at most 512 KiB (`max_line_bytes(block_size)`), is rejected
  on its own ("line is longer than ..."; the rejects file keeps its first 200 bytes), however long it
  is, without ever holding it in memory; the rest of the file is converted.
- Surrounding spaces in `no` and `score` are ignored; `+5` is accepted.

The rejects file is a CSV `line,reason,text` (1-based physical line numbers, BOM not counted). It is
written only when there is at least one reject. The text of a row rejected for its values is the row
written back as CSV (fields holding a comma quoted).

How it streams (bench/bench_etl.py measures every choice): the calling thread reads the input in
blocks of `block_size` bytes cut at line ends (csv2parquet_pieces.py; read straight into each
block's buffer); two worker threads parse the blocks at the same time, each on its own, so the rows
keep their exact line numbers whatever order the blocks finish in; each block is checked with a few
fast passes over its bytes, parsed by Arrow and cast to int64 in one go, and only a block where
that fails is split into lines (a line Arrow must not see) or cast with masks (a value that is not
an integer), csv2parquet_parse.py, which also builds each reject's line of the rejects CSV but its
line number. The calling thread takes the results in file order, writes the rejects in line order
and cuts the good rows into row groups of `row_group_rows`, which a writer thread of their own
writes to a `ParquetWriter` one at a time, so that reading, parsing and writing overlap. Memory
is bounded by a few blocks plus two row groups, whatever the file size. `arrow_bytes_high_water`
in the result is the most Arrow memory seen in use (sampled after every block), which shows that
bound.

A conversion that fails (a ConvertError, or an error writing the Parquet such as a full disk)
raises that one error and leaves no output claimed as done: the rejects file is removed, and so is
the Parquet file when `parquet` is a path (a writable is left to its caller, as etl.py aborts its
upload); no row group is written after the error.
"""
from __future__ import annotations

import collections
import concurrent.futures
import csv
import ctypes
import json
import os
import queue
import sys
import threading
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

import csv2parquet_parse as parse
import csv2parquet_pieces as pieces
from csv2parquet_parse import COLUMNS, INTEGER_COLUMNS, SCHEMA  # noqa: F401 - the public names

# Sizes chosen in bench/bench_etl.py: 4 MiB blocks cost the same CPU as 8 MiB ones and peak ~60 MiB
# lower; row groups of 512 Ki rows (~3.5 MB of Parquet each) another ~35 MiB lower than 1 Mi rows.
DEFAULT_BLOCK_SIZE = 4 << 20          # bytes parsed per block
LONGEST_LINE_BYTES = 512 << 10        # the longest line converted (see max_line_bytes)
DEFAULT_ROW_GROUP_ROWS = 1 << 19      # rows per Parquet row group
DEFAULT_COMPRESSION = "snappy"
PARSE_THREADS = 2
# Blocks read beyond the ones being parsed: with the writer on its own thread, none ahead costs
# no wall time and peaks ~15 MiB lower than one (bench/bench_etl.py, 1 GB).
_BLOCKS_AHEAD = 0
_GROUPS_IN_WRITER = 1                 # row groups handed to the writer thread at a time: bounds memory


def max_line_bytes(block_size: int) -> int:
    """The longest line converted: half a block, at most LONGEST_LINE_BYTES (a longer one is
    rejected on its own, and never held in memory whole)."""
    return max(min(block_size // 2, LONGEST_LINE_BYTES), 1)


class ConvertError(Exception):
    """The input could not be converted at all (not a per-row problem; a retry will not help)."""

    retryable = False


def conversion_memory_pool() -> pa.MemoryPool:
    """Makes jemalloc the process's Arrow memory pool, when this pyarrow has it, and returns it.
    Under mimalloc (pyarrow's default) a fresh process spent ~1 s more system time per 300 MB on
    page faults, peaked ~70 MiB higher, and filtering a block took 3x as long (bench/bench_etl.py).
    The default pool is set, not only passed, because pyarrow's own calls (Table.filter, concat)
    use it. ARROW_DEFAULT_MEMORY_POOL, when set, wins."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except (NotImplementedError, pa.ArrowNotImplementedError):
            pass
    return pa.default_memory_pool()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3    # glibc's mallopt() parameters
_MALLOC_KEEPS = 64 << 20


def reuse_freed_blocks() -> None:
    """Makes glibc's malloc keep the memory of freed blocks for the next ones, when it is glibc.
    A block's buffer (and a parse thread's copy of a column's characters) is a few MiB, which
    glibc maps afresh and unmaps when freed (its dynamic threshold stays below such sizes while
    they are freed as fast as they come), so every page of every block was a page fault: 280 k
    faults and ~1 s of system time per GB. Served from the heap instead (freed memory kept up to
    64 MiB), 75-120 k faults, ~0.5 s less system time, and 1 GB in 3.23 s instead of 3.49 s
    side by side, the peak RSS within 7 MiB. Process-wide, like the memory pool;
    MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_, when set, win."""
    global _malloc_tuned
    if _malloc_tuned or os.environ.get("MALLOC_MMAP_THRESHOLD_") \
            or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return
    _malloc_tuned = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):     # not glibc (musl, macOS): nothing to tune
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, _MALLOC_KEEPS)
    mallopt(_M_TRIM_THRESHOLD, _MALLOC_KEEPS)


_malloc_tuned = False


def skip_pandas_in_pyarrow() -> None:
    """pyarrow imports pandas (0.4 s quiet, 1.5 s loaded; most of a small run) the first time
    pa.array() or pa.scalar() is called, only to ask whether its argument is a pandas object, and
    the conversion never passes one. So, unless pandas is loaded already, pyarrow's first look
    is made to find none. Nothing is lost: pyarrow looks again on any call that needs pandas
    (to_pandas() imports it as usual)."""
    if "pandas" in sys.modules:
        return
    sys.meta_path.insert(0, _NoPandas)
    try:
        pa.scalar(0)
    finally:
        sys.meta_path.remove(_NoPandas)


class _NoPandas:
    """A module finder under which `import pandas` fails (see skip_pandas_in_pyarrow)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not needed here", name="pandas")
        return None


def convert(src_path: str, parquet_path, rejects_path: str, **options) -> dict[str, Any]:
    """Convert `src_path` to `parquet_path`; write rejected rows to `rejects_path` if there are any.

    Returns a dict with at least `lines`, `rows` (rows written), `rejected`, `empty`; also `header`,
    `blank_lines`, `batches`, `row_groups`, `arrow_bytes_high_water`, `source_bytes` and `rejects_path`
    (None when nothing was rejected; a stale file at that path is removed). Keyword options: those of
    `convert_stream`.
    """
    try:
        src = open(src_path, "rb", buffering=0)
    except OSError as exc:
        raise ConvertError(f"cannot read input {src_path}: {exc.strerror}") from exc
    with src:
        return convert_stream(src, parquet_path, rejects_path, name=src_path, **options)


def convert_stream(src: BinaryIO, parquet, rejects_path: str, *, name: str = "input",
                   block_size: int = DEFAULT_BLOCK_SIZE,
                   row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
                   compression: str = DEFAULT_COMPRESSION,
                   use_dictionary: bool = False,
                   metadata: dict[str, str] | None = None,
                   threads: int = PARSE_THREADS) -> dict[str, Any]:
    """`convert` of what `src.read(n)` returns, to `parquet` (a path or a writable binary file:
    the Parquet is written to it as it is made, so it can be uploaded while the input is still
    being read). `name` names the input in errors."""
    pool = conversion_memory_pool()
    reuse_freed_blocks()
    skip_pandas_in_pyarrow()
    schema = SCHEMA.with_metadata(metadata) if metadata else SCHEMA
    rejects = _RejectsWriter(rejects_path)
    stats = collections.Counter()
    high_water = 0
    reader = pieces.read_pieces(src, block_size, max_line_bytes(block_size))
    # Dictionary encoding is off by default: `no` is unique per row, and trying (then abandoning) a
    # dictionary per column chunk doubled the write time in bench/bench_etl.py. The integers are
    # delta-encoded instead: same CPU, and a file ~45% smaller than plain encoding (all common
    # Parquet readers, pandas, DuckDB and Spark included, read DELTA_BINARY_PACKED). Statistics
    # (min/max) are written for `no` and `score`, which let readers skip row groups (a range of `no`,
    # a score threshold), and not for `name`: a row group of 512 Ki unsorted names spans nearly the
    # whole alphabet, so its min/max skips nothing, and computing them was ~12 % of the write (0.21 s
    # vs 0.185 s per 100 MB of CSV), the longest single-threaded step.
    encoding = None if use_dictionary else {c: "DELTA_BINARY_PACKED" for c in INTEGER_COLUMNS}
    groups = None
    try:
        groups = _RowGroupWriter(pq.ParquetWriter(
            parquet, schema, compression=compression, use_dictionary=use_dictionary,
            column_encoding=encoding, write_statistics=list(INTEGER_COLUMNS), memory_pool=pool),
            row_group_rows)
        for piece in _parsed_in_order(reader, block_size, pool, max(threads, 1), name):
            rejects.add(piece, stats["lines"])
            stats["lines"] += piece.lines
            stats["blank_lines"] += piece.blank_lines
            stats["header"] += piece.header
            stats["batches"] += 1
            stats["slow_batches"] += piece.slow
            stats["repaired_batches"] += piece.repaired
            if piece.table.num_rows:
                groups.add(piece.table)
                stats["rows"] += piece.table.num_rows
            high_water = max(high_water, pool.bytes_allocated())
        groups.finish()
    except BaseException:
        if groups is not None:
            groups.abandon()
        rejects.discard()
        if isinstance(parquet, (str, os.PathLike)):
            _remove(parquet)
        raise
    rejects.close()
    stats["row_groups"] = groups.written

    return {
        "lines": stats["lines"],
        "rows": stats["rows"],
        "rejected": rejects.count,
        "empty": stats["rows"] == 0 and rejects.count == 0,
        "header": bool(stats["header"]),
        "blank_lines": stats["blank_lines"],
        "batches": stats["batches"],
        "slow_batches": stats["slow_batches"],
        "repaired_batches": stats["repaired_batches"],
        "row_groups": stats["row_groups"],
        "arrow_bytes_high_water": high_water,
        "source_bytes": reader.bytes_read,
        "rejects_path": rejects_path if rejects.count else None,
    }


def _parsed_in_order(reader, block_size: int, pool, threads: int, name: str):
    """The pieces of `reader` parsed on `threads` threads, yielded in file order."""
    max_line = max_line_bytes(block_size)
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="csv2parquet") as ex:
        ahead: collections.deque = collections.deque()
        try:
            for piece in reader:
                # a piece that is only a BOM (or nothing) has no line
                if piece.data and not (piece.first and piece.data == pieces.BOM):
                    ahead.append(ex.submit(parse.parse_piece, piece, max_line, pool))
                while len(ahead) >= threads + _BLOCKS_AHEAD:
                    yield _result(ahead.popleft(), name)
            while ahead:
                yield _result(ahead.popleft(), name)
        finally:
            for future in ahead:
                future.cancel()


def _result(future, name: str) -> parse.ParsedPiece:
    try:
        return future.result()
    except (pa.ArrowException, ValueError) as exc:
        raise ConvertError(f"cannot parse {name}: {type(exc).__name__}: {exc}") from exc


# --- the Parquet, written on a thread of its own ----------------------------------------------


class _RowGroupWriter:
    """Cuts the good rows into row groups of `row_group_rows` and writes them on a thread of its
    own, so that encoding and compressing (write_table releases the GIL) overlap reading and
    parsing. At most _GROUPS_IN_WRITER row groups are handed to it at a time (a next one waits
    until one is written): memory stays bounded, one row group above writing in line. The first error
    of the writer thread is raised by the next `add` or by `finish`, once; nothing more is
    written after it."""

    def __init__(self, writer: pq.ParquetWriter, row_group_rows: int):
        self._writer = writer
        self._rows_per_group = row_group_rows
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._queue: queue.Queue = queue.Queue()
        self._room = threading.Semaphore(_GROUPS_IN_WRITER)
        self._error: BaseException | None = None
        self._stop = False
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="csv2parquet-writer", daemon=True)
        self._thread.start()

    def add(self, table: pa.Table) -> None:
        self._raise_error()
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self._rows_per_group:
            # whole row groups of row_group_rows; the rest waits for the next tables
            whole = pa.concat_tables(self._pending)
            size = self._rows_per_group
            groups = self._pending_rows // size
            for i in range(groups):
                self._hand_over(whole.slice(i * size, size), size)
            self.written += groups
            rest = whole.slice(groups * size)
            self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def finish(self) -> None:
        """Writes the last (short) row group and the footer; raises the writer thread's error."""
        self._raise_error()
        if self._pending_rows:
            self._hand_over(pa.concat_tables(self._pending), self._pending_rows)
            self.written += 1
        self._pending = []
        self._queue.put(None)
        self._thread.join()
        self._raise_error()
        self._writer.close()

    def abandon(self) -> None:
        """Stops the writer thread after an error (its own or the caller's) and releases the sink
        without raising again."""
        self._stop = True
        self._pending = []
        self._queue.put(None)
        self._thread.join()
        try:
            self._writer.close()
        except Exception:      # the sink may be what failed; the first error is the one raised
            pass

    def _hand_over(self, table: pa.Table, rows: int) -> None:
        self._room.acquire()
        self._raise_error()
        self._queue.put((table, rows))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if not self._stop and self._error is None:
                try:
                    self._writer.write_table(item[0], row_group_size=item[1])
                except BaseException as exc:    # raised on the calling thread
                    self._error = exc
            del item
            self._room.release()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._stop = True
            raise error


def _remove(path) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# --- rejects -----------------------------------------------------------------------------------


class _RejectsWriter:
    """CSV `line,reason,text`, opened on the first reject; a stale file is removed when none.
    Pieces come in file order, each with its rejects in line order, so the file is in line order."""

    def __init__(self, path: str):
        self.path = path
        self.count = 0
        self._fh = None

    def add(self, piece: parse.ParsedPiece, first_line_offset: int) -> None:
        if not piece.rejects.num_rows:
            return
        if self._fh is None:
            self._fh = open(self.path, "wb")
            self._fh.write(b"line,reason,text\n")
        self._fh.write(parse.csv_lines(piece.rejects, first_line_offset, piece.reject_tails))
        self.count += piece.rejects.num_rows

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        elif os.path.exists(self.path):
            os.remove(self.path)

    def discard(self) -> None:
        """After a failed conversion: no rejects file, not even a partial one."""
        if self._fh is not None:
            self._fh.close()
        _remove(self.path)


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
