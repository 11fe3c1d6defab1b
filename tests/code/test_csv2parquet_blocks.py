"""code/csv2parquet.py in blocks: a block that fails the fast checks is repaired line by line, a
block with bad values is cast with masks, and the result (rows, rejects, line numbers) is the same
whatever the block size, whichever blocks take which path."""
from __future__ import annotations

import csv
import io

import pyarrow.parquet as pq
import pytest

import csv2parquet
import csv2parquet_parse

# Every kind of line, each in the middle of clean ones, so that with small blocks each lands in a
# block of its own (and sometimes at a block's start).
SPECIAL = [
    b"7,n\xffx,7",                    # not UTF-8: the block goes down the repair path
    b'8,"open,8',                     # quote not closed
    b"\xef\xbb\xbf9,bom,9",           # a BOM's bytes starting a line that is not the first
    b"10,short",                      # wrong field count
    b"",                              # blank
    b"   ",                           # blank
    b",,",                            # empty fields
    b"11,x,95.5",                     # decimal
    b"12,x,0x10",                     # hexadecimal: not an integer, in any block
    b"13,x, +70 ",                    # spaces and a plus: 70
    b"14,x,9223372036854775807",      # int64's max
    b"15,x,9223372036854775808",      # one more
    b"16,x,it's",                     # repr() with double quotes
    b"17,x,a\\b",                     # repr() escapes the backslash
    b'18,"Kim, Y",\xec\xa0\x90',      # the text keeps the quoted comma; non-ASCII reason
    b"19,\0,19",                      # NUL inside a field: data
    b"\0",                            # the placeholder's byte as a line: a bad line
    b"-20,x,-20",                     # negative numbers
]


def mixed_file() -> bytes:
    lines, n = [], 1000
    for special in SPECIAL:
        for _ in range(37):
            n += 1
            lines.append(f"{n},name{n},{n % 101}".encode())
        lines.append(special)
    return b"\r\n".join(lines[:200]) + b"\r\n" + b"\n".join(lines[200:]) + b"\n"


def convert(tmp_path, data: bytes, **options):
    src = tmp_path / "in.csv"
    src.write_bytes(data)
    out, rej = tmp_path / "out.parquet", tmp_path / "rejects.csv"
    result = csv2parquet.convert(str(src), str(out), str(rej), **options)
    rejects = rej.read_bytes() if rej.exists() else b""
    return result, pq.read_table(out), rejects


@pytest.mark.parametrize("block_size", [64, 333, 2048, 4096])
def test_the_same_result_whatever_the_block_size(tmp_path, block_size):
    data = mixed_file()
    whole, whole_table, whole_rejects = convert(tmp_path, data, block_size=1 << 22)
    assert whole["batches"] == 1
    result, table, rejects = convert(tmp_path, data, block_size=block_size)
    assert result["batches"] > 1
    for k in ("lines", "rows", "rejected", "blank_lines", "header"):
        assert result[k] == whole[k], k
    assert table.equals(whole_table)
    assert rejects == whole_rejects


def test_only_the_blocks_that_need_it_take_the_slow_paths(tmp_path):
    data = mixed_file()
    result, table, rejects = convert(tmp_path, data, block_size=128)
    # most blocks are clean: parsed and cast in one go
    assert 0 < result["repaired_batches"] < result["slow_batches"] < result["batches"] / 2
    rows = list(csv.reader(io.StringIO(rejects.decode("utf-8"))))[1:]
    by_line = {int(line): (reason, text) for line, reason, text in rows}
    lines = data.splitlines()
    for line, (reason, text) in by_line.items():
        assert lines[line - 1] in SPECIAL, (line, reason)   # exact physical line numbers
    reasons = sorted(reason for reason, _ in by_line.values())
    assert reasons == sorted([
        "not valid UTF-8", "quote not closed on its line", "no is not an integer: '\\ufeff9'",
        "expected 3 fields, got 2", "no is empty", "score is not an integer: '95.5'",
        "score is not an integer: '0x10'", "score is out of the int64 range: '9223372036854775808'",
        "score is not an integer: \"it's\"", "score is not an integer: 'a\\\\b'",
        "score is not an integer: '점'", "expected 3 fields, got 1"])
    assert by_line[lines.index(b"7,n\xffx,7") + 1] == ("not valid UTF-8", "7,n\\xffx,7")
    assert by_line[lines.index(b'18,"Kim, Y",\xec\xa0\x90') + 1][1] == '18,"Kim, Y",점'
    kept = dict(zip(table.column("no").to_pylist(), table.column("score").to_pylist()))
    assert (kept[13], kept[14], kept[-20], kept[19]) == (70, 9223372036854775807, -20, 19)
    assert 12 not in kept and 15 not in kept
    assert result["blank_lines"] == 2 and result["lines"] == len(lines)


def test_hexadecimal_is_rejected_in_a_block_of_its_own(tmp_path):
    # Arrow's cast reads 0x10 as 16; alone in a clean block it must still be rejected
    _, table, rejects = convert(tmp_path, b"1,a,1\n2,b,0x10\n3,c,0X1f\n")
    assert table.column("no").to_pylist() == [1]
    assert rejects.decode().splitlines()[1:] == ["2,score is not an integer: '0x10',\"2,b,0x10\"",
                                                 "3,score is not an integer: '0X1f',\"3,c,0X1f\""]


def test_the_rejects_file_is_what_pythons_csv_module_writes(tmp_path):
    import pyarrow as pa

    texts = ['plain', 'a,b', 'say "hi"', '"quoted", and more', "it's", "", "점, 수"]
    reasons = ["r", "expected 3 fields, got 2", 'x "y"', "no, really", "r", "r", "r"]
    table = pa.table({"line": pa.array(range(1, len(texts) + 1), pa.int64()),
                      "reason": pa.array(reasons), "text": pa.array(texts)})
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\n").writerows(
        zip(range(1, len(texts) + 1), reasons, texts))
    assert csv2parquet_parse.csv_lines(table) == expected.getvalue().encode()
