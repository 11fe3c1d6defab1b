"""gRPC server for the Argo Events generic event source: FTP file events.

Argo's generic source calls ``/generic.Eventing/StartEventSource`` with the event name
and the ``config`` string of the EventSource, then reads ``Event`` messages from the
stream for as long as it lives. Each message is ``name`` = the requested event name and
``payload`` = JSON ``{"name": <full path>, "size": <bytes>, "mtime": <ISO time>,
"event": "new"|"mod"}``, so a Sensor with ``jsonBody: true`` reads ``body.name``.

Run in the pod as ``python /code/event_server.py`` (all files of this folder sit flat
in /code). Settings come from the environment: ``FTP_EVENT_SERVER_PORT`` (50051),
``FTP_EVENT_SERVER_LISTEN`` (0.0.0.0), ``FTP_STATE_DIR``, ``FTP_POLL_SECONDS`` and the
credential variables named in the config (``FTP_USER``/``FTP_PASSWORD`` by default).
A bad config ends the stream with INVALID_ARGUMENT and a message naming each problem.

The config (YAML or JSON; unknown fields are errors):
  host (required), port (21), dir ("/"), recursive (true), passive (true)
  user, or userEnv (default FTP_USER): the login name, or the env var holding it
  passwordEnv (default FTP_PASSWORD) or passwordFile; a clear-text "password" is refused
  listing: auto (MLSD, LIST if the server lacks it) | mlsd | list
  listFields: {size: 4, mtime: [5, 6, 7], name: 8}: 0-based LIST positions; the name runs
      from its position to the end of the line, so names with spaces survive
  pollSeconds (FTP_POLL_SECONDS or 10); settleSeconds (= pollSeconds): how long after a
      change is seen the confirming listing comes; a file is reported when both agree
  minAgeSeconds (FTP_MIN_AGE_SECONDS, or max(30, 3 x pollSeconds); 0 when doneFile is set):
      the file's time must be that old by the FTP server's clock, or we saw it unchanged that long
  doneFile (FTP_DONE_FILE, none): e.g. "{name}.done" or "{stem}.ok": report a file only once
      that marker exists next to it; markers themselves are never reported
  ignore (FTP_IGNORE, comma-separated; default ["*.part", "*.tmp", ".*"]): file-name patterns
      never reported ([] reports everything)
  confirmSeconds (FTP_CONFIRM_SECONDS or 30): an event stays pending (and is sent again to the
      next stream, also after a restart) until the stream stayed up this long after it
  reportExisting (false): on the very first start, report the files already there
  timeoutSeconds (30), retryMinSeconds (1 or pollSeconds), retryMaxSeconds (60): FTP timeout and the
      reconnect backoff; encoding (utf-8); stateFile (FTP_STATE_DIR/<event>-<tree hash>.json)

Delivery is at least once (see ftp_stream.py): a repeated event is harmless downstream.
One stream per event source is served, the newest: an older one ends with ABORTED and a
message saying it was replaced.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from concurrent import futures
from typing import Mapping

import grpc

import generic_pb2
import generic_pb2_grpc
import ftp_config
import ftp_state
import ftp_stream

log = logging.getLogger("ftp_event_server")


class Eventing(generic_pb2_grpc.EventingServicer):
    """One stream per StartEventSource call; each stream watches the tree its config names."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self._env = env  # None: read os.environ at each call, so a new Secret value is picked up

    def StartEventSource(self, request, context):
        event_name = request.name
        try:
            cfg = ftp_config.parse_config(request.config, self._env, event_name=event_name)
        except ftp_config.ConfigError as exc:
            log.error("rejecting StartEventSource for event %r: %s", event_name, exc)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return

        stream = ftp_stream.Stream(event_name, context.peer())
        stop = stream.stop
        if not context.add_callback(stop.set):
            return  # the caller is already gone
        store = ftp_state.StateStore(cfg.state_file, cfg.identity())
        try:
            store.claim(stream, timeout=cfg.timeout_seconds + 5)
        except ftp_state.StateBusy as exc:
            log.error("event %r: refusing the stream from %s with ABORTED: %s", event_name, context.peer(), exc)
            context.abort(grpc.StatusCode.ABORTED, str(exc))
            return
        except OSError as exc:
            log.error("cannot use state file %s: %s", cfg.state_file, exc)
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"cannot use state file {cfg.state_file}: {exc.strerror or exc}",
            )
            return
        log.info("stream for event %r started (peer %s)", event_name, context.peer())
        changes = ftp_stream.watch(cfg, store, stop, alive=context.is_active, stream=stream)
        try:
            for change in changes:
                payload = json.dumps(change.payload(), ensure_ascii=False).encode("utf-8")
                # gRPC takes the message when it asks for the next one; the event stays
                # pending (and is sent again to the next stream) until the stream has stayed
                # up confirmSeconds after it
                yield generic_pb2.Event(name=event_name, payload=payload)
        finally:
            changes.close()
            store.release()
            log.info("stream for event %r from %s ended%s", event_name, context.peer(),
                     " (replaced by a newer stream)" if stream.displaced_by else "")
        if stream.displaced_by is not None:
            context.abort(grpc.StatusCode.ABORTED, stream.end_message())


def build_server(address: str, *, max_workers: int = 16, env: Mapping[str, str] | None = None):
    """A started-ready grpc.Server with the Eventing service; returns (server, bound port)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="stream"),
        options=[
            # notice a vanished client within ~20s (well inside confirmSeconds, 30 by default), so
            # events it may not have read are not confirmed, and its state is released
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )
    generic_pb2_grpc.add_EventingServicer_to_server(Eventing(env), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return server, port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FTP event server for the Argo Events generic event source")
    parser.add_argument("--listen", default=os.environ.get("FTP_EVENT_SERVER_LISTEN", "0.0.0.0"),
                        help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("FTP_EVENT_SERVER_PORT", "50051")),
                        help="gRPC port (default 50051)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    server, port = build_server(f"{args.listen}:{args.port}")
    server.start()
    log.info("listening on %s:%d (plaintext gRPC: the generic source needs insecure: true)", args.listen, port)

    def on_term(signum, _frame):
        # end the streams first: they are endless, so a grace period alone would just run out
        count = ftp_state.stop_all_streams()
        log.info("signal %d: stopping, %d stream(s) asked to end", signum, count)
        server.stop(grace=10)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
