"""`invoke demo.upload` / `invoke demo.verify`: prove the pipeline end to end with the tutorial's CSVs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from invoke import Collection, Exit

from .. import TARGETS
from ..cli import COMMON_HELP, as_usage_error, interruptible, load_settings, make_context, report_failure, task, usage_error

HELP = {
    "dataset": "single (the tutorial's test.csv) or multi (its 20230414/1.csv..3.csv, uploaded with delays)",
    "file": "upload your own CSV instead (no,name,score rows) as input/<file name>",
    "target": "minio (the local pipeline), aws (S3 -> SNS -> Argo) or ftp (vsftpd -> gRPC event server)",
    "delay": "seconds between uploads of the multi dataset",
    "timeout": "seconds to wait for the workflows (default: WAIT_TIMEOUT_SECONDS)",
    "no_follow": "upload only; do not wait for the workflows",
    "debug": COMMON_HELP["debug"],
}


def _report(ctx, lines) -> bool:
    for ok, text in lines:
        ctx.reporter.say(f"{'✓' if ok else '✗'} {text}", style=None if ok else "bold red")
    return bool(lines) and all(ok for ok, _ in lines)


def _guard(ctx, body):
    """`body()`, with a failure said through the run's reporter (which redacts the settings' secrets)."""
    try:
        return body()
    except (Exit, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - one clear line
        report_failure(ctx.reporter, exc, debug=ctx.debug)
        raise Exit(code=1) from None
    finally:
        ctx.close()


@task(help=HELP)
@interruptible
def upload(c, dataset="single", file="", target="minio", delay=3.0, timeout=0, no_follow=False, debug=False):
    """Upload sample CSVs, follow the workflows they trigger (live tree), and end with a verdict."""
    from .. import demo

    if target not in TARGETS:
        raise usage_error(f"unknown --target {target!r} (choose from {', '.join(TARGETS)})")
    with as_usage_error():  # a wrong --dataset or --file: a usage error, before a setting is read
        uploads = demo.plan(dataset, file)
    settings = load_settings()
    ctx = make_context(settings, debug=debug)
    wait = float(timeout or settings.wait_timeout_seconds)
    if target == "aws":
        from aws.demo import cluster_workflows

        from .aws import demo_upload

        ok = _guard(ctx, lambda: demo_upload(settings, ctx.reporter, timeout=wait, workflows=cluster_workflows(ctx)))
        if not ok:
            raise Exit(code=1)
        return
    if target == "ftp":
        from ..ftpdemo import upload_and_verify

        ok = _guard(ctx, lambda: upload_and_verify(ctx, uploads, timeout=wait))
        if not ok:
            raise Exit(code=1)
        return

    def body() -> bool:
        # the API server's clock decides creationTimestamp; allow for a little skew
        since = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=5)
        demo.upload(ctx, uploads, delay if dataset == "multi" and not file else 0)
        if no_follow:
            return True
        etl, agg = demo.follow(ctx, uploads, since, wait)
        ok = _report(ctx, demo.verdict(etl, agg))
        ok = _report(ctx, demo.verify(ctx, uploads, "" if file else dataset)) and ok
        ctx.reporter.say("verdict: the pipeline works" if ok else "verdict: FAILED", style="bold green" if ok else "bold red")
        return ok

    if not _guard(ctx, body):
        raise Exit(code=1)


@task(help={k: HELP[k] for k in ("dataset", "file", "debug")})
@interruptible
def verify(c, dataset="single", file="", debug=False):
    """Check the outputs: each Parquet has exactly the input's good rows; the day's top scorer is right."""
    from .. import demo

    with as_usage_error():  # a wrong --dataset or --file: a usage error, before a setting is read
        uploads = demo.plan(dataset, file)
    settings = load_settings()
    ctx = make_context(settings, debug=debug)
    ok = _guard(ctx, lambda: _report(ctx, demo.verify(ctx, uploads, "" if file else dataset)))
    if not ok:
        raise Exit(code=1)


ns = Collection("demo")
ns.add_task(upload)
ns.add_task(verify)
