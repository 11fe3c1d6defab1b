"""Watch a folder tree on an FTP server and decide which files to report.

The pieces, each usable alone (the tests drive them one by one):

- ``parse_config``: the EventSource ``config`` bytes (YAML or JSON) -> ``WatchConfig``,
  or ``ConfigError`` listing every problem found.
- ``TreeLister``: one listing of the whole tree. ``MLSD`` first (exact size and
  modification time, names taken verbatim), ``LIST`` with configured field positions
  when the server does not know MLSD. Subdirectories are walked by us, because
  ``LIST -R`` is silently non-recursive on vsftpd by default.
- ``ChangeTracker``: a file is reported only when it is new or changed AND its size and
  modification time were the same in two listings in a row, so a file still being
  uploaded is not reported until it stops growing.
- ``StateStore``: what was reported survives restarts: a JSON snapshot written
  atomically plus an append-only journal of each event handed to the stream.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import ftplib
import hashlib
import json
import logging
import math
import os
import posixpath
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple

import yaml

log = logging.getLogger("ftp_event_server")

# Everything ftplib raises for a broken or refused connection (ftplib.all_errors is
# (ftplib.Error, OSError, EOFError)); a poll that hits one of these is retried.
FTP_ERRORS = ftplib.all_errors

DEFAULT_STATE_DIR = "/var/lib/ftp-event-server"
DEFAULT_POLL_SECONDS = 10.0
DEFAULT_USER_ENV = "FTP_USER"
DEFAULT_PASSWORD_ENV = "FTP_PASSWORD"
LISTING_MODES = ("auto", "mlsd", "list")
MAX_DEPTH = 32  # folders below the watched one


# --------------------------------------------------------------------------- config


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

    def identity(self) -> dict:
        """What makes two configs watch the same tree (saved with the state)."""
        return {"host": self.host, "port": self.port, "dir": self.dir}

    def describe(self) -> str:
        """A one-line summary safe to log (no password)."""
        return (
            f"ftp://{self.user}@{self.host}:{self.port} dir={self.dir}"
            f" listing={self.listing} recursive={self.recursive} passive={self.passive}"
            f" poll={self.poll_seconds}s settle={self.settle_seconds}s state={self.state_file}"
        )


_KNOWN_FIELDS = {
    "host", "port", "user", "userEnv", "passwordEnv", "passwordFile", "dir", "passive",
    "recursive", "listing", "listFields", "pollSeconds", "settleSeconds", "timeoutSeconds",
    "retryMinSeconds", "retryMaxSeconds", "reportExisting", "stateFile", "encoding",
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

    def get_seconds(key: str, default: float) -> float:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            problems.append(f"field '{key}' must be a positive number of seconds, got {value!r}")
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

    env_poll = env.get("FTP_POLL_SECONDS")
    default_poll = DEFAULT_POLL_SECONDS
    if env_poll:
        try:
            default_poll = float(env_poll)
            if not math.isfinite(default_poll) or default_poll <= 0:
                raise ValueError
        except ValueError:
            problems.append(f"environment variable FTP_POLL_SECONDS must be a positive number, got {env_poll!r}")
            default_poll = DEFAULT_POLL_SECONDS
    poll_seconds = get_seconds("pollSeconds", default_poll)
    settle_seconds = get_seconds("settleSeconds", poll_seconds)
    timeout_seconds = get_seconds("timeoutSeconds", 30.0)
    retry_min = get_seconds("retryMinSeconds", min(1.0, poll_seconds))
    retry_max = get_seconds("retryMaxSeconds", max(60.0, retry_min))
    if retry_max < retry_min:
        problems.append(f"field 'retryMaxSeconds' ({retry_max}) must be >= retryMinSeconds ({retry_min})")

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
    )


# --------------------------------------------------------------------------- listing


class FileInfo(NamedTuple):
    size: int
    mtime: str  # ISO 8601 where the server's format is understood, else verbatim


@dataclass
class Listing:
    files: dict[str, FileInfo]
    # subdirectories that could not be listed this time (550): what we knew below them
    # is kept, not taken as deleted
    unreadable: list[str] = field(default_factory=list)
    mode: str = ""


class ListingUnsupported(Exception):
    """The server refused MLSD with a "command not implemented/understood" reply."""


_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}


def mlsd_time(value: str) -> str:
    """``YYYYMMDDHHMMSS[.sss]`` (UTC, RFC 3659) -> ``YYYY-MM-DDTHH:MM:SS[.sss]Z``."""
    v = value.strip()
    frac = v[14:]
    if len(v) < 14 or not v[:14].isdigit() or (frac and not (frac[0] == "." and frac[1:].isdigit())):
        return value
    return f"{v[0:4]}-{v[4:6]}-{v[6:8]}T{v[8:10]}:{v[10:12]}:{v[12:14]}{frac}Z"


def list_time(value: str, now: _dt.datetime | None = None) -> str:
    """A unix LIST date (``Mar 23 00:41`` or ``Mar 23 2022``) -> ``2023-03-23T00:41`` or
    ``2022-03-23``. The year of a ``HH:MM`` date is the latest one not in the future.
    Other formats are returned verbatim (still fine for change detection)."""
    parts = value.split()
    if len(parts) != 3 or parts[0][:3].lower() not in _MONTHS or not parts[1].isdigit():
        return value
    month, day = _MONTHS[parts[0][:3].lower()], int(parts[1])
    now = now or _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    try:
        if ":" in parts[2]:
            hh, mm = (int(x) for x in parts[2].split(":", 1))
            year = now.year
            when = _dt.datetime(year, month, day, hh, mm)
            if when > now + _dt.timedelta(days=1):
                year -= 1
                when = _dt.datetime(year, month, day, hh, mm)
            return when.strftime("%Y-%m-%dT%H:%M")
        return _dt.date(int(parts[2]), month, day).isoformat()
    except ValueError:
        return value


def same_mtime(a: str, b: str) -> bool:
    """Equal, or one is the date-only form of the other: LIST drops the time of day
    once a file is six months old, which is not a modification."""
    if a == b:
        return True
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return len(short) == 10 and short[4:5] == "-" and long_.startswith(short + "T")


_KINDS = {"-": "file", "d": "dir"}


def parse_list_line(
    line: str,
    fields: ListFields,
    now: _dt.datetime | None = None,
    time_cache: dict[str, str] | None = None,
) -> tuple[str, str, int, str] | None:
    """One unix-style LIST line -> (name, kind, size, mtime) or None if it is not an entry.

    kind is "file", "dir" or "other" (links, devices). The line is split only up to the
    name position, so the name keeps its inner and trailing spaces. ``time_cache`` (one per
    listing) saves re-parsing the same date text: most files of a folder share a few.
    """
    parts = line.split(None, fields.name)
    if len(parts) <= fields.name or not parts[0]:
        return None
    kind = _KINDS.get(parts[0][0], "other")
    try:
        size = int(parts[fields.size])
    except ValueError:
        return None
    raw = " ".join([parts[i] for i in fields.mtime])
    if time_cache is None:
        mtime = list_time(raw, now)
    else:
        mtime = time_cache.get(raw)
        if mtime is None:
            mtime = time_cache[raw] = list_time(raw, now)
    return parts[fields.name], kind, size, mtime


def _fact(facts: str, key: str) -> str | None:
    # facts is ";" + the lower-cased fact list, so a key matches only at a fact boundary
    start = facts.find(f";{key}=")
    if start < 0:
        return None
    start += len(key) + 2
    end = facts.find(";", start)
    return facts[start:] if end < 0 else facts[start:end]


def parse_mlsd_line(line: str) -> tuple[str, str, int, str] | None:
    """One MLSD line (``fact=value;...; name``) -> (name, kind, size, mtime) or None."""
    facts_text, sep, name = line.partition(" ")
    if not sep or not name:
        return None
    facts = ";" + facts_text.lower()
    kind_raw = _fact(facts, "type") or ""
    if kind_raw in ("cdir", "pdir"):
        return None
    kind = "file" if kind_raw == "file" else "dir" if kind_raw == "dir" else "other"
    size_raw = _fact(facts, "size")
    size = int(size_raw) if size_raw and size_raw.isdigit() else -1
    modify = _fact(facts, "modify")
    return name, kind, size, mlsd_time(modify) if modify else ""


def _is_not_implemented(exc: ftplib.Error) -> bool:
    # 500 syntax error/command unrecognized, 502 not implemented, 504 not for that parameter
    return str(exc)[:3] in ("500", "502", "504")


def _is_missing(exc: ftplib.Error) -> bool:
    return isinstance(exc, ftplib.error_perm) and str(exc)[:3] in ("550", "450")


class TreeLister:
    """Lists the watched tree in one pass over an open connection."""

    def __init__(self, cfg: WatchConfig):
        self.cfg = cfg
        self.mode = "mlsd" if cfg.listing in ("auto", "mlsd") else "list"
        self.skipped_lines = 0

    def _lines(self, ftp: ftplib.FTP, command: str) -> list[str]:
        # Read the data connection as bytes and decode line by line: one name that is not
        # valid in the configured encoding is skipped with a warning instead of failing
        # the whole poll (ftplib's text mode would raise on it, every poll, forever).
        chunks: list[bytes] = []
        ftp.retrbinary(command, chunks.append, blocksize=65536)
        out = []
        for raw in b"".join(chunks).split(b"\n"):
            raw = raw.rstrip(b"\r")
            if not raw:
                continue
            try:
                out.append(raw.decode(self.cfg.encoding))
            except UnicodeDecodeError:
                self.skipped_lines += 1
                log.warning("skipping a listing line that is not valid %s: %r", self.cfg.encoding, raw[-120:])
        return out

    def list_dir(self, ftp: ftplib.FTP, path: str) -> list[tuple[str, str, int, str]]:
        if self.mode == "mlsd":
            try:
                lines = self._lines(ftp, f"MLSD {path}")
            except ftplib.error_perm as exc:
                if not _is_not_implemented(exc):
                    raise
                if self.cfg.listing == "mlsd":
                    raise ListingUnsupported(f"server refused MLSD ({exc}) and listing is 'mlsd'") from None
                log.info("server does not support MLSD (%s); using LIST with fields %s", exc, self.cfg.list_fields)
                self.mode = "list"
            else:
                return [e for e in map(parse_mlsd_line, lines) if e is not None]
        # LIST with no argument after CWD: an argument starting with "-" would be taken as
        # options by some servers and others glob it, so the path never goes on LIST.
        ftp.cwd(path)
        entries = []
        now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
        time_cache: dict[str, str] = {}
        fields = self.cfg.list_fields
        for line in self._lines(ftp, "LIST"):
            entry = parse_list_line(line, fields, now, time_cache)
            if entry is not None and entry[0] not in (".", ".."):
                entries.append(entry)
        return entries

    def list_tree(self, ftp: ftplib.FTP) -> Listing:
        root = self.cfg.dir
        files: dict[str, FileInfo] = {}
        unreadable: list[str] = []
        todo = [(root, 0)]
        while todo:
            path, depth = todo.pop()
            if depth > MAX_DEPTH:
                # a server that lists a symlink to a parent as a plain folder would loop forever
                log.warning("not descending below %s: deeper than %d folders", path, MAX_DEPTH)
                unreadable.append(path)
                continue
            try:
                entries = self.list_dir(ftp, path)
            except ftplib.Error as exc:
                if path != root and _is_missing(exc):
                    # removed between the parent's listing and ours, or not readable:
                    # keep what we knew under it rather than calling it deleted
                    log.debug("cannot list %s: %s", path, exc)
                    unreadable.append(path)
                    continue
                raise
            prefix = path if path.endswith("/") else path + "/"
            for name, kind, size, mtime in entries:
                if name in (".", "..") or "/" in name:
                    continue
                full = prefix + name
                if kind == "file":
                    files[full] = FileInfo(size, mtime)
                elif kind == "dir" and self.cfg.recursive:
                    todo.append((full, depth + 1))
        return Listing(files=files, unreadable=unreadable, mode=self.mode)


def connect(cfg: WatchConfig) -> ftplib.FTP:
    """Open and log in; the caller closes it. Errors are ftplib.all_errors."""
    ftp = ftplib.FTP(timeout=cfg.timeout_seconds, encoding=cfg.encoding)
    try:
        ftp.connect(cfg.host, cfg.port)
        ftp.login(cfg.user, cfg.password)
        ftp.set_pasv(cfg.passive)
    except BaseException:
        close_quietly(ftp)
        raise
    return ftp


def close_quietly(ftp: ftplib.FTP | None) -> None:
    if ftp is None:
        return
    try:
        ftp.quit()
    except Exception:  # noqa: BLE001 - the connection is being thrown away anyway
        try:
            ftp.close()
        except Exception:  # noqa: BLE001
            pass


class FtpPoller:
    """Keeps one FTP connection across polls and lists the tree on each ``poll``."""

    def __init__(self, cfg: WatchConfig, connector: Callable[[WatchConfig], ftplib.FTP] = connect):
        self.cfg = cfg
        self.lister = TreeLister(cfg)
        self._connector = connector
        self._ftp: ftplib.FTP | None = None

    def poll(self) -> Listing:
        reused = self._ftp is not None
        try:
            if self._ftp is None:
                self._ftp = self._connector(self.cfg)
            return self.lister.list_tree(self._ftp)
        except FTP_ERRORS:
            self.close()
            if not reused:
                raise
        # the kept connection had gone stale (idle timeout, server restart): one
        # immediate retry on a fresh connection before the caller backs off
        self._ftp = self._connector(self.cfg)
        try:
            return self.lister.list_tree(self._ftp)
        except FTP_ERRORS:
            self.close()
            raise

    def close(self) -> None:
        close_quietly(self._ftp)
        self._ftp = None


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class Change:
    path: str
    size: int
    mtime: str
    event: str  # "new" | "mod"

    def payload(self) -> dict:
        return {"name": self.path, "size": self.size, "mtime": self.mtime, "event": self.event}


def _under(path: str, folders: Iterable[str]) -> bool:
    return any(path.startswith(f.rstrip("/") + "/") for f in folders)


class ChangeTracker:
    """``reported``: what the stream's reader was told (persisted). ``pending``: a changed
    file seen once; it is reported when the next listing shows the same size and mtime."""

    def __init__(self, reported: Mapping[str, FileInfo] | None = None):
        self.reported: dict[str, FileInfo] = dict(reported or {})
        self.pending: dict[str, FileInfo] = {}

    def observe(self, listing: Listing) -> tuple[list[Change], list[str]]:
        """Compare one listing; return (changes ready to report, paths that disappeared)."""
        ready: list[Change] = []
        files = listing.files
        for path, info in files.items():
            old = self.reported.get(path)
            if old is not None and old.size == info.size and same_mtime(old.mtime, info.mtime):
                self.pending.pop(path, None)
                continue
            if self.pending.get(path) == info:
                ready.append(Change(path, info.size, info.mtime, "new" if old is None else "mod"))
            else:
                self.pending[path] = info
        gone = [p for p in self.reported if p not in files and not _under(p, listing.unreadable)]
        for path in gone:
            del self.reported[path]
        for path in [p for p in self.pending if p not in files]:
            del self.pending[path]
        ready.sort(key=lambda c: c.path)
        return ready, gone

    def mark_reported(self, change: Change) -> None:
        self.reported[change.path] = FileInfo(change.size, change.mtime)
        self.pending.pop(change.path, None)


# --------------------------------------------------------------------------- state


class StateBusy(RuntimeError):
    """Another stream (this process or another) holds the state file."""


_active_lock = threading.Lock()
_active_streams: dict[str, threading.Event] = {}


def stop_all_streams() -> int:
    """Ask every stream of this process to end (used on shutdown); returns how many."""
    with _active_lock:
        events = list(_active_streams.values())
    for event in events:
        event.set()
    return len(events)


class StateStore:
    """Snapshot (``<file>``, replaced atomically) + journal (``<file>.journal``, one JSON
    line appended and flushed per event handed to the stream) + lock (``<file>.lock``).

    ``record`` after each event makes a restart skip exactly what was reported;
    ``save`` folds the journal into a new snapshot at the end of a poll. A journal line
    is idempotent, so replaying it over a snapshot that already has it changes nothing.
    """

    def __init__(self, path: str | os.PathLike, identity: Mapping):
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.identity = dict(identity)
        self._journal = None
        self._lock_fd: int | None = None
        self._stop: threading.Event | None = None

    # -- exclusive use
    def claim(self, stop: threading.Event, timeout: float) -> None:
        """Take the state for one stream. A previous stream on the same state in this
        process is asked to stop first; waits at most ``timeout`` seconds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        with _active_lock:
            previous = _active_streams.get(key)
        if previous is not None:
            previous.set()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StateBusy(f"state file {self.path} is still in use by another stream after {timeout:.0f}s")
                time.sleep(0.05)
        self._lock_fd = fd
        self._stop = stop
        with _active_lock:
            _active_streams[key] = stop

    def release(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._lock_fd is not None:
            key = str(self.path.resolve())
            with _active_lock:
                if _active_streams.get(key) is self._stop:
                    del _active_streams[key]
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reading
    def load(self) -> dict[str, FileInfo] | None:
        """The reported files, or None when there is no usable state for this tree."""
        if not self.path.exists():
            return None
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("identity") != self.identity:
                log.warning(
                    "state %s belongs to %s, not %s: starting from a fresh baseline",
                    self.path, doc.get("identity"), self.identity,
                )
                return None
            files = {p: FileInfo(int(v[0]), str(v[1])) for p, v in doc["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            # an atomic replace cannot leave a torn snapshot; this is damage from outside
            bad = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            os.replace(self.path, bad)
            log.error("state %s is unreadable (%s); moved to %s, starting from a fresh baseline", self.path, exc, bad)
            return None
        replayed = 0
        if self.journal_path.exists():
            with open(self.journal_path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                        files[entry["path"]] = FileInfo(int(entry["size"]), str(entry["mtime"]))
                        replayed += 1
                    except (ValueError, KeyError, TypeError):
                        # a line torn by a crash mid-write: that event may be sent again once
                        log.warning("ignoring a torn line in %s", self.journal_path)
        if replayed:
            log.info("replayed %d reported events from %s", replayed, self.journal_path)
        return files

    # -- writing
    def record(self, change: Change) -> None:
        """Note one event that was handed to the stream (flushed to the OS at once)."""
        if self._journal is None:
            self._journal = open(self.journal_path, "a", encoding="utf-8")
        line = json.dumps({"path": change.path, "size": change.size, "mtime": change.mtime}, ensure_ascii=False)
        self._journal.write(line + "\n")
        self._journal.flush()

    def save(self, files: Mapping[str, FileInfo]) -> None:
        """Write the full snapshot atomically, then empty the journal."""
        doc = {
            "version": 1,
            "identity": self.identity,
            "files": {p: [i.size, i.mtime] for p, i in sorted(files.items())},
        }
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        # only now is the journal redundant; a crash before this line replays it harmlessly
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        with open(self.journal_path, "w", encoding="utf-8"):
            pass


# --------------------------------------------------------------------------- the loop


def backoff_delays(first: float, cap: float) -> Iterator[float]:
    """first, 2*first, 4*first ... capped, each with up to 20% jitter off the top."""
    delay = first
    while True:
        yield delay * random.uniform(0.8, 1.0)
        delay = min(cap, delay * 2)


def watch(
    cfg: WatchConfig,
    store: StateStore,
    stop: threading.Event,
    poller: FtpPoller | None = None,
) -> Iterator[Change]:
    """Yield each change once it is stable; record it in ``store`` as soon as the consumer
    has taken it (the generator is resumed or closed at that yield). Ends when ``stop`` is
    set; close the generator to end it at once."""
    poller = poller or FtpPoller(cfg)
    reported = store.load()
    first_start = reported is None
    tracker = ChangeTracker(reported)
    failures = 0
    delays = backoff_delays(cfg.retry_min_seconds, cfg.retry_max_seconds)
    log.info("watching %s", cfg.describe())
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                listing = poller.poll()
            except (*FTP_ERRORS, ListingUnsupported) as exc:
                failures += 1
                delay = next(delays)
                log.warning(
                    "FTP poll of %s:%s failed (%s: %s); reconnecting in %.1fs (failure %d)",
                    cfg.host, cfg.port, type(exc).__name__, exc, delay, failures,
                )
                stop.wait(delay)
                continue
            if failures:
                log.info("FTP %s:%s reachable again after %d failed polls", cfg.host, cfg.port, failures)
                failures = 0
                delays = backoff_delays(cfg.retry_min_seconds, cfg.retry_max_seconds)

            if first_start and not cfg.report_existing:
                tracker = ChangeTracker(listing.files)
                store.save(tracker.reported)
                first_start = False
                log.info("first start: %d existing files recorded as the baseline, not reported", len(listing.files))
            else:
                first_start = False
                changes, gone = tracker.observe(listing)
                sent = 0
                for change in changes:
                    try:
                        yield change
                    finally:
                        # Resumed, or closed while suspended here (the RPC ended right after
                        # this message): either way the consumer has taken the event, so it
                        # is recorded now and never sent again.
                        tracker.mark_reported(change)
                        store.record(change)
                        sent += 1
                    if sent <= 50:
                        log.info("reported %s %r (%d bytes, %s)", change.event, change.path, change.size, change.mtime)
                    if stop.is_set():
                        break
                if sent > 50:
                    log.info("... and %d more", sent - 50)
                if sent or gone:
                    store.save(tracker.reported)
                if sent or gone or tracker.pending:
                    log.info(
                        "poll (%s): %d files, %d reported, %d waiting to settle, %d gone, %.2fs",
                        listing.mode, len(listing.files), sent, len(tracker.pending), len(gone),
                        time.monotonic() - started,
                    )
            # polls start at a fixed rate: the listing's own time is part of the interval (a
            # big tree on a slow server would otherwise stretch it), with a small floor so a
            # listing longer than the interval does not turn into back-to-back polling
            period = cfg.settle_seconds if tracker.pending else cfg.poll_seconds
            stop.wait(max(period - (time.monotonic() - started), period / 10))
    finally:
        poller.close()
