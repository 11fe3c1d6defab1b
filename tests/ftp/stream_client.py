"""A receiving client in its own process, for kill tests: reads StartEventSource like Argo's
generic event source and appends each event's name to a file (one JSON string a line,
flushed at once), so whatever it received survives a SIGKILL.

    python stream_client.py <grpc port> <config.json> <out file> [seconds per event]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1] / "code" / "ftp_event_server")]

import grpc  # noqa: E402

import generic_pb2  # noqa: E402
import generic_pb2_grpc  # noqa: E402


def main() -> int:
    port, config, out = sys.argv[1], Path(sys.argv[2]).read_bytes(), sys.argv[3]
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = generic_pb2_grpc.EventingStub(channel)
    with open(out, "a", encoding="utf-8") as fh:
        try:
            for ev in stub.StartEventSource(generic_pb2.EventSource(name="ftp", config=config)):
                fh.write(json.dumps(json.loads(ev.payload)["name"], ensure_ascii=False) + "\n")
                fh.flush()
                if delay:
                    time.sleep(delay)  # the receiver's own work per event (Argo: the EventBus)
        except grpc.RpcError as exc:
            print(f"stream ended: {exc.code()} {exc.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
