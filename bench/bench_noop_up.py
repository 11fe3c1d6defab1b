"""No-op `up` on a converged stack, against the Kubernetes API emulator and the CLI stand-ins.

Prints wall time, Kubernetes API requests by verb, and helm/minikube/kubectl invocations, beside the targets
(zero writes; at most one read per managed object, one LIST of the CRDs, `helm get metadata` and
`helm get values` per release, one `minikube status`).

    .venv/bin/python bench/bench_noop_up.py [--runs 3] [--only platform,pipeline]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _pytest.monkeypatch import MonkeyPatch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from stack_harness import World  # noqa: E402


def _kind_of_request(request: dict) -> str:
    if request["method"] != "GET":
        return request["method"]
    path = request["path"].rstrip("/")
    if path.endswith("/log"):
        return "GET pod log"
    if "/customresourcedefinitions/" in path:
        return "GET CRD"
    parts = path.split("/")
    # /api/v1/namespaces/NS/KIND[/NAME] or /apis/G/V/namespaces/NS/KIND[/NAME]
    base = 3 if parts[1] == "api" else 4
    rest = parts[base:]
    named = (len(rest) == 4 and rest[0] == "namespaces") or (len(rest) == 2 and rest[0] != "namespaces")
    return "GET object" if named else "LIST"


def main() -> int:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="platform,pipeline")
    args = parser.parse_args()
    patch = MonkeyPatch()
    world = World(Path(tempfile.mkdtemp(prefix="bench-noop-")), patch)
    patch.setenv("FTP_ENABLED", "true")
    try:
        code, out = world.run("up", only=args.only)
        if code:
            print(out)
            return 1
        walls, verbs, tools = [], Counter(), Counter()
        managed = sum(1 for line in out.splitlines() if " changed " in f" {line} ")
        objects = sum(1 for line in out.splitlines()
                      if " changed " in f" {line} " and line.split()[2].count("/") == 2 and "/bucket/" not in line)
        for _ in range(args.runs):
            world.reset_calls()
            started = time.perf_counter()
            code, out = world.run("up", only=args.only)
            walls.append(time.perf_counter() - started)
            if code or " changed " in out:
                print(out)
                return 1
            # the tool's own client; helm's reads of its release records are helm's (counted as helm calls)
            verbs = Counter(_kind_of_request(r) for r in world.emu.requests
                            if r.get("user_agent", "").startswith("OpenAPI-Generator"))
            writes_any = sum(1 for r in world.emu.requests if r["method"] not in ("GET", "HEAD"))
            tools = Counter()
            for tool in ("helm", "minikube", "kubectl", "docker"):
                for argv in world.calls(tool):
                    sub = next((a for a in argv if a in {"status", "version", "profile", "image", "port-forward",
                                                         "list", "get", "info"}), argv[0] if argv else "")
                    tools[f"{tool} {sub}"] += 1
        writes = sum(n for verb, n in verbs.items() if not verb.startswith(("GET", "LIST")))
        table = Table(title=f"no-op `up --only {args.only}` ({args.runs} runs, converged stack)")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_column("target")
        table.add_row("wall time (median)", f"{statistics.median(walls):.2f} s", "")
        table.add_row("steps that changed on the first up", str(managed), "")
        targets = {"GET object": f"≤ 1 per managed object ({objects})", "GET CRD": "1 per Argo CRD",
                   "LIST": "1 for the CRDs + 1 per Helm release (its Deployments) + 1 per MinIO EventSource "
                           "(its pod)",
                   "GET pod log": "1 per MinIO EventSource (is it listening?)"}
        for verb in sorted(verbs):
            table.add_row(f"API {verb}", str(verbs[verb]), targets.get(verb, "0"))
        table.add_row("API writes", str(writes), "0")
        table.add_row("API writes by any client (helm too)", str(writes_any), "0")
        for name in sorted(tools):
            note = {"helm get": "2 per release (metadata, values)", "minikube status": "1"}.get(name, "")
            table.add_row(name, str(tools[name]), note)
        Console().print(table)
        return 0 if writes == writes_any == 0 else 1
    finally:
        world.close()
        patch.undo()


if __name__ == "__main__":
    sys.exit(main())
