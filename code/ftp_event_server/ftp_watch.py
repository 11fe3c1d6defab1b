"""The FTP watcher in one import (kept for callers of the single-module version).

The parts live in their own files, flat next to this one (the ConfigMap mounts them in one
folder):

- ``ftp_config``: the EventSource config -> ``WatchConfig`` (or ``ConfigError``)
- ``ftp_listing``: LIST/MLSD parsing, the tree walk, MDTM/SIZE confirmation, ``FtpPoller``
- ``ftp_changes``: ``ChangeTracker`` and the completeness rules (settled, minimum age, done
  marker, ignored names)
- ``ftp_state``: ``StateStore`` (snapshot + journal of pending events) and stream ownership
- ``ftp_stream``: the loop behind one stream, with at-least-once delivery
"""

from ftp_changes import Change, ChangeTracker, Rules, ServerClock, Waiting  # noqa: F401
from ftp_config import (  # noqa: F401
    DEFAULT_IGNORE, DEFAULT_POLL_SECONDS, DEFAULT_STATE_DIR, ConfigError, ListFields, WatchConfig, parse_config,
)
from ftp_listing import (  # noqa: F401
    FTP_ERRORS, MAX_DEPTH, FileInfo, FtpPoller, Listing, ListingUnsupported, TreeLister, close_quietly, connect,
    list_time, mlsd_time, mtime_bounds, parse_list_line, parse_mlsd_line, same_mtime, split_lines,
)
from ftp_state import Displaced, State, StateBusy, StateStore, stop_all_streams  # noqa: F401
from ftp_stream import Stream, backoff_delays, watch  # noqa: F401
