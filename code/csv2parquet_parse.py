"""One scrubbed piece of the input parsed into the good rows and the rejects (csv2parquet.py).

Fast path: Arrow parses `no` and `score` straight to int64. Only when that fails (a bad value, or a
19+ digit number that still fits) is the piece parsed again as strings and cast with masks
(`cast_ints_masked`): the plain integers of a column (nearly all rows) are found with one regular
expression over the column and cast in one go; only the other rows are looked at more closely, and
the rejects' reasons and texts are built with Arrow's string kernels, not row by row in Python.
So a piece with bad rows costs about twice a clean one, whatever the number of bad rows.

Line numbers here are relative to the piece (1 is its first line); csv2parquet.py adds the offset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

import csv2parquet_pieces as pieces

COLUMNS = ("no", "name", "score")
INTEGER_COLUMNS = ("no", "score")
SCHEMA = pa.schema([("no", pa.int64()), ("name", pa.string()), ("score", pa.int64())])
REJECTS_SCHEMA = pa.schema([("line", pa.int64()), ("reason", pa.string()), ("text", pa.string())])

_PLAIN_INT = r"^-?[0-9]{1,18}$"       # 18 digits always fit int64; longer ones are checked one by one
_LONG_INT = r"^-?[0-9]{19,}$"
# printable ASCII but ' and \: repr() of such a text is the text in single quotes
_REPR_IS_QUOTED = r"^[\x20-\x26\x28-\x5b\x5d-\x7e]*$"
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_PROBE_ROWS = 4096
_REPR_IS_QUOTED_BYTES = bytes(range(0x20, 0x27)) + bytes(range(0x28, 0x5c)) + bytes(range(0x5d, 0x7f))

_PARSE_OPTIONS = dict(quote_char='"', double_quote=True,
                      # scrub() serves only lines whose quotes close on the line
                      newlines_in_values=False, ignore_empty_lines=False)
_AS_STRINGS = {c: pa.string() for c in COLUMNS}


@dataclass
class ParsedPiece:
    table: pa.Table           # the good rows, in SCHEMA
    lines: int                # physical lines of the piece
    rejects: pa.Table         # REJECTS_SCHEMA, line relative to the piece, in line order
    blank_lines: int
    header: bool
    slow: bool                # parsed twice (a value that is not a plain int64)
    repaired: bool            # split into lines (scrub's repair path)
    # `,reason,text\n` of every reject, CSV-quoted (csv_tails): built here, on a parse thread, so
    # that the thread writing the rejects in order only puts the line numbers in front
    reject_tails: pa.Array | None = None


def parse_piece(piece: pieces.Piece, max_line: int, pool: pa.MemoryPool) -> ParsedPiece:
    scrubbed = pieces.scrub(piece, max_line)
    table, skipped = _read(scrubbed.data, pool)
    if table.num_rows and _shortest(table["no"]) == 0:
        # Arrow reads an empty line as a row of empty fields, like `,,`: served as one space, it
        # is a skipped row, counted blank. Only a piece with an empty `no` can hold one.
        table, skipped = _read(scrubbed.with_empty_lines_marked(), pool)
    parsed = _sort_out(table, skipped, scrubbed, piece.first, pool)
    if parsed.rejects.num_rows:
        parsed.reject_tails = csv_tails(parsed.rejects)
    return parsed


def _read(data: bytes, pool) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Every column as strings: parsing `no` and `score` straight to int64 is no faster than
    strings and one cast (38 ms vs 32 + 8 ms per 8 MiB), and a failed int64 parse would cost a
    second parse, where the strings are what the masked cast needs."""
    skipped: list[tuple[int, str]] = []

    def on_invalid_row(row) -> str:
        # Wrong field count. use_threads=False is what makes `row.number` (the line) available.
        skipped.append((row.number, row.text))
        return "skip"

    table = pacsv.read_csv(
        pa.BufferReader(data),
        # one block for the whole piece: every line is in it, whatever its length
        read_options=pacsv.ReadOptions(column_names=list(COLUMNS), use_threads=False,
                                       block_size=len(data) + 1),
        parse_options=pacsv.ParseOptions(**_PARSE_OPTIONS, invalid_row_handler=on_invalid_row),
        convert_options=pacsv.ConvertOptions(
            column_types=_AS_STRINGS, check_utf8=False,      # scrub() has validated every byte
            null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False),
        memory_pool=pool)
    return table.combine_chunks(memory_pool=pool), skipped


def _sort_out(table: pa.Table, skipped: list[tuple[int, str]], scrubbed: pieces.Scrubbed,
              first: bool, pool) -> ParsedPiece:
    lead = scrubbed.lead
    if lead:
        skipped = [(n - lead, text) for n, text in skipped[lead:]]
    lines = table.num_rows + len(skipped)
    flagged = iter(scrubbed.flagged)
    blank = 0
    reject_lines: list[int] = []
    reasons: list[str] = []
    texts: list[str] = []
    for number, text in skipped:
        if text == pieces.PLACEHOLDER_TEXT:
            reason, text = next(flagged)
        elif text.strip() == "":
            blank += 1
            continue
        else:
            reason = f"expected {len(COLUMNS)} fields, got {_field_count(text)}"
        reject_lines.append(number)
        reasons.append(reason)
        texts.append(text)
    rejects = pa.Table.from_arrays([pa.array(reject_lines, pa.int64()), pa.array(reasons, pa.string()),
                        pa.array(texts, pa.string())], schema=REJECTS_SCHEMA)
    if not table.num_rows:
        return ParsedPiece(SCHEMA.empty_table(), lines, rejects, blank, False, False,
                           scrubbed.repaired)
    ints = {c: _cast_whole(table[c], pool) for c in INTEGER_COLUMNS}
    if all(v is not None for v in ints.values()):
        good = pa.Table.from_arrays([ints["no"], table["name"], ints["score"]], schema=SCHEMA)
        return ParsedPiece(good, lines, rejects, blank, False, False, scrubbed.repaired)
    line_numbers = _row_lines(table.num_rows, [n for n, _ in skipped])
    header = first and line_numbers[0] == 1 and _is_header(table)
    good, value_rejects = cast_ints_masked(table, ints, line_numbers, header, pool)
    if value_rejects.num_rows:
        rejects = pa.concat_tables([rejects, value_rejects])
        if len(reject_lines):
            rejects = rejects.take(pc.sort_indices(rejects["line"]))
    return ParsedPiece(good, lines, rejects, blank, header, True, scrubbed.repaired)


def _cast_whole(column: pa.ChunkedArray, pool) -> pa.ChunkedArray | None:
    """The column cast to int64 in one go; None when any row is not a plain integer."""
    if _may_hold_hex(column):    # Arrow's cast reads 0x10 as 16; not an integer here (nor for pandas)
        return None
    try:
        if len(column) > 2 * _PROBE_ROWS:
            # A failed cast reads the whole column before it fails: a column with bad values
            # (nearly always one among its first rows) is found by casting those first.
            pc.cast(column.slice(0, _PROBE_ROWS), pa.int64(), memory_pool=pool)
        return pc.cast(column, pa.int64(), memory_pool=pool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _may_hold_hex(column: pa.ChunkedArray) -> bool:
    # one byte search (memchr) over the column's characters; searching the piece for "0x" cost
    # 8 ms per 8 MiB, as '0' is everywhere
    for chunk in column.chunks:
        chars = chunk.buffers()[2]
        if chars is not None:
            data = chars.to_pybytes()
            if data.find(b"x") >= 0 or data.find(b"X") >= 0:
                return True
    return False


def _one_array(column: pa.ChunkedArray) -> pa.Array:
    # read_csv's table is combined already; combine_chunks() would copy even a single chunk
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _lengths(column) -> np.ndarray:
    """Byte length of every string, from the offsets (pc.binary_length took 15 ms per block)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)
        parts.append(np.diff(offsets[chunk.offset:chunk.offset + len(chunk) + 1]))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def _shortest(column: pa.ChunkedArray) -> int:
    lengths = _lengths(column)
    return int(lengths.min()) if len(lengths) else 1


def _row_lines(rows: int, skipped_lines: list[int]) -> np.ndarray:
    """The line of every row: every line of the piece is a row or a skipped line."""
    idx = np.arange(rows, dtype=np.int64)
    if not skipped_lines:
        return idx + 1
    skipped = np.asarray(skipped_lines, dtype=np.int64)
    # free[j]: how many rows come before the j-th skipped line
    free = skipped - np.arange(1, len(skipped) + 1)
    return 1 + idx + np.searchsorted(free, idx, side="right")


def _is_header(table: pa.Table) -> bool:
    return tuple(table[c][0].as_py().strip().lower() for c in COLUMNS) == COLUMNS


def _field_count(text: str) -> int:
    if '"' not in text:
        return text.count(",") + 1
    import csv

    return len(next(csv.reader([text]), [""]))


def cast_ints_masked(table: pa.Table, ints: dict, line_numbers: np.ndarray, header: bool,
                     pool) -> tuple[pa.Table, pa.Table]:
    """(the rows whose `no` and `score` are integers, cast; the rejects of all other rows). `ints`
    holds the columns already cast whole (None for the others). The header (row 0 when `header`)
    is dropped and not reported. A row bad in both columns is reported for `no`."""
    rows = table.num_rows
    dropped = np.zeros(rows, dtype=bool)
    if header:
        dropped[0] = True
    reason_parts: list[tuple[np.ndarray, pa.Array]] = []
    ints = dict(ints)
    for name in INTEGER_COLUMNS:
        if ints[name] is not None:
            continue
        values, bad, reasons = _cast_column(_one_array(table[name]), name, dropped, pool)
        ints[name] = values
        if len(bad):
            dropped[bad] = True
            reason_parts.append((bad, reasons))
    columns = [ints["no"], table["name"], ints["score"]]
    if not dropped.any():
        return pa.Table.from_arrays(columns, schema=SCHEMA), REJECTS_SCHEMA.empty_table()
    # column by column, each one array: Table.filter of the same columns took 1.5x as long
    keep = pa.array(~dropped)
    good = pa.Table.from_arrays([pc.filter(c if isinstance(c, pa.Array) else _one_array(c), keep,
                                           memory_pool=pool) for c in columns], schema=SCHEMA)
    if not reason_parts:     # only the header
        return good, REJECTS_SCHEMA.empty_table()
    bad = np.concatenate([b for b, _ in reason_parts])
    reasons = pa.concat_arrays([r for _, r in reason_parts])
    if len(reason_parts) > 1:
        order = np.argsort(bad, kind="stable")
        bad, reasons = bad[order], reasons.take(pa.array(order))
    indices = pa.array(bad)
    text = _row_texts([_one_array(table[c]).take(indices) for c in COLUMNS])
    rejects = pa.Table.from_arrays([pa.array(line_numbers[bad]), reasons, text], schema=REJECTS_SCHEMA)
    return good, rejects


def _cast_column(column: pa.Array, name: str, dropped: np.ndarray, pool):
    """(int64 values, the rows newly rejected, their reasons) for one column. A row already in
    `dropped` is not rejected again. The values of rejected rows are null (the rows are
    dropped)."""
    # plain: only ASCII digits, at most 18 (always in int64): nearly every row, found by two
    # cheap kernels (a regular expression over the column cost 8x as much)
    plain = pc.ascii_is_decimal(column, memory_pool=pool)
    lengths = _lengths(column)
    if len(lengths) and lengths.max() > 18:     # the length test only where a value is that long
        plain = pc.and_(plain, pa.array(lengths <= 18), memory_pool=pool)
    values = pc.cast(_only_where(column, plain), pa.int64(), memory_pool=pool)
    other = np.flatnonzero(~np.asarray(plain.to_numpy(zero_copy_only=False), dtype=bool))
    if len(other) == 0:
        return values, other, pa.array([], pa.string())
    raw = column.take(pa.array(other))
    # Surrounding spaces are ignored and a + accepted (the docstring of csv2parquet.py).
    text = pc.utf8_trim_whitespace(raw, memory_pool=pool)
    if _holds(text, b"+"):
        text = pc.replace_substring_regex(text, r"^\+", "", memory_pool=pool)
    ok = np.asarray(pc.match_substring_regex(text, _PLAIN_INT).to_numpy(zero_copy_only=False),
                    dtype=bool)
    if len(text) and _lengths(text).max() >= 19:
        long_int = np.asarray(pc.match_substring_regex(text, _LONG_INT).to_numpy(
            zero_copy_only=False), dtype=bool)
    else:
        long_int = np.zeros(len(text), dtype=bool)
    at = [other[ok]]
    fixed = [pc.cast(text.filter(pa.array(ok)), pa.int64(), memory_pool=pool).to_numpy()]
    for i in np.flatnonzero(long_int):     # 19+ digits: rare, and int() is exact
        v = int(text[int(i)].as_py())
        if _INT64_MIN <= v <= _INT64_MAX:
            at.append(other[i:i + 1])
            fixed.append(np.array([v], dtype=np.int64))
            ok[i] = True
    if ok.any():
        filled = values.fill_null(0).to_numpy().copy()
        filled[np.concatenate(at)] = np.concatenate(fixed)
        values = pa.array(filled, pa.int64())
    rejected = ~ok & ~dropped[other]
    if not rejected.any():
        return values, other[:0], pa.array([], pa.string())
    text = text.filter(pa.array(rejected))
    return values, other[rejected], _reasons(name, text, long_int[rejected])


def _only_where(column: pa.Array, keep: pa.BooleanArray) -> pa.Array:
    """`column` with the rows not in `keep` null: the column's own buffers under `keep` as the
    validity bitmap (no copy; if_else copied every string, 20 ms per block)."""
    if column.offset == 0 and keep.offset == 0 and keep.null_count == 0 and \
            column.null_count == 0:
        _, offsets, chars = column.buffers()
        return pa.Array.from_buffers(pa.string(), len(column), [keep.buffers()[1], offsets, chars])
    return pc.if_else(keep, column, pa.scalar(None, pa.string()))


def _holds(column: pa.Array, char: bytes) -> bool:
    """Whether any string of `column` may hold `char`: one byte search (memchr) over its
    characters, instead of a search in every row, which is needed only when this says yes."""
    chars = column.buffers()[2] if len(column) else None
    return chars is not None and chars.to_pybytes().find(char) >= 0


def _quote_where(column: pa.Array, needs: pa.BooleanArray | None,
                 line_end: str = "") -> pa.Array:
    """The rows in `needs` quoted ("" for a quote inside), CSV style; `line_end` appended to all.
    `needs` None: no row."""
    if needs is None or not pc.any(needs).as_py():
        return pc.binary_join_element_wise(column, "", line_end) if line_end else column
    inner = column
    if _holds(column, b'"') and pc.any(pc.match_substring(column, '"')).as_py():
        inner = pc.replace_substring(column, '"', '""')
    quoted = pc.binary_join_element_wise('"', inner, '"' + line_end, "")
    if pc.all(needs).as_py():
        return quoted
    plain = pc.binary_join_element_wise(column, "", line_end) if line_end else column
    return pc.if_else(needs, quoted, plain)


def _reasons(name: str, text: pa.Array, long_int: np.ndarray) -> pa.Array:
    """`{name} is empty`, `... is out of the int64 range: {text!r}` or `... is not an integer:
    {text!r}`, built with Arrow's kernels; repr() in Python only for texts it would escape."""
    kind = (pc.if_else(pa.array(long_int), pa.scalar(f"{name} is out of the int64 range: "),
                       pa.scalar(f"{name} is not an integer: "))
            if long_int.any() else f"{name} is not an integer: ")
    chars = text.buffers()[2] if len(text) else None
    if chars is None or not chars.to_pybytes().translate(None, _REPR_IS_QUOTED_BYTES):
        # every text is printable ASCII without ' or \ (one pass over the bytes, no regex)
        reasons = pc.binary_join_element_wise(kind, "'", text, "'", "")
    else:
        simple = np.asarray(pc.match_substring_regex(text, _REPR_IS_QUOTED).to_numpy(
            zero_copy_only=False), dtype=bool)
        quoted = pc.binary_join_element_wise("'", text, "'", "")
        if not simple.all():
            py = quoted.to_pylist()
            for i in np.flatnonzero(~simple):
                py[i] = repr(text[int(i)].as_py())
            quoted = pa.array(py, pa.string())
        reasons = pc.binary_join_element_wise(kind, quoted, "")
    if not (_lengths(text) == 0).any():
        return reasons
    return pc.if_else(pc.equal(text, ""), pa.scalar(f"{name} is empty"), reasons)


def _row_texts(columns: list[pa.Array]) -> pa.Array:
    """Each row written back as CSV; a field holding a comma (or starting with a quote) quoted."""
    fields = []
    for column in columns:
        comma, quote = _holds(column, b","), _holds(column, b'"')
        if comma and quote:
            needs = pc.or_(pc.match_substring(column, ","), pc.starts_with(column, '"'))
        else:     # a piece without quotes (nearly all) has no comma in a field either
            needs = (pc.match_substring(column, ",") if comma else
                     pc.starts_with(column, '"') if quote else None)
        fields.append(_quote_where(column, needs))
    return pc.binary_join_element_wise(*fields, ",")


def _needs_quotes(column: pa.Array) -> pa.BooleanArray | None:
    """The rows holding , or " (None: no row does)."""
    comma, quote = _holds(column, b","), _holds(column, b'"')
    if comma and quote:
        return pc.or_(pc.match_substring(column, ","), pc.match_substring(column, '"'))
    return (pc.match_substring(column, ",") if comma else
            pc.match_substring(column, '"') if quote else None)


def csv_tails(rejects: pa.Table) -> pa.Array:
    """`,reason,text\n` of every reject: its line of the rejects CSV but the line number."""
    fields = []
    for name in ("reason", "text"):
        column = rejects[name].combine_chunks()
        # a reason or a line never holds CR or LF (repr() escapes them; a line ends at them)
        fields.append(_quote_where(column, _needs_quotes(column), "\n" if name == "text" else ""))
    return pc.binary_join_element_wise(*fields, ",")


def csv_lines(rejects: pa.Table, first_line: int = 0,
              tails: pa.Array | None = None) -> bytes:
    """`line,reason,text` lines of a rejects table (its line numbers plus `first_line`), quoted
    as Python's csv module quotes (a field holding , or " in quotes, quotes doubled), built with
    Arrow's string kernels. `tails`: csv_tails(rejects), when made already."""
    lines = rejects["line"]
    if first_line:
        lines = pc.add(lines, first_line)
    if tails is None:
        tails = csv_tails(rejects)
    joined = pc.binary_join_element_wise(pc.cast(lines, pa.string()), tails, ",")
    return b"".join(chunk.buffers()[2].to_pybytes()[_span(chunk)] for chunk in
                    (joined.chunks if isinstance(joined, pa.ChunkedArray) else [joined])
                    if len(chunk))


def _span(chunk: pa.Array) -> slice:
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)
    return slice(int(offsets[chunk.offset]), int(offsets[chunk.offset + len(chunk)]))
