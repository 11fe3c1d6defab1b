"""`trace --key /PATH --target ftp`: one file on the FTP server, from the event server that reported it to its Parquet.

- object       the FTP event server's log line "reported new|mod '<path>' (<size> bytes, <mtime>)": the tool
               cannot list vsftpd itself (its passive ports are not forwarded), and that line is the moment the
               file counted as complete by the rules of docs/ftp.md. Not there: why, from the settings (an
               ignored name, a done marker still missing, the minimum age) and the server's log (failed polls,
               the first start's baseline);
- eventsource  the generic `ftp` EventSource published an event after that;
- sensor, workflow  as every target (trace.py); the Workflows are those of Sensor `ftp` with the `path` parameter;
- output       the Parquet file (ftp/output/<date>/<name>.parquet in MinIO) and the rejects, if any.
"""

from __future__ import annotations

import ast
import fnmatch
import posixpath
import re
from datetime import datetime, timezone

from .demo import date_and_name, running_minio
from .engine import Context
from .ftpdemo import FTP_SENSOR, OUTPUT_LAYOUT
from .steps import kube
from .trace import CLOCK_SLACK, Journey, Link, event_links, output_link, pod_log
from .trace_minio import MinioStore
from .workflows import WORKFLOW_API, created, parameter

REJECTS_LAYOUT = "ftp/rejects/{date}/{name}.csv"
EVENT_SERVER = "app=ftp-event-server"
#: the event server's line for a file it reported (ftp_stream.py); the path is printed with repr(), the time is
#: logging's asctime, the pod's local time: UTC in the image (code/Dockerfile sets no TZ)
REPORTED = re.compile(r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S* \w+ \S+: reported (?P<event>new|mod) "
                      r"(?P<path>'.*'|\".*\") \((?P<size>\d+) bytes, (?P<mtime>[^)]*)\)\s*$")
FAILED_POLL = "FTP poll of"
BASELINE = "first start:"


def reported(log: str, path: str) -> dict | None:
    """The event server's last report of `path`: {event, size, mtime, at}; None when it never logged one."""
    found = None
    for line in log.splitlines():
        match = REPORTED.match(line.strip())
        if match:
            try:
                logged = ast.literal_eval(match["path"])
            except (ValueError, SyntaxError):
                continue
            if logged == path:
                found = {"event": match["event"], "size": int(match["size"]), "mtime": match["mtime"],
                         "at": datetime.fromisoformat(match["at"]).replace(tzinfo=timezone.utc)}
    return found


def not_reported_cause(settings, log: str, path: str) -> str:
    """Why the event server has not reported `path`, from the settings it runs with and what it logged."""
    name = posixpath.basename(path)
    values = settings.values
    for pattern in [p.strip() for p in (values.get("FTP_IGNORE") or "").split(",") if p.strip()]:
        if fnmatch.fnmatchcase(name, pattern):
            return f"its name matches FTP_IGNORE pattern {pattern!r}: such files are never reported (rename it)"
    failed = [line for line in log.splitlines() if FAILED_POLL in line]
    if failed and "reachable again" not in log.split(failed[-1], 1)[-1]:
        return "the event server cannot poll the FTP server: " + failed[-1].split(": ", 1)[-1][:160]
    done = values.get("FTP_DONE_FILE") or ""
    if done:
        stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
        marker = done.replace("{name}", name).replace("{stem}", stem)
        return f"not complete yet: FTP_DONE_FILE is set, so it is reported once {marker} is uploaded beside it"
    baseline = "; a file already there when the server first started is part of its baseline and never " \
               "reported (upload it again)" if BASELINE in log else ""
    age = values.get("FTP_MIN_AGE_SECONDS") or "max(30, 3 x FTP_POLL_SECONDS)"
    return (f"not reported (yet): a file is reported once it is {age} s old by the FTP server's clock{baseline}; "
            "the server logs its first 50 reports a poll (`invoke doctor` checks its clock)")


def trace_ftp(ctx: Context, path: str) -> Journey:
    journey = Journey(path, [], "ftp")
    rest = ("output",)
    later = ("eventsource", "sensor", "workflow", *rest)
    settings = ctx.settings
    if not settings.ftp_enabled:
        journey.add(Link("object", False, "FTP_ENABLED is false: the FTP event source is not installed",
                         "set FTP_ENABLED=true in .env and run `invoke up`"))
        return journey.unreached(*later)
    server_log = pod_log(ctx, EVENT_SERVER)
    if server_log is None:
        journey.add(Link("object", False, "no running FTP event server pod",
                         "`invoke doctor` names what keeps it from running; `invoke up --only ftp` starts it"))
        return journey.unreached(*later)
    report = reported(server_log, path)
    if report is None:
        journey.add(Link("object", False, f"the FTP event server has not reported {path}",
                         not_reported_cause(settings, server_log, path)))
        return journey.unreached(*later)
    since = report["at"]
    journey.add(Link("object", True, f"{path}: {report['size']} bytes, modified {report['mtime']} "
                     f"(reported as {report['event']})", at=since.isoformat()))

    workflows = sorted((w for w in kube(ctx).list(WORKFLOW_API, "Workflow", settings.namespace,
                                                 label_selector=f"events.argoproj.io/sensor={FTP_SENSOR}")
                        if parameter(w, "path") == path and created(w) >= since - CLOCK_SLACK), key=created)
    source_log = pod_log(ctx, f"eventsource-name={FTP_SENSOR}")
    not_published = ("the generic EventSource is not connected to the event server: `kubectl logs -n "
                     f"{settings.namespace} -l eventsource-name={FTP_SENSOR}`; `invoke doctor`")
    if event_links(ctx, journey, source=FTP_SENSOR, sensor=FTP_SENSOR, since=since, workflows=workflows,
                   source_log=source_log, not_published=not_published, rest=rest) is None:
        return journey

    try:
        modified = datetime.fromisoformat(report["mtime"].replace("Z", "+00:00"))
    except ValueError:
        modified = since
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=timezone.utc)
    date, name = date_and_name(path, modified)   # ftp_etl.py names by the file's MDTM time, as reported
    output_link(journey, MinioStore(running_minio(ctx), settings.etl_bucket), OUTPUT_LAYOUT.format(date=date, name=name),
                REJECTS_LAYOUT.format(date=date, name=name),
                missing_cause="the workflow succeeded but wrote nothing there: its log names what it wrote")
    return journey
