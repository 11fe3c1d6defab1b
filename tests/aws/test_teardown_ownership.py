"""aws.teardown removes what aws.setup made and nothing else: a user someone else also uses is kept."""

from __future__ import annotations

import json

from invoke import Context, Exit

from etlboot.tasks import aws as aws_tasks

S3_USER, SNS_USER = "argo-etl-s3", "argo-etl-sns"

READ_ONLY = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::audit/*"}]}


def run(task, **kwargs) -> int:
    try:
        task(Context(), **kwargs)
        return 0
    except Exit as exc:
        return exc.code


def key_ids(admin, user: str) -> list[str]:
    return sorted(k["AccessKeyId"] for k in admin.iam.list_access_keys(UserName=user)["AccessKeyMetadata"])


def user_names(admin) -> list[str]:
    return sorted(u["UserName"] for u in admin.iam.list_users()["Users"])


def test_teardown_keeps_what_others_put_on_our_user(aws_env, aws_server, cluster, admin, capsys):
    assert run(aws_tasks.setup) == 0
    ours = cluster.secret("s3-credential")["accessKey"]
    # someone starts using the ETL user for more than this tool: a key, a managed policy, a group
    foreign = admin.iam.create_access_key(UserName=S3_USER)["AccessKey"]["AccessKeyId"]
    policy = admin.iam.create_policy(PolicyName="audit-read", PolicyDocument=json.dumps(READ_ONLY))["Policy"]["Arn"]
    admin.iam.attach_user_policy(UserName=S3_USER, PolicyArn=policy)
    admin.iam.create_group(GroupName="ops")
    admin.iam.add_user_to_group(GroupName="ops", UserName=S3_USER)
    capsys.readouterr()

    # a dry run says so, and changes nothing
    aws_server.clear()
    assert run(aws_tasks.teardown, yes=True, dry_run=True) == 0
    out = capsys.readouterr().out
    assert f"would keep IAM user {S3_USER}" in out
    assert aws_server.writes() == []

    assert run(aws_tasks.teardown, yes=True) == 0
    out = capsys.readouterr().out
    (kept,) = [line for line in out.splitlines() if f"kept IAM user {S3_USER}" in line]
    assert "1 access key" in kept and "audit-read" in kept and "ops" in kept and "did not make" in kept

    assert user_names(admin) == [S3_USER]                        # the EventSource user was ours alone: gone
    assert key_ids(admin, S3_USER) == [foreign]                  # our key went, theirs stayed
    assert ours != foreign
    attached = admin.iam.list_attached_user_policies(UserName=S3_USER)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [policy]
    assert [g["GroupName"] for g in admin.iam.list_groups_for_user(UserName=S3_USER)["Groups"]] == ["ops"]
    assert admin.iam.list_user_policies(UserName=S3_USER)["PolicyNames"] == []   # our inline policy went
    assert admin.iam.list_user_tags(UserName=S3_USER)["Tags"] == []              # and our tag and key marks
    assert cluster.secret("s3-credential") is None and cluster.secret("sns-credential") is None

    # the user is no longer marked as ours: a second teardown touches nothing of it
    aws_server.clear()
    assert run(aws_tasks.teardown, yes=True) == 0
    assert aws_server.writes() == []
    assert key_ids(admin, S3_USER) == [foreign]


def test_a_key_our_secret_holds_but_we_did_not_make_is_not_deleted(aws_env, aws_server, cluster, admin, capsys):
    """Only the mark written when the tool created a key makes it ours: an edited Secret is no proof."""
    from aws.iam_steps import KEY_MARK

    assert run(aws_tasks.setup) == 0
    ours = cluster.secret("sns-credential")["accessKey"]
    admin.iam.untag_user(UserName=SNS_USER, TagKeys=[ours])   # as if the key came from somewhere else
    capsys.readouterr()
    assert run(aws_tasks.teardown, yes=True) == 0
    out = capsys.readouterr().out
    assert f"kept IAM user {SNS_USER}" in out and "1 access key" in out
    assert key_ids(admin, SNS_USER) == [ours]
    assert KEY_MARK not in {t["Value"] for t in admin.iam.list_user_tags(UserName=SNS_USER)["Tags"]}
    assert S3_USER not in user_names(admin)  # the other user held only what we made


def test_teardown_deletes_a_user_that_holds_only_what_setup_made(aws_env, aws_server, cluster, admin, capsys):
    assert run(aws_tasks.setup) == 0
    capsys.readouterr()
    aws_server.clear()
    assert run(aws_tasks.teardown, yes=True) == 0
    assert "kept IAM user" not in capsys.readouterr().out
    assert user_names(admin) == []
    deleted = [w for w in aws_server.writes() if w.startswith("iam:")]
    # exactly what setup made, per user: our key (and its mark), our inline policy, the user
    for op in ("iam:DeleteAccessKey", "iam:DeleteUserPolicy", "iam:DeleteUser"):
        assert deleted.count(op) == 2, deleted
    for op in ("iam:DetachUserPolicy", "iam:RemoveUserFromGroup"):
        assert op not in deleted
