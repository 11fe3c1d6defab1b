"""One listing of the watched tree over FTP: parsing LIST/MLSD lines, walking folders,
and confirming minute-precision times with MDTM/SIZE.

- ``parse_mlsd_line`` / ``parse_list_line``: one line -> (name, kind, size, mtime). Names are
  kept byte for byte (leading, inner and trailing spaces included).
- ``TreeLister``: lists the whole tree on an open connection. MLSD first (exact size and
  time), LIST with configured field positions when the server lacks MLSD. Subfolders are
  walked by us (vsftpd's ``LIST -R`` is silently non-recursive). Names no FTP command can
  address (CR, LF or NUL in them) and names not valid in the configured encoding are
  skipped with one WARNING each; a folder that cannot be listed is warned about once.
- ``FtpPoller``: keeps one connection across polls; where the listing gives only minutes
  (LIST), files whose listed time is recent or in the future get ``MDTM`` and ``SIZE``
  (second precision), so a same-size rewrite within the minute is seen; old files are not
  asked about, so a poll over 10,000 old files costs one LIST per folder.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import ftplib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from ftp_config import ListFields, WatchConfig

log = logging.getLogger("ftp_event_server")

# Everything ftplib raises for a broken or refused connection (ftplib.all_errors is
# (ftplib.Error, OSError, EOFError)); a poll that hits one of these is retried.
FTP_ERRORS = ftplib.all_errors
MAX_DEPTH = 32  # folders below the watched one
# a name with one of these cannot be sent in an FTP command (the control connection is
# line-based), so the ETL could never download it
IMPOSSIBLE_CHARS = ("\r", "\n", "\0")


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
    # time.time() when the listing was complete (the tracker's clock for ages)
    finished_at: float = 0.0


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


def mtime_bounds(mtime: str) -> tuple[float, float] | None:
    """(earliest, latest) epoch seconds a time string can stand for: ``2023-03-23`` is that
    whole day, ``...T00:41`` that minute, ``...T00:41:12Z`` that second (MLSD/MDTM
    truncate). None for a format we do not understand."""
    try:
        if len(mtime) == 10:
            start = calendar.timegm(time.strptime(mtime, "%Y-%m-%d"))
            return start, start + 86400 - 1e-3
        if len(mtime) == 16:
            start = calendar.timegm(time.strptime(mtime, "%Y-%m-%dT%H:%M"))
            return start, start + 60 - 1e-3
        if len(mtime) >= 20 and mtime.endswith("Z"):
            start = calendar.timegm(time.strptime(mtime[:19], "%Y-%m-%dT%H:%M:%S"))
            frac = float("0" + mtime[19:-1]) if mtime[19:-1] else 0.0
            return start + frac, start + 1 - 1e-3
    except (ValueError, OverflowError):
        return None
    return None


def coarse_time(mtime: str) -> bool:
    """Date-only or minute-only: what LIST gives."""
    return len(mtime) in (10, 16) and mtime[4:5] == "-"


def same_mtime(a: str, b: str) -> bool:
    """Equal, or one is a coarser form of the other: LIST drops the time of day once a file
    is six months old, and gives minutes where MDTM gave seconds; neither is a change."""
    if a == b:
        return True
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return coarse_time(short) and long_.startswith(short) and long_[len(short):len(short) + 1] in ("T", ":")


_KINDS = {"-": "file", "d": "dir"}


def parse_list_line(
    line: str,
    fields: ListFields,
    now: _dt.datetime | None = None,
    time_cache: dict[str, str] | None = None,
) -> tuple[str, str, int, str] | None:
    """One unix-style LIST line -> (name, kind, size, mtime) or None if it is not an entry.

    kind is "file", "dir" or "other" (links, devices). The fields before the name are split
    on whitespace; the name is everything after the single space that ends the last of them,
    so leading, inner and trailing spaces of a name survive. ``time_cache`` (one per
    listing) saves re-parsing the same date text: most files of a folder share a few.
    """
    parts: list[str] = []
    pos, n = 0, len(line)
    for _ in range(fields.name):
        while pos < n and line[pos] in " \t":
            pos += 1
        start = pos
        while pos < n and line[pos] not in " \t":
            pos += 1
        if start == pos:
            return None
        parts.append(line[start:pos])
    # ls puts exactly one space between the time and the name
    if pos >= n - 1 or line[pos] != " " or not parts[0]:
        return None
    name = line[pos + 1:]
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
    return name, kind, size, mtime


def _fact(facts: str, key: str) -> str | None:
    # facts is ";" + the lower-cased fact list, so a key matches only at a fact boundary
    start = facts.find(f";{key}=")
    if start < 0:
        return None
    start += len(key) + 2
    end = facts.find(";", start)
    return facts[start:] if end < 0 else facts[start:end]


def parse_mlsd_line(line: str) -> tuple[str, str, int, str] | None:
    """One MLSD line (``fact=value;...; name``) -> (name, kind, size, mtime) or None.
    The name is everything after the first space, verbatim (RFC 3659)."""
    facts_text, sep, name = line.partition(" ")
    if not sep or not name or "=" not in facts_text or not facts_text.endswith(";"):
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


def split_lines(data: bytes) -> list[bytes]:
    """Listing lines end with CRLF (RFC 959): split there only, so a bare LF or CR inside a
    name stays inside that line (and the name is then recognised as impossible). A server
    that ends lines with a bare LF is split on LF."""
    sep = b"\r\n" if b"\r\n" in data else b"\n"
    return [line for line in data.split(sep) if line]


def _is_not_implemented(exc: ftplib.Error) -> bool:
    # 500 syntax error/command unrecognized, 502 not implemented, 504 not for that parameter
    return str(exc)[:3] in ("500", "502", "504")


def _is_missing(exc: ftplib.Error) -> bool:
    return isinstance(exc, ftplib.error_perm) and str(exc)[:3] in ("550", "450")


class TreeLister:
    """Lists the watched tree in one pass over an open connection. Warnings about one name
    or one folder are given once per lister (one stream), not on every poll."""

    def __init__(self, cfg: WatchConfig):
        self.cfg = cfg
        self.mode = "mlsd" if cfg.listing in ("auto", "mlsd") else "list"
        self.skipped_lines = 0
        self._warned: set = set()
        self._unreadable_now: set[str] = set()

    def warn_once(self, key, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _lines(self, ftp: ftplib.FTP, command: str, folder: str) -> list[str]:
        # Read the data connection as bytes and decode line by line: one name that is not
        # valid in the configured encoding is skipped with a warning instead of failing
        # the whole poll (ftplib's text mode would raise on it, every poll, forever).
        chunks: list[bytes] = []
        ftp.retrbinary(command, chunks.append, blocksize=65536)
        out = []
        for raw in split_lines(b"".join(chunks)):
            try:
                out.append(raw.decode(self.cfg.encoding))
            except UnicodeDecodeError:
                self.skipped_lines += 1
                self.warn_once(("encoding", folder, raw), "skipping a file in %s whose listing line is not valid"
                               " %s (warned once): %r", folder, self.cfg.encoding, raw[-120:])
        return out

    def list_dir(self, ftp: ftplib.FTP, path: str) -> list[tuple[str, str, int, str]]:
        if self.mode == "mlsd":
            try:
                lines = self._lines(ftp, f"MLSD {path}", path)
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
        for line in self._lines(ftp, "LIST", path):
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
                self.warn_once(("deep", path), "not descending below %s: deeper than %d folders", path, MAX_DEPTH)
                unreadable.append(path)
                continue
            try:
                entries = self.list_dir(ftp, path)
            except ftplib.Error as exc:
                if path != root and _is_missing(exc):
                    # removed between the parent's listing and ours, or not readable:
                    # keep what we knew under it rather than calling it deleted
                    if path not in self._unreadable_now:
                        log.warning("cannot list folder %r (%s): its files are neither reported nor taken as"
                                    " deleted until it can be listed again (warned once)", path, str(exc).strip())
                    unreadable.append(path)
                    continue
                raise
            prefix = path if path.endswith("/") else path + "/"
            for name, kind, size, mtime in entries:
                if name in (".", "..") or "/" in name:
                    continue
                full = prefix + name
                if any(c in name for c in IMPOSSIBLE_CHARS):
                    self.warn_once(("impossible", full), "skipping %r: a name with a line break or NUL cannot be"
                                   " sent in an FTP command, so it could not be downloaded (warned once)", full)
                    continue
                if kind == "file":
                    files[full] = FileInfo(size, mtime)
                elif kind == "dir" and self.cfg.recursive:
                    todo.append((full, depth + 1))
        for path in self._unreadable_now - set(unreadable):
            log.info("folder %r can be listed again", path)
        self._unreadable_now = set(unreadable)
        return Listing(files=files, unreadable=unreadable, mode=self.mode, finished_at=time.time())


class _FTP(ftplib.FTP):
    """ftplib.FTP that remembers its open data connection, so another thread can cut a
    poll that hangs (``FtpPoller.abort``)."""

    data_sock: socket.socket | None = None

    def ntransfercmd(self, cmd, rest=None):
        conn, size = super().ntransfercmd(cmd, rest)
        self.data_sock = conn
        return conn, size


def connect(cfg: WatchConfig) -> ftplib.FTP:
    """Open and log in; the caller closes it. Errors are ftplib.all_errors."""
    ftp = _FTP(timeout=cfg.timeout_seconds, encoding=cfg.encoding)
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


def recent_window(cfg: WatchConfig) -> float:
    """Files listed with a time this close to now (or later) get MDTM/SIZE: long enough to
    cover a rewrite within the listed minute seen one poll later, and the minimum age
    measured on a minute-precision time."""
    return max(300.0, 3 * cfg.poll_seconds + 120.0, cfg.min_age_seconds + 120.0)


class FtpPoller:
    """Keeps one FTP connection across polls and lists the tree on each ``poll``."""

    def __init__(self, cfg: WatchConfig, connector: Callable[[WatchConfig], ftplib.FTP] = connect):
        self.cfg = cfg
        self.lister = TreeLister(cfg)
        self._connector = connector
        self._ftp: ftplib.FTP | None = None
        self._mdtm = True  # until the server says it has no MDTM
        self._aborted = threading.Event()
        self.confirmed = 0  # MDTM/SIZE look-ups in the last poll

    def poll(self) -> Listing:
        reused = self._ftp is not None
        try:
            if self._ftp is None:
                self._ftp = self._connector(self.cfg)
            return self._poll_once()
        except FTP_ERRORS:
            self.close()
            if not reused or self._aborted.is_set():
                raise
        # the kept connection had gone stale (idle timeout, server restart): one
        # immediate retry on a fresh connection before the caller backs off
        self._ftp = self._connector(self.cfg)
        try:
            return self._poll_once()
        except FTP_ERRORS:
            self.close()
            raise

    def _poll_once(self) -> Listing:
        listing = self.lister.list_tree(self._ftp)
        self.confirmed = 0
        if self._mdtm and any(coarse_time(i.mtime) for i in listing.files.values()):
            self._confirm_recent(listing)
        return listing

    def _confirm_recent(self, listing: Listing) -> None:
        """Replace the minute (or day) of recent and future files by MDTM's second and SIZE's
        byte count. Only files whose listed time could be within ``recent_window`` of now."""
        horizon = time.time() - recent_window(self.cfg)
        ftp = self._ftp
        ftp.voidcmd("TYPE I")  # some servers refuse SIZE in ASCII mode
        for path, info in list(listing.files.items()):
            if not coarse_time(info.mtime):
                continue
            bounds = mtime_bounds(info.mtime)
            if bounds is None or bounds[1] < horizon:
                continue
            try:
                stamp = ftp.sendcmd(f"MDTM {path}")
                size_reply = ftp.sendcmd(f"SIZE {path}")
            except ftplib.error_perm as exc:
                if _is_not_implemented(exc):
                    self._mdtm = False
                    log.warning("server has no MDTM/SIZE (%s): times stay at LIST's minute precision, so a"
                                " same-size rewrite within one minute is not seen", str(exc).strip())
                    return
                if _is_missing(exc):  # gone since the listing: the next poll says so
                    listing.files.pop(path, None)
                    continue
                raise
            parts, size_parts = stamp.split(), size_reply.split()
            exact = mlsd_time(parts[1]) if len(parts) == 2 and parts[0] == "213" else ""
            if not exact.endswith("Z") or len(size_parts) != 2 or not size_parts[1].isdigit():
                continue
            listing.files[path] = FileInfo(int(size_parts[1]), exact)
            self.confirmed += 1
        listing.finished_at = time.time()

    def abort(self) -> None:
        """From another thread: cut the connection, so a poll stuck in a read returns now."""
        self._aborted.set()
        ftp = self._ftp
        if ftp is None:
            return
        for sock in (getattr(ftp, "data_sock", None), getattr(ftp, "sock", None)):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        close_quietly(self._ftp)
        self._ftp = None
