"""CSV -> Parquet, side by side: ours (code/csv2parquet.py) vs the tutorial's pandas vs DuckDB.

    .venv/bin/python bench/bench_etl.py                       # 100, 300 and 1024 MB
    .venv/bin/python bench/bench_etl.py --sizes 50,200
    .venv/bin/python bench/bench_etl.py --memory-limit-mib 512 # ours on a 2 GB file within 512 MiB

Every conversion runs in a fresh child process, so the peak RSS (VmHWM from /proc/self/status,
read by the child at its end) belongs to that run alone; wall time covers the conversion only (not
interpreter start-up or imports). Inputs are generated `no,name,score` files in a temporary
directory, deleted afterwards. Ratios are against DuckDB on the same file.

--memory-limit-mib N runs ours on a --limit-size-mb (default 2048) file twice:
1. with RLIMIT_AS = N MiB. RLIMIT_AS counts address space, not memory in use, and Arrow's default
   allocator (mimalloc) and OpenBLAS reserve far more address space than they touch (VmPeak ~800 MiB
   for a 220 MiB RSS). So this run uses glibc malloc (ARROW_DEFAULT_MEMORY_POOL=system,
   MALLOC_ARENA_MAX=2) and OPENBLAS_NUM_THREADS=1, under which address space tracks real use;
2. with the defaults and no limit, reporting VmHWM (peak RSS): what a container memory limit
   (cgroup, as Kubernetes sets it) actually counts.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT / "code"
METHODS = ("ours", "pandas", "duckdb")
MIB = 1 << 20


# --- child side -----------------------------------------------------------------------------


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(method: str, src: str, out: str) -> None:
    """Runs one conversion and prints a JSON line: wall seconds, rows, peak RSS (MiB)."""
    if method == "ours":
        sys.path.insert(0, str(CODE))
        import csv2parquet

        def go() -> int:
            result = csv2parquet.convert(src, out, out + ".rejects.csv")
            return result["rows"]
    elif method == "pandas":
        import pandas as pd

        def go() -> int:
            # The tutorial's ETL, verbatim in spirit.
            df = pd.read_csv(src, names=["no", "name", "score"])
            df.to_parquet(out)
            return len(df)
    elif method == "duckdb":
        import duckdb

        def go() -> int:
            con = duckdb.connect()
            src_sql, out_sql = src.replace("'", "''"), out.replace("'", "''")
            rows = con.execute(
                f"COPY (SELECT * FROM read_csv('{src_sql}', header=false, "
                "columns={'no': 'BIGINT', 'name': 'VARCHAR', 'score': 'BIGINT'})) "
                f"TO '{out_sql}' (FORMAT parquet)").fetchone()[0]
            con.close()
            return rows
    else:
        raise SystemExit(f"unknown method {method}")
    base_rss = _status_mib("VmRSS")
    start = time.perf_counter()
    rows = go()
    wall = time.perf_counter() - start
    print(json.dumps({"wall": wall, "rows": rows, "peak_rss_mib": _status_mib("VmHWM"),
                      "base_rss_mib": base_rss, "vm_peak_mib": _status_mib("VmPeak")}))


# --- parent side ----------------------------------------------------------------------------


def generate_csv(path: Path, size_mb: int, seed: int = 7) -> int:
    """Writes about size_mb MiB of `no,name,score` lines; returns the row count."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    target = size_mb * MIB
    chunk = 1_000_000
    rows = 0
    first_names = pa.array([f"name_{i:05d}" for i in range(50_000)] +
                           [f"n{i}" for i in range(5_000)] +
                           [f"a_longer_name_{i}" for i in range(5_000)])
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "wb") as fh:
        while fh.tell() < target:
            no = pa.array(np.arange(rows + 1, rows + chunk + 1, dtype=np.int64))
            name = pc.take(first_names, pa.array(rng.integers(0, len(first_names), chunk)))
            score = pa.array(rng.integers(0, 101, chunk, dtype=np.int64))
            batch = pa.table({"no": no, "name": name, "score": score})
            left = target - fh.tell()
            if left < 30 * chunk:   # trim the last chunk to land near the target size
                batch = batch.slice(0, max(1, left // 22))
            pacsv.write_csv(batch, fh, options)
            rows += batch.num_rows
    return rows


# Allocator settings under which address space (what RLIMIT_AS limits) tracks memory really used.
LEAN_ALLOCATION_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "2",
                       "OPENBLAS_NUM_THREADS": "1"}


def run_child(method: str, src: Path, out: Path, as_limit_mib: int | None = None,
              timeout: float = 3600) -> dict:
    def limit() -> None:
        if as_limit_mib:
            lim = as_limit_mib * MIB
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    env = dict(os.environ, **(LEAN_ALLOCATION_ENV if as_limit_mib else {}))
    proc = subprocess.run([sys.executable, __file__, "--child", method, str(src), str(out)],
                          capture_output=True, text=True, preexec_fn=limit, timeout=timeout,
                          env=env)
    if out.exists():
        out.unlink()
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(results: list[dict]) -> None:
    header = ("size MB", "method", "wall s", "peak RSS MiB", "rows/s", "wall vs DuckDB",
              "RSS vs DuckDB")
    lines = []
    for size in sorted({r["size"] for r in results}):
        group = {r["method"]: r for r in results if r["size"] == size}
        ref = group.get("duckdb", {})
        for method, r in group.items():
            if "error" in r:
                lines.append((str(size), method, "failed: " + r["error"][:60], "", "", "", ""))
                continue
            ratio = (lambda a, b: f"{a / b:.2f}x" if b else "-")
            lines.append((str(size), method, f"{r['wall']:.2f}", f"{r['peak_rss_mib']:.0f}",
                          f"{r['rows'] / r['wall']:,.0f}",
                          ratio(r["wall"], ref.get("wall")),
                          ratio(r["peak_rss_mib"], ref.get("peak_rss_mib"))))
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(header)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(fmt.format(*header))
    print(fmt.format(*("-" * w for w in widths)))
    for row in lines:
        print(fmt.format(*row))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,300,1024", help="CSV sizes in MB, comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help="subset of " + ",".join(METHODS))
    parser.add_argument("--memory-limit-mib", type=int, default=None,
                        help="run only ours on a big file with RLIMIT_AS at this many MiB")
    parser.add_argument("--limit-size-mb", type=int, default=2048,
                        help="file size for --memory-limit-mib (default 2048)")
    parser.add_argument("--tmpdir", default=None, help="where to write the generated files")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per method and size, interleaved; the best wall time and the "
                             "highest peak RSS are shown (other load on the machine only slows)")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-etl-", dir=args.tmpdir) as tmp:
        tmp = Path(tmp)
        if args.memory_limit_mib:
            src = tmp / "big.csv"
            rows = generate_csv(src, args.limit_size_mb)
            print(f"generated {src.stat().st_size / MIB:.0f} MiB, {rows:,} rows", flush=True)
            limited = run_child("ours", src, tmp / "out.parquet", as_limit_mib=args.memory_limit_mib)
            free = run_child("ours", src, tmp / "out.parquet")
            print(f"ours, RLIMIT_AS={args.memory_limit_mib} MiB (glibc malloc): "
                  + (f"FAILED ({limited['error']})" if "error" in limited else
                     f"ok, {limited['rows']:,} rows in {limited['wall']:.1f} s, "
                     f"VmHWM {limited['peak_rss_mib']:.0f} MiB, "
                     f"VmPeak {limited['vm_peak_mib']:.0f} MiB"))
            if "error" not in free:
                verdict = "within" if free["peak_rss_mib"] <= args.memory_limit_mib else "OVER"
                print(f"ours, defaults, no limit: {free['rows']:,} rows in {free['wall']:.1f} s, "
                      f"VmHWM {free['peak_rss_mib']:.0f} MiB ({verdict} {args.memory_limit_mib} MiB), "
                      f"VmPeak (address space) {free['vm_peak_mib']:.0f} MiB")
            else:
                print(f"ours, defaults, no limit: FAILED ({free['error']})")
            return 0 if "error" not in limited else 1

        methods = [m for m in args.methods.split(",") if m]
        results = []
        for size in (int(s) for s in args.sizes.split(",") if s):
            src = tmp / f"in-{size}.csv"
            rows = generate_csv(src, size)
            print(f"generated {size} MB: {src.stat().st_size / MIB:.0f} MiB, {rows:,} rows",
                  flush=True)
            best: dict[str, dict] = {}
            for _ in range(args.repeat):
                for method in methods:
                    r = run_child(method, src, tmp / f"out-{method}.parquet")
                    shown = r.get("error") or f"{r['wall']:.2f} s, {r['peak_rss_mib']:.0f} MiB"
                    print(f"  {method}: {shown}", flush=True)
                    prev = best.get(method)
                    if prev is None or "error" in prev:
                        best[method] = r
                    elif "error" not in r:
                        best[method] = dict(prev, wall=min(prev["wall"], r["wall"]),
                                            peak_rss_mib=max(prev["peak_rss_mib"],
                                                             r["peak_rss_mib"]))
            for method in methods:
                results.append(dict(best[method], size=size, method=method))
            src.unlink()
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end (other processes skew wall times)")
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
