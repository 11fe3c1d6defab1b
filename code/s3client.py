"""S3 / MinIO client for the programs that run in the cluster, configured only from the environment.

    S3_ENDPOINT    host:port of MinIO (e.g. `minio:9000`); empty or unset means AWS S3
                   (an `http://` or `https://` prefix is accepted and sets S3_SECURE)
    S3_ACCESS_KEY  access key; with S3_SECRET_KEY from the Secret's root-user / root-password
    S3_SECRET_KEY
    S3_SECURE      "false" for plain HTTP (MinIO in the cluster); default "true"
    S3_REGION      optional; saves the bucket-location lookup when set

For AWS without keys, the standard AWS variables / web identity / instance role are used.
Error messages name the variable, never a value.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.credentials import (AWSConfigProvider, ChainedProvider, EnvAWSProvider,
                               IamAwsProvider)

from failures import Failure

AWS_ENDPOINT = "s3.amazonaws.com"
# Every request is bounded: connect and read timeouts, and a few retries with backoff.
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 120
RETRIES = 3

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class S3ConfigError(Failure):
    """The S3_* environment is incomplete or malformed (a retry will not help)."""


def settings_from_env(env: dict[str, str] | None = None) -> dict:
    """Parse the S3_* variables into Minio() keyword arguments (without the HTTP client)."""
    env = os.environ if env is None else env
    endpoint = env.get("S3_ENDPOINT", "").strip()
    secure = _flag(env, "S3_SECURE", default=True)
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            raise S3ConfigError("S3_ENDPOINT must be host:port (or http(s)://host:port)")
        secure = parts.scheme == "https"
        endpoint = parts.netloc
    elif "/" in endpoint:
        raise S3ConfigError("S3_ENDPOINT must be host:port (or http(s)://host:port)")

    access_key = env.get("S3_ACCESS_KEY", "")
    secret_key = env.get("S3_SECRET_KEY", "")
    if bool(access_key) != bool(secret_key):
        raise S3ConfigError("set both S3_ACCESS_KEY and S3_SECRET_KEY, or neither")

    settings: dict = {"endpoint": endpoint or AWS_ENDPOINT, "secure": secure,
                      "region": env.get("S3_REGION") or None}
    if access_key:
        settings.update(access_key=access_key, secret_key=secret_key)
    elif endpoint:
        raise S3ConfigError("S3_ACCESS_KEY and S3_SECRET_KEY are required for S3_ENDPOINT")
    else:
        settings["credentials"] = ChainedProvider(
            [EnvAWSProvider(), AWSConfigProvider(), IamAwsProvider()])
    return settings


def client_from_env(env: dict[str, str] | None = None) -> Minio:
    """A `minio.Minio` client for the S3 endpoint described by the S3_* variables."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS),
        maxsize=32,
        retries=urllib3.Retry(total=RETRIES, backoff_factor=0.2,
                              status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(**settings_from_env(env), http_client=http)


def _flag(env, name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise S3ConfigError(f"{name} must be true or false")
