"""S3's naming rules for general purpose buckets, applied to AWS_BUCKET before any AWS call."""

from __future__ import annotations

import pytest
from invoke import Context, Exit

from etlboot import config
from etlboot.tasks import aws as aws_tasks

# one name per rule, and the words of the error that name that rule
INVALID = [
    ("ab", "2 characters; 3 to 63"),                                    # too short
    ("a" * 64, "64 characters; 3 to 63"),                               # too long
    ("My-Bucket", "only lowercase letters"),                            # uppercase
    ("my_bucket", "only lowercase letters"),                            # underscore
    ("-bucket", "begin and end with a letter or digit"),
    ("bucket-", "begin and end with a letter or digit"),
    (".bucket", "begin and end with a letter or digit"),
    ("my..bucket", "two adjacent periods"),
    ("my-.bucket", "a '-' next to a '.'"),
    ("192.168.5.4", "formatted as an IP address"),
    ("10.0.0.1", "formatted as an IP address"),
    ("xn--bucket", "prefix 'xn--' is reserved"),
    ("sthree-bucket", "prefix 'sthree-' is reserved"),
    ("sthree-configurator-x", "prefix 'sthree-' is reserved"),
    ("amzn-s3-demo-bucket", "prefix 'amzn-s3-demo-' is reserved"),
    ("bucket-s3alias", "suffix '-s3alias' is reserved"),
    ("bucket--ol-s3", "suffix '--ol-s3' is reserved"),
    ("bucket.mrap", "suffix '.mrap' is reserved"),
    ("bucket--x-s3", "suffix '--x-s3' is reserved"),
    ("bucket--table-s3", "suffix '--table-s3' is reserved"),
]

VALID = ["abc", "a" * 63, "my-etl-bucket", "my.etl.bucket", "etl-2026-01-01", "1.2.3", "1.2.3.4.5", "192.168.5.4a",
         "bucket-xn--a", "s3alias", "my-bucket-s3aliasx", "sthree", "mrap.bucket", "x-s3-bucket"]


def load_with(bucket: str, env_file) -> config.Settings:
    return config.load(env_file=env_file, environ={"AWS_BUCKET": bucket}, generate=False)


@pytest.mark.parametrize("name, reason", INVALID, ids=[n[:20] for n, _ in INVALID])
def test_names_s3_refuses_are_refused_with_the_rule(name, reason, env_file):
    with pytest.raises(config.ConfigError) as caught:
        load_with(name, env_file)
    message = str(caught.value)
    assert message.startswith("AWS_BUCKET=") and "is not a valid bucket name" in message
    assert reason in message


def test_a_trailing_newline_is_no_way_round():
    # settings are stripped when loaded; the rule itself must hold on its own
    with pytest.raises(config.ConfigError, match="only lowercase letters"):
        config._validate(config.BY_NAME["AWS_BUCKET"], "bucket\n")


@pytest.mark.parametrize("name", VALID)
def test_names_s3_accepts_are_accepted(name, env_file):
    assert load_with(name, env_file).values["AWS_BUCKET"] == name


@pytest.mark.parametrize("name", ["192.168.5.4", "xn--bucket", "bucket-s3alias", "bucket--ol-s3"])
def test_an_invalid_name_stops_setup_before_any_call(name, aws_env, aws_server, monkeypatch, capsys):
    monkeypatch.setenv("AWS_BUCKET", name)
    with pytest.raises(Exit) as stopped:
        aws_tasks.setup(Context())
    assert stopped.value.code == 2
    assert "AWS_BUCKET" in capsys.readouterr().out
    assert aws_server.calls == []  # not even a read reached the endpoint
