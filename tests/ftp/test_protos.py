"""The committed gRPC stubs are exactly what grpc_tools.protoc makes from generic.proto,
and they describe Argo Events' generic event source contract."""

from __future__ import annotations

import subprocess
import sys

from ftp_support import ROOT, SERVER_DIR

GENERATED = ("generic_pb2.py", "generic_pb2.pyi", "generic_pb2_grpc.py")


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in GENERATED:
        fresh = (tmp_path / name).read_bytes()
        committed = (SERVER_DIR / name).read_bytes()
        assert fresh == committed, (
            f"{name} differs from a fresh generation: run `python tools/gen_protos.py` (stubs are"
            " tied to the grpcio-tools version; keep the pinned one)"
        )


def test_stubs_describe_the_generic_event_source_contract():
    import generic_pb2
    import generic_pb2_grpc

    service = generic_pb2.DESCRIPTOR.services_by_name["Eventing"]
    method = service.methods_by_name["StartEventSource"]
    assert generic_pb2.DESCRIPTOR.package == "generic"
    assert (method.input_type.full_name, method.output_type.full_name) == ("generic.EventSource", "generic.Event")
    assert method.server_streaming and not method.client_streaming
    fields = {m: [(f.name, f.number, f.type) for f in generic_pb2.DESCRIPTOR.message_types_by_name[m].fields]
              for m in ("EventSource", "Event")}
    string_t, bytes_t = 9, 12  # FieldDescriptor.TYPE_STRING, TYPE_BYTES
    assert fields == {"EventSource": [("name", 1, string_t), ("config", 2, bytes_t)],
                      "Event": [("name", 1, string_t), ("payload", 2, bytes_t)]}
    source = (SERVER_DIR / "generic_pb2_grpc.py").read_text()
    assert "'/generic.Eventing/StartEventSource'" in source
    assert hasattr(generic_pb2_grpc, "EventingStub")


def test_server_files_import_each_other_flat():
    """In the pod the folder's files sit flat in /code: nothing may import a package path."""
    for path in SERVER_DIR.glob("*.py"):
        text = path.read_text()
        assert "from ftp_event_server" not in text and "import ftp_event_server" not in text, path
    assert not [p for p in SERVER_DIR.iterdir() if p.is_dir() and p.name != "__pycache__"]
