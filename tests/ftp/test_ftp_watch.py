"""ftp_watch.py is the one-import face of the watcher; the parts live in their own files
(flat, as the ConfigMap mounts them), each with its own tests."""

from __future__ import annotations

import ast

import ftp_watch
from ftp_support import SERVER_DIR

PARTS = {"ftp_config.py", "ftp_listing.py", "ftp_changes.py", "ftp_state.py", "ftp_stream.py"}


def test_the_facade_exports_what_callers_use():
    for name in ("parse_config", "ConfigError", "WatchConfig", "Change", "ChangeTracker", "FtpPoller", "TreeLister",
                 "StateStore", "StateBusy", "watch", "stop_all_streams", "FileInfo", "Listing"):
        assert hasattr(ftp_watch, name), name


def test_parts_are_separate_small_files_with_flat_imports():
    files = {p.name: p for p in SERVER_DIR.glob("*.py")}
    assert PARTS <= set(files)
    for name in PARTS | {"event_server.py", "ftp_watch.py"}:
        text = files[name].read_text()
        assert len(text.splitlines()) < 500, name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}: relative import (the files are mounted flat)"
