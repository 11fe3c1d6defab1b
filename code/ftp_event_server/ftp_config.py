"""The EventSource ``config`` of the FTP event server: parse, validate, resolve credentials.

``parse_config`` turns the generic event source's config bytes (YAML or JSON) into a
``WatchConfig`` or raises ``ConfigError`` naming every problem. Environment variables give
defaults where the cluster sets them (``FTP_POLL_SECONDS``, ``FTP_STATE_DIR``,
``FTP_MIN_AGE_SECONDS``, ``FTP_DONE_FILE``, ``FTP_IGNORE``, ``FTP_CONFIRM_SECONDS``); a field
in the config always wins over its variable.
"""

from __future__ import annotations

import hashlib
import math
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import yaml

DEFAULT_STATE_DIR = "/var/lib/ftp-event-server"
DEFAULT_POLL_SECONDS = 10.0
DEFAULT_USER_ENV = "FTP_USER"
DEFAULT_PASSWORD_ENV = "FTP_PASSWORD"
LISTING_MODES = ("auto", "mlsd", "list")
# names that are never reported unless the config says otherwise: uploads in progress under a
# temporary name (``*.part``, ``*.tmp``) and hidden files (``.*``, e.g. ``.in.x.csv`` of some clients)
DEFAULT_IGNORE = ("*.part", "*.tmp", ".*")
DEFAULT_CONFIRM_SECONDS = 30.0
MIN_AGE_FLOOR = 30.0  # default minimum age: max(this, 3 x pollSeconds); 0 when a done marker is used


class ConfigError(ValueError):
    """The event source config is unusable; ``problems`` names each bad field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid FTP event source config: " + "; ".join(problems))


@dataclass(frozen=True)
class ListFields:
    """0-based positions of whitespace-separated fields in a LIST line.

    ``name`` is where the file name starts; everything from there to the end of the
    line is the name, so names with spaces survive.
    """

    size: int = 4
    mtime: tuple[int, ...] = (5, 6, 7)
    name: int = 8


@dataclass(frozen=True)
class WatchConfig:
    host: str
    user: str
    password: str = field(repr=False)
    port: int = 21
    dir: str = "/"
    passive: bool = True
    recursive: bool = True
    listing: str = "auto"
    list_fields: ListFields = ListFields()
    poll_seconds: float = DEFAULT_POLL_SECONDS
    settle_seconds: float = DEFAULT_POLL_SECONDS
    timeout_seconds: float = 30.0
    retry_min_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    report_existing: bool = False
    state_file: str = ""
    encoding: str = "utf-8"
    min_age_seconds: float = 0.0
    done_file: str = ""  # e.g. "{name}.done"; "" = no marker needed
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    confirm_seconds: float = DEFAULT_CONFIRM_SECONDS

    def identity(self) -> dict:
        """What makes two configs watch the same tree (saved with the state)."""
        return {"host": self.host, "port": self.port, "dir": self.dir}

    def describe(self) -> str:
        """A one-line summary safe to log (no password)."""
        return (
            f"ftp://{self.user}@{self.host}:{self.port} dir={self.dir}"
            f" listing={self.listing} recursive={self.recursive} passive={self.passive}"
            f" poll={self.poll_seconds}s settle={self.settle_seconds}s minAge={self.min_age_seconds}s"
            f" doneFile={self.done_file or '-'} ignore={','.join(self.ignore) or '-'}"
            f" confirm={self.confirm_seconds}s state={self.state_file}"
        )


_KNOWN_FIELDS = {
    "host", "port", "user", "userEnv", "passwordEnv", "passwordFile", "dir", "passive",
    "recursive", "listing", "listFields", "pollSeconds", "settleSeconds", "timeoutSeconds",
    "retryMinSeconds", "retryMaxSeconds", "reportExisting", "stateFile", "encoding",
    "minAgeSeconds", "doneFile", "ignore", "confirmSeconds",
}
_REPLACED_FIELDS = {
    "password": "a clear-text password is not accepted in the EventSource config; keep it in "
    "Secret ftp-secret, expose it to the event server as an env var and name that var "
    "with passwordEnv (or use passwordFile)",
    "szfield": "the tutorial's szfield is replaced by listFields.size (0-based position)",
    "dtfields": "the tutorial's dtfields are replaced by listFields.mtime (0-based positions "
    "from the start of the line; negative positions break on names with spaces)",
}


def _safe_file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "event"


def parse_config(
    raw: bytes | str,
    env: Mapping[str, str] | None = None,
    *,
    event_name: str = "ftp",
) -> WatchConfig:
    """Validate the generic event source's config bytes and resolve credentials.

    ``env`` is where ``userEnv``/``passwordEnv`` are looked up (default os.environ);
    ``FTP_POLL_SECONDS`` and ``FTP_STATE_DIR`` there give defaults for pollSeconds and
    the state folder. Raises ConfigError naming every problem.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError([f"config is not UTF-8 text ({exc})"]) from None
    else:
        text = raw
    try:
        doc = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError([f"config is not valid YAML/JSON: {exc}"]) from None
    if not isinstance(doc, dict):
        raise ConfigError([f"config must be a mapping of fields, got {type(doc).__name__}"])
    if not event_name:
        problems.append("the EventSource request carries no event name")

    for key in doc:
        if key in _REPLACED_FIELDS:
            problems.append(f"field '{key}': {_REPLACED_FIELDS[key]}")
        elif key not in _KNOWN_FIELDS:
            problems.append(f"unknown field '{key}' (known: {', '.join(sorted(_KNOWN_FIELDS))})")

    def get_str(key: str, default: str | None = None, *, required: bool = False) -> str | None:
        if key not in doc or doc[key] is None:
            if required:
                problems.append(f"field '{key}' is required")
            return default
        value = doc[key]
        if not isinstance(value, str) or not value.strip():
            problems.append(f"field '{key}' must be a non-empty string, got {value!r}")
            return default
        return value.strip()

    def get_bool(key: str, default: bool) -> bool:
        value = doc.get(key, default)
        if not isinstance(value, bool):
            problems.append(f"field '{key}' must be true or false, got {value!r}")
            return default
        return value

    def get_seconds(key: str, default: float, *, zero_ok: bool = False) -> float:
        value = doc.get(key, default)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < 0 or (value == 0 and not zero_ok)):
            kind = "non-negative" if zero_ok else "positive"
            problems.append(f"field '{key}' must be a {kind} number of seconds, got {value!r}")
            return default
        return float(value)

    host = get_str("host", required=True) or ""
    port = doc.get("port", 21)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        problems.append(f"field 'port' must be an integer 1-65535, got {port!r}")
        port = 21
    directory = get_str("dir", "/") or "/"
    directory = posixpath.normpath(directory)

    # user: clear text is fine (it is not a secret); userEnv reads it from the pod's env
    user = get_str("user")
    user_env = get_str("userEnv")
    if user is not None and user_env is not None:
        problems.append("give either 'user' or 'userEnv', not both")
    if user is None:
        user_env = user_env or DEFAULT_USER_ENV
        user = env.get(user_env)
        if not user:
            problems.append(
                f"field 'userEnv': environment variable {user_env!r} is not set in the event server"
                " (feed it from Secret ftp-secret, key username)"
            )
            user = ""

    password_env = get_str("passwordEnv")
    password_file = get_str("passwordFile")
    password = ""
    if password_env is not None and password_file is not None:
        problems.append("give either 'passwordEnv' or 'passwordFile', not both")
    elif password_file is not None:
        try:
            password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            problems.append(f"field 'passwordFile': cannot read {password_file!r}: {exc.strerror}")
    else:
        password_env = password_env or DEFAULT_PASSWORD_ENV
        if password_env not in env:
            problems.append(
                f"field 'passwordEnv': environment variable {password_env!r} is not set in the event"
                " server (feed it from Secret ftp-secret, key password)"
            )
        else:
            password = env[password_env]

    listing = get_str("listing", "auto") or "auto"
    if listing not in LISTING_MODES:
        problems.append(f"field 'listing' must be one of {', '.join(LISTING_MODES)}, got {listing!r}")
        listing = "auto"

    list_fields = ListFields()
    if "listFields" in doc:
        lf = doc["listFields"]
        if not isinstance(lf, dict):
            problems.append(f"field 'listFields' must be a mapping with size, mtime, name; got {lf!r}")
        else:
            for key in lf:
                if key not in ("size", "mtime", "name"):
                    problems.append(f"unknown field 'listFields.{key}' (known: mtime, name, size)")
            size = lf.get("size", list_fields.size)
            name_at = lf.get("name", list_fields.name)
            mtime = lf.get("mtime", list(list_fields.mtime))
            ok = True
            for key, value in (("size", size), ("name", name_at)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    problems.append(
                        f"field 'listFields.{key}' must be a 0-based position counted from the start"
                        f" of the LIST line (>= 0), got {value!r}"
                    )
                    ok = False
            if (
                not isinstance(mtime, list)
                or not mtime
                or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in mtime)
            ):
                problems.append(
                    "field 'listFields.mtime' must be a non-empty list of 0-based positions (>= 0;"
                    f" negative positions break on names with spaces), got {mtime!r}"
                )
                ok = False
            if ok and (size >= name_at or any(i >= name_at for i in mtime)):
                problems.append(
                    "field 'listFields': size and mtime positions must come before the name position"
                    f" ({name_at})"
                )
                ok = False
            if ok:
                list_fields = ListFields(size=size, mtime=tuple(mtime), name=name_at)

    def env_number(var: str, default: float, *, zero_ok: bool = False) -> float:
        raw_value = env.get(var)
        if not raw_value:
            return default
        try:
            value = float(raw_value)
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
                raise ValueError
        except ValueError:
            problems.append(
                f"environment variable {var} must be a {'non-negative' if zero_ok else 'positive'} number,"
                f" got {raw_value!r}")
            return default
        return value

    default_poll = env_number("FTP_POLL_SECONDS", DEFAULT_POLL_SECONDS)
    poll_seconds = get_seconds("pollSeconds", default_poll)
    settle_seconds = get_seconds("settleSeconds", poll_seconds)
    timeout_seconds = get_seconds("timeoutSeconds", 30.0)
    retry_min = get_seconds("retryMinSeconds", min(1.0, poll_seconds))
    retry_max = get_seconds("retryMaxSeconds", max(60.0, retry_min))
    if retry_max < retry_min:
        problems.append(f"field 'retryMaxSeconds' ({retry_max}) must be >= retryMinSeconds ({retry_min})")

    # what makes a file complete (see README "Which files are reported")
    done_file = doc.get("doneFile", env.get("FTP_DONE_FILE") or "")
    if done_file is None:
        done_file = ""
    if not isinstance(done_file, str) or (done_file and (
            "/" in done_file or not ("{name}" in done_file or "{stem}" in done_file)
            or re.search(r"\{(?!name\}|stem\})", done_file))):
        problems.append(
            "field 'doneFile' must be a file name in the same folder made from {name} (the file's name)"
            f" or {{stem}} (its name without the last extension), e.g. '{{name}}.done'; got {done_file!r}")
        done_file = ""
    elif done_file in ("{name}", "{stem}"):
        problems.append(f"field 'doneFile' must differ from the file's own name, got {done_file!r}")
        done_file = ""
    min_age_default = 0.0 if done_file else max(MIN_AGE_FLOOR, 3 * poll_seconds)
    min_age = get_seconds("minAgeSeconds", env_number("FTP_MIN_AGE_SECONDS", min_age_default, zero_ok=True),
                          zero_ok=True)
    if "ignore" in doc:
        ignore_raw = doc["ignore"]
    elif env.get("FTP_IGNORE") is not None:
        ignore_raw = [p.strip() for p in env["FTP_IGNORE"].split(",") if p.strip()]
    else:
        ignore_raw = list(DEFAULT_IGNORE)
    if ignore_raw is None:
        ignore_raw = []
    if not isinstance(ignore_raw, list) or not all(isinstance(p, str) and p and "/" not in p for p in ignore_raw):
        problems.append(
            "field 'ignore' must be a list of file-name patterns (shell wildcards, no '/'), e.g."
            f" ['*.part', '*.tmp', '.*']; got {ignore_raw!r}")
        ignore_raw = list(DEFAULT_IGNORE)
    confirm_seconds = get_seconds("confirmSeconds", env_number("FTP_CONFIRM_SECONDS", DEFAULT_CONFIRM_SECONDS))

    encoding = get_str("encoding", "utf-8") or "utf-8"
    try:
        "".encode(encoding)
    except LookupError:
        problems.append(f"field 'encoding': unknown text encoding {encoding!r}")
        encoding = "utf-8"

    state_file = get_str("stateFile")
    if state_file is None:
        # one file per event name AND watched tree: two EventSources that happen to use the
        # same event name for different servers must not share (and fight over) one state
        state_dir = env.get("FTP_STATE_DIR") or DEFAULT_STATE_DIR
        tree = hashlib.sha256(f"{host}\0{port}\0{directory}".encode()).hexdigest()[:10]
        state_file = str(Path(state_dir) / f"{_safe_file_part(event_name)}-{tree}.json")

    passive = get_bool("passive", True)
    recursive = get_bool("recursive", True)
    report_existing = get_bool("reportExisting", False)

    if problems:
        raise ConfigError(problems)
    return WatchConfig(
        host=host,
        port=port,
        user=user,
        password=password,
        dir=directory,
        passive=passive,
        recursive=recursive,
        listing=listing,
        list_fields=list_fields,
        poll_seconds=poll_seconds,
        settle_seconds=settle_seconds,
        timeout_seconds=timeout_seconds,
        retry_min_seconds=retry_min,
        retry_max_seconds=retry_max,
        report_existing=report_existing,
        state_file=state_file,
        encoding=encoding,
        min_age_seconds=min_age,
        done_file=done_file,
        ignore=tuple(ignore_raw),
        confirm_seconds=confirm_seconds,
    )
