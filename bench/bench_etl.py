"""CSV -> Parquet, side by side: ours (code/csv2parquet.py) vs the tutorial's pandas, DuckDB and polars.

    .venv/bin/python bench/bench_etl.py                          # 300 and 1024 MB, 3 rounds
    .venv/bin/python bench/bench_etl.py --sizes 20 --rounds 1 --methods ours,polars
    .venv/bin/python bench/bench_etl.py --memory-limit-mib 512   # ours on a 2 GB file within 512 MiB

Measured: whole processes. Each conversion is a fresh `python -c SNIPPET SRC OUT`, timed by the parent
from before the spawn to after the child is reaped (start-up, imports, conversion, exit). Snippets:
- ours:   `csv2parquet.convert(src, out, rejects, metadata={...})`, as code/etl.py calls it;
- pandas: the tutorial's `pd.read_csv(src, names=[...]).to_parquet(out)` (pyarrow, snappy);
- duckdb: `COPY (SELECT * FROM read_csv(src, columns={...})) TO out (FORMAT parquet)` (snappy);
- polars: `pl.scan_csv(src, schema={...}).sink_parquet(out)` (its default codec, zstd).
Peak RSS: the child's own VmHWM (/proc/self/status), its last statement; the exec started a new
address space, so it is that child's alone. Not wait4/RUSAGE_CHILDREN ru_maxrss: Linux carries the
pre-exec image into it (a 10 MiB child of a 600 MiB parent shows 611 MiB). Inputs: clean generated
`no,name,score` files in a temporary directory (read from the page cache), deleted afterwards. After
each run the Parquet footer's row count must equal the generated rows (else AssertionError).

--rounds N: every method N times, the order rotated each round (ours, pandas, duckdb, polars; then
pandas, duckdb, polars, ours; ...). Shown: the best (min) wall, the highest peak RSS of all rounds,
ratios to DuckDB and polars (wall/RSS). Load: the load average is printed before every round; `load`
is the 1-minute load average before the best run, * above 0.75 x CPUs (this benchmark's previous runs
count in it); `others` is the cores other processes used during that run (/proc/stat busy time minus
the child's CPU time), ! above 0.25 x CPUs: the direct measure of interference.

--memory-limit-mib N runs ours on a --limit-size-mb (default 2048) file twice: 1. with RLIMIT_AS = N
MiB. That counts address space, and Arrow's mimalloc and OpenBLAS reserve far more than they touch
(VmPeak ~800 MiB for a 220 MiB RSS), so this run uses glibc malloc (ARROW_DEFAULT_MEMORY_POOL=system,
MALLOC_ARENA_MAX=2) and OPENBLAS_NUM_THREADS=1, under which address space tracks real use; 2. with
the defaults and no limit, reporting VmHWM: what a container (cgroup) memory limit counts.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT / "code"
METHODS = ("ours", "pandas", "duckdb", "polars")
MIB = 1 << 20
CPUS = os.cpu_count() or 1
LOADED_LOAD = 0.75 * CPUS          # 1-minute load average above this: a loaded machine
BUSY_OTHERS = 0.25 * CPUS          # cores used by other processes during a run above this: disturbed
PANDAS_RSS_PER_INPUT = 4.0         # pandas' peak RSS / input size (measured: 3.6 at 300 MB, 3.3 at 1 GB)

# --- child side: one snippet per method, run as `python -c SNIPPET SRC OUT CODE_DIR` ----------

_SETUP = "import sys\nsrc, out = sys.argv[1], sys.argv[2]\n"
CHILD_CODE = {
    "ours": """
sys.path.insert(0, sys.argv[3])
import csv2parquet
csv2parquet.convert(src, out, out + ".rejects.csv",
                    metadata={"source": "file://" + src, "source_etag": ""})
""",
    "pandas": """
import pandas as pd
df = pd.read_csv(src, names=["no", "name", "score"])
df.to_parquet(out)
""",
    "duckdb": """
import duckdb
q = lambda s: "'" + s.replace("'", "''") + "'"
duckdb.connect().execute("COPY (SELECT * FROM read_csv(" + q(src) + ", header=false, columns="
                         "{'no': 'BIGINT', 'name': 'VARCHAR', 'score': 'BIGINT'})) TO " + q(out)
                         + " (FORMAT parquet)").close()
""",
    "polars": """
import polars as pl
pl.scan_csv(src, has_header=False,
            schema={"no": pl.Int64, "name": pl.String, "score": pl.Int64}).sink_parquet(out)
""",
}
_REPORT = """
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(status["VmHWM"].split()[0], status["VmPeak"].split()[0])
"""

# --- parent side ----------------------------------------------------------------------------


BAD_SCORES = ("95.5", "n/a", "", "x1")   # decimal, text, empty, text: each a reject of its own


def generate_csv(path: Path, size_mb: int, seed: int = 7, bad_percent: float = 0) -> tuple[int, int]:
    """Writes about size_mb MiB of `no,name,score` lines, bad_percent % of them (at random) with a
    score from BAD_SCORES; returns (rows, bad rows)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    rng, target, chunk, rows, bad = np.random.default_rng(seed), size_mb * MIB, 1_000_000, 0, 0
    first_names = pa.array([f"name_{i:05d}" for i in range(50_000)] + [f"n{i}" for i in range(5_000)]
                           + [f"a_longer_name_{i}" for i in range(5_000)])
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "wb") as fh:
        while fh.tell() < target:
            score = pa.array(rng.integers(0, 101, chunk, dtype=np.int64))
            if bad_percent:
                is_bad = rng.random(chunk) < bad_percent / 100
                score = pc.if_else(pa.array(is_bad), pc.take(pa.array(BAD_SCORES), pa.array(
                    rng.integers(0, len(BAD_SCORES), chunk))), pc.cast(score, pa.string()))
            batch = pa.table({
                "no": pa.array(np.arange(rows + 1, rows + chunk + 1, dtype=np.int64)),
                "name": pc.take(first_names, pa.array(rng.integers(0, len(first_names), chunk))),
                "score": score})
            left = target - fh.tell()
            if left < 30 * chunk:   # trim the last chunk to land near the target size
                batch = batch.slice(0, max(1, left // 22))
            if bad_percent:
                bad += int(np.count_nonzero(is_bad[:batch.num_rows]))
            pacsv.write_csv(batch, fh, options)
            rows += batch.num_rows
    return rows, bad


# Allocator settings under which address space (what RLIMIT_AS limits) tracks real memory use
LEAN_ALLOCATION_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "2",
                       "OPENBLAS_NUM_THREADS": "1"}


def _busy_cpu_seconds() -> float:
    """CPU seconds all processes have used since boot (/proc/stat: every field but idle, iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _mem_available_mib() -> float:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("MemAvailable:"))


def run_child(method: str, src: Path, out: Path, as_limit_mib: int | None = None,
              timeout: float = 3600) -> dict:
    """One conversion in a fresh interpreter: wall, peak RSS, the Parquet's row count, CPU use."""
    limit = ((lambda: resource.setrlimit(resource.RLIMIT_AS, (as_limit_mib * MIB,) * 2))
             if as_limit_mib else None)
    env = dict(os.environ, **(LEAN_ALLOCATION_ENV if as_limit_mib else {}))
    code = _SETUP + CHILD_CODE[method] + _REPORT
    argv = [sys.executable, "-c", code, str(src), str(out), str(CODE)]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before, start = _busy_cpu_seconds(), time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        wall = time.perf_counter() - start
        busy = _busy_cpu_seconds() - busy_before
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    try:
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
        import pyarrow.parquet as pq
        hwm_kib, peak_kib = (int(v) for v in proc.stdout.split()[-2:])
        return {"wall": wall, "cpu": cpu, "others": max(0.0, (busy - cpu) / wall),
                "peak_rss_mib": hwm_kib / 1024, "vm_peak_mib": peak_kib / 1024,
                "rows": pq.ParquetFile(out).metadata.num_rows,
                "out_mib": out.stat().st_size / MIB}
    finally:
        for path in (out, Path(str(out) + ".rejects.csv")):
            path.unlink(missing_ok=True)


def summarise(runs: list[dict]) -> dict:
    """The run of best wall (with its load figures), with the highest peak RSS of all rounds."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1] if runs else {"error": "no run"}
    return dict(min(ok, key=lambda r: r["wall"]), peak_rss_mib=max(r["peak_rss_mib"] for r in ok))


def print_table(results: list[dict]) -> None:
    header = ("size MB", "method", "best wall s", "peak RSS MiB", "vs duckdb wall/RSS",
              "vs polars wall/RSS", "load", "others")
    lines, notes = [], []
    for r in results:
        if "error" in r:
            word = "skipped" if r["error"].startswith("skipped") else "failed"
            lines.append((str(r["size"]), r["method"], word, "-", "-", "-", "-", "-"))
            notes.append(f"{r['method']} at {r['size']} MB: {r['error']}")
            continue
        refs = [next((x for x in results if x["size"] == r["size"] and x["method"] == m
                      and "error" not in x), None) for m in ("duckdb", "polars")]
        ratios = [f"{r['wall'] / ref['wall']:.2f}x / {r['peak_rss_mib'] / ref['peak_rss_mib']:.2f}x"
                  if ref else "-" for ref in refs]
        lines.append((str(r["size"]), r["method"], f"{r['wall']:.2f}", f"{r['peak_rss_mib']:.0f}",
                      *ratios, f"{r['load']:.2f}" + ("*" if r["load"] > LOADED_LOAD else ""),
                      f"{r['others']:.2f}" + ("!" if r["others"] > BUSY_OTHERS else "")))
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(header)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(fmt.format(*header))
    print(fmt.format(*("-" * w for w in widths)))
    for row in lines:
        print(fmt.format(*row).rstrip())
    if notes:
        print("\n".join(notes))
    if any("error" not in r and r["load"] > LOADED_LOAD for r in results):
        print(f"* WARNING: taken on a loaded machine: 1-minute load average above {LOADED_LOAD:.2f} "
              f"(0.75 x {CPUS} CPUs) before the run (this benchmark's own runs count in it too)")
    if any("error" not in r and r["others"] > BUSY_OTHERS for r in results):
        print(f"! WARNING: other processes used more than {BUSY_OTHERS:.2f} cores during the run: "
              "its wall time is slowed by them")


def print_targets(results: list[dict]) -> None:
    """The issue's targets: ours wall <= 0.85x polars and <= 0.75x duckdb at 1 GB; RSS <= 0.6x polars."""
    for size in sorted({r["size"] for r in results}):
        got = {r["method"]: r for r in results if r["size"] == size and "error" not in r}
        scope = "" if size >= 1024 else " (targets are for 1 GB; informational)"
        if not {"ours", "polars", "duckdb"} <= got.keys():
            print(f"targets at {size} MB: not checked (needs ours, duckdb and polars)")
            continue
        o, p, d = got["ours"], got["polars"], got["duckdb"]
        checks = [(f"wall {o['wall']:.2f} s vs polars {p['wall']:.2f} s", o["wall"] / p["wall"], 0.85),
                  (f"vs duckdb {d['wall']:.2f} s", o["wall"] / d["wall"], 0.75),
                  (f"peak RSS {o['peak_rss_mib']:.0f} MiB vs polars {p['peak_rss_mib']:.0f} MiB",
                   o["peak_rss_mib"] / p["peak_rss_mib"], 0.6)]
        verdict = "all met" if all(x <= lim for _, x, lim in checks) else "NOT all met"
        print(f"targets at {size} MB{scope}: {verdict}: " + "; ".join(
            f"{text} = {x:.3f}x (<= {lim}x: {'met' if x <= lim else 'NOT met'})"
            for text, x, lim in checks))


def wait_quiet(limit_s: float) -> str:
    """Waits (at most limit_s) until other processes use at most BUSY_OTHERS cores; says how it went."""
    deadline, busy = time.monotonic() + limit_s, float("nan")
    while limit_s > 0:
        before = _busy_cpu_seconds()
        time.sleep(2)
        busy = (_busy_cpu_seconds() - before) / 2
        if busy <= BUSY_OTHERS or time.monotonic() > deadline:
            break
    return "" if limit_s <= 0 else f"others {busy:.2f} cores" + (
        "" if busy <= BUSY_OTHERS else f" still, after waiting {limit_s:.0f} s") + "; "


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    loaded = f" -- LOADED (above {LOADED_LOAD:.2f})" if one > LOADED_LOAD else ""
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}{loaded}"


def memory_limit_mode(tmp: Path, limit_mib: int, size_mb: int) -> int:
    src = tmp / "big.csv"
    rows, _ = generate_csv(src, size_mb)
    print(f"generated {src.stat().st_size / MIB:.0f} MiB, {rows:,} rows; {load_text()}", flush=True)
    runs = {"RLIMIT_AS=%d MiB (glibc malloc)" % limit_mib:
            run_child("ours", src, tmp / "out.parquet", as_limit_mib=limit_mib),
            "defaults, no limit": run_child("ours", src, tmp / "out.parquet")}
    for label, r in runs.items():
        verdict = "within" if r.get("peak_rss_mib", 0) <= limit_mib else "OVER"
        print(f"ours, {label}: " + (f"FAILED ({r['error']})" if "error" in r else
              f"{r['rows']:,} rows in {r['wall']:.1f} s, VmHWM {r['peak_rss_mib']:.0f} MiB "
              f"({verdict} {limit_mib} MiB), VmPeak (address space) {r['vm_peak_mib']:.0f} MiB"))
    return 0 if all(r.get("rows") == rows for r in runs.values()) else 1


def bad_label(percent: float) -> str:
    return f"ours {percent:g}% bad"


def bench_size(tmp: Path, size: int, methods: list[str], rounds: int, quiet_s: float,
               bad_percents: list[float] = ()) -> list[dict]:
    """All rounds of all methods on one generated file (and ours on the files with bad rows, in
    the same rounds); one summary per method."""
    src = tmp / f"in-{size}.csv"
    rows, _ = generate_csv(src, size)
    print(f"\ngenerated {size} MB: {src.stat().st_size / MIB:.0f} MiB, {rows:,} rows", flush=True)
    # label -> (method, input, rows the Parquet must hold)
    inputs = {m: (m, src, rows) for m in methods}
    for percent in bad_percents:
        bad_src = tmp / f"in-{size}-bad{percent:g}.csv"
        bad_rows_total, bad = generate_csv(bad_src, size, bad_percent=percent)
        inputs[bad_label(percent)] = ("ours", bad_src, bad_rows_total - bad)
        print(f"generated {size} MB with {percent:g}% bad scores: {bad:,} of {bad_rows_total:,} rows",
              flush=True)
    active, results = list(inputs), []
    if "pandas" in active:   # it holds the whole table in memory: run it only where it fits
        need, avail = PANDAS_RSS_PER_INPUT * src.stat().st_size / MIB, _mem_available_mib()
        why = (f"needs ~{need / 1024:.1f} GiB ({PANDAS_RSS_PER_INPUT:g}x the input), "
               f"{avail / 1024:.1f} GiB available")
        if need > 0.8 * avail:
            active.remove("pandas")
            results.append({"size": size, "method": "pandas", "error": "skipped: " + why})
        print(f"  pandas {'runs' if 'pandas' in active else 'SKIPPED'}: {why}", flush=True)
    runs: dict[str, list[dict]] = {m: [] for m in active}
    for rnd in range(rounds):
        order = active[rnd % len(active):] + active[:rnd % len(active)] if active else []
        quiet = wait_quiet(quiet_s)
        print(f"  round {rnd + 1}/{rounds} ({', '.join(order)}); {quiet}{load_text()}", flush=True)
        for label in order:
            method, path, expected = inputs[label]
            load = os.getloadavg()[0]
            r = dict(run_child(method, path, tmp / f"out-{method}.parquet"), load=load)
            if "error" not in r and r["rows"] != expected:
                raise AssertionError(f"{label} wrote {r['rows']:,} rows to Parquet at {size} MB; "
                                     f"the input has {expected:,} good rows")
            print(f"    {label:<7}" + (r["error"] if "error" in r else
                  f"{r['wall']:7.2f} s  {r['peak_rss_mib']:6.0f} MiB  cpu {r['cpu']:6.2f} s  out "
                  f"{r['out_mib']:5.0f} MiB  rows ok  load {load:.2f}  others {r['others']:.2f}"),
                  flush=True)
            runs[label].append(r)
    for _, path, _ in inputs.values():
        path.unlink(missing_ok=True)
    return results + [dict(summarise(runs[m]), size=size, method=m) for m in active]


BAD_ROW_TARGETS = {1: 1.2, 10: 1.5}     # the issue's: wall with p% bad rows / wall clean


def print_bad_row_targets(results: list[dict], bad_percents: list[float]) -> None:
    """The issue's targets for bad rows: with 1% and 10% bad rows, <= 1.2x and <= 1.5x the clean run."""
    for size in sorted({r["size"] for r in results}):
        got = {r["method"]: r for r in results if r["size"] == size and "error" not in r}
        if "ours" not in got:
            continue
        clean = got["ours"]
        parts = []
        for percent in bad_percents:
            r = got.get(bad_label(percent))
            if r is None:
                continue
            ratio, limit = r["wall"] / clean["wall"], BAD_ROW_TARGETS.get(percent)
            verdict = "" if limit is None else f" (<= {limit}x: {'met' if ratio <= limit else 'NOT met'})"
            parts.append(f"{percent:g}% bad {r['wall']:.2f} s = {ratio:.3f}x{verdict}, "
                         f"RSS {r['peak_rss_mib']:.0f} MiB")
        if parts:
            print(f"bad rows at {size} MB vs ours clean {clean['wall']:.2f} s: " + "; ".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300,1024", help="CSV sizes in MB, comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help="subset of " + ",".join(METHODS))
    parser.add_argument("--rounds", "--repeat", type=int, default=3,
                        help="rounds per size, the method order rotated each round (default 3)")
    parser.add_argument("--memory-limit-mib", type=int, default=None,
                        help="run only ours on a big file with RLIMIT_AS at this many MiB")
    parser.add_argument("--limit-size-mb", type=int, default=2048,
                        help="file size for --memory-limit-mib (default 2048)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help=f"before each round wait up to S seconds for other processes to use "
                             f"at most {BUSY_OTHERS:g} cores (default 0: do not wait)")
    parser.add_argument("--bad-rows", default="1,10", metavar="PCTS",
                        help="also run ours on files with these percentages of bad scores, in the "
                             "same rounds (default 1,10; '' for none)")
    parser.add_argument("--tmpdir", default=None, help="where to write the generated files")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    bad_percents = [float(p) for p in args.bad_rows.split(",") if p.strip()]
    if unknown := set(methods) - set(METHODS):
        parser.error(f"unknown methods {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    import importlib.util

    missing = [m for m in methods if m in ("duckdb", "polars") and importlib.util.find_spec(m) is None]
    if missing:   # the `bench` extra of pyproject.toml; the tests do not need them
        print(f"not installed, so not run: {', '.join(missing)} (install the `bench` extra: "
              f".venv/bin/pip install 'duckdb>=1,<3' 'polars>=2.1,<3')", flush=True)
        methods = [m for m in methods if m not in missing]

    print(f"machine: {CPUS} CPUs, python {sys.version.split()[0]}, "
          f"{_mem_available_mib() / 1024:.1f} GiB available; {load_text()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-etl-", dir=args.tmpdir) as tmp:
        tmp = Path(tmp)
        if args.memory_limit_mib:
            return memory_limit_mode(tmp, args.memory_limit_mib, args.limit_size_mb)
        results = []
        for size in (int(s) for s in args.sizes.split(",") if s):
            results += bench_size(tmp, size, methods, args.rounds, args.wait_quiet,
                                  bad_percents if "ours" in methods else [])
        labels = methods + [bad_label(p) for p in bad_percents]
        results.sort(key=lambda r: (r["size"], labels.index(r["method"])))
        print(f"\nbest of {args.rounds} round(s); {load_text()} at the end")
        print_table(results)
        print_targets(results)
        print_bad_row_targets(results, bad_percents)
    return 0


if __name__ == "__main__":
    sys.exit(main())
