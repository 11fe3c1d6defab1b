"""code/csv2parquet.py: the streaming CSV -> Parquet core and every rule for malformed input."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import csv2parquet
from csv2parquet import SCHEMA, convert

TUTORIAL = b"1,aaa,100\n2,bbb,80\n3,ccc,90\n"
DEMO = Path(__file__).resolve().parents[2] / "demo" / "data"


def run(tmp_path, data: bytes, **kwargs):
    src = tmp_path / "in.csv"
    src.write_bytes(data)
    out, rej = tmp_path / "out.parquet", tmp_path / "rejects.csv"
    result = convert(str(src), str(out), str(rej), **kwargs)
    assert_every_line_accounted_for(result, data)
    table = pq.read_table(out)
    rejects = []
    if rej.exists():
        with open(rej, encoding="utf-8", newline="") as fh:
            rejects = [(int(r["line"]), r["reason"], r["text"]) for r in csv.DictReader(fh)]
    return result, table, rejects


def physical_lines(data: bytes) -> int:
    """Lines as a reader counts them (LF, CRLF and CR end a line; a BOM is not a line)."""
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    return len(data.splitlines())


def assert_every_line_accounted_for(result: dict, data: bytes) -> None:
    assert result["lines"] == physical_lines(data)
    assert result["lines"] == (result["rows"] + result["rejected"] + result["blank_lines"]
                               + int(result["header"]))


def test_tutorial_file(tmp_path):
    result, table, rejects = run(tmp_path, TUTORIAL)
    assert table.schema.remove_metadata() == SCHEMA
    assert table.to_pydict() == {"no": [1, 2, 3], "name": ["aaa", "bbb", "ccc"],
                                 "score": [100, 80, 90]}
    assert (result["rows"], result["rejected"], result["empty"]) == (3, 0, False)
    assert rejects == [] and result["rejects_path"] is None
    assert not (tmp_path / "rejects.csv").exists()


def test_same_data_as_the_tutorials_pandas(tmp_path):
    import pandas as pd

    _, table, _ = run(tmp_path, TUTORIAL)
    expected = pd.read_csv(tmp_path / "in.csv", names=["no", "name", "score"])
    assert table.to_pandas().equals(expected)


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n", b"no,name,score\n",
                                  b"\xef\xbb\xbfno,name,score\r\n"],
                         ids=["zero-bytes", "bom-only", "blank-lines", "header-only", "bom-header"])
def test_empty_input_gives_empty_parquet_with_schema(tmp_path, data):
    result, table, rejects = run(tmp_path, data)
    assert result["empty"] is True and result["rows"] == 0 and result["rejected"] == 0
    assert table.num_rows == 0 and table.schema.remove_metadata() == SCHEMA
    assert rejects == []


def test_header_is_skipped_not_rejected(tmp_path):
    result, table, rejects = run(tmp_path, b"no,name,score\n" + TUTORIAL)
    assert result["header"] is True and rejects == []
    assert table.column("no").to_pylist() == [1, 2, 3]


def test_header_elsewhere_is_a_bad_row(tmp_path):
    result, table, rejects = run(tmp_path, TUTORIAL + b"no,name,score\n")
    assert result["header"] is False
    assert rejects == [(4, "no is not an integer: 'no'", "no,name,score")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["nobom", "bom"])
def test_bom_and_line_ends(tmp_path, eol, bom):
    data = bom + b"no,name,score" + eol + eol.join(TUTORIAL.splitlines()) + eol + b"4,ddd" + eol
    result, table, rejects = run(tmp_path, data)
    assert table.to_pydict()["name"] == ["aaa", "bbb", "ccc"]   # no stray \r in values
    assert result["header"] is True
    assert rejects == [(5, "expected 3 fields, got 2", "4,ddd")]


def test_bad_rows_are_rejected_with_line_numbers(tmp_path):
    data = (b"1,aaa,100\n"        # 1 ok
            b"2,bbb\n"            # 2 too few fields
            b"3,ccc,90,7\n"       # 3 too many
            b"4,ddd,x\n"          # 4 score not numeric
            b"\n"                 # 5 blank: ignored
            b"5,eee,95.5\n"       # 6 decimal score
            b"six,fff,60\n"       # 7 no not numeric
            b"7,ggg,\n"           # 8 empty score
            b"   \n"              # 9 whitespace only: ignored
            b"8,hhh, +70 \n"      # 10 ok (spaces, plus sign)
            b"9,iii,99999999999999999999\n"   # 11 out of int64
            b"10,jjj,9223372036854775807\n")  # 12 ok: int64 max
    result, table, rejects = run(tmp_path, data)
    assert table.to_pydict() == {"no": [1, 8, 10], "name": ["aaa", "hhh", "jjj"],
                                 "score": [100, 70, 9223372036854775807]}
    assert rejects == [
        (2, "expected 3 fields, got 2", "2,bbb"),
        (3, "expected 3 fields, got 4", "3,ccc,90,7"),
        (4, "score is not an integer: 'x'", "4,ddd,x"),
        (6, "score is not an integer: '95.5'", "5,eee,95.5"),
        (7, "no is not an integer: 'six'", "six,fff,60"),
        (8, "score is empty", "7,ggg,"),
        (11, "score is out of the int64 range: '99999999999999999999'",
         "9,iii,99999999999999999999"),
    ]
    assert (result["rows"], result["rejected"], result["blank_lines"]) == (3, 7, 2)
    assert result["rows"] + result["rejected"] + result["blank_lines"] == 12


def test_non_utf8_is_rejected_not_fatal(tmp_path):
    data = ("1,aaa,100\n"
            "2,b\udcffb,80\n"          # valid field count, invalid byte
            "3,c\udcfec,1,2\n"         # invalid byte AND wrong field count
            "4,점수,90\n"               # valid UTF-8, non-ASCII
            "5,\ufffd,70\n").encode("utf-8", "surrogateescape")   # a real U+FFFD is data
    result, table, rejects = run(tmp_path, data)
    assert table.to_pydict()["name"] == ["aaa", "점수", "\ufffd"]
    assert rejects == [(2, "not valid UTF-8", "2,b\\xffb,80"),
                       (3, "not valid UTF-8", "3,c\\xfec,1,2")]


def test_quoted_fields_are_read_as_pandas_reads_them(tmp_path):
    data = (b'1,"Kim, Y",50\n'            # a comma inside quotes: one field
            b'2,"say ""hi""",60\n'        # "" is a quote inside a quoted field
            b'"3","lee",70\n'             # any field may be quoted
            b'4,x"y,80\n'                 # a quote inside an unquoted field is text
            b'5,"",90\n')                 # an empty quoted name
    result, table, rejects = run(tmp_path, data)
    assert rejects == [] and result["rows"] == 5
    import pandas as pd

    expected = pd.read_csv(tmp_path / "in.csv", names=["no", "name", "score"],
                           keep_default_na=False)
    assert table.to_pydict() == expected.to_dict("list")
    assert table.column("name").to_pylist() == ["Kim, Y", 'say "hi"', "lee", 'x"y', ""]


def test_a_quote_that_never_closes_rejects_only_its_own_line(tmp_path):
    good = [f"{n},name {n},{n % 100}".encode() for n in range(1, 3001)]
    lines = list(good)
    lines[9] = b'10,"never closed,1'            # line 10
    lines[1499] = b'1500,"also open'            # line 1500
    lines[2999] = b'3000,"at the end,3'         # the last line, no line end after it
    data = b"\n".join(lines)
    # small blocks: the open quotes sit in different blocks, one at the very end
    result, table, rejects = run(tmp_path, data, block_size=4096)
    assert rejects == [(10, "quote not closed on its line", '10,"never closed,1'),
                       (1500, "quote not closed on its line", '1500,"also open'),
                       (3000, "quote not closed on its line", '3000,"at the end,3')]
    assert table.column("no").to_pylist() == [n for n in range(1, 3000) if n not in (10, 1500)]
    # a quoted field that holds a line break is two lines, each rejected on its own
    result, table, rejects = run(tmp_path, b'1,a,1\n2,"two\nlines",2\n3,c,3\n')
    assert table.column("no").to_pylist() == [1, 3]
    assert rejects == [(2, "quote not closed on its line", '2,"two'),
                       (3, "expected 3 fields, got 2", 'lines",2')]
    # after a BOM too
    result, table, rejects = run(tmp_path, b'\xef\xbb\xbf"1,a,1\n2,b,2\n')
    assert rejects == [(1, "quote not closed on its line", '"1,a,1')]
    assert table.column("no").to_pylist() == [2]


def test_rejected_text_keeps_quoted_fields_quoted(tmp_path):
    _, _, rejects = run(tmp_path, b'1,"Kim, Y",x\n')
    assert rejects == [(1, "score is not an integer: 'x'", '1,"Kim, Y",x')]


def _long_line_file(path, before: int, line_bytes: int, after: int, eol: bytes = b"\n",
                    valid: bool = False) -> None:
    with open(path, "wb") as fh:
        for n in range(1, before + 1):
            fh.write(f"{n},a{n},{n % 100}".encode() + eol)
        fh.write(f"{before + 1},".encode() if valid else b"x")
        left = line_bytes - (len(f"{before + 1},") + 3 if valid else 1)
        while left > 0:
            step = min(left, 1 << 20)
            fh.write(b"y" * step)
            left -= step
        fh.write((b",42" if valid else b"") + eol)
        for n in range(before + 2, before + 2 + after):
            fh.write(f"{n},b{n},{n % 100}".encode() + eol)


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_a_line_longer_than_a_block_is_rejected_alone(tmp_path, eol):
    src = tmp_path / "in.csv"
    _long_line_file(src, before=5000, line_bytes=3 << 20, after=5000, eol=eol)
    out, rej = tmp_path / "out.parquet", tmp_path / "rejects.csv"
    result = convert(str(src), str(out), str(rej))
    assert (result["rows"], result["rejected"], result["lines"]) == (10000, 1, 10001)
    rejects = csv2parquet.read_rejects(str(rej))
    assert [(r["line"], r["reason"]) for r in rejects] == [
        ("5001", f"line is longer than {1 << 19} bytes ({3 << 20} bytes)")]
    assert rejects[0]["text"].startswith("xyyy") and len(rejects[0]["text"]) < 300
    nos = pq.read_table(out).column("no").to_pylist()
    assert nos == list(range(1, 5001)) + list(range(5002, 10002))


def test_a_long_line_at_the_end_without_line_end_and_a_long_valid_row(tmp_path):
    # the longest line converted is half a block; a valid row that long is kept
    src = tmp_path / "in.csv"
    _long_line_file(src, before=3, line_bytes=1 << 19, after=2, valid=True)
    result, table, rejects = run(tmp_path, src.read_bytes())
    assert rejects == [] and result["rows"] == 6
    assert len(table.column("name")[3].as_py()) == (1 << 19) - len("4,") - 3
    # one byte more and it is rejected, alone; the last line has no line end
    data = b"1,a,1\n" + b"2," + b"z" * (1 << 19) + b",5"
    result, table, rejects = run(tmp_path, data)
    assert table.column("no").to_pylist() == [1]
    assert [r[:2] for r in rejects] == [(2, f"line is longer than {1 << 19} bytes "
                                            f"({(1 << 19) + 4} bytes)")]


def test_a_huge_line_is_skipped_in_bounded_memory(tmp_path):
    import tracemalloc

    src = tmp_path / "in.csv"
    _long_line_file(src, before=10, line_bytes=64 << 20, after=10)
    tracemalloc.start()
    try:
        result = convert(str(src), str(tmp_path / "o.parquet"), str(tmp_path / "r.csv"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (result["rows"], result["rejected"]) == (20, 1)
    # a few blocks (the reader's, the pieces being parsed), never the 64 MiB line
    assert peak < 3 * csv2parquet.DEFAULT_BLOCK_SIZE < 64 << 20


def test_a_row_of_empty_fields_is_rejected_not_blank(tmp_path):
    result, table, rejects = run(tmp_path, b"1,a,1\n,,\n\n  \n , , \n\r\n2,b,2\n")
    assert rejects == [(2, "no is empty", ",,"), (5, "no is empty", " , , ")]
    assert (result["rows"], result["rejected"], result["blank_lines"], result["lines"]) == \
        (2, 2, 3, 7)


def test_a_reject_after_a_repaired_line_has_its_own_line_number(tmp_path):
    # line 1 really holds U+FFFD; line 3 is not UTF-8 and reads as the same text once repaired
    data = "1,a\ufffdb,1\n2,ok,2\n1,a\udcffb,1\n4,x,oops\n".encode("utf-8", "surrogateescape")
    result, table, rejects = run(tmp_path, data)
    assert table.to_pydict() == {"no": [1, 2], "name": ["a\ufffdb", "ok"], "score": [1, 2]}
    assert rejects == [(3, "not valid UTF-8", "1,a\\xffb,1"),
                       (4, "score is not an integer: 'oops'", "4,x,oops")]


def test_a_line_that_is_only_a_nul_byte_is_an_ordinary_bad_line(tmp_path):
    result, table, rejects = run(tmp_path, b"1,a,1\n\0\n\xff\n2,b,2\n")
    assert rejects == [(2, "expected 3 fields, got 1", "\0"), (3, "not valid UTF-8", "\\xff")]
    assert table.column("no").to_pylist() == [1, 2]


FIXTURES = {
    "tutorial": TUTORIAL,
    "header-bom-crlf": b"\xef\xbb\xbfno,name,score\r\n1,a,1\r\n\r\n2,b,2\r\n",
    "cr-only": b"1,a,1\r\r2,b,2\r,,\r",
    "no-final-line-end": b"1,a,1\n2,b",
    "blank-and-empty-fields": b"\n\n,,\n  \n\t\n1,a,1\n\n",
    "bad-rows": b"1,a\n2,b,c\n3,c,3,4\nno,name,score\n4,d,95.5\n,5,\n",
    "utf8": "1,점수,1\n2,\ufffd,2\n".encode() + b"3,\xff,3\n\xfe\n",
    "quotes": b'1,"a,b",1\n2,"open\n3,"x""y",3\n"4,d,4\n5,e"e,5\n',
    "nul": b"\0\n1,\0,1\n\0",
    "only-blank": b"\n \n\r\n",
    "header-only": b"no,name,score",
    "empty": b"",
    "bom-only": b"\xef\xbb\xbf",
}


@pytest.mark.parametrize("data", list(FIXTURES.values()), ids=list(FIXTURES))
def test_every_line_is_a_row_a_reject_a_blank_or_the_header(tmp_path, data):
    for block_size in (64, 1 << 20):
        result, table, rejects = run(tmp_path, data, block_size=block_size)  # run() checks it
        assert len(rejects) == result["rejected"] and table.num_rows == result["rows"]


@pytest.mark.parametrize("path", sorted(DEMO.rglob("*.csv")), ids=lambda p: p.name)
def test_every_line_of_the_demo_files_is_accounted_for(tmp_path, path):
    result, table, rejects = run(tmp_path, path.read_bytes())
    assert result["rows"] == table.num_rows > 0


def test_stale_rejects_file_is_removed(tmp_path):
    (tmp_path / "rejects.csv").write_text("line,reason,text\n9,old,x\n")
    result, _, rejects = run(tmp_path, TUTORIAL)
    assert rejects == [] and not (tmp_path / "rejects.csv").exists()


def test_line_numbers_stay_right_across_many_small_blocks(tmp_path):
    rng = np.random.default_rng(3)
    lines, expected_bad, good = [], [], 0
    kinds = ["ok", "short", "long", "text", "blank", "utf8"]
    for n in range(1, 6001):
        kind = kinds[0] if rng.random() < 0.8 else kinds[rng.integers(1, len(kinds))]
        if kind == "ok":
            lines.append(f"{n},name{n},{n % 101}".encode())
            good += 1
        elif kind == "short":
            lines.append(f"{n},name{n}".encode())
            expected_bad.append(n)
        elif kind == "long":
            lines.append(f"{n},name{n},1,2".encode())
            expected_bad.append(n)
        elif kind == "text":
            lines.append(f"{n},name{n},abc".encode())
            expected_bad.append(n)
        elif kind == "blank":
            lines.append(b"")
        else:
            lines.append(f"{n},n\xe9{n},5".encode("latin-1"))
            expected_bad.append(n)
    data = b"\r\n".join(lines) + b"\r\n"
    # 4 KiB blocks: the file is parsed in a few dozen batches
    result, table, rejects = run(tmp_path, data, block_size=4096, row_group_rows=1000)
    assert result["batches"] > 20
    assert [r[0] for r in rejects] == expected_bad
    assert table.num_rows == good == result["rows"]
    # each good row kept its own line number: no == line
    assert table.column("name").to_pylist() == [f"name{n}" for n in table.column("no").to_pylist()]
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == result["row_groups"] > 1


def _big_csv(path, target_bytes: int) -> int:
    rng = np.random.default_rng(11)
    rows, chunk = 0, 500_000
    opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "wb") as fh:
        while fh.tell() < target_bytes:
            no = pa.array(np.arange(rows + 1, rows + chunk + 1))
            name = pa.array([f"name_{i:05d}" for i in rng.integers(0, 99999, 1000)] * (chunk // 1000))
            score = pa.array(rng.integers(0, 101, chunk))
            pacsv.write_csv(pa.table({"no": no, "name": name, "score": score}), fh, opts)
            rows += chunk
    return rows


def test_huge_file_streams_in_bounded_memory(tmp_path):
    src = tmp_path / "big.csv"
    rows = _big_csv(src, 50 << 20)
    out = tmp_path / "big.parquet"
    # 1 MiB blocks, so that the bound below is far from the file's size
    result = convert(str(src), str(out), str(tmp_path / "rej.csv"), row_group_rows=200_000,
                     block_size=1 << 20)
    assert result["rows"] == rows and result["rejected"] == 0
    # streamed: many batches and row groups, never the whole file in Arrow memory
    assert result["batches"] >= 40
    assert result["row_groups"] >= rows // 200_000
    assert result["arrow_bytes_high_water"] < 32 << 20 < result["source_bytes"]
    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == rows and meta.num_row_groups == result["row_groups"]


def test_unreadable_input_is_a_clear_error(tmp_path):
    with pytest.raises(csv2parquet.ConvertError, match="cannot read input"):
        convert(str(tmp_path / "missing.csv"), str(tmp_path / "o.parquet"), str(tmp_path / "r.csv"))


def test_cli_prints_json(tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_bytes(TUTORIAL + b"4,x\n")
    code = csv2parquet.main([str(src), str(tmp_path / "o.parquet"), str(tmp_path / "r.csv")])
    assert code == 0
    import json

    printed = json.loads(capsys.readouterr().out)
    assert (printed["rows"], printed["rejected"]) == (3, 1)
    assert csv2parquet.main([]) == 2
