"""ftp_config.py: the EventSource config, its checks and defaults."""

from __future__ import annotations

import json
import re

import pytest

import ftp_config as ftp_watch
from ftp_config import ListFields

ENV = {"FTP_USER": "someone", "FTP_PASSWORD": "s3cret-value"}


def test_config_defaults_and_credentials_from_env():
    cfg = ftp_watch.parse_config(b"host: vsftpd\n", ENV, event_name="ftp")
    assert (cfg.host, cfg.port, cfg.dir, cfg.passive, cfg.recursive, cfg.listing) == (
        "vsftpd", 21, "/", True, True, "auto")
    assert (cfg.user, cfg.password) == ("someone", "s3cret-value")
    assert cfg.settle_seconds == cfg.poll_seconds == 10.0
    assert re.fullmatch(r"/var/lib/ftp-event-server/ftp-[0-9a-f]{10}\.json", cfg.state_file)
    # another tree gets another state file, the same tree the same one
    assert ftp_watch.parse_config(b"host: other\n", ENV).state_file != cfg.state_file
    assert ftp_watch.parse_config(b"host: vsftpd\nport: 21\n", ENV).state_file == cfg.state_file
    assert "s3cret-value" not in repr(cfg) and "s3cret-value" not in cfg.describe()


def test_config_json_and_env_defaults():
    env = dict(ENV, FTP_POLL_SECONDS="2.5", FTP_STATE_DIR="/state", MY_PW="other")
    cfg = ftp_watch.parse_config(
        json.dumps({"host": "h", "port": 2121, "user": "bob", "passwordEnv": "MY_PW", "dir": "/in/../data/"}),
        env, event_name="ftp events/1")
    assert (cfg.port, cfg.user, cfg.password, cfg.dir, cfg.poll_seconds) == (2121, "bob", "other", "/data", 2.5)
    assert cfg.state_file.startswith("/state/ftp_events_1-") and cfg.state_file.endswith(".json")


def test_config_password_file(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    cfg = ftp_watch.parse_config(f"host: h\npasswordFile: {pw}\n", ENV)
    assert cfg.password == "from-file"
    with pytest.raises(ftp_watch.ConfigError, match="cannot read"):
        ftp_watch.parse_config(f"host: h\npasswordFile: {tmp_path / 'missing'}\n", ENV)


def test_config_error_never_contains_the_password():
    with pytest.raises(ftp_watch.ConfigError) as info:
        ftp_watch.parse_config(b"host: h\nport: 0\nuser: x\nuserEnv: Y\n", ENV)
    assert "s3cret-value" not in str(info.value)
    assert "either 'user' or 'userEnv'" in str(info.value)


def test_config_list_fields_must_precede_the_name():
    with pytest.raises(ftp_watch.ConfigError, match="before the name position"):
        ftp_watch.parse_config("host: h\nlistFields: {size: 4, mtime: [5, 6, 9], name: 8}\n", ENV)
    cfg = ftp_watch.parse_config("host: h\nlistFields: {size: 3, mtime: [4, 5, 6], name: 7}\n", ENV)
    assert cfg.list_fields == ListFields(3, (4, 5, 6), 7)


def test_completeness_and_delivery_defaults():
    cfg = ftp_watch.parse_config(b"host: h\npollSeconds: 20\n", ENV)
    assert cfg.min_age_seconds == 60.0  # 3 x pollSeconds, at least 30
    assert ftp_watch.parse_config(b"host: h\n", ENV).min_age_seconds == 30.0
    assert cfg.ignore == ("*.part", "*.tmp", ".*")
    assert (cfg.done_file, cfg.confirm_seconds) == ("", 30.0)
    # a done marker is the signal: no minimum age unless asked for
    marked = ftp_watch.parse_config(b"host: h\ndoneFile: '{name}.done'\n", ENV)
    assert (marked.done_file, marked.min_age_seconds) == ("{name}.done", 0.0)
    both = ftp_watch.parse_config(b"host: h\ndoneFile: '{stem}.ok'\nminAgeSeconds: 5\n", ENV)
    assert (both.done_file, both.min_age_seconds) == ("{stem}.ok", 5.0)
    assert ftp_watch.parse_config(b"host: h\nignore: []\n", ENV).ignore == ()


def test_completeness_settings_from_env_and_config_wins():
    env = dict(ENV, FTP_MIN_AGE_SECONDS="0", FTP_DONE_FILE="{name}.ready", FTP_IGNORE="*.part, ~*",
               FTP_CONFIRM_SECONDS="45")
    cfg = ftp_watch.parse_config(b"host: h\n", env)
    assert (cfg.min_age_seconds, cfg.done_file, cfg.ignore, cfg.confirm_seconds) == (
        0.0, "{name}.ready", ("*.part", "~*"), 45.0)
    cfg = ftp_watch.parse_config(b"host: h\nminAgeSeconds: 7\nignore: ['*.x']\nconfirmSeconds: 9\n", env)
    assert (cfg.min_age_seconds, cfg.ignore, cfg.confirm_seconds) == (7.0, ("*.x",), 9.0)


@pytest.mark.parametrize("text,message", [
    ("doneFile: done", "field 'doneFile' must be a file name"),
    ("doneFile: 'x/{name}.done'", "field 'doneFile' must be a file name"),
    ("doneFile: '{name}'", "must differ from the file's own name"),
    ("doneFile: '{nam}.done'", "field 'doneFile' must be a file name"),
    ("ignore: '*.part'", "field 'ignore' must be a list"),
    ("ignore: ['a/b']", "field 'ignore' must be a list"),
    ("minAgeSeconds: -1", "field 'minAgeSeconds' must be a non-negative number"),
    ("confirmSeconds: 0", "field 'confirmSeconds' must be a positive number"),
])
def test_completeness_settings_are_checked(text, message):
    with pytest.raises(ftp_watch.ConfigError, match=re.escape(message)):
        ftp_watch.parse_config(f"host: h\n{text}\n", ENV)


def test_bad_env_number_is_named():
    with pytest.raises(ftp_watch.ConfigError, match="FTP_MIN_AGE_SECONDS must be a non-negative number"):
        ftp_watch.parse_config(b"host: h\n", dict(ENV, FTP_MIN_AGE_SECONDS="soon"))
