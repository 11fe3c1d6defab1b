"""`invoke aws.setup | aws.status | aws.teardown`: S3 -> SQS (AWS_DELIVERY=sqs, the default) or S3 -> SNS ->
public webhook (AWS_DELIVERY=sns-webhook, the tutorial's) -> Argo Events -> the S3 ETL workflow.

The steps are in `aws/steps.py`, `aws/preflight_steps.py`, `aws/iam_steps.py` and `aws/sqs_steps.py`, the lists each task runs in `aws/step_lists.py`;
this module only parses flags and runs them. `demo_upload` is what `invoke demo.upload --target aws` calls.
"""

from __future__ import annotations

from invoke import Collection

from ..cli import COMMON_HELP, confirm, interruptible, load_settings, run_mode, task


def _steps():
    from aws import step_lists  # the top-level aws package (boto3 is imported only when an aws task runs)

    return step_lists


def _settings_ready_for_webhook(settings) -> bool:
    from aws.preflight_steps import settings_problems
    from aws.steps import needs_webhook

    return needs_webhook(settings) and not settings_problems(settings)


@task(help={**COMMON_HELP,
            "dry_run": "print the plan (the AWS and Kubernetes calls it would make); change nothing",
            "rotate_keys": "replace both access keys: create new -> update the Secret -> delete old"})
@interruptible
def setup(c, dry_run=False, debug=False, verbose=False, rotate_keys=False):
    """Create (idempotently) the bucket, SQS queue+DLQ (or SNS topic), IAM users/keys, Secrets, EventSource, Sensor, notification."""
    from aws.plan import format_plan

    settings = load_settings()
    if not dry_run and _settings_ready_for_webhook(settings):
        # SNS_WEBHOOK_PATH is generated into .env only by a run that can use it: a dry run, or a run that
        # fails on its settings, writes nothing
        settings = load_settings(generate=True)
    results = run_mode("up", _steps().setup_steps, title="aws.setup", dry_run=dry_run, debug=debug, verbose=verbose,
                       settings=settings, rotate_keys=rotate_keys)
    if dry_run:
        lines = format_plan(results)
        print("plan (intended calls, in order):" if lines else "plan: nothing to do")
        for line in lines:
            print(line)


@task(help={"debug": COMMON_HELP["debug"]})
@interruptible
def status(c, debug=False):
    """Check every AWS step (present / drifted / missing), the queue depth and dead letters (or the SNS subscription). Changes nothing."""
    run_mode("status", _steps().status_steps, title="aws.status", debug=debug, settings=load_settings())


@task(help={**COMMON_HELP, "yes": "do not ask for confirmation",
            "delete_bucket": "also empty and delete the bucket (only if this tool created it)"})
@interruptible
def teardown(c, yes=False, delete_bucket=False, dry_run=False, debug=False, verbose=False):
    """Remove what aws.setup made with either delivery (only what carries its tag), in reverse order; the bucket's data stays."""
    settings = load_settings()
    if not dry_run:
        what = "the AWS resources and Secrets aws.setup made" + (
            ", INCLUDING THE BUCKET AND ITS DATA" if delete_bucket else " (the bucket and its data are kept)")
        confirm(f"Delete {what} (account of the configured credentials, region {settings.values['AWS_REGION']})?",
                yes)
    run_mode("down", _steps().teardown_steps, title="aws.teardown", dry_run=dry_run, debug=debug, verbose=verbose,
             settings=settings, delete_bucket=delete_bucket)


def demo_upload(settings, reporter, **kwargs) -> bool:
    """Upload the sample CSV to the bucket's input/ and verify the Parquet in output/ (bounded wait)."""
    from aws.demo import demo_upload as upload

    return upload(settings, reporter, **kwargs)


ns = Collection("aws")
ns.add_task(setup)
ns.add_task(status)
ns.add_task(teardown)
