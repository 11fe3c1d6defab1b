"""The loop behind one gRPC stream: poll, decide, hand events over, confirm them.

Delivery is at least once. The generic event source has no acknowledgement, and gRPC
taking a message proves nothing (it may sit in either side's buffers when a process
dies), so every event is journalled as *pending* before it is handed over and stays
pending until the stream has stayed up for ``confirmSeconds`` after it (checked at the
end of a poll cycle, so a poll cycle has completed on the same stream too). Pending events
are sent again to the next stream (this process, or after a restart: the state store
keeps them), after the first listing of that stream: a pending event whose file is gone
is dropped, one whose file changed since is replaced by the newer change. A repeated event
is harmless downstream: ftp_etl writes the same object key (date and name from the file's
folder/MDTM and name) with the same content.

Only one stream serves a tree at a time: the newest. ``Stream.displace`` ends the older one
(its poll is cut if it hangs) and the event server ends that call with ABORTED.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Iterator

from ftp_changes import Change, ChangeTracker, Rules, _under
from ftp_config import WatchConfig
from ftp_listing import FTP_ERRORS, FileInfo, FtpPoller, ListingUnsupported, same_mtime
from ftp_state import Displaced, StateStore

log = logging.getLogger("ftp_event_server")


class Stream:
    """One StartEventSource call, as the state store's owner."""

    def __init__(self, event_name: str, peer: str = ""):
        self.event_name = event_name
        self.peer = peer
        self.stop = threading.Event()
        self.displaced_by: "Stream | None" = None
        self.poller: FtpPoller | None = None

    def displace(self, by: "Stream") -> None:
        self.displaced_by = by
        log.warning(
            "event %r: a newer stream (peer %s) replaces the one from peer %s; the old one ends with ABORTED"
            " (one receiver per event source: the newest wins)", self.event_name, by.peer, self.peer)
        self.stop.set()
        poller = self.poller
        if poller is not None:
            poller.abort()  # a poll stuck on a dead FTP connection would hold the old call

    def end_message(self) -> str:
        by = self.displaced_by
        return (f"replaced by a newer stream for event {self.event_name!r} (peer {by.peer if by else '?'}):"
                " the FTP event server serves one receiver per event source, the newest")


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
    alive: Callable[[], bool] = lambda: True,
    stream: Stream | None = None,
) -> Iterator[Change]:
    """Yield each change once it is complete; it is journalled as pending before it is
    yielded and confirmed once the stream has lived ``confirm_seconds`` past it (``alive``
    says whether the RPC is still up). Ends when ``stop`` is set or the state is taken over
    (``Displaced``); close the generator to end it at once."""
    poller = poller or FtpPoller(cfg)
    if stream is not None:
        stream.poller = poller
        if stream.stop.is_set():
            poller.abort()
    state = store.load()
    first_start = state is None
    tracker = ChangeTracker(state.files if state else None, Rules.from_config(cfg))
    # path -> (event, monotonic time gRPC took it; None = not yet on this stream)
    unconfirmed: dict[str, tuple[Change, float | None]] = {
        p: (c, None) for p, c in (state.pending.items() if state else ())}
    resend = bool(unconfirmed)
    failures = 0
    delays = backoff_delays(cfg.retry_min_seconds, cfg.retry_max_seconds)
    log.info("watching %s", cfg.describe())
    if unconfirmed:
        log.info("%d events were handed over but not confirmed delivered: they are sent again after the"
                 " first listing", len(unconfirmed))

    def pending_map() -> dict[str, Change]:
        return {p: c for p, (c, _) in unconfirmed.items()}

    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                listing = poller.poll()
            except (*FTP_ERRORS, ListingUnsupported) as exc:
                if stop.is_set():
                    break
                failures += 1
                delay = next(delays)
                log.warning(
                    "FTP poll of %s:%s failed (%s: %s); reconnecting in %.1fs (failure %d)",
                    cfg.host, cfg.port, type(exc).__name__, exc, delay, failures,
                )
                stop.wait(delay)
                continue
            if stop.is_set():
                break
            if failures:
                log.info("FTP %s:%s reachable again after %d failed polls", cfg.host, cfg.port, failures)
                failures = 0
                delays = backoff_delays(cfg.retry_min_seconds, cfg.retry_max_seconds)

            if first_start and not cfg.report_existing:
                tracker = ChangeTracker(
                    {p: i for p, i in listing.files.items()}, Rules.from_config(cfg))
                tracker.observe(listing)  # primes the clock and the previous listing
                store.save(tracker.reported)
                first_start = False
                log.info("first start: %d existing files recorded as the baseline, not reported", len(listing.files))
            else:
                if first_start:
                    store.save({})  # reportExisting: an empty baseline, so a crash now is not a first start again
                    first_start = False
                resent = 0
                dropped = 0
                if resend:
                    resend = False
                    for path, (change, _) in sorted(unconfirmed.items()):
                        info = listing.files.get(path)
                        if info is None and _under(path, listing.unreadable):
                            info = FileInfo(change.size, change.mtime)  # cannot tell: send it again
                        if info is None or not (info.size == change.size and same_mtime(info.mtime, change.mtime)):
                            # gone (nothing to process) or changed since (the tracker reports the newer one)
                            del unconfirmed[path]
                            dropped += 1
                            continue
                        yield change
                        unconfirmed[path] = (change, time.monotonic())
                        resent += 1
                        if stop.is_set():
                            break
                    if resent or dropped:
                        log.info("sent %d unconfirmed events again (%d dropped: file gone or changed since)",
                                 resent, dropped)
                    if stop.is_set():
                        break
                changes, gone = tracker.observe(listing)
                for path in gone:
                    unconfirmed.pop(path, None)
                sent = 0
                for change in changes:
                    store.record_sent(change)  # pending from here on, even if we die mid-send
                    tracker.mark_reported(change)
                    unconfirmed[change.path] = (change, None)
                    yield change
                    unconfirmed[change.path] = (change, time.monotonic())
                    sent += 1
                    if sent <= 50:
                        log.info("reported %s %r (%d bytes, %s)", change.event, change.path, change.size, change.mtime)
                    if stop.is_set():
                        break
                if sent > 50:
                    log.info("... and %d more", sent - 50)
                confirmed = 0
                if unconfirmed and not stop.is_set() and alive():
                    now = time.monotonic()
                    for path in [p for p, (_, t) in unconfirmed.items()
                                 if t is not None and now - t >= cfg.confirm_seconds]:
                        del unconfirmed[path]
                        confirmed += 1
                if confirmed or gone or dropped:
                    store.save(tracker.reported, pending_map())
                if sent or gone or tracker.waiting or confirmed:
                    log.info(
                        "poll (%s): %d files, %d reported, %d confirmed, %d unconfirmed, %d waiting to be"
                        " complete, %d gone, %.2fs", listing.mode, len(listing.files), sent, confirmed,
                        len(unconfirmed), len(tracker.waiting), len(gone), time.monotonic() - started,
                    )
            # polls start at a fixed rate: the listing's own time is part of the interval (a
            # big tree on a slow server would otherwise stretch it), with a small floor so a
            # listing longer than the interval does not turn into back-to-back polling
            period = cfg.settle_seconds if tracker.waiting else cfg.poll_seconds
            stop.wait(max(period - (time.monotonic() - started), period / 10))
    except Displaced:
        log.info("event %r: state taken over by a newer stream; this one stops", stream.event_name if stream else "?")
    finally:
        poller.close()
