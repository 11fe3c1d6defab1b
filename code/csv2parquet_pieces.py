"""The input cut into pieces of whole lines, each of which Arrow can parse on its own (csv2parquet.py).

`read_pieces` reads the raw bytes in blocks and cuts each at its last line end, so every piece holds
whole lines and can be parsed by any thread, independently of the others. A line longer than
`max_line` is never held: it is read past in small chunks and becomes a piece of its own that is
only a placeholder (below).

`scrub` makes a piece safe for Arrow. The common piece passes a few fast checks over its bytes (no
NUL, no line longer than `max_line`, valid UTF-8, quotes that close on their line) and is used as it
is; only a piece that fails one is split into lines (the repair path). A line Arrow must not see is
replaced by the line `PLACEHOLDER` (its line end kept, so every line keeps its number) and its
(reason, text) is appended to `flagged`, in line order:
- a line that is not UTF-8 (Arrow's invalid-row callback cannot even be called for one: the whole
  read fails), its bytes kept with backslash escapes;
- a line with a quote that does not close on that line (Arrow would carry the quoted field on into
  the following lines);
- a line longer than `max_line`; only its first bytes are kept;
- a line that is the placeholder itself, so that every placeholder Arrow reports has its entry.
Arrow reports each placeholder as a skipped row (one field) with its line number; the parser takes
the next entry of `flagged` for it. When a piece is parsed as strings, each empty line is served as
one space: Arrow reads an empty line
as a row of empty fields, the same as `,,`, and a line of one space as a skipped row, which the
parser counts as blank.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa

BOM = b"\xef\xbb\xbf"
PLACEHOLDER = b"\0"
PLACEHOLDER_TEXT = PLACEHOLDER.decode()
NOT_UTF8 = "not valid UTF-8"
FIELDS = 3
LONG_SAMPLE_BYTES = 200          # what the rejects file keeps of a line that is too long
# A piece that starts with a BOM's bytes but is not the file's start gets this line first, because
# Arrow skips a BOM at the start of whatever it parses; the parser drops the line again.
LEAD_LINE = b" \n"

# One field as pandas and Arrow read it (RFC 4180): quoted ("" is a quote inside; whatever
# follows the closing quote up to the comma is appended as text) or unquoted (a quote inside it
# is text). A quoted field here never holds a line end: a line is a row.
_FIELD = rb'(?:"(?:[^"\r\n]|"")*+"[^,\r\n]*+|[^,"\r\n][^,\r\n]*+|)'
_LINE = _FIELD + rb'(?:,' + _FIELD + rb')*+'
_GOOD_LINES = re.compile(rb'(?:' + _LINE + rb'(?:\r\n|\n|\r))*+')
_GOOD_LINE = re.compile(_LINE)
_EMPTY_LINE = re.compile(rb'(?:(?<=\n)|(?<=\r)(?!\n))(?=[\r\n])')


@dataclass
class Piece:
    """Whole lines of the input. `first`: it starts the file (a BOM there is skipped). `flagged` is
    set when the piece is already scrubbed: a line too long to hold, served as the placeholder."""

    data: bytes | bytearray
    first: bool = False
    flagged: list[tuple[str, str]] | None = None


@dataclass
class Scrubbed:
    """A piece ready for Arrow: `lead` lines to drop at its start, `flagged` for its placeholders."""

    data: bytes
    flagged: list[tuple[str, str]] = field(default_factory=list)
    lead: int = 0
    repaired: bool = False
    start: int = 0            # where the first line starts (after a BOM)

    def with_empty_lines_marked(self) -> bytes:
        """`data` with each empty line made one space (see the module docstring). Not needed when
        `no` and `score` parse as int64: an empty line would have failed that."""
        return _mark_empty_lines(self.data, self.start)


def read_pieces(src: BinaryIO, block_size: int, max_line: int) -> "PieceReader":
    """Pieces of about `block_size` bytes of whole lines; `src.read(n)` may return fewer bytes."""
    return PieceReader(src, block_size, max_line)


class PieceReader:
    """Iterates over the pieces; `bytes_read` counts the input read so far."""

    def __init__(self, src: BinaryIO, block_size: int, max_line: int):
        self._src = src
        self._block_size = max(block_size, 1)
        self._chunk_size = max(max_line, 1)     # what a long line is read past in
        self.max_line = max(max_line, 1)
        self._eof = False
        self._first = True
        self.bytes_read = 0

    def _read(self, size: int) -> bytes:
        chunk = self._src.read(size)
        if not chunk:
            self._eof = True
            return b""
        self.bytes_read += len(chunk)
        return bytes(chunk)

    def __iter__(self) -> Iterator[Piece]:
        # At least one byte more than the longest line: a block without a line end is then a line
        # too long, to be read past.
        target = max(self._block_size, self.max_line + 1)
        carry = b""
        while True:
            data = self._fill(carry, target)
            if not data:
                return
            if self._eof:
                yield self._piece(data)
                return
            cut = _last_line_end(data)
            if cut:
                # the block is cut where it lies: the piece is the block itself, truncated
                carry = data[cut:]
                del data[cut:]
                yield self._piece(data)
            else:
                placeholder, carry = self._skip_long_line(data)
                yield placeholder

    def _fill(self, carry: bytes | bytearray, target: int) -> bytearray:
        """`carry` and what follows it, up to `target` bytes (fewer at the end of the input), read
        straight into the block's own buffer when the input can (`readinto`): one copy of the
        bytes, not three (read, joined to the carry, cut), and one block in memory, not two."""
        readinto = getattr(self._src, "readinto", None)
        if readinto is None:
            data = bytearray(carry)
            while not self._eof and len(data) < target:
                data += self._read(target - len(data))
            return data
        data = bytearray(target)
        data[:len(carry)] = carry
        have = len(carry)
        with memoryview(data) as view:
            while not self._eof and have < target:
                n = readinto(view[have:])
                if not n:
                    self._eof = True
                    break
                have += n
                self.bytes_read += n
        del data[have:]
        return data

    def _piece(self, data: bytes) -> Piece:
        first, self._first = self._first, False
        return Piece(data, first=first)

    def _skip_long_line(self, data: bytes | bytearray) -> tuple[Piece, bytes | bytearray]:
        """Reads past a line that is too long, keeping a sample; its placeholder piece, and what
        follows the line in the chunk it ended in."""
        sample, length, buf, rest = bytes(data[:LONG_SAMPLE_BYTES]), 0, data, b""
        while True:
            end = first_line_end(buf)
            if end >= 0:
                length += end
                if buf[end] == 13 and end + 1 == len(buf):   # a CR last: is an LF next?
                    buf += self._read(self._chunk_size)
                rest = buf[end + (2 if buf[end:end + 2] == b"\r\n" else 1):]
                break
            length += len(buf)
            buf = self._read(self._chunk_size)
            if not buf:
                break
        if self._first and sample.startswith(BOM):
            sample, length = sample[len(BOM):], length - len(BOM)
        self._first = False
        flagged = [(f"line is longer than {self.max_line} bytes ({length} bytes)",
                    escaped(sample) + "...")]
        return Piece(PLACEHOLDER + b"\n", flagged=flagged), rest


def scrub(piece: Piece, max_line: int, quoting: bool = True) -> Scrubbed:
    if piece.flagged is not None:
        return Scrubbed(piece.data, list(piece.flagged))
    data, lead = piece.data, 0
    start = len(BOM) if piece.first and data.startswith(BOM) else 0
    if not piece.first and data.startswith(BOM):
        data, lead = LEAD_LINE + data, 1
    if (data.find(b"\0") < 0
            and no_line_longer_than(data, max_line)
            and is_utf8(data)
            and (not quoting or data.find(b'"') < 0 or _quotes_close(data, start))):
        return Scrubbed(data, lead=lead, start=start)
    return _repair(data, start, lead, max_line, quoting)


def _repair(data: bytes, start: int, lead: int, max_line: int, quoting: bool) -> Scrubbed:
    """Line by line: every line Arrow must not see becomes the placeholder, with its reason."""
    out, flagged = [], []
    for number, line in enumerate(data.splitlines(keepends=True)):
        body = line.rstrip(b"\r\n")
        text = body[start:] if number == 0 else body
        why = None
        if len(body) > max_line:
            why = (f"line is longer than {max_line} bytes ({len(text)} bytes)",
                   escaped(text[:LONG_SAMPLE_BYTES]) + "...")
        elif not (text.isascii() or _decodes(text)):
            why = (NOT_UTF8, escaped(text))
        elif quoting and b'"' in text and not _GOOD_LINE.fullmatch(text):
            why = ("quote not closed on its line", text.decode("utf-8"))
        elif text == PLACEHOLDER:
            why = (f"expected {FIELDS} fields, got 1", text.decode("utf-8"))
        if why is None:
            out.append(line)
        else:
            flagged.append(why)
            out.append(PLACEHOLDER + (line[len(body):] or b"\n"))
            if number == 0:
                start = 0    # the BOM went with the line
    return Scrubbed(b"".join(out), flagged, lead, repaired=True, start=start)


def no_line_longer_than(data: bytes, max_line: int) -> bool:
    """True when every line of `data` is at most `max_line` bytes. A longer line covers at least
    one whole aligned stretch of max_line // 2 bytes, so it is enough to find a line end in each
    stretch; each search stops at the first line end, so this reads a few bytes per stretch. False
    may also mean "not sure" (a stretch without a line end); the repair path then decides."""
    if len(data) <= max_line:
        return True
    step = max(max_line // 2, 1)
    for begin in range(0, len(data) - step + 1, step):
        end = begin + step
        if data.find(b"\n", begin, end) < 0 and data.find(b"\r", begin, end) < 0:
            return False
    return True


def _mark_empty_lines(piece: bytes, start: int) -> bytes:
    """Each empty line made a single space (see the module docstring). A line end right after a
    line end is an empty line, unless it is the LF of a CRLF."""
    if not piece:
        return piece
    empty = piece.find(b"\n\n") >= 0
    if not empty and piece.find(b"\r") >= 0:
        empty = piece.find(b"\r\r") >= 0 or piece.find(b"\n\r") >= 0
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


def is_utf8(data: bytes) -> bool:
    """Arrow's own (vectorised) UTF-8 validation, many times faster than decoding."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int32 if len(data) < 1 << 31
                                    else np.int64))
    cls = pa.StringArray if len(data) < 1 << 31 else pa.LargeStringArray
    try:
        cls.from_buffers(1, offsets, pa.py_buffer(data)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def first_line_end(data: bytes) -> int:
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


def escaped(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")
