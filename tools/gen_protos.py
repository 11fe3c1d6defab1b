"""Regenerate the gRPC stubs of the FTP event server from generic.proto.

The stubs are committed next to the proto (code/ftp_event_server/), because the
event server reaches its pod as a flat ConfigMap and nothing builds code there.
tests/ftp/test_protos.py regenerates them into a temporary folder and compares
byte for byte, so a stale stub or a different grpcio-tools version shows up as a
failing test. Run from anywhere:

    python tools/gen_protos.py            # rewrite the committed stubs
    python tools/gen_protos.py --out DIR  # write them to DIR instead
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent.parent / "code" / "ftp_event_server"
PROTO_FILE = "generic.proto"
GENERATED = ("generic_pb2.py", "generic_pb2.pyi", "generic_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run grpc_tools.protoc on generic.proto; return the files written."""
    from grpc_tools import protoc  # imported here: only needed when generating

    out_dir.mkdir(parents=True, exist_ok=True)
    # -I is the proto's own folder, so the generated code imports "generic_pb2"
    # without a package prefix and works when every file sits flat in /code.
    argv = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_DIR / PROTO_FILE),
    ]
    rc = protoc.main(argv)
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with exit code {rc} on {PROTO_DIR / PROTO_FILE}")
    return [out_dir / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_DIR, help="output folder (default: next to the proto)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
