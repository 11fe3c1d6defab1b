"""code/csv2parquet.py's Parquet writer thread and block reader: the same rows, row groups and
rejects whatever the block and row group sizes and however the input is read; a failure of the
writer (disk full) or of a parse ends the conversion with that one error and leaves no output."""
from __future__ import annotations

import errno
import io

import pyarrow.parquet as pq
import pytest

import csv2parquet
import csv2parquet_parse
from test_csv2parquet_blocks import mixed_file


def _convert(tmp_path, data: bytes, **options):
    src = tmp_path / "in.csv"
    src.write_bytes(data)
    out, rej = tmp_path / "out.parquet", tmp_path / "rejects.csv"
    result = csv2parquet.convert(str(src), str(out), str(rej), **options)
    return result, out, (rej.read_bytes() if rej.exists() else b"")


def _many_rows(n: int) -> bytes:
    return b"".join(b"%d,name%d,%d\n" % (i, i, i % 101) for i in range(1, n + 1))


@pytest.mark.parametrize("block_size,row_group_rows", [(64, 7), (333, 50), (4096, 1000)])
def test_rows_row_groups_and_rejects_are_the_same_with_the_writer_thread(
        tmp_path, block_size, row_group_rows):
    data = mixed_file() + _many_rows(3000)
    whole, out, whole_rejects = _convert(tmp_path, data, block_size=1 << 22, row_group_rows=1 << 20)
    whole_table = pq.read_table(out)
    result, out, rejects = _convert(tmp_path, data, block_size=block_size,
                                    row_group_rows=row_group_rows)
    assert result["batches"] > 1
    for k in ("lines", "rows", "rejected", "blank_lines", "header"):
        assert result[k] == whole[k], k
    assert pq.read_table(out).equals(whole_table)
    assert rejects == whole_rejects
    meta = pq.ParquetFile(out).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    # whole row groups of row_group_rows, in order, the rest in the last one
    assert sizes == [row_group_rows] * (result["rows"] // row_group_rows) + (
        [result["rows"] % row_group_rows] if result["rows"] % row_group_rows else [])
    assert result["row_groups"] == len(sizes)


class _DiskFull(io.RawIOBase):
    """A writable that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, room: int):
        self.room, self.written = room, 0

    def writable(self):
        return True

    def write(self, b):
        if self.written + len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += len(b)
        return len(b)


def test_a_writer_that_fails_ends_the_conversion_with_that_one_error(tmp_path):
    src, rej = tmp_path / "in.csv", tmp_path / "rejects.csv"
    src.write_bytes(_many_rows(20000) + b"x,bad,1\n" + _many_rows(20000))
    sink = _DiskFull(room=20000)
    with open(src, "rb") as fh, pytest.raises(OSError) as raised:
        csv2parquet.convert_stream(fh, sink, str(rej), block_size=4096, row_group_rows=500)
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.__context__ is None       # one error, not one raised while handling it
    assert sink.written <= 20000
    assert not rej.exists()                       # no partial rejects file either


def test_a_writer_that_fails_leaves_no_parquet_file(tmp_path, monkeypatch):
    calls = []
    write_table = pq.ParquetWriter.write_table

    def full_on_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_table(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_on_the_third)
    with pytest.raises(OSError, match="No space left"):
        _convert(tmp_path, _many_rows(20000), block_size=4096, row_group_rows=500)
    assert len(calls) == 3                        # nothing written after the error
    assert not (tmp_path / "out.parquet").exists()
    assert not (tmp_path / "rejects.csv").exists()


def test_a_parse_that_fails_late_leaves_no_output(tmp_path, monkeypatch):
    parse_piece, seen = csv2parquet_parse.parse_piece, []

    def failing_late(piece, *args):
        seen.append(1)
        if len(seen) == 6:
            raise ValueError("broken on purpose")
        return parse_piece(piece, *args)

    monkeypatch.setattr(csv2parquet_parse, "parse_piece", failing_late)
    with pytest.raises(csv2parquet.ConvertError, match="broken on purpose"):
        _convert(tmp_path, b"x,bad,1\n" + _many_rows(5000), block_size=4096, row_group_rows=100)
    assert not (tmp_path / "out.parquet").exists()
    assert not (tmp_path / "rejects.csv").exists()


class _Trickle:
    """An input with read() only, a few bytes at a time."""

    def __init__(self, data: bytes, step: int):
        self.data, self.at, self.step = data, 0, step

    def read(self, size: int = -1) -> bytes:
        n = min(self.step, size if size >= 0 else len(self.data))
        chunk = self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk


@pytest.mark.parametrize("step", [1, 7, 1000])
def test_an_input_without_readinto_gives_the_same_result(tmp_path, step):
    data = mixed_file()
    whole, out, whole_rejects = _convert(tmp_path, data, block_size=333)
    whole_table = pq.read_table(out)
    rej = tmp_path / "trickle-rejects.csv"
    result = csv2parquet.convert_stream(_Trickle(data, step), str(tmp_path / "t.parquet"),
                                        str(rej), block_size=333)
    for k in ("lines", "rows", "rejected", "blank_lines", "header", "batches", "source_bytes"):
        assert result[k] == whole[k], k
    assert pq.read_table(tmp_path / "t.parquet").equals(whole_table)
    assert rej.read_bytes() == whole_rejects


def test_row_groups_carry_min_max_of_the_integers_not_of_name(tmp_path):
    """Readers skip row groups by `no` or `score`; min/max of 512 Ki unsorted names would skip nothing."""
    import pyarrow.parquet as pq

    from csv2parquet import convert

    src = tmp_path / "in.csv"
    src.write_text("".join(f"{n},name{n % 7},{n % 101}\n" for n in range(1, 2001)))
    convert(str(src), str(tmp_path / "out.parquet"), str(tmp_path / "rej.csv"), row_group_rows=500)
    meta = pq.ParquetFile(tmp_path / "out.parquet").metadata
    assert meta.num_row_groups == 4
    for i in range(meta.num_row_groups):
        no, name, score = (meta.row_group(i).column(c) for c in range(3))
        assert (no.statistics.min, no.statistics.max) == (500 * i + 1, 500 * (i + 1))
        assert score.is_stats_set and not name.is_stats_set
