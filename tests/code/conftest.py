"""Fixtures for the in-cluster programs (code/*.py): a real S3 endpoint (moto's server), random keys."""
from __future__ import annotations

import secrets
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

CODE = Path(__file__).resolve().parents[2] / "code"
if str(CODE) not in sys.path:
    sys.path.insert(0, str(CODE))

# Program settings that must not leak in from the developer's shell.
_PROGRAM_VARS = ("S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SECURE", "S3_REGION",
                 "OUTPUT_LAYOUT", "REJECTS_LAYOUT", "RESULT_PREFIX", "ETL_BUCKET",
                 "AGG_SETTLE_SECONDS", "AGG_MAX_ROUNDS", "AGG_WORKERS")


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """A fresh bucket on the moto server; the S3_* variables point the programs at it."""
    from s3client import client_from_env

    for var in _PROGRAM_VARS:
        monkeypatch.delenv(var, raising=False)
    env = {
        "S3_ENDPOINT": moto_endpoint,
        "S3_ACCESS_KEY": "AK" + secrets.token_hex(8).upper(),
        "S3_SECRET_KEY": secrets.token_urlsafe(30),
        "S3_SECURE": "false",
        "S3_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = client_from_env()
    bucket = f"etl-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    return SimpleNamespace(client=client, bucket=bucket, env=env)
