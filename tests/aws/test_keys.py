"""Access keys: reused while the Secret matches, never a third one, rotated safely."""

from __future__ import annotations

from invoke import Context

from aws import TAGS
from aws.iam_steps import CredentialsStep, UserStep
from aws.preflight_steps import PreflightStep
from etlboot.tasks import aws as aws_tasks

from aws_testkit import run_steps

USER = "argo-etl-sns"


def key_steps():
    return [PreflightStep(need_webhook=False), UserStep("sns"), CredentialsStep("sns", "sns-credential")]


def keys(admin) -> list[str]:
    return sorted(k["AccessKeyId"] for k in admin.iam.list_access_keys(UserName=USER)["AccessKeyMetadata"])


def test_reused_while_the_secret_matches_and_rotated_on_request(aws_env, aws_calls, cluster, admin, capsys):
    assert run_steps("up", *key_steps())[0] == 0
    first = cluster.secret("sns-credential")
    assert keys(admin) == [first["accessKey"]]

    aws_calls.clear()
    assert run_steps("up", *key_steps())[0] == 0  # re-run: the same key, no call that writes
    assert cluster.secret("sns-credential") == first and keys(admin) == [first["accessKey"]]
    assert [c for c in aws_calls if c[2]] == []

    aws_calls.clear()
    assert run_steps("up", *key_steps(), rotate_keys=True)[0] == 0
    rotated = cluster.secret("sns-credential")
    assert rotated["accessKey"] != first["accessKey"] and rotated["secretKey"] != first["secretKey"]
    assert keys(admin) == [rotated["accessKey"]]  # exactly one key: the new one
    ops = [op for _, op, w in aws_calls if w]
    assert ops.index("CreateAccessKey") < ops.index("DeleteAccessKey")  # create new -> Secret -> delete old

    # through the task flag as well (it also builds the rest): the sns key rotates again, one key per user
    aws_tasks.setup(Context(), rotate_keys=True)
    again = cluster.secret("sns-credential")
    assert again["accessKey"] != rotated["accessKey"] and keys(admin) == [again["accessKey"]]
    s3_keys = admin.iam.list_access_keys(UserName="argo-etl-s3")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in s3_keys] == [cluster.secret("s3-credential")["accessKey"]]


def test_two_foreign_keys_give_a_clear_error_and_nothing_is_created(aws_env, aws_calls, cluster, admin, capsys):
    admin.iam.create_user(UserName=USER, Tags=TAGS)
    foreign = sorted(admin.iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"] for _ in range(2))
    capsys.readouterr()
    code, _ = run_steps("up", *key_steps())
    assert code == 1
    out = capsys.readouterr().out
    assert "already has 2 access keys" in out and "no key was created" in out
    assert "delete-access-key" in out  # the hint says how to make room
    assert keys(admin) == foreign
    assert "CreateAccessKey" not in [op for _, op, _ in aws_calls]
    assert cluster.secret("sns-credential") is None


def test_a_secret_that_no_longer_matches_gets_a_new_key_and_stale_keys_of_ours_go(aws_env, cluster, admin):
    assert run_steps("up", *key_steps())[0] == 0
    first = cluster.secret("sns-credential")
    # the Secret is lost (e.g. the namespace was deleted): the old key is ours (marked), so it is replaced
    cluster.emulator.delete_object("Secret", "sns-credential", "argo-etl")
    assert run_steps("up", *key_steps())[0] == 0
    second = cluster.secret("sns-credential")
    assert second["accessKey"] != first["accessKey"]
    assert keys(admin) == [second["accessKey"]]

    # a key someone else added is left alone; with it and ours the user is full, and that is fine
    foreign = admin.iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"]
    assert run_steps("up", *key_steps())[0] == 0
    assert keys(admin) == sorted([second["accessKey"], foreign])
    # ... but rotation then has no free slot: refused before anything changes
    code, _ = run_steps("up", *key_steps(), rotate_keys=True)
    assert code == 1
    assert keys(admin) == sorted([second["accessKey"], foreign])
    assert cluster.secret("sns-credential") == second
