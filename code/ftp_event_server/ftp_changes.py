"""Which listed files to report, and when: the change tracker and the completeness rules.

A file is reported when it is new or changed (size or time differ from what was last
reported) AND it is complete by every configured rule:

- settled: the same size and time in two listings in a row (``settleSeconds`` apart);
- minimum age (``minAgeSeconds``): its modification time is at least that old by the FTP
  server's clock (our UTC clock corrected by the offset learnt from files seen changing),
  or we ourselves saw it unchanged for that long (clock-free; this also releases a file
  whose time is in the future);
- done marker (``doneFile``, e.g. ``{name}.done``): that file exists next to it;
- not ignored: its name matches none of the ``ignore`` patterns (``*.part``, ``*.tmp``,
  ``.*`` by default); marker files themselves are never reported.
"""

from __future__ import annotations

import collections
import fnmatch
import functools
import logging
import re
import posixpath
import statistics
import time
from dataclasses import dataclass
from typing import Iterable, Mapping

from ftp_config import WatchConfig
from ftp_listing import FileInfo, Listing, coarse_time, mtime_bounds, same_mtime

log = logging.getLogger("ftp_event_server")


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


@functools.lru_cache(maxsize=32)
def _matcher(patterns: tuple[str, ...]):
    """One compiled regex for a set of shell patterns (case-sensitive, as FTP names are)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass(frozen=True)
class Rules:
    min_age_seconds: float = 0.0
    done_file: str = ""
    ignore: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: WatchConfig) -> "Rules":
        return cls(cfg.min_age_seconds, cfg.done_file, cfg.ignore)

    def marker_pattern(self) -> str:
        return self.done_file.replace("{name}", "*").replace("{stem}", "*") if self.done_file else ""

    def ignored(self, name: str) -> bool:
        """Never reported: an ignored name, or a done marker."""
        marker = self.marker_pattern()
        matcher = _matcher(self.ignore + ((marker,) if marker else ()))
        return matcher is not None and matcher.match(name) is not None

    def marker_for(self, path: str) -> str:
        folder, name = posixpath.split(path)
        stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
        return posixpath.join(folder, self.done_file.replace("{name}", name).replace("{stem}", stem))


class ServerClock:
    """Estimates server time - our time from files seen changing between two listings:
    such a file's time was set before the listing that shows it ended, so
    ``mtime - listing end`` is a lower bound of the offset; the median of the last hour's
    bounds is used (one file with a time set into the future cannot move it). 0 until
    three files were seen changing."""

    def __init__(self):
        self._bounds: collections.deque[tuple[float, float]] = collections.deque(maxlen=200)
        self._logged = 0.0

    def observe(self, mtime: str, listing_end: float) -> None:
        if coarse_time(mtime):  # a minute or a day says too little
            return
        bounds = mtime_bounds(mtime)
        if bounds is not None:
            self._bounds.append((listing_end, bounds[0] - listing_end))

    def offset(self, now: float) -> float:
        recent = [b for t, b in self._bounds if now - t < 3600]
        if len(recent) < 3:
            return 0.0
        value = statistics.median(recent)
        if abs(value) > 5 and abs(value - self._logged) > 5:
            self._logged = value
            log.info("the FTP server's clock is about %+.0fs off ours (from files seen changing)", value)
        return value


@dataclass
class Waiting:
    info: FileInfo
    first_seen: float  # listing end (time.time()) when this size+time was first seen
    listings: int = 1


class ChangeTracker:
    """``reported``: what was handed to the stream (persisted). ``waiting``: a changed file
    not yet complete by the rules; reported once it is."""

    def __init__(self, reported: Mapping[str, FileInfo] | None = None, rules: Rules | None = None):
        self.reported: dict[str, FileInfo] = dict(reported or {})
        self.waiting: dict[str, Waiting] = {}
        self.rules = rules or Rules()
        self.clock = ServerClock()
        self._previous: dict[str, FileInfo] | None = None

    @property
    def pending(self) -> dict[str, FileInfo]:  # what is waiting, by path (for logs and tests)
        return {p: w.info for p, w in self.waiting.items()}

    def _old_enough(self, w: Waiting, now: float, offset: float) -> bool:
        min_age = self.rules.min_age_seconds
        if min_age <= 0:
            return True
        if now - w.first_seen >= min_age:  # we saw it unchanged that long ourselves
            return True
        bounds = mtime_bounds(w.info.mtime)
        if bounds is None:
            return False
        return now + offset - bounds[1] >= min_age

    def observe(self, listing: Listing, now: float | None = None) -> tuple[list[Change], list[str]]:
        """Compare one listing; return (changes ready to report, paths that disappeared)."""
        seen_at = listing.finished_at or time.time()
        now = seen_at if now is None else now
        ready: list[Change] = []
        files = listing.files
        previous = self._previous
        rules = self.rules
        offset: float | None = None
        for path, info in files.items():
            if rules.ignored(posixpath.basename(path)):
                continue
            if previous is not None and previous.get(path) != info:
                self.clock.observe(info.mtime, seen_at)
            old = self.reported.get(path)
            if old is not None and old.size == info.size and same_mtime(old.mtime, info.mtime):
                self.waiting.pop(path, None)
                continue
            w = self.waiting.get(path)
            if w is None or not (w.info.size == info.size and same_mtime(w.info.mtime, info.mtime)):
                self.waiting[path] = Waiting(info, seen_at)
                continue
            w.listings += 1
            w.info = info  # the finer of two equal times (MDTM seconds over LIST minutes)
            if offset is None:
                offset = self.clock.offset(now)
            if not self._old_enough(w, now, offset):
                continue
            if rules.done_file and rules.marker_for(path) not in files:
                continue
            ready.append(Change(path, info.size, info.mtime, "new" if old is None else "mod"))
        gone = [p for p in self.reported if p not in files and not _under(p, listing.unreadable)]
        for path in gone:
            del self.reported[path]
        for path in [p for p in self.waiting if p not in files]:
            del self.waiting[path]
        self._previous = dict(files)
        ready.sort(key=lambda c: c.path)
        return ready, gone

    def mark_reported(self, change: Change) -> None:
        self.reported[change.path] = FileInfo(change.size, change.mtime)
        self.waiting.pop(change.path, None)
