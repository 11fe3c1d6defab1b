"""What the event server keeps on its volume, and who may write it.

State of one watched tree (``<file>``): a JSON snapshot, replaced atomically, of
- ``files``: every file handed to a stream, with its size and time (the baseline changes
  are found against), and
- ``pending``: the events among them not yet confirmed delivered; they are sent again to
  the next stream, in this process or after a restart.
``<file>.journal`` gets one line per event, appended and flushed *before* the event is
handed to gRPC, so an event a crash interrupts is pending after the restart, never lost.
``<file>.lock``: an flock held while a process serves the tree.

Within one process the newest stream for a tree takes it over at once (``claim``): the
previous owner is told (``displace``) and from then on every write it tries raises
``Displaced``, so it cannot disturb the new owner even if it is still stuck in a poll.
Between processes the flock decides; a second process waits at most ``timeout``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol

from ftp_changes import Change
from ftp_listing import FileInfo

log = logging.getLogger("ftp_event_server")

# replaced twice within this many seconds: two receivers are taking turns
COMPETING_WINDOW = 60.0


class StateBusy(RuntimeError):
    """Another process holds the state file."""


class Displaced(RuntimeError):
    """A newer stream took over this state; the old one must stop writing and end."""


class Owner(Protocol):
    def displace(self, by: "Owner") -> None: ...


@dataclass
class State:
    files: dict[str, FileInfo]
    pending: dict[str, Change] = field(default_factory=dict)


@dataclass
class _Slot:
    fd: int
    owner: object
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    takeovers: list[float] = field(default_factory=list)
    warned_competing: float | None = None    # monotonic time of the last warning (None: never)


_registry_lock = threading.Lock()
_unclaimed_lock = threading.Lock()
_slots: dict[str, _Slot] = {}


def stop_all_streams() -> int:
    """Ask every stream of this process to end (used on shutdown); returns how many."""
    with _registry_lock:
        owners = [s.owner for s in _slots.values()]
    for owner in owners:
        stop = getattr(owner, "stop", None)
        if stop is not None:
            stop.set()
    return len(owners)


class StateStore:
    def __init__(self, path: str | os.PathLike, identity: Mapping):
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.identity = dict(identity)
        self._journal = None
        self._owner: object | None = None
        self._key = str(self.path.resolve())

    # -- exclusive use
    def claim(self, owner: object, timeout: float) -> object | None:
        """Take the state for ``owner``. In this process a current owner is displaced at once
        (returned); another process holding it is waited for at most ``timeout`` seconds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self._key
        with _registry_lock:
            slot = _slots.get(key)
            if slot is not None:
                previous = slot.owner
                with slot.write_lock:
                    slot.owner = owner
                now = time.monotonic()
                slot.takeovers = [t for t in slot.takeovers if now - t < COMPETING_WINDOW] + [now]
                # monotonic time counts from boot: on a node up for minutes, "never warned" is None, not 0
                competing = len(slot.takeovers) >= 3 and (
                    slot.warned_competing is None or now - slot.warned_competing > 600)
                if competing:
                    slot.warned_competing = now
                self._owner = owner
        if slot is not None:
            if competing:
                log.error(
                    "state %s was taken over %d times in %.0fs: two receivers are taking turns on one event"
                    " source (two EventSource pods with the same config?); run one", self.path,
                    len(slot.takeovers), COMPETING_WINDOW)
            displace = getattr(previous, "displace", None)
            if displace is not None:
                displace(owner)
            return previous
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StateBusy(
                        f"state file {self.path} is held by another process (another event server on the"
                        f" same volume?) for more than {timeout:.0f}s")
                time.sleep(0.05)
        with _registry_lock:
            if key in _slots:  # another stream of this process won the race meanwhile
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                return self.claim(owner, timeout)
            _slots[key] = _Slot(fd=fd, owner=owner)
            self._owner = owner
        return None

    def owns(self) -> bool:
        with _registry_lock:
            slot = _slots.get(self._key)
            return slot is not None and slot.owner is self._owner

    def _write(self):
        """The lock to write under, or Displaced. A store that never claimed may write while
        nobody in this process holds the state (tools and tests)."""
        slot = _slots.get(self._key)
        if slot is None and self._owner is None:
            return _unclaimed_lock
        if slot is None or slot.owner is not self._owner:
            raise Displaced(f"state {self.path} was taken over by a newer stream")
        return slot.write_lock

    def release(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        with _registry_lock:
            slot = _slots.get(self._key)
            if slot is not None and slot.owner is self._owner:
                del _slots[self._key]
                fcntl.flock(slot.fd, fcntl.LOCK_UN)
                os.close(slot.fd)
        self._owner = None

    # -- reading
    def load(self) -> State | None:
        """The state, or None when there is none usable for this tree."""
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
            pending = {}
            for item in doc.get("pending", []):
                change = Change(str(item[0]), int(item[1]), str(item[2]), str(item[3]))
                pending[change.path] = change
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
                        info = FileInfo(int(entry["size"]), str(entry["mtime"]))
                        path = entry["path"]
                    except (ValueError, KeyError, TypeError):
                        # a line torn by a crash mid-write: its event was never handed over
                        log.warning("ignoring a torn line in %s", self.journal_path)
                        continue
                    files[path] = info
                    if "event" in entry:  # version 2: handed over, not yet confirmed
                        pending[path] = Change(path, info.size, info.mtime, str(entry["event"]))
                    replayed += 1
        if replayed:
            log.info("replayed %d handed-over events from %s", replayed, self.journal_path)
        return State(files, pending)

    # -- writing
    def record_sent(self, change: Change) -> None:
        """Note one event about to be handed to the stream (flushed to the OS at once): from
        now on it is pending until ``save`` gets it as confirmed."""
        with self._write():
            self._write()
            if self._journal is None:
                self._journal = open(self.journal_path, "a", encoding="utf-8")
            line = json.dumps({"path": change.path, "size": change.size, "mtime": change.mtime,
                               "event": change.event}, ensure_ascii=False)
            self._journal.write(line + "\n")
            self._journal.flush()

    def save(self, files: Mapping[str, FileInfo], pending: Mapping[str, Change] | None = None) -> None:
        """Write the full snapshot atomically, then empty the journal."""
        doc = {
            "version": 2,
            "identity": self.identity,
            "files": {p: [i.size, i.mtime] for p, i in sorted(files.items())},
            "pending": [[c.path, c.size, c.mtime, c.event] for _, c in sorted((pending or {}).items())],
        }
        with self._write():
            self._write()
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
