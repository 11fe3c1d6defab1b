"""`aws.setup --dry-run` names every missing setting in one run, not one per run: one line listing them (each
with its hint), exit 1 like any failed step, and nothing read from AWS or the cluster, nothing written, not even
`.env` (the webhook path is generated only by a run that uses it)."""

from __future__ import annotations

import pytest
from invoke import Context, Exit

from etlboot.tasks import aws as aws_tasks

EVERY = ("AWS_REGION", "AWS_PROFILE", "AWS_BUCKET", "SNS_WEBHOOK_URL")


def run(task, **kwargs) -> int:
    try:
        task(Context(), **kwargs)
    except Exit as exc:
        return exc.code
    return 0


def failed_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("✗")]


def unset(monkeypatch, *names: str) -> None:
    for name in names:
        monkeypatch.delenv(name, raising=False)
    if "AWS_PROFILE" in names:  # "no credentials" is: no profile and no keys
        monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)


@pytest.mark.parametrize("missing", [EVERY, ("AWS_BUCKET", "SNS_WEBHOOK_URL"), ("AWS_REGION", "AWS_PROFILE")],
                         ids=lambda names: ",".join(names))
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_every_missing_setting_is_named_in_one_run(aws_env, aws_calls, cluster, env_file, capsys, monkeypatch,
                                                    missing, dry_run):
    unset(monkeypatch, *missing)
    assert run(aws_tasks.setup, dry_run=dry_run) == 1
    out = capsys.readouterr().out
    (line,) = failed_lines(out)
    assert "aws/preflight" in line
    assert [name for name in EVERY if name in line] == list(missing)
    assert (f"{len(missing)} settings are missing or unusable" in line) == (len(missing) > 1)
    hint = out.splitlines()[out.splitlines().index(line) + 1]
    assert hint.startswith("  hint:") and all(name in hint for name in missing if name != "AWS_PROFILE")
    assert "plan (intended calls" not in out and "Traceback" not in out
    assert aws_calls == []  # not even sts:GetCallerIdentity
    assert cluster.emulator.requests == []
    assert not env_file.exists()  # no SNS_WEBHOOK_PATH generated for a run that cannot use it


def test_a_webhook_sns_cannot_reach_is_named_with_the_missing_ones(aws_env, aws_calls, env_file, capsys, monkeypatch):
    unset(monkeypatch, "AWS_BUCKET")
    monkeypatch.setenv("SNS_WEBHOOK_URL", "https://localhost:12000")
    assert run(aws_tasks.setup, dry_run=True) == 1
    (line,) = failed_lines(capsys.readouterr().out)
    assert "(1) AWS_BUCKET is not set" in line and "(2) SNS_WEBHOOK_URL host 'localhost' is not public" in line
    assert aws_calls == [] and not env_file.exists()


def test_status_and_teardown_name_them_once_too(aws_env, aws_calls, cluster, env_file, capsys, monkeypatch):
    unset(monkeypatch, *EVERY)
    assert run(aws_tasks.status) == 1
    out = capsys.readouterr().out
    (line,) = failed_lines(out)  # a gate: the steps behind it are one "not checked" line, not a failure each
    assert all(name in line for name in EVERY)
    assert "later steps not checked: aws/preflight is not in place" in out
    assert run(aws_tasks.teardown, yes=True) == 1
    (line,) = failed_lines(capsys.readouterr().out)
    assert all(name in line for name in EVERY if name != "SNS_WEBHOOK_URL")  # deleting needs no webhook
    assert "SNS_WEBHOOK_URL" not in line
    assert aws_calls == [] and cluster.emulator.write_requests() == [] and not env_file.exists()


def test_with_every_setting_a_dry_run_plans_and_still_writes_no_env(aws_env, aws_calls, cluster, env_file, capsys):
    assert run(aws_tasks.setup, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "SNS_WEBHOOK_PATH is not generated yet" in out and "plan (intended calls, in order):" in out
    assert not env_file.exists()
    assert [call for call in aws_calls if call[2]] == []
    assert run(aws_tasks.setup) == 0  # the run that subscribes the webhook generates its path
    assert "SNS_WEBHOOK_PATH=" in env_file.read_text()
