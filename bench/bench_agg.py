"""Aggregation over many result files, side by side: ours (code/agg.py) vs the tutorial's agg.py.

    .venv/bin/python bench/bench_agg.py                          # 1,000 files of 100 rows
    .venv/bin/python bench/bench_agg.py --files 10000 --repeat 1
    .venv/bin/python bench/bench_agg.py --server moto            # moto instead of s3rver

The S3 endpoint runs in its own process on loopback (its CPU use does not compete for our
interpreter's GIL): by default s3rver (npm; installed into .cache/ on first use, needs Node.js), a
Node.js S3 server that serves requests concurrently, as MinIO and S3 do; moto's server answers one
request at a time, which caps any parallel reader at its request rate. Both methods read the same
files and upload a result:
- tutorial: list, then for each object `fget_object` (a HEAD and a GET) to a local file,
  `pd.read_parquet`, then `pd.concat` and `idxmax` (its agg.py, without the endpoint constants);
- ours: `agg.run` end to end (list, a HEAD of the result, one GET per file in parallel, summary,
  write, list again to catch files that landed meanwhile).
Two situations:
- from scratch: no result yet (ours: the previous result is deleted before each repetition);
- one more file: a day of --files files already aggregated, one new result file arrives and the
  aggregation runs again (as the agg Sensor does for every new file). The tutorial downloads the
  whole day again; ours reads only the new file and reuses the rest from its result.
The best of --repeat runs is shown, and the load average before the first run: compare ratios
taken in one run, not wall times across runs.
"""
from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "code"))

DATE = "20230414"
BUCKET = "etlproj"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3RVER_VERSION = "3.7.1"
S3RVER_DIR = ROOT / ".cache" / f"s3rver-{S3RVER_VERSION}"


def s3rver_command(port: int, data_dir: str) -> list[str]:
    """s3rver from the npm registry, installed once into .cache/ (git-ignored)."""
    binary = S3RVER_DIR / "node_modules" / ".bin" / "s3rver"
    if not binary.exists():
        if not shutil.which("npm"):
            raise SystemExit("s3rver needs Node.js and npm (or run with --server moto)")
        print(f"installing s3rver {S3RVER_VERSION} from the npm registry into {S3RVER_DIR} ...",
              flush=True)
        S3RVER_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(S3RVER_DIR),
                        f"s3rver@{S3RVER_VERSION}"], check=True, stdout=subprocess.DEVNULL)
    return [str(binary), "-d", data_dir, "-a", "127.0.0.1", "-p", str(port), "--silent"]


def start_server(kind: str, port: int, data_dir: str, timeout: float = 30.0) -> subprocess.Popen:
    env = dict(os.environ)
    if kind == "moto":
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    else:
        command = s3rver_command(port, data_dir)
        # s3rver 3.7.1 encrypts ListObjectsV2 continuation tokens with a cipher that Node 17+
        # serves only from OpenSSL's legacy provider: without it every second page is a 500
        env["NODE_OPTIONS"] = (env.get("NODE_OPTIONS", "") + " --openssl-legacy-provider").strip()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"{kind} not listening after {timeout:.0f} s")


def upload_file(client, i: int, rows: int, rng) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    no = np.arange(i * rows + 1, (i + 1) * rows + 1)
    table = pa.table({"no": no, "name": [f"name_{j}" for j in no],
                      "score": rng.integers(0, 1000, rows)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    data = sink.getvalue()
    client.put_object(BUCKET, f"output/{DATE}/{i:05d}.parquet", io.BytesIO(data), len(data))


def upload_files(client, n_files: int, rows: int) -> None:
    import numpy as np

    rng = np.random.default_rng(5)

    def one(i: int) -> None:
        upload_file(client, i, rows, rng)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n_files)))


def tutorial_agg(client) -> str:
    """The tutorial's agg.py, as written there (download each file, read it whole, concat)."""
    import pandas as pd

    prefix = f"output/{DATE}"
    with tempfile.TemporaryDirectory() as tmp:
        dfs = []
        for obj in client.list_objects(BUCKET, prefix=prefix, recursive=True):
            objname = obj.object_name
            if not objname.endswith(".parquet"):
                continue
            local_path = os.path.join(tmp, objname)
            client.fget_object(BUCKET, objname, local_path)
            dfs.append(pd.read_parquet(local_path))
        mdf = pd.concat(dfs).reset_index()
        mrow = mdf.loc[mdf["score"].idxmax()].to_string()
        out = os.path.join(tmp, "agg.txt")
        with open(out, "wt") as f:
            f.write(mrow)
        client.fput_object(BUCKET, f"output/{DATE}/agg.txt", out)
        return mrow


def clear_result(client) -> None:
    for obj in list(client.list_objects(BUCKET, prefix=f"result/{DATE}/", recursive=True)):
        client.remove_object(BUCKET, obj.object_name)


def ours_agg(client, workers: int, from_scratch: bool = True, lean_get: bool = True,
             key: str | None = None) -> dict:
    import agg

    if from_scratch:
        clear_result(client)
    # exclusive: as the agg WorkflowTemplate runs it, under the mutex (no listing after writing);
    # the fold alone: the listing a fold adds now and then (agg.reconcile_due) is the other row's cost
    settings = agg.Settings(bucket=BUCKET, settle_seconds=0.0, workers=workers, exclusive=True,
                            lean_get=lean_get, reconcile_files=0)
    report = agg.run(DATE, settings, client=client, key=key)
    assert report["writes"] == 1, report
    return report


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100, help="rows per file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=16, help="our reader threads")
    parser.add_argument("--server", choices=("s3rver", "moto"), default="s3rver",
                        help="the local S3 server (default: s3rver, which serves requests "
                             "concurrently; moto answers one at a time)")
    parser.add_argument("--one-more-only", action="store_true",
                        help="skip the tutorial and the from-scratch variants (for big days: "
                             "only ours from scratch, then one more file, listing vs fold)")
    args = parser.parse_args()

    port = free_port()
    if args.server == "s3rver":   # s3rver checks signatures against its fixed account
        keys = {"S3_ACCESS_KEY": "S3RVER", "S3_SECRET_KEY": "S3RVER"}
    else:
        keys = {"S3_ACCESS_KEY": "bench" + secrets.token_hex(6),
                "S3_SECRET_KEY": secrets.token_urlsafe(24)}
    env = {"S3_ENDPOINT": f"127.0.0.1:{port}", **keys, "S3_SECURE": "false",
           "S3_REGION": "us-east-1"}
    data_dir = tempfile.mkdtemp(prefix="bench-agg-")
    server = start_server(args.server, port, data_dir)
    try:
        from s3client import client_from_env

        client = client_from_env(env)
        client.make_bucket(BUCKET)
        upload_files(client, args.files, args.rows)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
              f"{args.files} files x {args.rows} rows on {args.server} (separate process); "
              f"best of {args.repeat}", flush=True)

        n = args.files
        rows = []
        if not args.one_more_only:
            t_tut, mrow = best_of(args.repeat, lambda: tutorial_agg(client))
            t_one, one = best_of(args.repeat, lambda: ours_agg(client, 1))
            t_minio, _ = best_of(args.repeat, lambda: ours_agg(client, args.workers,
                                                               lean_get=False))
        t_ours, report = best_of(args.repeat, lambda: ours_agg(client, args.workers))
        if not args.one_more_only:
            tut_best = int(mrow.split("score")[1].split()[0])
            assert report["max"]["score"] == tut_best, (report["max"], mrow)
            rows += [("from scratch", "tutorial (download each, pd.concat)", n, n, t_tut, t_tut),
                     ("from scratch", "ours, 1 worker", n, one["files_read"], t_one, t_tut),
                     ("from scratch", f"ours, {args.workers} workers, minio GET", n, n, t_minio,
                      t_tut),
                     ("from scratch", f"ours, {args.workers} workers", n, report["files_read"],
                      t_ours, t_tut)]
        else:
            rows.append(("from scratch", f"ours, {args.workers} workers", n,
                         report["files_read"], t_ours, t_ours))
        assert report["total_rows"] == n * args.rows

        # one more file arrives, each repetition: the day grows by one file per run; the listing
        # run (no --key: lists the day) and the fold (--key, as the Sensor starts it) each get
        # their own new file
        import numpy as np
        rng = np.random.default_rng(9)
        t_tut_inc = t_list = t_fold = float("inf")
        added = 0
        for r in range(args.repeat):
            upload_file(client, n + added, args.rows, rng)
            added += 1
            if not args.one_more_only:
                start = time.perf_counter()
                tutorial_agg(client)
                t_tut_inc = min(t_tut_inc, time.perf_counter() - start)
            start = time.perf_counter()
            inc = ours_agg(client, args.workers, from_scratch=False)
            t_list = min(t_list, time.perf_counter() - start)
            assert inc["total_rows"] == (n + added) * args.rows and inc["files_read"] == 1, inc
            upload_file(client, n + added, args.rows, rng)
            added += 1
            start = time.perf_counter()
            inc = ours_agg(client, args.workers, from_scratch=False,
                           key=f"output/{DATE}/{n + added - 1:05d}.parquet")
            t_fold = min(t_fold, time.perf_counter() - start)
            assert inc["total_rows"] == (n + added) * args.rows and inc["files_read"] == 1, inc
        ref = t_list if args.one_more_only else t_tut_inc
        if not args.one_more_only:
            rows.append(("one more file", "tutorial (download each, pd.concat)", n + 1, n + 1,
                         t_tut_inc, ref))
        rows += [("one more file", "ours, listing the day", n + 1, 1, t_list, ref),
                 ("one more file", "ours, fold --key (no listing)", n + 1, 1, t_fold, ref)]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)

    w1, w2 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    against = "vs listing" if args.one_more_only else "vs tutorial"
    print(f"\n{'situation':<{w1}}  {'method':<{w2}}  files  read  wall s  {against}")
    print(f"{'-' * w1}  {'-' * w2}  -----  -----  ------  -----------")
    for situation, name, files, read, wall, ref in rows:
        print(f"{situation:<{w1}}  {name:<{w2}}  {files:>5}  {read:>5}  {wall:>6.2f}  "
              f"{ref / wall:>10.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
