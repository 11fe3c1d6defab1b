"""code/csv2parquet.py: the streaming CSV -> Parquet core and every rule for malformed input."""
from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import csv2parquet
from csv2parquet import SCHEMA, convert

TUTORIAL = b"1,aaa,100\n2,bbb,80\n3,ccc,90\n"


def run(tmp_path, data: bytes, **kwargs):
    src = tmp_path / "in.csv"
    src.write_bytes(data)
    out, rej = tmp_path / "out.parquet", tmp_path / "rejects.csv"
    result = convert(str(src), str(out), str(rej), **kwargs)
    table = pq.read_table(out)
    rejects = []
    if rej.exists():
        with open(rej, encoding="utf-8", newline="") as fh:
            rejects = [(int(r["line"]), r["reason"], r["text"]) for r in csv.DictReader(fh)]
    return result, table, rejects


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


def test_quotes_are_data(tmp_path):
    result, table, rejects = run(tmp_path, b'1,"kim",10\n2,"lee, jr",20\n3,"a\n4,b",40\n')
    # a quote opens nothing: the line break ends the row, and `4,b"` is an ordinary name
    assert table.to_pydict() == {"no": [1, 4], "name": ['"kim"', 'b"'], "score": [10, 40]}
    assert [r[:2] for r in rejects] == [(2, "expected 3 fields, got 4"),
                                       (3, "expected 3 fields, got 2")]


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
    result = convert(str(src), str(out), str(tmp_path / "rej.csv"), row_group_rows=200_000)
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
